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

import json
import re
from contextlib import ExitStack
from typing import Any

import psutil

from fixtures.case import case
from harness.faults import Latency, ResetPeer
from harness.observe.attempts import AttemptCounter
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import POLL_MS, RUNNING_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.nacos import wait_client_running
from harness.scenarios.steps import brief, running
from harness.wait import WaitTimeout, eventually, now_ms

# A switch caused by a 301, once per 301: the reference client's ``switching`` event says
# "request answered 301"; nacos-sdk-python logs "connection is unregistered, switch server" (its
# second error line per failure, "send request fail", is not counted).
_SWITCH_ON_301 = re.compile(r"answered 301|unregistered, switch", re.IGNORECASE)


# ---- helpers --------------------------------------------------------------------------------

def _text(event: dict[str, Any]) -> str:
    return json.dumps(event.get("detail"), default=str)


def _failed_attempts(events: list[dict[str, Any]], since_wall_ms: float,
                     until_wall_ms: float | None = None) -> list[dict[str, Any]]:
    """The agent's ``connect_failed`` events (one per failed connection attempt, SPEC §4.3)."""
    return [e for e in events if e.get("kind") == "connect_failed" and e["t_ms"] >= since_wall_ms
            and (until_wall_ms is None or e["t_ms"] <= until_wall_ms)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its (live and reaped) children."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _sample_until(deadline_ms: float, sample, *, interval_ms: float = POLL_MS) -> None:
    """An observation window: call ``sample()`` (which records what it sees) until the deadline."""
    def tick() -> bool:
        sample()
        return now_ms() >= deadline_ms

    eventually(tick, timeout_ms=max(0.0, deadline_ms - now_ms()) + 5 * interval_ms,
               what="observation window", interval_ms=interval_ms)


def _knobs(peer, wanted: dict[str, Any]) -> dict[str, Any]:
    """Scaled-down timers for peers that take them; real libraries keep their defaults."""
    return {k: v for k, v in wanted.items() if peer.supports(k)}


def _balance(events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for e in events:
        if e.get("event") in ("connected", "disconnected"):
            pair = counts.setdefault(e["connectionId"], [0, 0])
            pair[0 if e["event"] == "connected" else 1] += 1
    return {cid: (c, d) for cid, (c, d) in counts.items()}


# ---- SR-16 ----------------------------------------------------------------------------------

def _count_301(answer: dict[str, Any], events: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """301 failures of one request, from every place a peer may show them (the largest wins,
    they are different views of the same failures)."""
    views = {
        "request attempts": sum(1 for a in answer.get("attempts") or [] if a.get("error_code") == codec.UN_REGISTER),
        "request answer": int(answer.get("ok") is False and (
            answer.get("error_code") == codec.UN_REGISTER or "unregistered" in str(answer.get("error", "")).lower())),
        "client switches on 301": sum(1 for e in events if e.get("kind") in ("error", "switching")
                                      and _SWITCH_ON_301.search(_text(e))),
    }
    return max(views.values()), views


@case("SR-16", "SHOULD", timeout_s=90)
def test_setup_latency_does_not_race_the_first_request(cf, topology, nacos_server_peer, nacos_client_peer):
    """With upstream latency larger than the client's post-setup wait (100 ms), the client's first request must not fail with 301 more than once and the client must end RUNNING (the setup/registration race)."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    knobs = _knobs(nacos_client_peer, {"backoff_cap_ms": 500, "server_check_timeout_ms": 1000})
    setup_wait_ms = nacos_client_peer.timer("setup_wait_ms", knobs, default=100)
    latency_ms = max(300, setup_wait_ms + 200)
    # After a 301 the client may reconnect: a backoff, an attempt, a setup, each crossing the latency.
    recover_ms = (nacos_client_peer.timer("backoff_cap_ms", knobs) + nacos_client_peer.timer("server_check_timeout_ms", knobs)
                  + setup_wait_ms + 2 * latency_ms + TOLERANCE_MS)

    with Latency(server.proxy, latency_ms=latency_ms, stream="upstream", history=cf.history):
        # Baseline: the path answers, and the latency is really on it.
        with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
            probe.connect()
            started = now_ms()
            check = probe.server_check()
            took_ms = now_ms() - started
        cf.history.observe("baseline_server_check", {"type": check.type, "took_ms": round(took_ms, 1)})
        if check.type != codec.SERVER_CHECK_RESPONSE or took_ms < latency_ms:
            cf.fail(expected=f"baseline: a ServerCheck through the proxy answers after ≥ {latency_ms} ms",
                    actual=f"{check.type} after {took_ms:.0f} ms", verdict="FAILED",
                    hint="the proxy or the latency toxic is not in the path: a setup error, not a finding")

        client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
        state = running(cf, client, what=f"handshake under {latency_ms} ms upstream latency")
        client_id = state.get("connection_id")

        cf.history.invoke(client.name, "request", {"first": True})
        request_started_wall = cf.history.start_wall_ms + cf.history.elapsed_ms()
        answer = client.control.request()
        cf.history.ok(client.name, "request", answer)

        answered_at = now_ms()
        try:
            final = wait_client_running(cf.history, client, timeout_ms=2 * recover_ms)
            recovered_ms = now_ms() - answered_at
        except WaitTimeout as exc:
            cf.fail(expected=f"{client.name} ends RUNNING after its first request (within {2 * recover_ms} ms)",
                    actual=f"first request {answer}; last state {brief(exc.last)}", verdict="FAILED",
                    hint="the client gave up after the setup/registration race")
            raise

    events = [e for e in final.get("events", []) if e["t_ms"] >= request_started_wall]
    n301, views = _count_301(answer, events)

    lag = None
    if nacos_server_peer.has_capability("events") and client_id:
        registered = [e for e in server.admin.events() if e["event"] == "connected" and e["connectionId"] == client_id]
        connected = [e for e in state.get("events", []) if e["kind"] == "connected"]
        if registered and connected:
            lag = round(registered[0]["t_ms"] - connected[-1]["t_ms"], 1)
    observed = {"latency_ms": latency_ms, "setup_wait_ms": setup_wait_ms,
                "server registered it after the client said RUNNING by (ms)": lag,
                "first request": {k: answer.get(k) for k in ("ok", "error_code", "ms", "error") if k in answer},
                "301 failures": n301, "301 views": views, "final": brief(final)}
    cf.history.observe("sr16", observed)
    cf.check(n301 <= 1, expected="the first request fails with 301 at most once",
             actual=observed, hint="the client sends requests on a connection the server has not registered yet")
    if recovered_ms > recover_ms:
        cf.late(expected=f"RUNNING within {recover_ms} ms of the first request's answer", actual=f"{recovered_ms:.0f} ms")
    cf.ok(f"first request {'ok' if answer.get('ok') else 'failed'} with {n301} × 301 under {latency_ms} ms latency"
          f" (registration {lag} ms after RUNNING); client RUNNING on {final.get('server')}",
          expected="≤ 1 × 301 on the first request; RUNNING at the end", actual=observed)


# ---- SR-17 ----------------------------------------------------------------------------------

@case("SR-17", "MUST", timeout_s=90, subject="both")
def test_reset_during_server_check_is_retried(cf, topology, nacos_server_peer, nacos_client_peer):
    """reset_peer during ServerCheck or setup → the client retries/rotates and ends RUNNING; the server keeps no registration for the dead transport."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    knobs = _knobs(nacos_client_peer, {"backoff_cap_ms": 500, "server_check_timeout_ms": 1000})
    backoff_cap_ms = nacos_client_peer.timer("backoff_cap_ms", knobs)
    attempt_ms = nacos_client_peer.timer("server_check_timeout_ms", knobs)
    setup_wait_ms = nacos_client_peer.timer("setup_wait_ms", knobs)
    has_events = nacos_server_peer.has_capability("events")

    # Baseline: a raw ServerCheck crosses the proxy; nothing is registered without a setup.
    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        check = probe.server_check()
    cf.history.observe("baseline_server_check", {"type": check.type, "body": check.body})
    if check.type != codec.SERVER_CHECK_RESPONSE:
        cf.fail(expected="baseline: ServerCheck through the proxy answers ServerCheckResponse",
                actual=f"{check.type} {check.body}", verdict="FAILED", hint="setup error, not a finding")
    since_seq = max((e["seq"] for e in server.admin.events()), default=0) if has_events else 0

    seen_during_fault: dict[str, dict[str, Any]] = {}
    running_during_fault: list[dict[str, Any]] = []
    # RST needs the toxic in place before the connection exists (research §A3): install it
    # before the client starts, so every transport it opens dies at its first bytes.
    with ResetPeer(server.proxy, timeout_ms=0, stream="upstream", history=cf.history):
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
        start_wall = cf.history.start_wall_ms + cf.history.elapsed_ms()

        def observe_fault() -> dict[str, Any]:
            snapshot = server.admin.current()
            for cid, entry in snapshot.items():
                seen_during_fault.setdefault(cid, entry.get("metaInfo", {}))
            state = client.control.state()
            if state.get("status") == "RUNNING":
                running_during_fault.append(brief(state))
            return state

        def attempt_failed(state: dict[str, Any]) -> bool:
            return bool(_failed_attempts(state.get("events", []), start_wall))

        bound_ms = attempt_ms + TOLERANCE_MS + 2000
        try:
            waited = eventually(observe_fault, timeout_ms=bound_ms, what="a failed connect attempt",
                                accept=attempt_failed, interval_ms=POLL_MS)
            evidence = _failed_attempts(waited.value["events"], start_wall)[0]
        except WaitTimeout as exc:
            last = exc.last if isinstance(exc.last, dict) else {}
            if last.get("status") == "RUNNING" or not last:
                cf.fail(expected=f"a failed connect attempt within {bound_ms} ms while every transport is reset",
                        actual=f"no failed attempt reported; last state {brief(last)}", verdict="FAILED")
            evidence = {"status": last.get("status"), "note": "no attempt event; not RUNNING after the bound"}
        cf.history.observe("failed_attempt", evidence)
        observe_fault()

    healed_at = now_ms()
    cf.check(not running_during_fault, expected="the client is not RUNNING while every transport is reset",
             actual=running_during_fault[:3], verdict="FAILED")
    cf.check(not seen_during_fault, expected="no registration while every transport dies at its first bytes",
             actual=seen_during_fault, verdict="FAILED",
             hint="the server registered transports that never completed a handshake")

    bound_ms = backoff_cap_ms + attempt_ms + setup_wait_ms + TOLERANCE_MS
    state = running(cf, client, timeout_ms=3 * bound_ms, what="after the reset toxic is removed")
    took_ms = now_ms() - healed_at
    live = state.get("connection_id")

    def current_and_live() -> tuple[dict[str, Any], str | None]:
        return server.admin.current(), client.control.state().get("connection_id")

    def exactly_live(seen: tuple[dict[str, Any], str | None]) -> bool:
        snapshot, now_live = seen  # the client's id as of now: a late switch must not confuse us
        return set(snapshot) == {now_live} if now_live else len(snapshot) == 1

    try:
        snapshot, live = eventually(current_and_live, timeout_ms=1000 + TOLERANCE_MS, what="current == the live id",
                                    accept=exactly_live, interval_ms=POLL_MS).value
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, tuple) else ({}, live)
        cf.fail(expected=f"current holds exactly the client's one live id {last[1]}", actual=sorted(last[0]),
                verdict="FAILED", hint="a dead transport's registration was kept")
        raise
    cf.history.observe("current", {"ids": sorted(snapshot)})
    balance: dict[str, tuple[int, int]] = {}
    if has_events:
        balance = _balance(server.admin.events(since_seq))
        live_id = live or next(iter(snapshot))
        bad = {cid: cd for cid, cd in balance.items() if cd != ((1, 0) if cid == live_id else (1, 1))}
        cf.check(not bad and live_id in balance,
                 expected=f"connected/disconnected balanced: {live_id} connected once, every other id connected and disconnected once",
                 actual={"per id (connected, disconnected)": balance})
    if took_ms > bound_ms:
        cf.late(expected=f"RUNNING within {bound_ms:.0f} ms of the toxic's removal "
                         f"(backoff cap {backoff_cap_ms} + attempt {attempt_ms} + setup {setup_wait_ms} + {TOLERANCE_MS})",
                actual=f"{took_ms:.0f} ms")
    cf.ok(f"failed attempt seen; RUNNING {took_ms:.0f} ms after the toxic went; current == [{live}]",
          expected="retried, RUNNING, only the live id registered, events balanced",
          actual={"evidence": evidence, "took_ms": round(took_ms), "current": sorted(snapshot), "balance": balance})


# ---- SR-18 ----------------------------------------------------------------------------------

MIN_ATTEMPT_GAP_MS = 100  # SPEC SR-18: attempts ≥ 100 ms apart
MAX_BACKOFF_MS = 5000  # SPEC SR-18: backoff capped ≤ 5 s
CLOCK_SLACK_MS = 5  # timer rounding on a lower bound (a 250 ms tolerance would make it vacuous)
HOT_CPU_FRACTION = 0.30  # of one core, over the down window
DOWN_WINDOW_MAX_MS = 6000


def _time_to_cap_ms(servers: int, step_ms: int, cap_ms: int) -> int:
    """How long the Nacos schedule (sleep min(turn + 1, 50) × step, turn++ per full pass,
    capped) takes to reach its cap (research §4.4)."""
    total, turn = 0, 0
    while min(turn + 1, 50) * step_ms < cap_ms and turn < 50:
        total += servers * min(turn + 1, 50) * step_ms
        turn += 1
    return total


@case("SR-18", "SHOULD", timeout_s=90)
def test_all_servers_down_reconnects_are_paced(cf, topology, nacos_server_peer, nacos_client_peer):
    """All servers down → reconnect attempts are paced (≥ 100 ms apart, backoff capped ≤ 5 s), no hot loop; the client reconnects within one backoff step after a server returns."""
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    knobs = _knobs(nacos_client_peer, {"backoff_step_ms": 100, "backoff_cap_ms": 500, "server_check_timeout_ms": 1000})
    step_ms = nacos_client_peer.timer("backoff_step_ms", knobs)
    cap_ms = nacos_client_peer.timer("backoff_cap_ms", knobs)
    attempt_ms = nacos_client_peer.timer("server_check_timeout_ms", knobs)
    setup_wait_ms = nacos_client_peer.timer("setup_wait_ms", knobs)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers, knobs=knobs)
    baseline = running(cf, client)
    pid = client.node.pid
    if pid is None:
        cf.fail(expected="a client process to measure", actual="no pid", verdict="FAILED")

    window_ms = min(DOWN_WINDOW_MAX_MS, _time_to_cap_ms(len(servers), step_ms, cap_ms) + 2 * cap_ms)
    statuses: list[str] = []
    # The client's own server goes down last: Toxiproxy disables one proxy per call, and a client
    # that loses its connection first would otherwise slip onto a server still up for a moment.
    order = sorted(servers, key=lambda s: s.main_address == baseline.get("server"))
    with ExitStack() as stack:
        for server in order:
            stack.enter_context(server.proxy.down())
        # The proxies' addresses now answer every connect with an accept-and-close, recorded: the
        # client's attempts counted on the wire, whatever its library logs.
        wire = stack.enter_context(AttemptCounter([(s.host, s.proxied_grpc_port) for s in servers]))
        down_wall = cf.history.start_wall_ms + cf.history.elapsed_ms()
        down_at = now_ms()
        cpu_start = _cpu_seconds(pid)

        def sample() -> None:
            statuses.append(client.control.state().get("status"))

        _sample_until(down_at + window_ms, sample, interval_ms=200)
        cpu_used = _cpu_seconds(pid) - cpu_start
        window_s = (now_ms() - down_at) / 1000.0
        cpu_fraction = cpu_used / window_s
        cf.history.observe("down_window", {"window_ms": round(window_s * 1000), "cpu_s": round(cpu_used, 3),
                                           "cpu_fraction": round(cpu_fraction, 3), "statuses": sorted(set(statuses))})
        # Bring the servers back right after an attempt, so "one backoff step" is what the client
        # has left to sleep (an attempt still in flight would add its own timeout).
        seen_before = len(wire.times_ms())
        if seen_before:
            try:
                eventually(lambda: len(wire.times_ms()), timeout_ms=cap_ms + attempt_ms + TOLERANCE_MS,
                           what="the next attempt on the wire", interval_ms=10,
                           accept=lambda n: n > seen_before)
            except WaitTimeout:
                pass  # no further attempt: judged below from what was seen
        wire_attempts = wire.snapshot()
    up_at = now_ms()
    up_wall = cf.history.start_wall_ms + cf.history.elapsed_ms()

    guard_ms = cap_ms + attempt_ms + setup_wait_ms + TOLERANCE_MS + RUNNING_TIMEOUT_MS
    try:
        back = wait_client_running(cf.history, client, timeout_ms=guard_ms)
        back_ms: float | None = now_ms() - up_at
    except WaitTimeout as exc:
        back, back_ms = exc.last if isinstance(exc.last, dict) else {}, None
    events = (back or {}).get("events") or client.control.state().get("events", [])
    reported = _failed_attempts(events, down_wall, up_wall)  # the agent's own view: detail only
    attempts = [a for a in wire_attempts if a.t_ms >= down_at]
    times = [a.t_ms for a in attempts]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    short = [g for g in gaps if g < MIN_ATTEMPT_GAP_MS - CLOCK_SLACK_MS]
    cap_bound = cap_ms + attempt_ms + TOLERANCE_MS
    long = [g for g in gaps if g > cap_bound]
    observed = {"window_ms": round(window_s * 1000), "cpu_fraction_of_one_core": round(cpu_fraction, 3),
                "attempts_on_the_wire": len(attempts), "connect_failed_events": len(reported),
                "targets": [a.target for a in attempts[:12]], "gaps_ms": gaps[:40], "min_gap_ms": min(gaps, default=None),
                "max_gap_ms": max(gaps, default=None), "backoff_step_ms": step_ms, "backoff_cap_ms": cap_ms,
                "reconnected_after_ms": None if back_ms is None else round(back_ms)}
    cf.history.observe("sr18", observed)

    if not attempts:
        cf.check(cpu_fraction < HOT_CPU_FRACTION,
                 expected=f"no hot loop: < {HOT_CPU_FRACTION:.0%} of one core while every server is down",
                 actual=observed, verdict="FAILED", hint="reconnect attempts are not paced")
        cf.fail(expected=f"{client.name} tries to reconnect while every server is down",
                actual=f"no connection attempt reached either server's address in {observed['window_ms']} ms "
                       f"(CPU {cpu_fraction:.1%} of a core)", verdict="FAILED",
                hint="a client that stops trying never comes back by itself")
    cf.check(cpu_fraction < HOT_CPU_FRACTION,
             expected=f"no hot loop: < {HOT_CPU_FRACTION:.0%} of one core while every server is down",
             actual=observed, verdict="FAILED", hint="reconnect attempts are not paced")
    cf.check(not gaps or len(short) * 2 <= len(gaps),
             expected=f"reconnect attempts paced ≥ {MIN_ATTEMPT_GAP_MS} ms apart",
             actual=observed, verdict="FAILED", hint="most attempts follow each other without a backoff")
    if back_ms is None:
        cf.fail(expected=f"{client.name} RUNNING again after the servers return (guard {guard_ms} ms)",
                actual={**observed, "last state": brief(back)}, verdict="FAILED")
    by_address = {s.main_address: s for s in servers}

    def registered_now() -> dict[str, Any]:
        state = client.control.state()  # re-read: a client may switch once more after reconnecting
        on = by_address.get(state.get("server"))
        return {**brief(state), "registered": bool(on and state.get("connection_id") in on.admin.current())}

    try:
        eventually(registered_now, timeout_ms=1000 + TOLERANCE_MS, what="the client registered where it reconnected",
                   accept=lambda seen: seen["status"] == "RUNNING" and seen["registered"], interval_ms=POLL_MS)
    except WaitTimeout as exc:
        cf.fail(expected="after reconnecting, the client's connection is registered on its server",
                actual={**observed, "last": exc.last}, verdict="FAILED")
    cf.check(cap_ms <= MAX_BACKOFF_MS, expected=f"backoff capped ≤ {MAX_BACKOFF_MS} ms",
             actual=f"declared backoff_cap_ms {cap_ms}")
    cf.check(not short, expected=f"every reconnect attempt ≥ {MIN_ATTEMPT_GAP_MS} ms after the previous one",
             actual=observed)
    cf.check(not long, expected=f"no gap between attempts beyond the cap ({cap_ms} + attempt {attempt_ms} + {TOLERANCE_MS} ms)",
             actual=observed)
    step_bound = cap_ms + setup_wait_ms + TOLERANCE_MS
    if back_ms > step_bound:
        cf.late(expected=f"reconnected within one backoff step of the servers' return "
                         f"(cap {cap_ms} + setup {setup_wait_ms} + {TOLERANCE_MS} = {step_bound} ms)",
                actual=f"{back_ms:.0f} ms")
    cf.ok(f"{len(attempts)} attempts, gaps {min(gaps, default='-')}..{max(gaps, default='-')} ms, "
          f"CPU {cpu_fraction:.1%} of a core; back {back_ms:.0f} ms after the servers returned",
          expected="paced attempts, no hot loop, reconnect within one backoff step", actual=observed)

