"""SR — faults during the handshake and between connections: latency longer than the client's
post-setup wait, a reset during ServerCheck, every server down (SPEC §5 SR-16..SR-18;
research/nacos-protocol.md §2.2, §4.4, §5.1; research/toxiproxy-and-anchors.md §A3).

Each case proves its path first (a raw probe's ServerCheck or the client reaching RUNNING through
its proxy), then applies the fault through the server's Toxiproxy proxy. SR-18 counts the
client's reconnect attempts on the wire (``harness.observe.attempts``: the down proxies'
addresses accept and close every connect, and record it); the agent's ``connect_failed`` events
are detail, and the client's CPU time is the hot-loop detector.
"""

from __future__ import annotations

from fixtures.case import case
from harness.faults import Latency, ResetPeer
from harness.scenarios.bounds import TOLERANCE_MS, supported
from harness.scenarios.nacos import last_event_seq
from harness.scenarios.reconnects import (
    Timers,
    all_servers_down,
    expect_backoff_bounds,
    expect_events_balanced,
    expect_only_live_registered,
    expect_paced,
    expect_registered_where_running,
    expect_server_check_path,
    first_request,
    registration_lag_ms,
    watch_first_failed_attempt,
)
from harness.scenarios.steps import brief, running
from harness.wait import now_ms

SCALED_RECONNECT = {"backoff_cap_ms": 500, "server_check_timeout_ms": 1000}


@case("SR-16", "SHOULD", timeout_s=90)
def test_setup_latency_does_not_race_the_first_request(cf, topology, nacos_server_peer, nacos_client_peer):
    """With upstream latency larger than the client's post-setup wait (100 ms), the client's first request must not fail with 301 more than once and the client must end RUNNING (the setup/registration race)."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    knobs = supported(nacos_client_peer, SCALED_RECONNECT)
    setup_wait_ms = nacos_client_peer.timer("setup_wait_ms", knobs, default=100)
    latency_ms = max(300, setup_wait_ms + 200)
    # After a 301 the client may reconnect: a backoff, an attempt, a setup, each crossing the latency.
    recover_ms = (nacos_client_peer.timer("backoff_cap_ms", knobs) + nacos_client_peer.timer("server_check_timeout_ms", knobs)
                  + setup_wait_ms + 2 * latency_ms + TOLERANCE_MS)

    with Latency(server.proxy, latency_ms=latency_ms, stream="upstream", history=cf.history):
        expect_server_check_path(cf, server, latency_ms=latency_ms)
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
        state = running(cf, client, what=f"handshake under {latency_ms} ms upstream latency")
        first = first_request(cf, client, recover_ms=recover_ms)

    lag = registration_lag_ms(server, state)
    observed = {"latency_ms": latency_ms, "setup_wait_ms": setup_wait_ms,
                "server registered it after the client said RUNNING by (ms)": lag,
                "first request": {k: first.answer.get(k) for k in ("ok", "error_code", "ms", "error") if k in first.answer},
                "301 failures": first.n301, "301 views": first.views, "final": brief(first.final)}
    cf.history.observe("sr16", observed)
    cf.check(first.n301 <= 1, expected="the first request fails with 301 at most once",
             actual=observed, hint="the client sends requests on a connection the server has not registered yet")
    if first.recovered_ms > recover_ms:
        cf.late(expected=f"RUNNING within {recover_ms} ms of the first request's answer",
                actual=f"{first.recovered_ms:.0f} ms")
    cf.ok(f"first request {'ok' if first.answer.get('ok') else 'failed'} with {first.n301} × 301 under {latency_ms} ms "
          f"latency (registration {lag} ms after RUNNING); client RUNNING on {first.final.get('server')}",
          expected="≤ 1 × 301 on the first request; RUNNING at the end", actual=observed)


@case("SR-17", "MUST", timeout_s=90, subject="both")
def test_reset_during_server_check_is_retried(cf, topology, nacos_server_peer, nacos_client_peer):
    """reset_peer during ServerCheck or setup → the client retries/rotates and ends RUNNING; the server keeps no registration for the dead transport."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    knobs = supported(nacos_client_peer, SCALED_RECONNECT)
    expect_server_check_path(cf, server)
    since_seq = last_event_seq(server)

    # RST needs the toxic in place before the connection exists (research §A3): install it
    # before the client starts, so every transport it opens dies at its first bytes.
    with ResetPeer(server.proxy, timeout_ms=0, stream="upstream", history=cf.history):
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
        timers = Timers.of(client)
        during = watch_first_failed_attempt(cf, client, server, attempt_ms=timers.attempt_ms)
    healed_at = now_ms()
    cf.check(not during.running, expected="the client is not RUNNING while every transport is reset",
             actual=during.running[:3], verdict="FAILED")
    cf.check(not during.registered, expected="no registration while every transport dies at its first bytes",
             actual=during.registered, verdict="FAILED",
             hint="the server registered transports that never completed a handshake")

    bound_ms = timers.cap_ms + timers.attempt_ms + timers.setup_wait_ms + TOLERANCE_MS
    state = running(cf, client, timeout_ms=3 * bound_ms, what="after the reset toxic is removed")
    took_ms = now_ms() - healed_at
    snapshot, live = expect_only_live_registered(cf, server, client, state.get("connection_id"))
    balance = expect_events_balanced(cf, server, since_seq, live or next(iter(snapshot)))
    if took_ms > bound_ms:
        cf.late(expected=f"RUNNING within {bound_ms:.0f} ms of the toxic's removal (backoff cap {timers.cap_ms} + "
                         f"attempt {timers.attempt_ms} + setup {timers.setup_wait_ms} + {TOLERANCE_MS})",
                actual=f"{took_ms:.0f} ms")
    cf.ok(f"failed attempt seen; RUNNING {took_ms:.0f} ms after the toxic went; current == [{live}]",
          expected="retried, RUNNING, only the live id registered, events balanced",
          actual={"evidence": during.evidence, "took_ms": round(took_ms), "current": sorted(snapshot), "balance": balance})


@case("SR-18", "SHOULD", timeout_s=90)
def test_all_servers_down_reconnects_are_paced(cf, topology, nacos_server_peer, nacos_client_peer):
    """All servers down → reconnect attempts are paced (≥ 100 ms apart, backoff capped ≤ 5 s), no hot loop; the client reconnects within one backoff step after a server returns."""
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    knobs = supported(nacos_client_peer, {**SCALED_RECONNECT, "backoff_step_ms": 100})
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers, knobs=knobs)
    running(cf, client)
    timers = Timers.of(client, with_step=True)

    down = all_servers_down(cf, client, servers, timers)
    expect_paced(cf, client, down, timers)
    expect_registered_where_running(cf, client, servers, down.observed)
    expect_backoff_bounds(cf, down, timers)
    step_bound = timers.cap_ms + timers.setup_wait_ms + TOLERANCE_MS
    if down.back_ms > step_bound:
        cf.late(expected=f"reconnected within one backoff step of the servers' return "
                         f"(cap {timers.cap_ms} + setup {timers.setup_wait_ms} + {TOLERANCE_MS} = {step_bound} ms)",
                actual=f"{down.back_ms:.0f} ms")
    cf.ok(f"{down.attempts} attempts, gaps {min(down.gaps_ms, default='-')}..{max(down.gaps_ms, default='-')} ms, "
          f"CPU {down.cpu_fraction:.1%} of a core; back {down.back_ms:.0f} ms after the servers returned",
          expected="paced attempts, no hot loop, reconnect within one backoff step", actual=down.observed)
