"""Faults during the handshake and between connections (SR-16, SR-17, SR-18): the path proven
through the proxy first, the client's failed attempts (its ``connect_failed`` events: detail), its
reconnect attempts counted on the wire (``AttemptCounter``), its CPU time as the hot-loop
detector, and what the server holds once the client is back."""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psutil

from harness.errors import SetupError
from harness.observe.attempts import AttemptCounter
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import POLL_MS, RUNNING_TIMEOUT_MS, TOLERANCE_MS, HealthBound
from harness.scenarios.nacos import wait_client_running
from harness.scenarios.steps import brief
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

# A switch caused by a 301, once per 301: the reference client's ``switching`` event says
# "request answered 301"; nacos-sdk-python logs "connection is unregistered, switch server" (its
# second error line per failure, "send request fail", is not counted).
SWITCH_ON_301 = re.compile(r"answered 301|unregistered, switch", re.IGNORECASE)

MIN_ATTEMPT_GAP_MS = 100  # SPEC SR-18: attempts ≥ 100 ms apart
MAX_BACKOFF_MS = 5000  # SPEC SR-18: backoff capped ≤ 5 s
CLOCK_SLACK_MS = 5  # timer rounding on a lower bound (a 250 ms tolerance would make it vacuous)
HOT_CPU_FRACTION = 0.30  # of one core, over the down window
DOWN_WINDOW_MAX_MS = 6000


def wall_now_ms(cf) -> float:
    """Now on the agents' epoch clock, as the case's history counts it."""
    return cf.history.start_wall_ms + cf.history.elapsed_ms()


def failed_attempts(events: list[dict[str, Any]], since_wall_ms: float,
                    until_wall_ms: float | None = None) -> list[dict[str, Any]]:
    """The agent's ``connect_failed`` events (one per failed connection attempt, SPEC §4.3)."""
    return [e for e in events if e.get("kind") == "connect_failed" and e["t_ms"] >= since_wall_ms
            and (until_wall_ms is None or e["t_ms"] <= until_wall_ms)]


def cpu_seconds(pid: int) -> float:
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


def sample_until(deadline_ms: float, sample, *, interval_ms: float = POLL_MS) -> None:
    """An observation window: call ``sample()`` (which records what it sees) until the deadline."""
    def tick() -> bool:
        sample()
        return now_ms() >= deadline_ms

    eventually(tick, timeout_ms=max(0.0, deadline_ms - now_ms()) + 5 * interval_ms,
               what="observation window", interval_ms=interval_ms)


def event_balance(events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(connected, disconnected) per connection id in a server's events log."""
    counts: dict[str, list[int]] = {}
    for e in events:
        if e.get("event") in ("connected", "disconnected"):
            pair = counts.setdefault(e["connectionId"], [0, 0])
            pair[0 if e["event"] == "connected" else 1] += 1
    return {cid: (c, d) for cid, (c, d) in counts.items()}




# ---- the path, proven first ---------------------------------------------------------------

def expect_server_check_path(cf, server: NacosServerHandle, *, latency_ms: int = 0) -> None:
    """Baseline: a raw ServerCheck through the proxy answers ServerCheckResponse (after at least
    ``latency_ms``: the latency is really on the path)."""
    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        probe.connect()
        started = now_ms()
        check = probe.server_check()
        took_ms = now_ms() - started
    cf.history.observe("baseline_server_check", {"type": check.type, "took_ms": round(took_ms, 1)})
    cf.baseline(check.type == codec.SERVER_CHECK_RESPONSE and took_ms >= latency_ms,
                expected="a ServerCheck through the proxy answers ServerCheckResponse"
                         + (f" after ≥ {latency_ms} ms" if latency_ms else ""),
                actual=f"{check.type} {check.body} after {took_ms:.0f} ms",
                hint="the proxy or its toxic is not in the path")


# ---- SR-16: the first request under setup latency ------------------------------------------

def count_301(answer: dict[str, Any], events: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """301 failures of one request, from every place a peer may show them (the largest wins,
    they are different views of the same failures)."""
    views = {
        "request attempts": sum(1 for a in answer.get("attempts") or [] if a.get("error_code") == codec.UN_REGISTER),
        "request answer": int(answer.get("ok") is False and (
            answer.get("error_code") == codec.UN_REGISTER or "unregistered" in str(answer.get("error", "")).lower())),
        "client switches on 301": sum(1 for e in events if e.get("kind") in ("error", "switching")
                                      and SWITCH_ON_301.search(json.dumps(e.get("detail"), default=str))),
    }
    return max(views.values()), views


@dataclass
class FirstRequest:
    answer: dict[str, Any]
    final: dict[str, Any]  # the client's state once RUNNING again
    recovered_ms: float  # from the answer to RUNNING
    n301: int
    views: dict[str, int]


def first_request(cf, client: NacosClientHandle, *, recover_ms: float) -> FirstRequest:
    """The client's first request, then the client RUNNING again (FAILED if not within
    2 × ``recover_ms``); its 301 failures counted from every view."""
    cf.history.invoke(client.name, "request", {"first": True})
    started_wall = wall_now_ms(cf)
    answer = client.control.request()
    cf.history.ok(client.name, "request", answer)
    answered_at = now_ms()
    try:
        final = wait_client_running(cf.history, client, timeout_ms=2 * recover_ms)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} ends RUNNING after its first request (within {2 * recover_ms} ms)",
                actual=f"first request {answer}; last state {brief(exc.last)}", verdict="FAILED",
                hint="the client gave up after the setup/registration race")
        raise
    n301, views = count_301(answer, [e for e in final.get("events", []) if e["t_ms"] >= started_wall])
    return FirstRequest(answer, final, now_ms() - answered_at, n301, views)


def registration_lag_ms(server: NacosServerHandle, state: dict[str, Any]) -> float | None:
    """How long after the client said it was connected the server registered it (its events log)."""
    client_id = state.get("connection_id")
    if not server.peer.has_capability("events") or not client_id:
        return None
    registered = [e for e in server.admin.events() if e["event"] == "connected" and e["connectionId"] == client_id]
    connected = [e for e in state.get("events", []) if e["kind"] == "connected"]
    return round(registered[0]["t_ms"] - connected[-1]["t_ms"], 1) if registered and connected else None


# ---- SR-17: every transport reset at its first bytes ---------------------------------------

@dataclass
class DuringReset:
    """What the client and the server showed while every transport was reset."""

    evidence: dict[str, Any]  # the first failed attempt (or why there is none)
    running: list[dict[str, Any]] = field(default_factory=list)  # client states RUNNING meanwhile
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)  # ids the server held meanwhile


def watch_first_failed_attempt(cf, client: NacosClientHandle, server: NacosServerHandle, *,
                               attempt_ms: float) -> DuringReset:
    """While the reset toxic is in: wait for the client's first failed attempt (FAILED if it is
    RUNNING instead), recording any RUNNING state and any registration the server shows."""
    start_wall = wall_now_ms(cf)
    seen = DuringReset({})

    def observe() -> dict[str, Any]:
        for cid, entry in server.admin.current().items():
            seen.registered.setdefault(cid, entry.get("metaInfo", {}))
        state = client.control.state()
        if state.get("status") == "RUNNING":
            seen.running.append(brief(state))
        return state

    bound_ms = attempt_ms + TOLERANCE_MS + 2000
    try:
        waited = eventually(observe, timeout_ms=bound_ms, what="a failed connect attempt", interval_ms=POLL_MS,
                            accept=lambda state: bool(failed_attempts(state.get("events", []), start_wall)))
        seen.evidence = failed_attempts(waited.value["events"], start_wall)[0]
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, dict) else {}
        if last.get("status") == "RUNNING" or not last:
            cf.fail(expected=f"a failed connect attempt within {bound_ms} ms while every transport is reset",
                    actual=f"no failed attempt reported; last state {brief(last)}", verdict="FAILED")
        seen.evidence = {"status": last.get("status"), "note": "no attempt event; not RUNNING after the bound"}
    cf.history.observe("failed_attempt", seen.evidence)
    observe()
    return seen


def expect_only_live_registered(cf, server: NacosServerHandle, client: NacosClientHandle,
                                live: str | None) -> tuple[dict[str, Any], str | None]:
    """``current`` holds exactly the client's one live id (re-read: a late switch must not
    confuse the check) within the unregister bound; returns the snapshot and the id."""
    def current_and_live() -> tuple[dict[str, Any], str | None]:
        return server.admin.current(), client.control.state().get("connection_id")

    def exactly_live(seen: tuple[dict[str, Any], str | None]) -> bool:
        snapshot, now_live = seen
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
    return snapshot, live


def expect_events_balanced(cf, server: NacosServerHandle, since_seq: int, live_id: str) -> dict[str, tuple[int, int]]:
    """The live id connected once; every other id connected and disconnected once (events log;
    {} for a server without one)."""
    if not server.peer.has_capability("events"):
        return {}
    balance = event_balance(server.admin.events(since_seq))
    bad = {cid: cd for cid, cd in balance.items() if cd != ((1, 0) if cid == live_id else (1, 1))}
    cf.check(not bad and live_id in balance,
             expected=f"connected/disconnected balanced: {live_id} connected once, every other id connected and "
                      "disconnected once",
             actual={"per id (connected, disconnected)": balance})
    return balance


# ---- SR-18: every server down ---------------------------------------------------------------

def time_to_cap_ms(servers: int, step_ms: int, cap_ms: int) -> int:
    """How long the Nacos schedule (sleep min(turn + 1, 50) × step, turn++ per full pass,
    capped) takes to reach its cap (research §4.4)."""
    total, turn = 0, 0
    while min(turn + 1, 50) * step_ms < cap_ms and turn < 50:
        total += servers * min(turn + 1, 50) * step_ms
        turn += 1
    return total


@dataclass
class Timers:
    """The client's reconnect timers, as configured."""

    cap_ms: int
    attempt_ms: int
    setup_wait_ms: int
    step_ms: int = 0  # only where the case reads the backoff schedule (SR-18)

    @classmethod
    def of(cls, client: NacosClientHandle, *, with_step: bool = False) -> Timers:
        peer, knobs = client.peer, client.knobs
        return cls(peer.timer("backoff_cap_ms", knobs), peer.timer("server_check_timeout_ms", knobs),
                   peer.timer("setup_wait_ms", knobs), peer.timer("backoff_step_ms", knobs) if with_step else 0)


@dataclass
class AllDown:
    """The down window and the return: attempts on the wire, CPU, and when the client was back."""

    observed: dict[str, Any]
    gaps_ms: list[float]
    cpu_fraction: float
    attempts: int
    back: dict[str, Any]
    back_ms: float | None
    guard_ms: float


def all_servers_down(cf, client: NacosClientHandle, servers: list[NacosServerHandle], timers: Timers) -> AllDown:
    """Every server's proxy down for a window long enough for the backoff to reach its cap (its
    address then accepts and closes every connect, recorded: attempts counted on the wire), the
    client's CPU measured over it; a client that made no attempt in the window gets until its
    health-check detection bound for a first one; the servers come back right after an attempt,
    so one backoff step is what the client has left to sleep; then wait (bounded) for it to run
    again."""
    baseline = client.control.state()
    window_ms = min(DOWN_WINDOW_MAX_MS, time_to_cap_ms(len(servers), timers.step_ms, timers.cap_ms) + 2 * timers.cap_ms)
    statuses: list[str] = []
    # The client's own server goes down last: Toxiproxy disables one proxy per call, and a client
    # that loses its connection first would otherwise slip onto a server still up for a moment.
    order = sorted(servers, key=lambda s: s.main_address == baseline.get("server"))
    pid = client.node.pid
    if pid is None:
        raise SetupError(f"{client.name} has no process id: its CPU time cannot be measured")
    with ExitStack() as stack:
        for server in order:
            stack.enter_context(server.proxy.down())
        wire = stack.enter_context(AttemptCounter([(s.host, s.proxied_grpc_port) for s in servers]))
        down_wall, down_at, cpu_start = wall_now_ms(cf), now_ms(), cpu_seconds(pid)
        sample_until(down_at + window_ms, lambda: statuses.append(client.control.state().get("status")),
                     interval_ms=200)
        window_s = (now_ms() - down_at) / 1000.0
        cpu_fraction = (cpu_seconds(pid) - cpu_start) / window_s
        cf.history.observe("down_window", {"window_ms": round(window_s * 1000), "cpu_fraction": round(cpu_fraction, 3),
                                           "statuses": sorted(set(statuses))})
        seen_before = len(wire.times_ms())
        if not seen_before:
            # A client that learns of the loss only from its own health check (no reaction to the
            # stream's end) makes its first attempt within its detection bound, not the window's.
            detect_ms = HealthBound.of(client.peer, client.knobs).bound_ms
            try:
                eventually(lambda: len(wire.times_ms()), timeout_ms=max(0.0, down_at + detect_ms - now_ms()),
                           what="a first attempt within the client's detection bound", interval_ms=10,
                           accept=lambda n: n > 0)
                cf.history.note(f"no attempt in the {window_ms} ms window; the first came within the client's "
                                f"detection bound ({detect_ms} ms)")
            except WaitTimeout:
                pass  # none at all: judged as a client that stopped trying
            seen_before = len(wire.times_ms())
        if seen_before:
            try:
                eventually(lambda: len(wire.times_ms()), timeout_ms=timers.cap_ms + timers.attempt_ms + TOLERANCE_MS,
                           what="the next attempt on the wire", interval_ms=10, accept=lambda n: n > seen_before)
            except WaitTimeout:
                pass  # no further attempt: judged from what was seen
        wire_attempts = wire.snapshot()
    up_at, up_wall = now_ms(), wall_now_ms(cf)

    guard_ms = timers.cap_ms + timers.attempt_ms + timers.setup_wait_ms + TOLERANCE_MS + RUNNING_TIMEOUT_MS
    try:
        back = wait_client_running(cf.history, client, timeout_ms=guard_ms)
        back_ms: float | None = now_ms() - up_at
    except WaitTimeout as exc:
        back, back_ms = exc.last if isinstance(exc.last, dict) else {}, None
    events = (back or {}).get("events") or client.control.state().get("events", [])
    attempts = [a for a in wire_attempts if a.t_ms >= down_at]
    times = [a.t_ms for a in attempts]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    observed = {"window_ms": round(window_s * 1000), "cpu_fraction_of_one_core": round(cpu_fraction, 3),
                "attempts_on_the_wire": len(attempts),
                "connect_failed_events": len(failed_attempts(events, down_wall, up_wall)),  # the agent's view: detail
                "targets": [a.target for a in attempts[:12]], "gaps_ms": gaps[:40],
                "min_gap_ms": min(gaps, default=None), "max_gap_ms": max(gaps, default=None),
                "backoff_step_ms": timers.step_ms, "backoff_cap_ms": timers.cap_ms,
                "reconnected_after_ms": None if back_ms is None else round(back_ms)}
    cf.history.observe("sr18", observed)
    return AllDown(observed, gaps, cpu_fraction, len(attempts), back or {}, back_ms, guard_ms)


def expect_paced(cf, client: NacosClientHandle, down: AllDown, timers: Timers) -> None:
    """While every server is down: attempts at all, no hot loop, most gaps ≥ the minimum (FAILED),
    then every gap within [minimum, cap] and a cap ≤ 5 s (graded as the case's level)."""
    observed, gaps = down.observed, down.gaps_ms
    not_hot = down.cpu_fraction < HOT_CPU_FRACTION
    hot = dict(expected=f"no hot loop: < {HOT_CPU_FRACTION:.0%} of one core while every server is down",
               actual=observed, verdict="FAILED", hint="reconnect attempts are not paced")
    cf.check(not_hot or down.attempts, **hot)
    if not down.attempts:
        cf.fail(expected=f"{client.name} tries to reconnect while every server is down",
                actual=f"no connection attempt reached either server's address in {observed['window_ms']} ms "
                       f"(CPU {down.cpu_fraction:.1%} of a core)", verdict="FAILED",
                hint="a client that stops trying never comes back by itself")
    cf.check(not_hot, **hot)
    short = [g for g in gaps if g < MIN_ATTEMPT_GAP_MS - CLOCK_SLACK_MS]
    cf.check(not gaps or len(short) * 2 <= len(gaps), expected=f"reconnect attempts paced ≥ {MIN_ATTEMPT_GAP_MS} ms apart",
             actual=observed, verdict="FAILED", hint="most attempts follow each other without a backoff")
    if down.back_ms is None:
        cf.fail(expected=f"{client.name} RUNNING again after the servers return (guard {down.guard_ms} ms)",
                actual={**observed, "last state": brief(down.back)}, verdict="FAILED")


def expect_registered_where_running(cf, client: NacosClientHandle, servers: list[NacosServerHandle],
                                    observed: dict[str, Any]) -> None:
    """After reconnecting, the client's connection is registered on the server it reports (re-read:
    a client may switch once more after reconnecting)."""
    by_address = {s.main_address: s for s in servers}

    def registered_now() -> dict[str, Any]:
        state = client.control.state()
        on = by_address.get(state.get("server"))
        return {**brief(state), "registered": bool(on and state.get("connection_id") in on.admin.current())}

    try:
        eventually(registered_now, timeout_ms=1000 + TOLERANCE_MS, what="the client registered where it reconnected",
                   accept=lambda seen: seen["status"] == "RUNNING" and seen["registered"], interval_ms=POLL_MS)
    except WaitTimeout as exc:
        cf.fail(expected="after reconnecting, the client's connection is registered on its server",
                actual={**observed, "last": exc.last}, verdict="FAILED")


def expect_backoff_bounds(cf, down: AllDown, timers: Timers) -> None:
    """The cap ≤ 5 s, every attempt ≥ the minimum after the previous one, no gap beyond the cap."""
    observed, gaps = down.observed, down.gaps_ms
    cf.check(timers.cap_ms <= MAX_BACKOFF_MS, expected=f"backoff capped ≤ {MAX_BACKOFF_MS} ms",
             actual=f"declared backoff_cap_ms {timers.cap_ms}")
    cf.check(not [g for g in gaps if g < MIN_ATTEMPT_GAP_MS - CLOCK_SLACK_MS],
             expected=f"every reconnect attempt ≥ {MIN_ATTEMPT_GAP_MS} ms after the previous one", actual=observed)
    cap_bound = timers.cap_ms + timers.attempt_ms + TOLERANCE_MS
    cf.check(not [g for g in gaps if g > cap_bound],
             expected=f"no gap between attempts beyond the cap ({timers.cap_ms} + attempt {timers.attempt_ms} + "
                      f"{TOLERANCE_MS} ms)", actual=observed)
