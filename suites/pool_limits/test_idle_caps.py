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

from typing import Any

from fixtures.case import case
from harness.scenarios.bounds import AGENT_RUN_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.idle_caps import (
    BURST_N,
    BURST_OVER_CAP,
    burst_then_idle,
    default_idle_cap,
    expect_closed_promptly,
    expect_idle_state,
)
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
)


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

    seen = burst_then_idle(cf, topology, http_client_peer, srv, n=n, accept=all_kept if info.cap is None else as_capped,
                           time_wait=True)
    state = seen.state
    if info.cap is None:
        cf.informational(
            f"no default idle cap ({info.source}): after a {n}-wide burst {state['open']} of {state['opened']} "
            f"connections stayed open, {state['closed by the client']} closed by the client, client TIME_WAIT "
            f"+{state['client TIME_WAIT +']}", no_requirement=True, **state)
        return

    rest = max(state["opened"], n) - info.cap
    expected = {"opened": f"≥ {n} (one per concurrent request)", "stay open": info.cap,
                "closed by the client": rest, "closed otherwise": {}, "client TIME_WAIT +": rest,
                "idle cap": f"{info.cap} {info.scope} ({info.source})"}
    expect_idle_state(cf, seen, expected)
    late_ms = expect_closed_promptly(cf, seen, what=f"the {rest} surplus connections")
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
    stack with no idle cap at all (aiohttp) runs on its defaults, which keep everything. A stack
    whose default connection limit is below 20 (manifest ``[timers] max_conns_per_host``: Apache
    HttpClient 5's 5 per route) has it raised to 20, so the burst can open 20. Plan:
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
    limit = http_client_peer.timers.get("max_conns_per_host")
    if limit is not None and limit < PL03_N:
        # The stack's default connection limit would keep the burst from opening PL03_CAP connections.
        http_client_peer.require_knobs(["max_conns_per_host"])
        knobs["max_conns_per_host"] = PL03_N
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

    seen = burst_then_idle(cf, topology, http_client_peer, srv, n=PL07_N, accept=as_capped, time_wait=False)
    state = seen.state
    rest = max(state["opened"], PL07_N) - JDK_MAX_CONNECTIONS
    expected = {"opened": f"≥ {PL07_N}", "stay open": JDK_MAX_CONNECTIONS, "closed by the client": rest,
                "closed otherwise": {}}
    expect_idle_state(cf, seen, expected)
    late_ms = expect_closed_promptly(cf, seen, what=f"the {rest} evicted connections")
    cf.ok(f"{PL07_N}-wide burst: {state['open']} stayed open, {state['closed by the client']} closed by the client "
          f"≤ {max(late_ms, 0):.0f} ms after the burst", expected=expected, actual=state)
