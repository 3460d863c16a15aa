"""TC — dead links: a blackholed connection (Toxiproxy ``timeout`` toxic with timeout 0 on both
directions) must be ejected by the server and left by the client (SPEC §5 TC-04, TC-05;
research/nacos-protocol.md §2.6 eject, §4.4 and §5.1 client health checks;
research/toxiproxy-and-anchors.md §A3 "blackhole is application-level").

A blackhole drops data but keeps both TCP sides open, so only application keep-alives notice
it: the server's idle detection + ClientDetectionRequest probe (TC-04) and the client's
HealthCheck (TC-05). Two facts of Toxiproxy v2.12.0 shape the cases (checked by hand against
the pinned binary, and in ``Shopify/toxiproxy:toxics/timeout.go``):

- a FIN is *not* a chunk: ``Pipe`` closes its stub on the input's end (``c == nil``), so one
  side's close crosses a blackhole at once and closes the other side. A client that gives up on
  the link and closes its transport therefore unregisters itself on the server through the
  blackhole. TC-04 judges the server's *ejection*, so the client is paused (SIGSTOP) for the
  observation: frozen like a host that lost power, it cannot close anything, and the server is
  left with exactly the half-dead connection a real partition leaves. Its single-server list
  keeps any reconnect from adding registrations the check would have to tell apart.
- removing a timeout toxic closes the connections it held: after the heal, peers reconnect.

Bounds are the peer's configured timers plus the SPEC §5 tolerance: TC-04 ``idle_threshold +
eject_interval + probe_timeout``, TC-05 ``interval + attempts × timeout`` where attempts =
``health_retry + 1`` (Java: 3 retries = 4 attempts; nacos-sdk-python: 1 attempt). The reference
peers run scaled-down timers; real libraries keep their defaults.
"""

from __future__ import annotations

from fixtures.case import case
from harness.faults import Blackhole, Pause
from harness.scenarios.bounds import (
    FAIL_FACTOR,
    QUIET_SERVER,
    SCALED_SERVER_EJECT,
    EjectBound,
    supported,
)
from harness.scenarios.dead_links import (
    Clock,
    client_on_one_of_two,
    expect_moved,
    judge_removal,
    rounded,
    watch_current,
    watch_move,
)
from harness.scenarios.steps import brief, registered_id, running

# ---- TC-04 ----------------------------------------------------------------------------------

@case("TC-04", "SHOULD", timeout_s=120, subject="server")
def test_server_ejects_blackholed_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Blackhole (timeout toxic, both directions) → the server ejects the connection within `idle_threshold + eject_interval + probe_timeout + tolerance`; a server that never ejects gets FAILED with the time it held the dead registration (Nacos 2.2.0–2.2.4 would)."""
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=server_knobs)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])  # one server: no second registration
    state = running(cf, client)
    dead_id = registered_id(cf, server, state)  # baseline: registered through the proxy
    has_events = nacos_server_peer.has_capability("events")  # timed events (the extension) date the ejection
    since_seq = max((e["seq"] for e in server.admin.events()), default=0) if has_events else 0
    # Still registered right before the fault: an id gone before the blackhole is no ejection of it.
    before = server.admin.current()
    if dead_id not in before or client.control.state().get("connection_id") not in (None, dead_id):
        cf.fail(expected=f"baseline: {dead_id} registered and still the client's connection before the blackhole",
                actual={"current": sorted(before), "client": brief(client.control.state())}, verdict="FAILED",
                hint="the connection was dropped before the fault (a client not answering probes? see SR-19)")

    # The client is frozen first, so its own reaction cannot close the transport through the
    # blackhole (a FIN crosses it, see the module docstring); then the link goes dark.
    with Pause(client.node, history=cf.history, label="client"), \
            Blackhole(server.proxy, history=cf.history, label=server.node.name):
        clock = Clock(cf)
        gone_ms, last = watch_current(server, clock, until=lambda snapshot: dead_id not in snapshot,
                                      timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{dead_id} ejected")
        held = {"last": sorted(last), "entry": last.get(dead_id, {})}
        held_for_ms = clock.since()

    event_ms = None
    if has_events:
        ends = [e for e in server.admin.events(since_seq) if e["event"] == "disconnected" and e["connectionId"] == dead_id]
        if ends and gone_ms is not None:
            event_ms = clock.of_wall(ends[0]["t_ms"])
    ejected_ms = event_ms if event_ms is not None else gone_ms
    probes = []
    if nacos_server_peer.has_capability("pushes"):  # the reference server's push log: the probes that kept it, and the one that did not
        probes = [{"after_fault_ms": rounded(clock.of_wall(p["t_ms"])), "outcome": p.get("outcome")}
                  for p in server.admin.pushes() if p["connectionId"] == dead_id and p["type"] == "ClientDetectionRequest"]
    observed = {"connection_id": dead_id, "bound": str(eject), "left current after (ms)": rounded(gone_ms),
                "disconnected event after (ms)": rounded(event_ms), "current at the end": held.get("last"),
                "ClientDetectionRequest probes (before the fault < 0)": probes[-6:]}
    cf.history.observe("tc04", observed)

    # `connected` of the entry (Nacos's Connection JSON has it) tells the two ways to fail apart.
    closed = held.get("entry", {}).get("connected") is False
    judge_removal(cf, ejected_ms, eject, clock, what=f"the blackholed connection {dead_id} ejected",
                  after="the blackhole",
                  never=f"the dead registration was still held {held_for_ms:.0f} ms after the blackhole "
                        f"({FAIL_FACTOR}× the bound){', its transport closed' if closed else ''}; "
                        f"current {held.get('last')}",
                  hint="the transport was closed but the registration kept" if closed else
                  "no idle detection / ClientDetectionRequest probe, as the Nacos 2.2.0-2.2.4 ejector")
    cf.ok(f"ejected {ejected_ms:.0f} ms after the blackhole (bound {eject.bound_ms} ms)",
          expected=f"ejected within {eject}", actual=observed)


# ---- TC-05 ----------------------------------------------------------------------------------

@case("TC-05", "MUST", timeout_s=120)
def test_client_leaves_blackholed_server(cf, topology, nacos_server_peer, nacos_client_peer):
    """Blackhole → the client detects it through failed HealthChecks within `interval + retries × timeout + tolerance` and moves to another server."""
    base = client_on_one_of_two(cf, topology, nacos_server_peer, nacos_client_peer,
                                server_knobs=supported(nacos_server_peer, QUIET_SERVER))
    client, health, dead, alive, dead_id = base.client, base.health, base.on, base.other, base.connection_id
    # No request through the client before the fault: a request refreshes the client's idle clock,
    # and Java, nacos-sdk-python and the reference client then skip the next HealthCheck wake, which
    # stretches the detection to 2 × interval + attempts × timeout. The bound is an idle client's.

    with Blackhole(dead.proxy, history=cf.history, label=dead.node.name):
        clock = Clock(cf)
        move = watch_move(cf, client, clock, away_from=dead.main_address, timeout_ms=FAIL_FACTOR * health.bound_ms)

    observed = {"bound": str(health), "connection_id": dead_id, **move.observed()}
    at = cf.history.relative_ms(clock.mono_ms)
    expect_moved(cf, client, move, alive, bound=health, fault="blackhole", at_ms=at,
                 hint="no HealthCheck, a HealthCheck timeout taken as healthy, or no rotation")
    if move.detected_ms is None or move.detected_ms > health.bound_ms:
        cf.late(expected=f"the blackhole detected within {health}",
                actual=f"first sign after {rounded(move.detected_ms)} ms ({move.detected_by}); running on "
                       f"{alive.main_address} after {move.moved_ms:.0f} ms", at_ms=at)
    cf.ok(f"detected after {move.detected_ms:.0f} ms (bound {health.bound_ms}), RUNNING on {alive.main_address} "
          f"after {move.moved_ms:.0f} ms", expected=f"detection within {health}, then another server", actual=observed)
