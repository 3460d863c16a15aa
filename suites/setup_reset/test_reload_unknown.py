"""SR — `reloadClient` for a connection the server does not know (SPEC §5 SR-09;
research/nacos-protocol.md §3 and §6: "`/reloadClient` for an unknown id → still success").

`ServerLoaderController.reloadSingle` answers `success` whatever `loadSingle` found; for an
unknown id `loadSingle` finds no connection and does nothing. The case proves the client under
test RUNNING and registered, adds a registered raw probe as a bystander (a push to it is seen
on the wire, whichever client is under test and whether or not the server has a pushes log),
then asks for two unknown ids and checks that nothing at all changed.
"""

from __future__ import annotations

import time

from fixtures.case import case
from harness.probe.nacos_raw import RawNacosConnection
from harness.scenarios import quiet
from harness.scenarios.nacos import last_seq, wait_registered
from harness.scenarios.steps import request_ok, running
from harness.wait import WaitTimeout


@case("SR-09", "MUST", timeout_s=90, subject="server")
def test_reload_of_unknown_id_changes_nothing(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadClient` for an unknown id → `success`, nothing changes.

    Procedure: the client under test RUNNING and registered (baseline) and a registered raw
    probe; `reloadClient` for an id no transport has (once plain, once with a redirect to the
    server itself) must answer `success`; then for 1 s: `current` keeps exactly the same ids,
    the client stays RUNNING on the same server and connection id, no push reaches the probe,
    and (capability `events`) the server logs no push and no connected/disconnected event.
    """
    nacos_server_peer.require_capabilities(["loader"])  # reloadClient
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    state = running(cf, client)
    client_id = state.get("connection_id")
    has_logs = nacos_server_peer.has_capability("events")

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        probe_id = probe.server_check().body.get("connectionId")
        probe.setup()
        try:
            before = wait_registered(cf.history, server, timeout_ms=3000, connection_id=probe_id,
                                     count=None if client_id else 2)
            if client_id:
                before = wait_registered(cf.history, server, timeout_ms=3000, connection_id=client_id)
        except WaitTimeout as exc:
            cf.fail(expected=f"baseline: {client.name} ({client_id or 'id not reported'}) and the probe "
                             f"({probe_id}) registered", actual=f"current {exc.last!r}")
        ids_before = sorted(before)
        agent_events_before = client.control.state().get("events_total", 0)
        push_seq = last_seq(server.admin.pushes()) if has_logs else 0
        event_seq = last_seq(server.admin.events()) if has_logs else 0

        unknown = f"{int(time.time() * 1000)}_127.0.0.254_1"
        cf.check(unknown not in before, expected=f"{unknown} unknown to the server", actual=ids_before)
        bodies = quiet.reload_unknown(cf, server, unknown)

        # Watch everything for the quiet window; judge afterwards, in a fixed order.
        held, first_change, after_ms = quiet.watch_quiet(cf, server, client, state, ids_before)
        pushed_to_probe = quiet.pushed_to(cf, probe)
        # Read before the probe leaves: its own disconnect is not a change the reload made.
        pushes = server.admin.pushes(push_seq) if has_logs else []
        events = server.admin.events(event_seq) if has_logs else []
        agent_events = client.control.state().get("events", [])[agent_events_before:]
        cf.history.observe("after_reload", {"pushes": pushes, "events": events, "agent_events": agent_events})

    cf.check(not pushed_to_probe, expected="no push: nothing reaches the bystander probe's bi-stream",
             actual=pushed_to_probe)
    cf.check(not pushes, expected="no push: the server's pushes log stays empty after the reloads", actual=pushes)
    cf.check(held, expected=f"nothing changes for {quiet.QUIET_WINDOW_MS} ms: current stays {ids_before}, "
                            f"{client.name} stays RUNNING on {state.get('server')} as {client_id}",
             actual=f"after {after_ms:.0f} ms: {first_change}")
    cf.check(not events, expected="nothing changes: no connected/disconnected event", actual=events)
    resets = [e for e in agent_events if e.get("kind") in quiet.CLIENT_EVENTS_OF_A_RESET]
    cf.check(not resets, expected=f"nothing changes: {client.name} reports no reset, switch or disconnect",
             actual=resets)

    request_ok(cf, client, expected=f"{client.name}'s request still succeeds")
    cf.ok(f"reloadClient({unknown}) answered {bodies}; for {quiet.QUIET_WINDOW_MS} ms current stayed {len(ids_before)} "
          f"ids, {client.name} stayed on {client_id}, no push"
          + ("" if has_logs else " (server has no pushes/events log: checked on the wire and in current only)"))
