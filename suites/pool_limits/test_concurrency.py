"""PL — client-side concurrency limits: how many connections a client pool holds to a host at once
(SPEC §5 PL-01, PL-06, PL-09, PL-10; research/http-pools.md §0, §1.3, §4.1–§4.4, §6.1 G2, §6.4
P2, X2, A1).

Each case runs one http-client agent (the parametrised stack) against the ``ledger`` server
behind its proxy. The ledger sees the proxy's upstream connections, one for each connection the
client opens through Toxiproxy, so its ``max_simultaneous`` is the client's connection count to
that host. Everything is judged after the agent exits, from the ledger (connections, their open
and close times, requests served) and the agent's records (status, start and end per request;
epoch ms on one host's clock, like the ledger's).

Stack-specific cases (PL-09: urllib3/requests; PL-10: httpx/aiohttp) apply by the library the
peer wraps: the built-in peers by name, any other manifest by declaring the capability
``pool:<built-in name>`` (e.g. ``pool:urllib3`` for an agent over urllib3's pool); other peers
are UNIMPLEMENTED with the reason. The shared steps (plans, ledger views, the stack a peer wraps)
live in ``harness.scenarios.pools``.
"""

from __future__ import annotations

from fixtures.case import case
from harness.scenarios.bounds import AGENT_RUN_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.pools import (
    SLEEP_MS,
    answered,
    brief_connections,
    burst,
    check_capped_burst,
    idle,
    kept_and_discarded,
    max_overlap,
    observe_ledger,
    records_brief,
    require_baseline,
    require_stack,
    rounds_ms,
)

CLOCK_SLACK_MS = 20  # two processes' epoch clocks and the 0.1 ms rounding of the records

# -- PL-01 -----------------------------------------------------------------------------------------
PL01_LIMIT = 3
PL01_N = 20


@case("PL-01", "MUST", timeout_s=90)
def test_max_conns_per_host_caps_concurrent_connections(cf, topology, peer_registry, http_client_peer):
    """`max_conns_per_host=3`, 20 concurrent 300 ms requests → server never sees > 3 simultaneous connections from the client; all 20 succeed; ≈ ⌈20/3⌉ × 300 ms.

    The ledger's ``max_simultaneous`` is the client's connection count (one proxy upstream per
    client connection). The burst's span (first start to last end) is at least
    ⌈20/3⌉ × 300 = 2100 ms when the limit holds (research §6.1 G2: Go 2.11 s; §6.4 P2: requests
    2.12 s). It is late (NON-STRICT) when the rounds after the first response take more than
    1800 + 250 ms: the first round also carries the client's one-time start. Stacks without a per-host connection
    limit (httpx: pool-wide only; both JDK clients: none) are UNIMPLEMENTED by their manifests.
    """
    plan = {"knobs": {"max_conns_per_host": PL01_LIMIT}, "phases": [burst(PL01_N)]}
    http_client_peer.require_knobs(plan["knobs"])  # UNIMPLEMENTED before anything starts
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))
    run = topology.run_http_client(peer=http_client_peer, servers=[srv], plan=plan, timeout_ms=AGENT_RUN_TIMEOUT_MS)
    view = srv.ledger.ledger()
    observe_ledger(cf, "ledger", view)
    span = run.span_ms(0)
    least = rounds_ms(PL01_N, PL01_LIMIT)
    numbers = {"max_simultaneous": view["max_simultaneous"], "connections": len(view["connections"]),
               "answered by the server": answered(view), "failed": len(run.failed), "span_ms": round(span)}

    check_capped_burst(cf, run, view, limit=PL01_LIMIT, n=PL01_N, numbers=numbers,
                       cap=f"never more than {PL01_LIMIT} simultaneous connections to the server",
                       all_answered=f"all {PL01_N} requests succeed (the server answers {PL01_N})")
    cf.check(span >= least - CLOCK_SLACK_MS,
             expected=f"≈ ⌈{PL01_N}/{PL01_LIMIT}⌉ × {SLEEP_MS} = {least} ms at least: no more than "
                      f"{PL01_LIMIT} requests in flight at once",
             actual=numbers, hint="faster than the limit allows: some requests did not reach this server?")
    # Lateness is judged from the first response on: the rounds after it are the limit's pacing,
    # while the first carries the client's one-time start (a JVM stack's first call loads its
    # classes: OkHttp's took 321 ms over its 300 ms under the full matrix, each later round 6-20 ms).
    paced_ms = max(r.end_ms for r in run.phase(0)) - min(r.end_ms for r in run.phase(0))
    numbers["after the first response ms"] = round(paced_ms)
    if paced_ms > least - SLEEP_MS + TOLERANCE_MS:
        cf.late(expected=f"≈ ⌈{PL01_N}/{PL01_LIMIT}⌉ × {SLEEP_MS} = {least} ms: the rounds after the first "
                         f"response within {least - SLEEP_MS} ms (+ {TOLERANCE_MS} ms)",
                actual=numbers)
    cf.ok(f"max {view['max_simultaneous']} simultaneous over {len(view['connections'])} connections; "
          f"{PL01_N}/{PL01_N} ok in {span:.0f} ms (≥ {least})", expected=f"≤ {PL01_LIMIT} at once, ≈ {least} ms",
          actual=numbers)


# -- PL-06 -----------------------------------------------------------------------------------------
PL06_LIMIT = 3
PL06_N = 12  # per host: 4 rounds of 300 ms


@case("PL-06", "MUST", timeout_s=90)
def test_limits_are_per_host(cf, topology, peer_registry, http_client_peer):
    """Limits are per host: two proxied hosts, limit 3 each → ≤ 3 per host simultaneously, ≤ 6 total.

    Two ledgers, each behind its own proxy on its own loopback address (two pool keys). The plan
    contract's bursts go to one target each and run one after the other, so the hosts are loaded
    in turn: host A's burst (12 × 300 ms), then host B's while A's connections sit idle in the
    pool. Checked: each host ≤ 3 simultaneous; both hosts together ≤ 6 (from the two ledgers'
    open/close times); each host answered its own 12; and host B still gets its own 3
    connections — A's pooled connections do not use up B's limit (Go counts idle connections
    towards ``MaxConnsPerHost``, research §1.1, so a key that merged the hosts would leave B 1).
    """
    plan = {"knobs": {"max_conns_per_host": PL06_LIMIT},
            "phases": [burst(PL06_N, target=0), burst(PL06_N, target=1)]}
    http_client_peer.require_knobs(plan["knobs"])
    srv_a, srv_b = topology.http_servers(2, peer=peer_registry.get("http-server", "ledger"))
    run = topology.run_http_client(peer=http_client_peer, servers=[srv_a, srv_b], plan=plan,
                                   timeout_ms=AGENT_RUN_TIMEOUT_MS)
    view_a, view_b = srv_a.ledger.ledger(), srv_b.ledger.ledger()
    observe_ledger(cf, "ledger_host_a", view_a)
    observe_ledger(cf, "ledger_host_b", view_b)
    total = max_overlap((c["opened_ms"], c["closed_ms"]) for view in (view_a, view_b) for c in view["connections"])
    numbers = {
        "host A": {"max_simultaneous": view_a["max_simultaneous"], "connections": len(view_a["connections"]),
                   "answered": answered(view_a), "burst_ms": round(run.span_ms(0))},
        "host B": {"max_simultaneous": view_b["max_simultaneous"], "connections": len(view_b["connections"]),
                   "answered": answered(view_b), "burst_ms": round(run.span_ms(1))},
        "both hosts at once": total, "failed": len(run.failed),
    }

    cf.check(view_a["max_simultaneous"] <= PL06_LIMIT and view_b["max_simultaneous"] <= PL06_LIMIT,
             expected=f"≤ {PL06_LIMIT} simultaneous connections per host",
             actual={**numbers, "host A connections": brief_connections(view_a),
                     "host B connections": brief_connections(view_b)})
    cf.check(total <= 2 * PL06_LIMIT, expected=f"≤ {2 * PL06_LIMIT} simultaneous connections in total",
             actual=numbers)
    cf.check(not run.failed and answered(view_a) == PL06_N and answered(view_b) == PL06_N,
             expected=f"every request succeeds on its own host: {PL06_N} answered by each",
             actual={**numbers, "records": records_brief(run)})
    cf.check(view_b["max_simultaneous"] == PL06_LIMIT,
             expected=f"host B gets its own {PL06_LIMIT} connections: host A's pooled connections do not "
                      f"count against B's limit",
             actual=numbers)
    cf.ok(f"A max {view_a['max_simultaneous']}, B max {view_b['max_simultaneous']}, both at once {total}; "
          f"bursts {numbers['host A']['burst_ms']} / {numbers['host B']['burst_ms']} ms",
          expected=f"≤ {PL06_LIMIT} per host, ≤ {2 * PL06_LIMIT} total", actual=numbers)


# -- PL-09 -----------------------------------------------------------------------------------------
PL09_STACKS = ("urllib3", "requests")
PL09_MAXSIZE = 3
PL09_N = 20
PL09_IDLE_MS = 1500  # after the block-off burst: the kept connections stay open this long
POOL_FULL_WARNING = "Connection pool is full"


@case("PL-09", "MUST", timeout_s=90)
def test_urllib3_pool_block(cf, topology, peer_registry, http_client_peer):
    """urllib3/requests `pool_maxsize=3, pool_block=True` → ≤ 3 simultaneous; with block off the extra connections are opened and discarded after use (count them).

    Knobs ``max_idle_per_host=3`` (``maxsize`` / ``pool_maxsize``) with ``block_when_full`` true,
    then false, each run against its own ledger. Block on: ≤ 3 simultaneous, all 20 succeed
    (research §6.4 P2: 3 connections, max 3). Block off: urllib3 opens a connection for every
    request that finds the queue empty and, when the queue is full on return, closes it with the
    warning "Connection pool is full, discarding connection" (§4.1 ``_put_conn``). So a 20-wide
    burst opens 20, discards 17 right after their responses (closed by the client within
    250 ms of the burst's end) and keeps 3 open through the idle phase. The warnings in the
    agent's log are counted and recorded.
    """
    require_stack(cf, http_client_peer, PL09_STACKS, "urllib3's pool_maxsize / pool_block")
    http_client_peer.require_knobs(["max_idle_per_host", "block_when_full"])
    ledger_peer = peer_registry.get("http-server", "ledger")
    srv_on, srv_off = topology.http_servers(2, peer=ledger_peer)

    run_on = topology.run_http_client(
        peer=http_client_peer, servers=[srv_on], timeout_ms=AGENT_RUN_TIMEOUT_MS,
        plan={"knobs": {"max_idle_per_host": PL09_MAXSIZE, "block_when_full": True}, "phases": [burst(PL09_N)]})
    view_on = srv_on.ledger.ledger()
    observe_ledger(cf, "ledger_block_on", view_on)
    on = {"max_simultaneous": view_on["max_simultaneous"], "connections": len(view_on["connections"]),
          "answered": answered(view_on), "failed": len(run_on.failed), "span_ms": round(run_on.span_ms(0))}
    check_capped_burst(cf, run_on, view_on, limit=PL09_MAXSIZE, n=PL09_N, numbers=on,
                       cap=f"pool_block=True: never more than {PL09_MAXSIZE} simultaneous connections",
                       all_answered=f"pool_block=True: all {PL09_N} requests succeed (waiters get a pooled connection)")

    run_off = topology.run_http_client(
        peer=http_client_peer, servers=[srv_off], timeout_ms=AGENT_RUN_TIMEOUT_MS,
        plan={"knobs": {"max_idle_per_host": PL09_MAXSIZE, "block_when_full": False},
              "phases": [burst(PL09_N), idle(PL09_IDLE_MS)]})
    require_baseline(run_off, "pool_block=False burst")
    view_off = srv_off.ledger.ledger()
    observe_ledger(cf, "ledger_block_off", view_off)
    split = kept_and_discarded(run_off, view_off, idle_ms=PL09_IDLE_MS, warning=POOL_FULL_WARNING)
    off, opened = split.numbers, len(split.connections)
    cf.history.observe("block_off", off)
    cf.check(opened == PL09_N and view_off["max_simultaneous"] > PL09_MAXSIZE,
             expected=f"pool_block=False: the extra connections are opened — one per concurrent request, "
                      f"{PL09_N} opened",
             actual=off)
    cf.check(len(split.kept) == PL09_MAXSIZE and len(split.discarded) == opened - PL09_MAXSIZE and not split.other,
             expected=f"pool_block=False: {opened - PL09_MAXSIZE} extra connections discarded after use "
                      f"(closed by the client within {TOLERANCE_MS} ms of the burst), {PL09_MAXSIZE} kept open",
             actual=off)
    cf.ok(f"block on: max {on['max_simultaneous']} at once, {PL09_N} ok in {on['span_ms']} ms; block off: "
          f"{opened} opened, {len(split.discarded)} discarded, {len(split.kept)} kept",
          expected=f"≤ {PL09_MAXSIZE} with block; {PL09_N - PL09_MAXSIZE} discarded without",
          actual={"block on": on, "block off": off})


# -- PL-10 -----------------------------------------------------------------------------------------
PL10_LIMIT = 3
PL10_N = 20
# stack -> (knob, the library's own setting, scope)
PL10_KNOBS = {
    "httpx": ("max_conns_total", "Limits(max_connections=3)", "pool-wide"),
    "aiohttp": ("max_conns_per_host", "TCPConnector(limit_per_host=3)", "per host"),
}


@case("PL-10", "MUST", timeout_s=90)
def test_async_client_connection_limits(cf, topology, peer_registry, http_client_peer):
    """httpx `max_connections=3` → ≤ 3 simultaneous (pool-wide); aiohttp `limit_per_host=3` → ≤ 3 per host.

    One host, 20 concurrent 300 ms requests: the ledger sees ≤ 3 simultaneous connections and all
    20 succeed (research §6.4 X2 and A1: 3 connections, max 3). httpx queues the rest for a slot
    (its 5 s pool timeout is longer than the ≈ 2.1 s the burst needs); aiohttp counts connections
    in use per ``ConnectionKey``.
    """
    stack = require_stack(cf, http_client_peer, PL10_KNOBS, "httpx's max_connections / aiohttp's limit_per_host")
    knob, setting, scope = PL10_KNOBS[stack]
    http_client_peer.require_knobs([knob])
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"))
    run = topology.run_http_client(peer=http_client_peer, servers=[srv], timeout_ms=AGENT_RUN_TIMEOUT_MS,
                                   plan={"knobs": {knob: PL10_LIMIT}, "phases": [burst(PL10_N)]})
    view = srv.ledger.ledger()
    observe_ledger(cf, "ledger", view)
    numbers = {"setting": setting, "max_simultaneous": view["max_simultaneous"],
               "connections": len(view["connections"]), "answered": answered(view), "failed": len(run.failed),
               "span_ms": round(run.span_ms(0))}
    check_capped_burst(cf, run, view, limit=PL10_LIMIT, n=PL10_N, numbers=numbers,
                       cap=f"{setting}: ≤ {PL10_LIMIT} simultaneous connections ({scope})",
                       all_answered=f"{setting}: all {PL10_N} requests succeed (queued for a slot, not refused)")
    cf.ok(f"{setting}: max {view['max_simultaneous']} simultaneous over {len(view['connections'])} connections; "
          f"{PL10_N}/{PL10_N} ok in {numbers['span_ms']} ms", expected=f"≤ {PL10_LIMIT} ({scope})", actual=numbers)
