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
    ejection_evidence,
    expect_detected,
    expect_moved,
    judge_removal,
    one_client_registered,
    watch_current,
    watch_move,
)


@case("TC-04", "SHOULD", timeout_s=120, subject="server")
def test_server_ejects_blackholed_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Blackhole (timeout toxic, both directions) → the server ejects the connection within `idle_threshold + eject_interval + probe_timeout + tolerance`; a server that never ejects gets FAILED with the time it held the dead registration (Nacos 2.2.0–2.2.4 would)."""
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    base = one_client_registered(cf, topology, nacos_server_peer, nacos_client_peer, server_knobs=server_knobs)
    dead_id = base.connection_id

    # The client is frozen first, so its own reaction cannot close the transport through the
    # blackhole (a FIN crosses it, see the module docstring); then the link goes dark.
    with Pause(base.client.node, history=cf.history, label="client"), \
            Blackhole(base.server.proxy, history=cf.history, label=base.server.node.name):
        clock = Clock(cf)
        gone_ms, last = watch_current(base.server, clock, until=lambda snapshot: dead_id not in snapshot,
                                      timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{dead_id} ejected")
        held_for_ms = clock.since()
    ejected_ms, observed = ejection_evidence(base, clock, gone_ms, eject, last)
    cf.history.observe("tc04", observed)

    # `connected` of the entry (Nacos's Connection JSON has it) tells the two ways to fail apart.
    closed = last.get(dead_id, {}).get("connected") is False
    judge_removal(cf, ejected_ms, eject, clock, what=f"the blackholed connection {dead_id} ejected",
                  after="the blackhole",
                  never=f"the dead registration was still held {held_for_ms:.0f} ms after the blackhole "
                        f"({FAIL_FACTOR}× the bound){', its transport closed' if closed else ''}; "
                        f"current {sorted(last)}",
                  hint="the transport was closed but the registration kept" if closed else
                  "no idle detection / ClientDetectionRequest probe, as the Nacos 2.2.0-2.2.4 ejector")
    cf.ok(f"ejected {ejected_ms:.0f} ms after the blackhole (bound {eject.bound_ms} ms)",
          expected=f"ejected within {eject}", actual=observed)


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
    expect_detected(cf, move, health, alive, what="the blackhole", at_ms=at)
    cf.ok(f"detected after {move.detected_ms:.0f} ms (bound {health.bound_ms}), RUNNING on {alive.main_address} "
          f"after {move.moved_ms:.0f} ms", expected=f"detection within {health}, then another server", actual=observed)
