"""SR — admission at setup: who the server lets register, and how it turns the others away
(SPEC §4.2 "Limits", "A server that is starting"; §5 SR-05, SR-11; research/nacos-protocol.md
§2.2–§2.5).

A rejected setup is answered the Nacos way: a `ConnectResetRequest` without address pushed on
the bi-stream, then the transport closed for real, and the connection never appears in
`current` (nor as a `connected` event). Real clients cannot be made to send a setup to a
starting server (they abandon on the 300 of ServerCheck), and they cannot be made to fill a
limit to order, so the rejection paths are driven by raw wire probes over the proxy; the
client under test then has to cope: end RUNNING once the server has started (SR-05), stay out
while the limit holds and get in once a slot is free (SR-11).

"Really closed" is read from the kernel: no ESTABLISHED socket on the server's gRPC port is
left from the rejected transport (SPEC §4.6 socket table; the TC-07 bound of 1 s).
"""

from __future__ import annotations

import contextlib

from fixtures.case import case
from harness.errors import SetupError
from harness.protocol.nacos import codec
from harness.scenarios.admission import (
    CountLimitWatch,
    after,
    expect_admitted,
    expect_client_kept_out,
    expect_cluster_exempt,
    expect_no_registration_before,
    expect_over_limit_rejected,
    expect_running_after_start,
    fill_with_sdk_probes,
    free_a_slot,
    judge_late_closes,
    judge_rejection,
    no_connected,
    quiet_streams,
    setup_and_watch_rejection,
    starting_server_and_probe,
    still_starting,
)
from harness.scenarios.bounds import RUNNING_TIMEOUT_MS, supported
from harness.scenarios.nacos import current
from harness.scenarios.steps import request_ok

COUNT_LIMIT = 2


@case("SR-05", "MUST", timeout_s=90, subject="server")
def test_starting_server_answers_300_and_rejects_setup(cf, topology, nacos_server_peer, nacos_client_peer):
    """While starting: ServerCheck → 300; an SDK setup is rejected (reset + close), never registered.

    Procedure: the server starts with `startup_delay_ms` = 4 s. At once a raw probe through
    the proxy gets ErrorResponse 300 for ServerCheck, then sends an SDK ConnectionSetup anyway
    (real clients abandon on the 300 and never do): it must get a ConnectResetRequest without
    address, and after answering it, its stream ends and its socket is gone within 1 s; nothing
    is registered (`current` empty, no `connected` event). A second ServerCheck, still 300,
    proves all this happened while starting. Then the client under test is started and must end
    RUNNING, registered, once the server has started (no registration dated before the delay).
    """
    nacos_server_peer.require_capabilities(["startup_delay"])
    nacos_server_peer.require_knobs(["startup_delay_ms"])
    has_events = nacos_server_peer.has_capability("events")
    server, probe, check, delay_ms, starts_not_before_wall_ms = starting_server_and_probe(cf, topology, nacos_server_peer)
    with probe:
        cf.check(check.type == codec.ERROR_RESPONSE and check.error_code == codec.INVALID_SERVER_STATUS
                 and check.result_code != 200,
                 expected="ServerCheck while starting → ErrorResponse with errorCode 300 (no connectionId)",
                 actual=f"{check.type} {check.body}")
        rejected = setup_and_watch_rejection(cf, probe, server, "probe", 0, labels=codec.SDK_LABELS,
                                             registered=lambda snap: bool(snap))
        snapshot = current(cf.history, server)
    # The reset itself shows the setup was rejected while the server was starting; without one,
    # only a server still starting now proves the setup met a starting server.
    if rejected.reset is None and not still_starting(cf, server, "after the rejection"):
        raise SetupError("SR-05: the server finished starting before the probe's setup was judged (a setup "
                         f"took {rejected.as_dict()}); the machine is too loaded for this case (nothing was judged)")
    cf.check(not snapshot, expected="the SDK setup sent while starting is never registered: current stays empty",
             actual=sorted(snapshot))
    no_connected(cf, server, has_events, lambda cid: True, "the SDK setup sent while starting")
    late = judge_rejection(cf, rejected, "the probe", "server is starting")

    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    client_saw_starting = still_starting(cf, server, f"{client.name} started")
    client_id, snapshot = expect_running_after_start(cf, client, server, timeout_ms=delay_ms + RUNNING_TIMEOUT_MS)
    if has_events:
        expect_no_registration_before(cf, server, starts_not_before_wall_ms, delay_ms)
    request_ok(cf, client, expected=f"{client.name}'s request succeeds once admitted")
    judge_late_closes(cf, late, rejected)
    cf.ok(f"300 while starting; setup rejected (reset after {after(rejected.reset_t_ms, rejected.setup_t_ms)} ms, "
          f"closed after {after(rejected.closed_t_ms, rejected.setup_t_ms)} ms), never registered; {client.name} "
          f"{'started while the server was starting and ' if client_saw_starting else ''}ended RUNNING as "
          f"{client_id or sorted(snapshot)}")


@case("SR-11", "MUST", timeout_s=120, subject="server")
def test_total_count_limit_with_cluster_exempt(cf, topology, nacos_server_peer, nacos_client_peer):
    """Total `countLimit`; cluster-source connections exempt.

    Procedure: the server runs with `count_limit` = 2. Two raw SDK probes fill it (baseline:
    both registered); a raw probe labelled `source=cluster` must still register (exempt); a
    third SDK probe must be rejected (reset without address, stream ended, socket gone within
    1 s of its answer, never registered). Then the client under test connects while the limit
    holds: SDK connections in `current` never exceed 2 and none but the two probes is
    registered, until the server has rejected the client's setup and closed that transport
    (seen in the `pushes` log and `transports`, capability `events`; without it, a fixed watch
    of 4.25 s). Then one SDK probe leaves and the client under test must get in (RUNNING,
    registered), still within the limit, and its request succeeds.
    """
    nacos_server_peer.require_capabilities(["limits"])
    nacos_server_peer.require_knobs(["count_limit"])
    has_events = nacos_server_peer.has_capability("events")
    # The probes holding the slots go quiet (see quiet_streams) and could not answer a
    # ClientDetectionRequest: keep the dead-connection ejector out of this case.
    knobs = {"count_limit": COUNT_LIMIT, **supported(nacos_server_peer, {"idle_threshold_ms": 600_000})}
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=knobs)
    watch = CountLimitWatch(cf, server, COUNT_LIMIT)

    with contextlib.ExitStack() as stack:
        fill = fill_with_sdk_probes(cf, stack, server, watch)
        cluster, cluster_id = expect_cluster_exempt(cf, stack, server, watch)
        rejected, late, over_id = expect_over_limit_rejected(cf, stack, server, watch, has_events)

        # The client under test is the one over the limit now. Reference peers take a short
        # health interval, so a client left on a closed connection finds out quickly.
        quiet_streams(cf, {name: probe for name, (probe, _) in fill.items()} | {"cluster-probe": cluster},
                      watch, watch.holders | {cluster_id})
        known = watch.holders | {cluster_id, over_id}
        push_seq = max((int(p.get("seq", 0)) for p in server.admin.pushes()), default=0) if has_events else 0
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server],
                                       knobs=supported(nacos_client_peer, {"health_interval_ms": 1000}))
        expect_client_kept_out(cf, server, client, watch, known=known, since_push=push_seq, has_events=has_events)

        free_a_slot(cf, watch, "sdk-probe-0", *fill["sdk-probe-0"])  # now the client must get in, nobody more
        waited = expect_admitted(cf, client, watch, known)
        request_ok(cf, client, expected=f"{client.name}'s request succeeds once admitted")
    judge_late_closes(cf, late, rejected)
    cf.ok(f"countLimit {COUNT_LIMIT}: cluster probe registered beside {COUNT_LIMIT} SDK probes; over-limit probe "
          f"reset and closed after {after(rejected.closed_t_ms, rejected.setup_t_ms)} ms; {client.name} kept out "
          f"(max {watch.max_sdk} SDK registered), admitted {waited.elapsed_ms:.0f} ms after a slot freed",
          expected=f"SDK connections <= {COUNT_LIMIT}, cluster exempt", actual={"max_sdk": watch.max_sdk})
