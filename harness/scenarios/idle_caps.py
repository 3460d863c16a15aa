"""Idle caps of client pools (SPEC §5 PL-02, PL-03, PL-07): each stack's documented default
idle cap, an agent run watched through its idle phase (the ledger and the client's TIME_WAIT,
polled while the plan's idle phase lasts: at exit the agent closes the kept connections too), and
the checks on the state the pool settles in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.http_run import AgentRun
from harness.observe.sockets import snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS, AGENT_RUN_TIMEOUT_MS, POLL_MS, TOLERANCE_MS
from harness.scenarios.pools import (
    answered,
    brief_connections,
    burst,
    closed_by,
    idle,
    observe_ledger,
    require_baseline,
    stack_of,
)
from harness.scenarios.steps import Background
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

ANSWER_MS = 20_000  # the agent starts (a JVM under load: seconds) and the burst is answered
SETTLE_MS = 2000  # after the last answer, the pool reaches its idle state within this (else FAILED)
HOLD_MS = 500  # ... and stays in it this long (a client that closes everything later is caught)
IDLE_PHASE_MS = SETTLE_MS + HOLD_MS + 1000  # the plan's idle phase: the observation fits inside it

# The research note's default idle caps (stack -> (cap or None = no cap, scope, source)).
RESEARCH_IDLE_CAP: dict[str, tuple[int | None, str, str]] = {
    "go-net-http": (2, "per host", "§1.1/§1.4: MaxIdleConnsPerHost 0 ⇒ DefaultMaxIdleConnsPerHost 2; G1: 20 → 2 stay, 18 TIME_WAIT"),
    "urllib3": (1, "per host", "§4.1: HTTPConnectionPool maxsize=1, block=False"),
    "requests": (10, "per host", "§4.2: HTTPAdapter pool_maxsize=10; P1: 20 → 10 stay, 10 closed"),
    "httpx": (20, "pool-wide", "§4.3: Limits max_keepalive_connections=20; X1: 30 → 20 stay, 10 closed"),
    "jdk-httpurlconnection": (5, "per host", "§2.1: http.maxConnections=5 (ClientVector.put evicts the oldest); J1"),
    "jdk-httpclient": (None, "pool-wide", "§2.2: jdk.httpclient.connectionPoolSize 0 = unbounded; J12: all kept"),
    "aiohttp": (None, "per host", "§4.4: TCPConnector has no idle cap; limits count connections in use"),
}
BURST_N = 20  # SPEC PL-02: a 20-wide burst ...
BURST_OVER_CAP = 10  # ... or cap + 10 when the cap is 20 or more (httpx), so the cap shows


@dataclass(frozen=True)
class IdleCap:
    cap: int | None  # None: the stack keeps every idle connection
    scope: str
    source: str


def default_idle_cap(peer: PeerManifest) -> IdleCap:
    """The peer's documented default idle cap: the research note's for a built-in stack (checked
    against the manifest's ``[timers]``), else the manifest's."""
    if "max_idle_per_host" in peer.timers:
        declared: tuple[int, str] | None = (peer.timer("max_idle_per_host"), "per host")
    elif "max_idle_total" in peer.timers:
        declared = (peer.timer("max_idle_total"), "pool-wide")
    else:
        declared = None
    stack = stack_of(peer)
    if stack in RESEARCH_IDLE_CAP:
        cap, scope, source = RESEARCH_IDLE_CAP[stack]
        if (declared[0] if declared else None) != cap:
            raise HarnessError(f"{peer.source}: {peer.label} declares idle cap {declared} in [timers] but the "
                               f"research note says {cap} for {stack} ({source}); fix the manifest")
        return IdleCap(cap, scope, f"research/http-pools.md {source}")
    if declared is None:
        return IdleCap(None, "per host", f"{peer.source}: no max_idle_per_host / max_idle_total in [timers]")
    return IdleCap(declared[0], declared[1], f"{peer.source} [timers]")


# -- watching an agent's idle phase ----------------------------------------------------------------


class RunningAgent:
    """One agent run on a worker thread, so its idle phase can be watched while it lasts. Leaving
    the block joins the run (bounded by the run's own ``timeout_ms``)."""

    def __init__(self, topology, **run_kwargs: Any) -> None:
        self._run = Background("pl-agent", lambda: topology.run_http_client(**run_kwargs)).start()

    def __enter__(self) -> RunningAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self._run.join_quietly(AGENT_RUN_TIMEOUT_MS + AGENT_RUN_SLACK_MS)

    def still_running(self) -> None:
        """Raise unless the agent is still in its plan: its failure (UNIMPLEMENTED, SetupError) if
        it failed, a HarnessError if it finished before the observation did."""
        if not self._run.alive:
            self._run.result(0)
            raise HarnessError("the agent finished its plan before the case finished watching its idle phase; "
                               f"lengthen IDLE_PHASE_MS ({IDLE_PHASE_MS} ms)")

    def result(self) -> AgentRun:
        return self._run.result(AGENT_RUN_TIMEOUT_MS + 5000)


def client_time_wait(srv) -> int:
    """Client-side TIME_WAIT towards ``srv``: sockets whose remote end is its proxy's listen address."""
    return sum(1 for e in snapshot([srv.proxy_port])
               if e.state == "TIME_WAIT" and e.remote_port == srv.proxy_port and e.remote_ip == srv.host)


@dataclass
class IdleWatch:
    """What the idle phase showed: the state once settled (or the last one seen), how long after the
    burst was answered it settled, whether it then held, and the ledger at the end of the watch."""

    settled: bool
    state: dict[str, Any]
    settle_ms: float
    held: bool
    changed_to: dict[str, Any] | None
    view: dict[str, Any]

    def when(self) -> dict[str, int]:
        key = "settled after ms" if self.settled else "still not so after ms"
        return {key: round(self.settle_ms)}


def watch_idle(cf, srv, running: RunningAgent, *, n: int, accept: Callable[[dict[str, Any]], bool],
               time_wait_before: int | None) -> IdleWatch:
    """Wait until the ledger answered the burst's ``n`` requests, then until the pool's idle state
    satisfies ``accept`` (within SETTLE_MS), then that it holds for HOLD_MS — all during the plan's
    idle phase. ``time_wait_before``: the client TIME_WAIT count taken before the agent started
    (None: the state leaves TIME_WAIT out)."""

    def count_answered() -> int:
        running.still_running()
        return answered(srv.ledger.ledger())

    eventually(count_answered, accept=lambda a: a >= n, timeout_ms=ANSWER_MS, interval_ms=POLL_MS,
               what=f"the ledger to answer the burst's {n} requests")
    answered_at = now_ms()
    cf.history.observe("burst_answered", {"requests": n})

    def state() -> dict[str, Any]:
        running.still_running()
        view = srv.ledger.ledger()
        by = closed_by(view)
        out: dict[str, Any] = {"opened": len(view["connections"]), "open": view["open"],
                               "closed by the client": by.pop("client", 0), "closed otherwise": dict(by)}
        if time_wait_before is not None:
            out["client TIME_WAIT +"] = client_time_wait(srv) - time_wait_before
        return out

    try:
        waited = eventually(state, accept=accept, timeout_ms=SETTLE_MS, interval_ms=POLL_MS,
                            what="the pool's idle state after the burst")
        settled, current, settle_ms = True, waited.value, waited.at_mono_ms - answered_at
    except WaitTimeout as exc:
        if not isinstance(exc.last, dict):
            raise
        settled, current, settle_ms = False, exc.last, SETTLE_MS
    cf.history.observe("idle_state", {"settled": settled, "after_ms": round(settle_ms), **current})
    held, changed_to = True, None
    if settled:
        held, bad, _ = holds_for(state, duration_ms=HOLD_MS, interval_ms=POLL_MS, what="the idle state to hold",
                                 accept=lambda s: s == current)
        if not held:
            changed_to = bad
            cf.history.observe("idle_state_changed", bad)
    view = srv.ledger.ledger()
    running.still_running()
    return IdleWatch(settled, current, settle_ms, held, changed_to, view)


def surplus_late_ms(view: dict[str, Any], run: AgentRun, phase: int) -> float:
    """How long after the burst's last response the last client close (in ``view``) came."""
    end = max(r.end_ms for r in run.phase(phase))
    closes = [c["closed_ms"] for c in view["connections"] if c["closed_by"] == "client" and c["closed_ms"]]
    return max(closes) - end if closes else 0.0


def burst_plan(n: int, knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"knobs": dict(knobs or {}), "phases": [burst(n), idle(IDLE_PHASE_MS)]}


@dataclass
class BurstIdle:
    """An agent's burst, then its idle phase as watched (``watch``) and its records (``run``)."""

    run: AgentRun
    watch: IdleWatch

    @property
    def state(self) -> dict[str, Any]:
        return {**self.watch.state, **self.watch.when()}


def burst_then_idle(cf, topology, peer: PeerManifest, srv, *, n: int, accept: Callable[[dict[str, Any]], bool],
                    time_wait: bool) -> BurstIdle:
    """Run an ``n``-wide burst then an idle phase, watching the pool's idle state (``watch_idle``)
    while the idle phase lasts; the burst must be answered in full (the baseline)."""
    time_wait_before = client_time_wait(srv) if time_wait else None  # a reused port number may still have some
    with RunningAgent(topology, peer=peer, servers=[srv], plan=burst_plan(n), timeout_ms=AGENT_RUN_TIMEOUT_MS) as running:
        watch = watch_idle(cf, srv, running, n=n, accept=accept, time_wait_before=time_wait_before)
    run = running.result()
    require_baseline(run, f"the {n}-wide burst")
    observe_ledger(cf, "ledger_idle", watch.view)
    return BurstIdle(run, watch)


def expect_idle_state(cf, seen: BurstIdle, expected: dict[str, Any]) -> None:
    """FAILED unless the pool reached ``expected`` within SETTLE_MS of the burst and held it HOLD_MS."""
    cf.check(seen.watch.settled, expected={"after the burst, within": f"{SETTLE_MS} ms", **expected},
             actual={**seen.state, "connections (ledger)": brief_connections(seen.watch.view)})
    cf.check(seen.watch.held, expected={"for a further": f"{HOLD_MS} ms", **expected},
             actual={"held at first": seen.state, "then changed to": seen.watch.changed_to})


def expect_closed_promptly(cf, seen: BurstIdle, *, what: str) -> float:
    """NON-STRICT when the client's last close of ``what`` came more than the tolerance after the
    burst's last response; returns that delay."""
    late_ms = surplus_late_ms(seen.watch.view, seen.run, 0)
    if late_ms > TOLERANCE_MS:
        cf.late(expected=f"{what} closed by the client within {TOLERANCE_MS} ms of the burst's last response",
                actual={**seen.state, "last close after ms": round(late_ms)})
    return late_ms
