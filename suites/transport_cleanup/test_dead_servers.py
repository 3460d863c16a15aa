"""TC — dead servers: a server process killed (SIGKILL) or frozen (SIGSTOP) must be left by its
clients within their health-check bound, without sockets left behind, and a frozen server must
clean up its stale registrations once it runs again (SPEC §5 TC-06, TC-09;
research/nacos-protocol.md §2.6–§2.7 eject and transport termination, §4.4 and §5.1 client
health checks and reconnect).

Placement: two servers, each behind its own proxy; the client has both in its list and is on
whichever it picked. The proxy sits between client and server, so after a SIGKILL the kernel
closes the dead server's sockets, the proxy's upstream gets the FIN and the proxy closes its
client side: the client's socket towards the dead server's proxy port is then in CLOSE_WAIT
until the client closes it — that socket (remote port = the proxy port, owned by the client
process) is what TC-06 watches. A SIGSTOPped server keeps its sockets (its kernel still ACKs),
so only the client's HealthCheck timeouts can tell (TC-09); the client's close of the old
transport reaches the frozen server as a FIN it reads after SIGCONT.

Bounds: the client's ``interval + attempts × timeout + tolerance`` (``HealthBound``); the
server's ``idle_threshold + eject_interval + probe_timeout + tolerance`` (``EjectBound``),
counted from SIGCONT.
"""

from __future__ import annotations

from typing import Any

from fixtures.case import case
from harness.faults import Kill, Pause
from harness.observe.sockets import SocketSampler
from harness.scenarios.bounds import (
    FAIL_FACTOR,
    SCALED_SERVER_EJECT,
    EjectBound,
    supported,
)
from harness.scenarios.dead_links import (
    Clock,
    answered_probes,
    client_on_one_of_two,
    expect_detected,
    expect_moved,
    expect_no_close_wait,
    judge_removal,
    no_close_wait_before,
    watch_current,
    watch_move,
)
from harness.wait import now_ms


@case("TC-06", "MUST", timeout_s=120, subject="client", interop=True)
def test_clients_leave_killed_server(cf, topology, nacos_server_peer, nacos_client_peer):
    """Server process SIGKILL → clients detect and reconnect elsewhere within their health-check bound; no client-side CLOSE_WAIT left."""
    base = client_on_one_of_two(cf, topology, nacos_server_peer, nacos_client_peer)
    client, health, dead, alive, dead_id = base.client, base.health, base.on, base.other, base.connection_id
    no_close_wait_before(dead)

    with SocketSampler(cf.history, [dead.proxied_grpc_port], interval_ms=100, name="dead_server_proxy_port"):
        with Kill(dead.node, history=cf.history, label=dead.node.name):
            clock = Clock(cf)
            move = watch_move(cf, client, clock, away_from=dead.main_address, timeout_ms=FAIL_FACTOR * health.bound_ms)
        at = cf.history.relative_ms(clock.mono_ms)
        new_id = expect_moved(cf, client, move, alive, bound=health, fault="kill", at_ms=at)
        expect_no_close_wait(cf, client, dead, clock, at_ms=at + move.moved_ms)

    observed = {"bound": str(health), "dead server": dead.main_address, "connection_id": dead_id,
                "new connection": new_id, **move.observed()}
    cf.history.observe("tc06", observed)
    if move.moved_ms > health.bound_ms:
        cf.late(expected=f"reconnected elsewhere within {health}",
                actual=f"RUNNING on {alive.main_address} only {move.moved_ms:.0f} ms after the kill", at_ms=at)
    cf.ok(f"RUNNING on {alive.main_address} {move.moved_ms:.0f} ms after the kill (bound {health.bound_ms}); "
          f"no client-side CLOSE_WAIT", expected=f"reconnect within {health}; no CLOSE_WAIT", actual=observed)


@case("TC-09", "MUST", timeout_s=120, subject="both")
def test_paused_server_cleans_up_after_resume(cf, topology, nacos_server_peer, nacos_client_peer):
    """Server paused (SIGSTOP) → clients move away; after SIGCONT the server cleans up every stale registration within the eject bound."""
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    base = client_on_one_of_two(cf, topology, nacos_server_peer, nacos_client_peer, server_knobs=server_knobs)
    client, health, paused, alive, stale_id = base.client, base.health, base.on, base.other, base.connection_id

    with Pause(paused.node, history=cf.history, label=paused.node.name):
        clock = Clock(cf)
        move = watch_move(cf, client, clock, away_from=paused.main_address, timeout_ms=FAIL_FACTOR * health.bound_ms)
    resumed = Clock(cf)
    at = cf.history.relative_ms(clock.mono_ms)
    live_id = expect_moved(cf, client, move, alive, bound=health, fault="SIGSTOP", at_ms=at,
                           hint="no HealthCheck, or a HealthCheck timeout taken as healthy")

    # After SIGCONT: every registration on the resumed server is stale (its only client is
    # elsewhere now), unless the client came back to it meanwhile with a live id.
    def stale(snapshot: dict[str, Any]) -> list[str]:
        return sorted(cid for cid in snapshot if cid != live_id)

    cleaned_ms, last = watch_current(paused, resumed, until=lambda snapshot: not stale(snapshot),
                                     timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{paused.main_address} drops stale ids")
    held = sorted(last) if last or cleaned_ms is not None else [stale_id]
    answered = answered_probes(paused, stale_id)
    observed = {"health bound": str(health), "eject bound": str(eject), "stale connection": stale_id,
                "live connection": live_id, "resumed server's current at the end": held,
                "cleaned after SIGCONT (ms)": None if cleaned_ms is None else round(cleaned_ms, 1),
                "server probes the stale connection answered": answered, **move.observed()}
    cf.history.observe("tc09", observed)
    hint = ("the client kept the transport it left open and alive: it answered the server's probes on it, so the "
            "server had no reason to drop it" if answered else
            "the transport ended (or the probe went unanswered) but the registration was kept")
    judge_removal(cf, cleaned_ms, eject, resumed, what=f"{paused.main_address} drops {stale_id}", after="SIGCONT",
                  never=f"still holds {[c for c in held if c != live_id]} {resumed.since():.0f} ms after SIGCONT "
                        f"({now_ms() - clock.mono_ms:.0f} ms after the client left it); stale connection's answered "
                        f"probes: {answered}",
                  hint=hint)
    expect_detected(cf, move, health, alive, what="the paused server", at_ms=at)
    cf.ok(f"left after {move.detected_ms:.0f} ms (bound {health.bound_ms}), RUNNING on {alive.main_address} after "
          f"{move.moved_ms:.0f} ms; stale id dropped {cleaned_ms:.0f} ms after SIGCONT (bound {eject.bound_ms})",
          expected=f"move within {health}; cleanup within {eject}", actual=observed)
