"""TC — links that go silent below TCP: packet-level faults in the server's network namespace
(docs/catalogue.md TC-15..TC-18, TC-21; harness/faults/packet.py; research/real-servers-and-audit.md §4).

Toxiproxy terminates TCP: under its blackhole the server's kernel still gets ACKs from the
proxy, and either side's close crosses at once. A pulled cable or a dead VM gives the server
nothing at all — no data, no ACK, no FIN, no RST — and only its own detection (an idle probe,
TCP or gRPC keepalive) can end the registration. Nacos 2.2.0-2.2.4 keep such clients registered
for hours (alibaba/nacos#10773); 2.3.0 brought the probe back (#10509).

The server runs in a namespace of its own (``namespaced=True``); the fault drops every packet of
the client's registered transport — the server's gRPC port and the proxy's upstream socket, read
from the namespace's TCP table — both ways. The client is left running: its health checks time
out, it reconnects on a new transport (which passes), and whatever it does with the old one stays
on the proxy's side of the silence, so the server is left with exactly the half-open connection a
cable pull leaves. Only that transport is silenced: a silenced port would also swallow the proxy's
dials for the client's reconnects, which Toxiproxy leaves hanging without a connect timeout
(Shopify/toxiproxy#123) and which would wedge it for the next case.

TC-16 is the client's side. Through Toxiproxy a client never meets a dead server's silence at
connect time (the proxy accepts every connection), so here the client is given the two servers'
own namespace addresses (198.18.0.0/15) and meets the fault itself: its live connection goes
silent, and a new connect to that server is never answered (SYN_SENT until the client gives up).
TC-17 drops one direction only (a one-way firewall rule, an asymmetric route): the client must
still leave, and what the server made of the old connection is recorded beside it. TC-18 drops
one packet in N both ways (deterministic, 5 % and 33 %) while the client is reset and its
application sends requests: once the loss heals it must be registered exactly once.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from fixtures.case import case
from harness.errors import SetupError
from harness.faults import Silence, SynDrop
from harness.scenarios.bounds import (
    FAIL_FACTOR,
    QUIET_SERVER,
    SCALED_SERVER_EJECT,
    TOLERANCE_MS,
    EjectBound,
    reconnect_ms,
    supported,
)
from harness.scenarios.dead_links import (
    Clock,
    expect_detected,
    expect_moved,
    judge_removal,
    rounded,
    upstream_ports,
    watch_current,
    watch_move,
)
from harness.scenarios.half_open_http import REQUEST_TIMEOUT_MS, silence_pooled_connection
from harness.scenarios.loss import LOSS_EVERY_NTH, expect_registered_once, reset_under_loss, settle_bound_ms
from harness.scenarios.packet import (
    CPU_SETTLE_MS,
    ONE_WAY,
    ConnectWatch,
    CpuWatch,
    MoveBound,
    client_on_one_of_two_direct,
    drop_one_way,
    expect_left_one_way,
    expect_no_pending_connect,
)
from harness.scenarios.reconnects import HOT_CPU_FRACTION
from harness.scenarios.reset import require_reset_support
from harness.scenarios.steps import brief, registered_id, running


@case("TC-15", "SHOULD", timeout_s=150, subject="server")
def test_server_removes_a_half_open_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Half-open (every packet between the client's connection and the server dropped, no FIN, no RST) → the server removes the registration within `idle_threshold + eject_interval + probe_timeout + tolerance`; one that holds it past twice that gets FAILED with the time it held it (Nacos 2.2.0–2.2.4 would, alibaba/nacos#10773).

    Procedure: the server in its own network namespace; the client RUNNING and registered through
    the proxy (baseline); then iptables in the namespace drops every packet to and from the
    server's gRPC port; watch `current` for the id.
    """
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=server_knobs, namespaced=True)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    dead_id = registered_id(cf, server, running(cf, client))
    transports = upstream_ports(server)
    if not transports:
        raise SetupError(f"TC-15: no ESTABLISHED transport from the proxy to {server.bind_host}:{server.grpc_port} "
                         f"in the namespace's TCP table although {dead_id} is registered; nothing was judged")
    cf.history.observe("silenced_transports", {"server": f"{server.bind_host}:{server.grpc_port}",
                                               "from": [f"{server.namespace.host_ip}:{p}" for p in transports]})
    with ExitStack() as stack:
        for port in transports:
            stack.enter_context(Silence(server, port=server.grpc_port, peer=(server.namespace.host_ip, port),
                                        history=cf.history, label=server.node.name))
        clock = Clock(cf)
        gone_ms, last = watch_current(server, clock, until=lambda snapshot: dead_id not in snapshot,
                                      timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{dead_id} removed")
        held_for_ms = clock.since()
        client_state = brief(client.control.state())
    observed = {"connection_id": dead_id, "bound": str(eject), "removed after (ms)": rounded(gone_ms),
                "current at the end": sorted(last), "client at the end": client_state}
    cf.history.observe("tc15", observed)
    judge_removal(cf, gone_ms, eject, clock, what=f"the half-open connection {dead_id} removed",
                  after="the link went silent",
                  never=f"still registered {held_for_ms:.0f} ms after its link went silent ({FAIL_FACTOR}× the bound); "
                        f"current {sorted(last)}",
                  hint="no idle probe and no keepalive short enough: a pulled cable leaves the client registered")
    cf.ok(f"removed {gone_ms:.0f} ms after the link went silent (bound {eject.bound_ms} ms)",
          expected=f"removed within {eject}", actual=observed)


@pytest.mark.slow
@case("TC-16", "MUST", timeout_s=180, subject="client")
def test_client_leaves_a_server_gone_silent(cf, topology, nacos_server_peer, nacos_client_peer):
    """Server silent at L3 (its SYNs and every packet dropped: no FIN, no RST, a connect never answered) → the client detects it within its health-check bound and runs on its other server within that bound + one reconnect (backoff cap + connect timeout + setup wait), without a hot loop (< 30 % of a core until 1 s after the move), leaving no connect to the dead server pending beyond its connect timeout.

    Procedure: two servers, each alone in its own network namespace; the client lists both by
    their own addresses (no proxy: Toxiproxy would answer the SYN) and is RUNNING and registered
    on one. iptables in that server's namespace then drops SYNs and every packet of its gRPC port
    both ways; the client's state, its CPU time and its SYN_SENT sockets towards that server are
    watched until it runs on the other one. Detection or the move past its bound: NON-STRICT;
    no move within twice the bound, a hot loop, or a connect still pending a connect timeout after
    the move: FAILED.
    """
    pair = client_on_one_of_two_direct(cf, topology, nacos_server_peer, nacos_client_peer)
    client, health, dead, alive = pair.client, pair.health, pair.on, pair.other
    connect_ms = nacos_client_peer.timer("server_check_timeout_ms", client.knobs)
    bound = MoveBound(health, reconnect_ms(nacos_client_peer, client.knobs))
    bound_ms = bound.bound_ms

    with ConnectWatch.towards(dead) as connects:
        with SynDrop(dead, port=dead.grpc_port, history=cf.history, label=dead.node.name), \
                Silence(dead, port=dead.grpc_port, history=cf.history, label=dead.node.name):
            clock, cpu = Clock(cf), CpuWatch(client)
            move = watch_move(cf, client, clock, away_from=dead.direct_address, timeout_ms=FAIL_FACTOR * bound_ms)
            at = cf.history.relative_ms(clock.mono_ms)
            expect_moved(cf, client, move, alive, bound=bound,
                         fault="silence", at_ms=at, hint="no HealthCheck, or no rotation away from the dead server")
            pending = expect_no_pending_connect(cf, connects, after_ms=connect_ms + TOLERANCE_MS, at_ms=at)
            cpu_fraction = cpu.fraction_after(CPU_SETTLE_MS)  # a poller left spinning shows here too
    observed = {"bound": str(bound), "cpu_fraction_of_one_core": round(cpu_fraction, 3),
                **connects.observed(), "pending after the move": pending, **move.observed()}
    cf.history.observe("tc16", observed)
    cf.check(cpu_fraction < HOT_CPU_FRACTION, expected=f"no hot loop: < {HOT_CPU_FRACTION:.0%} of one core from "
                                                        f"the fault until {CPU_SETTLE_MS} ms after it ran elsewhere",
             actual=observed, verdict="FAILED", hint="the reconnect path spins instead of waiting")
    expect_detected(cf, move, health, alive, what="the silence", at_ms=at)
    late_connects = {p: ms for p, ms in connects.lifetimes_ms().items() if ms > connect_ms + TOLERANCE_MS}
    if move.moved_ms > bound_ms or late_connects:
        cf.late(expected=f"RUNNING elsewhere within {bound_ms} ms; every connect to the dead server given up "
                         f"within its connect timeout {connect_ms} + {TOLERANCE_MS} ms",
                actual={**observed, "connects stuck longer (ms)": late_connects}, at_ms=at)
    cf.ok(f"left after {move.detected_ms:.0f} ms (bound {health.bound_ms}), RUNNING on {alive.direct_address} after "
          f"{move.moved_ms:.0f} ms (bound {bound_ms}); {connects.observed()['stuck connects']} stuck connect(s), "
          f"CPU {cpu_fraction:.1%} of a core", expected=f"move within {bound_ms} ms, no hot loop", actual=observed)


@pytest.mark.slow
@case("TC-17", "MUST", timeout_s=180, subject="client")
def test_client_leaves_a_link_dropped_one_way(cf, topology, nacos_server_peer, nacos_client_peer):
    """One direction dropped — client→server (its requests, ACKs and SYNs lost), then server→client (every answer, ACK and SYN-ACK lost) → in each, the client detects it within its health-check bound and runs on its other server within that bound + one reconnect; when the server let the old connection go is recorded, with both ends' sockets (measured: in both directions the client's FIN never arrives — server→client lost, it waits behind unacknowledged data whose ACKs are lost).

    Procedure, per direction, on a fresh pair: as TC-16 (two servers each in its own namespace,
    the client given their own addresses), the servers told not to eject an idle connection for
    120 s (an ejection's close would cross to the client and hand it the answer); iptables in the
    client's server's namespace drops every packet arriving at (then leaving) its gRPC port.
    Detection or the move past its bound: NON-STRICT; no move within twice the bound: FAILED.
    """
    drops = []
    for direction in ONE_WAY:
        pair = client_on_one_of_two_direct(cf, topology, nacos_server_peer, nacos_client_peer,
                                           server_knobs=supported(nacos_server_peer, QUIET_SERVER))
        drops.append((pair, drop_one_way(cf, pair, nacos_client_peer, direction=direction)))
    expect_left_one_way(cf, drops)


@pytest.mark.slow
@case("TC-18", "MUST", timeout_s=150, subject="both")
def test_registered_once_after_packet_loss(cf, topology, nacos_server_peer, nacos_client_peer):
    """Packet loss of 5 % and 33 % (one packet in 20, then in 3, each way) on the client's link while its server resets it and its application sends requests → once the loss heals the client is RUNNING and registered exactly once (no duplicate registration, no lost one) within detection + one reconnect + a few retransmissions + the server's eject bound.

    Procedure: as TC-16 (two servers each in its own namespace, the client given their own
    addresses, so its own TCP stack meets the loss), the servers with scaled eject timers (a
    client's RST lost under the loss is never sent again: only the server's own detection ends
    that registration); per loss rate: iptables drops one packet in N both ways on both servers'
    gRPC ports, the client's server pushes a reset (SR-06) while the application sends requests
    back to back for 4 s (SR-15; counted, not judged), the loss heals, and every server's
    `current` is read against the client's own connection id. Not registered exactly once within
    the bound: FAILED, with both ends' sockets of every stale registration (whose it is).
    """
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset", "request"))
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    pair = client_on_one_of_two_direct(cf, topology, nacos_server_peer, nacos_client_peer, server_knobs=server_knobs)
    settle_ms = settle_bound_ms(pair, nacos_server_peer, server_knobs)
    phases = []
    for every_nth in LOSS_EVERY_NTH:
        phase = reset_under_loss(cf, pair, every_nth=every_nth, settle_ms=settle_ms)
        expect_registered_once(cf, phase, settle_ms=settle_ms)
        phases.append(phase)
    cf.ok("; ".join(f"1 in {p.every_nth}: registered once {p.settled_ms:.0f} ms after the heal, requests {p.requests}"
                    for p in phases),
          expected=f"registered exactly once within {settle_ms} ms of each heal", actual=[p.observed() for p in phases])


@case("TC-21", "MUST", timeout_s=90)
def test_next_get_recovers_from_a_half_open_pooled_connection(cf, topology, peer_registry, http_client_peer):
    """HTTP: the pooled connection's link goes half-open while it is idle (every packet of it dropped, both ways: no FIN, no RST) → the application's next GETs, each with a 2 s timeout, get a 200 within one timeout + tolerance of the first one's start: the dead connection fails one request at most, never hangs past the application's bound, and is not handed out again.

    Procedure: the ledger in its own network namespace, the client dialling its namespace address
    (Toxiproxy's kernel would ACK everything); one GET, then an idle 2 s inside which iptables drops
    every packet of the pooled connection (the ledger names its client port), then three GETs with
    `timeout_ms` 2000. The silence heals when the run ends, at the latest 10 s after it began: a
    client that waits on TCP alone then finishes late, FAILED with the time. Baseline: the silence
    dropped packets (the client did send on the pooled connection), else UNIMPLEMENTED.
    """
    (server,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"), namespaced=True)
    half = silence_pooled_connection(cf, topology, http_client_peer, server)
    rounds, recovery_ms = half.rounds(), half.recovery_ms()
    observed = {"rounds": rounds, "recovered_after_ms": None if recovery_ms is None else round(recovery_ms),
                "silenced connection": f"client port {half.client_port}", "dropped packets": half.dropped_packets}
    if not half.dropped_packets:
        cf.unimplemented(f"{http_client_peer.label} never sent on the pooled connection while it was silent (a new "
                         f"connection, or its own idle timeout closed it first): nothing was judged; {observed}")
    bound_ms = REQUEST_TIMEOUT_MS + TOLERANCE_MS
    failed_first = sum(1 for r in rounds if r["status"] != 200 or r["error"] is not None)
    cf.check(recovery_ms is not None and recovery_ms <= bound_ms and failed_first <= 1,
             expected=f"a 200 within {bound_ms} ms of the first GET after the silence (one {REQUEST_TIMEOUT_MS} ms "
                      "timeout at most), and at most one GET failed",
             actual=observed, at_ms=cf.history.relative_ms_from_wall(half.run.phase(2)[0].start_ms),
             hint="the dead pooled connection held the request past its timeout, or was handed out again")
    how = "transparently (no error surfaced)" if failed_first == 0 else "after one GET failed at its timeout"
    cf.ok(f"recovered {how} in {recovery_ms:.0f} ms; {half.dropped_packets} packets dropped on the dead connection",
          expected=f"a 200 within {bound_ms} ms", actual=observed)
