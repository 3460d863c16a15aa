"""PL — idle caps: how many connections a client pool keeps idle after a burst, what it does with
the rest, and keep-alive off (SPEC §5 PL-02, PL-03, PL-05, PL-07; research/http-pools.md §0,
§1.4, §2.1, §2.2, §4.1–§4.4, §5, §6.1 G1, §6.2 J1, §6.4 P1, X1).

A burst of concurrent 300 ms requests against the ``ledger`` makes the client open one
connection per request; when they come back, a pool with idle cap c keeps c and closes the
rest itself: the ledger records ``closed_by: client`` and the client's side of each such
connection sits in TIME_WAIT for 60 s (research §5) — the surge of golang/go#13801.

Observed while it lasts: the agent runs on a worker thread and its plan ends in an idle
``sleep`` phase, during which the case polls (bounded) the ledger and the kernel's TCP table.
What is kept is only visible then — at exit the agent closes the kept connections too. Behind
the proxy the client's TCP peer is the proxy's listen address, so client TIME_WAIT = sockets in
TIME_WAIT whose remote end is ``srv.host:srv.proxy_port`` (IP and port: another loopback address
may use the same port number as an ephemeral port), counted from a baseline taken before the run.

Expected caps per stack come from the research note and must agree with the peer's manifest
``[timers]`` (``max_idle_per_host``, else the pool-wide ``max_idle_total``); a peer wrapping no
built-in stack is judged on its manifest alone. Stacks with no idle cap (aiohttp, java.net.http)
get their behaviour recorded (``cf.informational``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fixtures.case import case
from harness.errors import HarnessError
from harness.http_run import AgentRun
from harness.observe.sockets import snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_TIMEOUT_MS, POLL_MS, TOLERANCE_MS
from harness.scenarios.pools import (
    answered,
    brief_connections,
    burst,
    closed_by,
    idle,
    observe_ledger,
    records_brief,
    require_baseline,
    require_stack,
    stack_of,
)
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


class _Running:
    """One agent run on a worker thread, so its idle phase can be watched while it lasts. Leaving
    the block joins the run (bounded by the run's own ``timeout_ms``)."""

    def __init__(self, topology, **run_kwargs: Any) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pl-agent")
        self._future = self._pool.submit(topology.run_http_client, **run_kwargs)

    def __enter__(self) -> _Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def still_running(self) -> None:
        """Raise unless the agent is still in its plan: its failure (UNIMPLEMENTED, SetupError) if
        it failed, a HarnessError if it finished before the observation did."""
        if self._future.done():
            self._future.result()
            raise HarnessError("the agent finished its plan before the case finished watching its idle phase; "
                               f"lengthen IDLE_PHASE_MS ({IDLE_PHASE_MS} ms)")

    def result(self) -> AgentRun:
        return self._future.result(timeout=AGENT_RUN_TIMEOUT_MS / 1000.0 + 5)


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


def watch_idle(cf, srv, running: _Running, *, n: int, accept: Callable[[dict[str, Any]], bool],
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


def _burst_plan(n: int, knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"knobs": dict(knobs or {}), "phases": [burst(n), idle(IDLE_PHASE_MS)]}


# -- PL-02 -----------------------------------------------------------------------------------------


@case("PL-02", "MUST", timeout_s=90)
def test_default_idle_cap_after_burst(cf, topology, peer_registry, http_client_peer):
    """Each stack's documented default idle cap after a 20-wide burst → exactly that many connections stay open, the rest closed by the client, client-side TIME_WAIT up by the same number (Go: 2 stay, 18 closed — the surge; requests: 10; httpx: 20 pool-wide; JDK is PL-07; aiohttp has none → INFO).

    Caps (research note): Go 2, urllib3 1, requests 10, httpx 20 (pool-wide), HttpURLConnection 5
    (also PL-07's own case with a 10-wide burst). When the cap is 20 or more the burst is cap + 10
    wide (httpx: 30, research X1), else a cap equal to the burst could not show. Watched during
    the plan's idle phase: the ledger's open connections = cap, ``closed_by: client`` = the rest,
    client TIME_WAIT + the rest, settled within 2 s of the last answer and stable for 0.5 s;
    the client's closes more than 250 ms after the burst's last response are late (NON-STRICT).
    aiohttp and java.net.http keep every connection (no idle cap): what they keep is recorded.
    """
    info = default_idle_cap(http_client_peer)
    n = BURST_N if info.cap is None or info.cap < BURST_N else info.cap + BURST_OVER_CAP
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))

    def as_capped(s: dict[str, Any]) -> bool:
        rest = max(s["opened"], n) - info.cap
        return (s["opened"] >= n and s["open"] == info.cap and s["closed by the client"] == rest
                and not s["closed otherwise"] and s["client TIME_WAIT +"] == rest)

    def all_kept(s: dict[str, Any]) -> bool:
        return s["opened"] >= n and s["open"] == s["opened"]

    time_wait_before = client_time_wait(srv)  # fresh ports, but a reused port number may still have some
    with _Running(topology, peer=http_client_peer, servers=[srv], plan=_burst_plan(n), timeout_ms=AGENT_RUN_TIMEOUT_MS) as running:
        watch = watch_idle(cf, srv, running, n=n, accept=all_kept if info.cap is None else as_capped,
                           time_wait_before=time_wait_before)
    run = running.result()
    require_baseline(run, f"the {n}-wide burst")
    observe_ledger(cf, "ledger_idle", watch.view)
    state = {**watch.state, **watch.when()}

    if info.cap is None:
        cf.informational(
            f"no default idle cap ({info.source}): after a {n}-wide burst {state['open']} of {state['opened']} "
            f"connections stayed open, {state['closed by the client']} closed by the client, client TIME_WAIT "
            f"+{state['client TIME_WAIT +']}", no_requirement=True, **state)
        return

    rest = max(watch.state["opened"], n) - info.cap
    expected = {"opened": f"≥ {n} (one per concurrent request)", "stay open": info.cap,
                "closed by the client": rest, "closed otherwise": {}, "client TIME_WAIT +": rest,
                "idle cap": f"{info.cap} {info.scope} ({info.source})"}
    cf.check(watch.settled,
             expected={"after the burst, within": f"{SETTLE_MS} ms", **expected},
             actual={**state, "connections (ledger)": brief_connections(watch.view)})
    cf.check(watch.held, expected={"for a further": f"{HOLD_MS} ms", **expected},
             actual={"held at first": state, "then changed to": watch.changed_to})
    late_ms = surplus_late_ms(watch.view, run, 0)
    if late_ms > TOLERANCE_MS:
        cf.late(expected=f"the {rest} surplus connections closed by the client within {TOLERANCE_MS} ms of the "
                         f"burst's last response", actual={**state, "last surplus close after ms": round(late_ms)})
    cf.ok(f"{n}-wide burst: {state['open']} stayed open ({info.cap} {info.scope}), {state['closed by the client']} "
          f"closed by the client ≤ {max(late_ms, 0):.0f} ms after the burst, client TIME_WAIT "
          f"+{state['client TIME_WAIT +']}", expected=expected, actual=state)


# -- PL-03 -----------------------------------------------------------------------------------------
PL03_CAP = 20
PL03_N = 20
PL03_GAP_MS = 1000  # idle between the bursts: below every stack's idle timeout (JDK nap 5 s, httpx 5 s)


@case("PL-03", "MUST", timeout_s=90)
def test_raised_idle_cap_keeps_the_burst(cf, topology, peer_registry, http_client_peer):
    """Idle cap raised to 20 → 20 stay open; the next 20-wide burst opens 0 new connections.

    The cap is the per-host knob ``max_idle_per_host=20`` where the stack has one, else the
    pool-wide ``max_idle_total=20`` (httpx, java.net.http: one host here, so the same thing); a
    stack with no idle cap at all (aiohttp) runs on its defaults, which keep everything. Plan:
    burst of 20 × 300 ms, 1 s idle, burst of 20 × 300 ms. Judged from the ledger: the first
    burst's connections still open when the second burst starts = 20, connections opened during
    the second burst = 0.
    """
    info = default_idle_cap(http_client_peer)
    if http_client_peer.supports("max_idle_per_host"):
        knobs: dict[str, Any] = {"max_idle_per_host": PL03_CAP}
    elif http_client_peer.supports("max_idle_total"):
        knobs = {"max_idle_total": PL03_CAP}
    elif info.cap is None:
        knobs = {}  # no idle cap to raise: it keeps every connection already (research §4.4)
    else:
        cf.unimplemented(f"{http_client_peer.label} has an idle cap ({info.cap}, {info.source}) but maps neither "
                         "max_idle_per_host nor max_idle_total to raise it")
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))
    plan = {"knobs": knobs, "phases": [burst(PL03_N), idle(PL03_GAP_MS), burst(PL03_N)]}
    run = topology.run_http_client(peer=http_client_peer, servers=[srv], plan=plan, timeout_ms=AGENT_RUN_TIMEOUT_MS)
    require_baseline(run, "two 20-wide bursts")
    view = srv.ledger.ledger()
    observe_ledger(cf, "ledger", view)
    second_start = min(r.start_ms for r in run.phase(2))
    conns = view["connections"]
    first = [c for c in conns if c["opened_ms"] < second_start]
    stayed = [c for c in first if c["closed_ms"] is None or c["closed_ms"] >= second_start]
    new = [c for c in conns if c["opened_ms"] >= second_start]
    reused = [r.reused for r in run.phase(2)]
    numbers = {"knobs": knobs or "defaults (no idle cap)", "first burst opened": len(first),
               "still open at the second burst": len(stayed),
               "closed between the bursts": [{k: c[k] for k in ("id", "closed_by")}
                                             | {"before_second_ms": round(second_start - c["closed_ms"])}
                                             for c in first if c not in stayed],
               "opened by the second burst": len(new),
               "second burst reused (agent)": "unknown" if None in reused else sum(reused),
               "answered": answered(view)}
    cf.check(len(stayed) == PL03_CAP,
             expected=f"idle cap {PL03_CAP}: {PL03_CAP} connections stay open through the {PL03_GAP_MS} ms idle",
             actual={**numbers, "connections (ledger)": brief_connections(view)})
    cf.check(not new, expected=f"the next {PL03_N}-wide burst opens 0 new connections",
             actual={**numbers, "second burst": records_brief(run, 2)})
    cf.ok(f"{len(stayed)} stayed open; the second burst opened {len(new)} (reused {numbers['second burst reused (agent)']})",
          expected=f"{PL03_CAP} stay, 0 new", actual=numbers)


# -- PL-05 -----------------------------------------------------------------------------------------
PL05_N = 10
PL05_IDLE_MS = 1000  # after the last request: a connection held to the agent's exit closes ≥ this late


@case("PL-05", "MUST", timeout_s=60)
def test_keepalive_off_one_connection_per_request(cf, topology, peer_registry, http_client_peer):
    """Keep-alive off → one connection per request, each closed after its response.

    Knob ``keepalive=false`` (Go ``DisableKeepAlives``, ``http.keepAlive=false``, a ``Connection:
    close`` request header for urllib3/requests, httpx ``max_keepalive_connections=0``, aiohttp
    ``force_close``); java.net.http has no switch (UNIMPLEMENTED). 10 sequential requests (a
    pooling client would use one connection), then 1 s idle. The ledger must show 10
    connections of one request each, each closed within 250 ms of its response (by either side:
    with ``Connection: close`` who closes first is a race, research §7), not held to the exit.
    """
    plan = {"knobs": {"keepalive": False},
            "phases": [{"op": "sequential", "n": PL05_N, "path": "/", "method": "GET"}, idle(PL05_IDLE_MS)]}
    http_client_peer.require_knobs(plan["knobs"])  # UNIMPLEMENTED before anything starts
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))
    run = topology.run_http_client(peer=http_client_peer, servers=[srv], plan=plan, timeout_ms=AGENT_RUN_TIMEOUT_MS)
    require_baseline(run, "sequential requests with keep-alive off")
    view = srv.ledger.ledger()
    observe_ledger(cf, "ledger", view)
    conns = sorted(view["connections"], key=lambda c: c["opened_ms"])
    records = run.phase(0)
    numbers = {"requests": len(records), "connections": len(conns), "requests per connection": [c["requests"] for c in conns],
               "closed_by": dict(closed_by(view))}
    cf.check(len(conns) == PL05_N and all(c["requests"] == 1 for c in conns),
             expected=f"one connection per request: {PL05_N} connections of 1 request each", actual=numbers)
    after = [None if c["closed_ms"] is None else round(c["closed_ms"] - r.end_ms) for c, r in zip(conns, records, strict=True)]
    numbers["closed after its response, ms"] = after
    held = [i for i, ms in enumerate(after) if ms is None or ms >= PL05_IDLE_MS / 2]
    cf.check(not held, expected="each connection closed after its response (not kept open until the client exits)",
             actual={**numbers, "held open": held})
    slow = [ms for ms in after if ms is not None and ms > TOLERANCE_MS]
    if slow:
        cf.late(expected=f"each connection closed within {TOLERANCE_MS} ms of its response", actual=numbers)
    cf.ok(f"{len(conns)} connections, 1 request each, closed ≤ {max(after)} ms after the response "
          f"(closed_by {numbers['closed_by']})", expected=f"{PL05_N} connections, each closed after its response",
          actual=numbers)


# -- PL-07 -----------------------------------------------------------------------------------------
JDK_MAX_CONNECTIONS = 5  # http.maxConnections default (KeepAliveCache.MAX_CONNECTIONS; research §2.1)
PL07_N = 10


@case("PL-07", "MUST", timeout_s=90)
def test_jdk_http_max_connections_default(cf, topology, peer_registry, http_client_peer):
    """JDK `http.maxConnections` default 5 → after a 10-wide burst 5 stay, 5 closed by the client.

    HttpURLConnection's keep-alive cache keeps at most ``http.maxConnections`` idle connections
    per destination; ``ClientVector.put`` closes the oldest when it is full, so the last 5 returned
    stay (research §2.1, J1 verified: 5 closed at once, 5 ESTABLISHED). Watched during the plan's
    idle phase (shorter than the 5 s nap, so the Keep-Alive-Timer does not reap them): 5 open, 5
    ``closed_by: client``, settled within 2 s and stable for 0.5 s; closes more than 250 ms after
    the burst are late. Other stacks: UNIMPLEMENTED (PL-02 covers their caps).
    """
    require_stack(cf, http_client_peer, ("jdk-httpurlconnection",), "the JDK HttpURLConnection keep-alive cache")
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))

    def as_capped(s: dict[str, Any]) -> bool:
        return (s["opened"] >= PL07_N and s["open"] == JDK_MAX_CONNECTIONS and not s["closed otherwise"]
                and s["closed by the client"] == s["opened"] - JDK_MAX_CONNECTIONS)

    with _Running(topology, peer=http_client_peer, servers=[srv], plan=_burst_plan(PL07_N),
                  timeout_ms=AGENT_RUN_TIMEOUT_MS) as running:
        watch = watch_idle(cf, srv, running, n=PL07_N, accept=as_capped, time_wait_before=None)
    run = running.result()
    require_baseline(run, f"the {PL07_N}-wide burst")
    observe_ledger(cf, "ledger_idle", watch.view)
    state = {**watch.state, **watch.when()}
    rest = max(watch.state["opened"], PL07_N) - JDK_MAX_CONNECTIONS
    expected = {"opened": f"≥ {PL07_N}", "stay open": JDK_MAX_CONNECTIONS, "closed by the client": rest,
                "closed otherwise": {}}
    cf.check(watch.settled, expected={"after the burst, within": f"{SETTLE_MS} ms", **expected},
             actual={**state, "connections (ledger)": brief_connections(watch.view)})
    cf.check(watch.held, expected={"for a further": f"{HOLD_MS} ms", **expected},
             actual={"held at first": state, "then changed to": watch.changed_to})
    late_ms = surplus_late_ms(watch.view, run, 0)
    if late_ms > TOLERANCE_MS:
        cf.late(expected=f"the {rest} evicted connections closed within {TOLERANCE_MS} ms of the burst",
                actual={**state, "last eviction after ms": round(late_ms)})
    cf.ok(f"{PL07_N}-wide burst: {state['open']} stayed open, {state['closed by the client']} closed by the client "
          f"≤ {max(late_ms, 0):.0f} ms after the burst", expected=expected, actual=state)
