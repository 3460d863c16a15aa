"""PL — idle timeouts: when a client closes the connections it keeps idle (SPEC §5 PL-04, PL-08, PL-17;
research/http-pools.md §1.4, §2.1, §2.2, §4.3, §4.4, §6.1 G4, §6.2 J3/J5/J12, §6.4 X3/A2, §7
"Idle reaper laziness").

Each case runs one http-client agent against ``ledger`` servers behind their proxies and judges
afterwards, from the ledger (who closed each connection and when, which requests it served) and
the agent's records (epoch ms on the same clock). A connection's idle time starts when the
client got the last response on it (the burst's records' ``end_ms``).

Idle reapers differ per stack, so PL-04's band is per stack (``IDLE_REAPERS``, from the research
note): Go arms a timer per connection (on time); the JDK's ``HttpURLConnection`` sweeps every
5 s (T … T + 5 s); ``java.net.http`` truncates "now" to whole seconds when it files a connection
for expiry and purges only when its selector thread wakes, which with nothing else to do sleeps
3 s (T − 1 s … T + 3 s; until then the expired connection is still handed out); aiohttp's cleanup re-arms every T (T … 2T); httpx has no reaper at all
and closes an expired connection when the pool is next used, so its case shows what the next
request does. Peers outside the table get their band from their manifest's ``[timers]``
(``idle_sweep_interval_ms``: late by up to that; ``idle_close_early_ms``: early by up to that).
"""

from __future__ import annotations

from fixtures.case import case
from harness.errors import SetupError
from harness.scenarios import keepalive_header
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS, TOLERANCE_MS
from harness.scenarios.idle_timeouts import WINDOW_MARGIN_MS, idle_reaper
from harness.scenarios.pools import (
    LEDGER_QUIET_KEEPALIVE_MS,
    connection_paths,
    require_baseline,
    serving,
    stack_of,
)

BURST_N = 2  # within every stack's idle cap (Go 2, JDK 5, httpx 20; aiohttp none)
BURST_PATH = "/sleep?ms=200"  # both requests in flight together: two connections


# -- PL-04 -----------------------------------------------------------------------------------------
PL04_TIMEOUT_MS = 1000
PL04_NEXT_PATH = "/?pl04=next-use"


@case("PL-04", "MUST", timeout_s=90)
def test_idle_timeout_closes_idle_connections(cf, topology, peer_registry, http_client_peer):
    """`idle_timeout_ms=1000` → idle connections closed by the client at 1 s + the stack's reaper granularity (JDK: up to +5 s sweep; aiohttp: between T and 2T; httpx: lazily, at next use — expectation per stack from research).

    Two concurrent requests open two connections; the client then stays idle for a window that
    outlasts its band (T + late + 250 ms + 750 ms; httpx: 2T), then sends one more request. Each
    of the two connections must be closed by the client within the band (± 250 ms) — for httpx
    not before T and at the latest with the next request — and the next request must succeed on
    a new connection. A connection still open when the next request came (or reused by it) means
    the timeout was ignored: FAILED. Closed by the client but outside the band: NON-STRICT.
    Stacks without the knob (urllib3, requests: no idle timeout at all) are UNIMPLEMENTED.
    """
    timeout_ms = PL04_TIMEOUT_MS
    http_client_peer.require_knobs(["idle_timeout_ms"])
    reaper = idle_reaper(http_client_peer, timeout_ms)
    window_ms = reaper.window_ms(timeout_ms)
    (server,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"),
                                      knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS})
    plan = {"knobs": {"idle_timeout_ms": timeout_ms},
            "phases": [{"op": "burst", "n": BURST_N, "path": BURST_PATH},
                       {"op": "sleep", "ms": window_ms},
                       {"op": "sequential", "n": 1, "path": PL04_NEXT_PATH},
                       {"op": "sleep", "ms": 300}]}
    cf.history.note(f"reaper model: {reaper.how} ({reaper.source}); idle window {window_ms} ms")
    run = topology.run_http_client(peer=http_client_peer, servers=[server], plan=plan,
                                   timeout_ms=window_ms + AGENT_RUN_SLACK_MS)
    require_baseline(run, phase=0, what=f"the {BURST_N}-wide burst")
    view = server.ledger.ledger()
    cf.history.observe("ledger", [connection_paths(c) for c in view["connections"]])

    idle_from = max(r.end_ms for r in run.phase(0))
    nxt = run.phase(2)[0]
    earliest, latest = reaper.band(timeout_ms)
    if latest is None:  # lazy: at the latest when the next request comes
        latest = round(nxt.start_ms - idle_from)
    burst_conns = serving(view, BURST_PATH)
    if not burst_conns:
        raise SetupError(f"the ledger saw no connection serving {BURST_PATH}: is the proxy in the path?")
    rows = []
    for conn in burst_conns:
        closed = conn["closed_ms"]
        rows.append({"conn": conn["id"], "closed_by": conn["closed_by"],
                     "closed_after_idle_ms": None if closed is None else round(closed - idle_from),
                     "reused_by_next_request": any(r["path"] == PL04_NEXT_PATH for r in conn["request_log"])})
    numbers = {"idle_timeout_ms": timeout_ms, "reaper": reaper.how,
               "band_ms": [earliest, latest], "tolerance_ms": TOLERANCE_MS,
               "next_request_after_idle_ms": round(nxt.start_ms - idle_from),
               "next_request": {"status": nxt.status, "error": nxt.error, "reused": nxt.reused},
               "connections": rows}
    cf.history.observe("idle_closes", numbers)
    at_ms = cf.history.relative_ms_from_wall(idle_from)

    reused = [r for r in rows if r["reused_by_next_request"]]
    cf.check(not reused, at_ms=at_ms,
             expected=f"no connection is reused after {numbers['next_request_after_idle_ms']} ms idle "
                      f"(idle timeout {timeout_ms} ms)",
             actual=numbers, hint="the idle timeout was ignored: the expired connection served the next request")
    ignored = [r for r in rows if r["closed_by"] != "client" or r["closed_after_idle_ms"] is None
               or r["closed_after_idle_ms"] > numbers["next_request_after_idle_ms"] + TOLERANCE_MS]
    cf.check(not ignored, at_ms=at_ms,
             expected=f"each idle connection closed by the client within [{earliest}, {latest}] ms "
                      f"(± {TOLERANCE_MS}) after idle, before the next request "
                      f"({numbers['next_request_after_idle_ms']} ms) at the latest",
             actual=numbers, hint="still open when the next request came: the idle timeout was ignored")
    cf.check(nxt.ok and nxt.reused is not True, at_ms=cf.history.relative_ms_from_wall(nxt.start_ms),
             expected="the next request succeeds on a new connection",
             actual=numbers)
    outside = [r for r in rows if not earliest - TOLERANCE_MS <= r["closed_after_idle_ms"] <= latest + TOLERANCE_MS]
    if outside:
        cf.late(expected=f"closed by the client {earliest}..{latest} ms after idle (± {TOLERANCE_MS} ms): "
                         f"{reaper.how}", actual=numbers, at_ms=at_ms)
    delays = ", ".join(f"{r['closed_after_idle_ms']}" for r in rows)
    cf.ok(f"{len(rows)} idle connection(s) closed by the client {delays} ms after idle "
          f"(band {earliest}..{latest} ms: {reaper.how}); next request {nxt.status} on a new connection",
          expected=f"closed by the client in [{earliest}, {latest}] ± {TOLERANCE_MS} ms", actual=numbers)


# -- PL-08 -----------------------------------------------------------------------------------------
PL08_TIMEOUT_S = 1  # Keep-Alive: timeout=1
PL08_SWEEP_MS = 5000  # "closes within N … N+5 s": the JDK's 5 s Keep-Alive-Timer sweep
PL08_MAX_N = 3  # sequential requests against the max=1 server
PL08_MAX_PATH = "/?pl08=max-1"
# Stacks that act on the server's Keep-Alive response header (research §2.1, §3.1); a user
# manifest says so with capability "keepalive_header".
KEEPALIVE_HEADER_STACKS = ("jdk-httpurlconnection",)
KEEPALIVE_HEADER_CAPABILITY = "keepalive_header"
NOT_PARSED = {
    "jdk-httpclient": "java.net.http ignores the server's Keep-Alive timeout/max: closeOrReturnToCache checks only "
                      "the response's Connection: close (research §2.2)",
    "go-net-http": "net/http does not parse the Keep-Alive response header (research §3.1)",
    "urllib3": "urllib3 does not parse the Keep-Alive response header (research §3.1)",
    "requests": "requests sends Connection: keep-alive but ignores the Keep-Alive response header (research §3.1)",
    "httpx": "httpx does not parse the Keep-Alive response header (research §3.1)",
    "aiohttp": "aiohttp does not parse the Keep-Alive response header (research §3.1)",
}


@case("PL-08", "MUST", timeout_s=90)
def test_jdk_honours_keepalive_header(cf, topology, peer_registry, http_client_peer):
    """JDK honours `Keep-Alive: timeout=N` (closes within N … N+5 s) and `max=1` (closes after each response).

    Two ledgers, ``keepalive_header`` ``timeout=1`` and ``timeout=5, max=1`` (the ledger sends it
    with ``Connection: keep-alive`` because the JDK asks for keep-alive). Against the first, two
    concurrent requests, then idle: each connection closed by the client 1 … 6 s after idle
    (± 250 ms; research §6.2 J3: ≈ 4.8 s, the 5 s sweep). Against the second, three requests in
    a row: three connections, one request each, each closed by the client right after its
    response (within 250 ms; J5). Applies to the JDK's ``HttpURLConnection`` and to peers that
    declare capability ``keepalive_header``; ``java.net.http`` and the other stacks ignore the
    header (UNIMPLEMENTED, with the research's reason).
    """
    stack = stack_of(http_client_peer) or http_client_peer.name
    if stack not in KEEPALIVE_HEADER_STACKS and not http_client_peer.has_capability(KEEPALIVE_HEADER_CAPABILITY):
        cf.unimplemented(NOT_PARSED.get(stack, f"{http_client_peer.label} does not declare capability "
                                               f"'{KEEPALIVE_HEADER_CAPABILITY}' (acting on Keep-Alive: timeout/max)"))
    ledger = peer_registry.get("http-server", "ledger")
    (timeout_srv,) = topology.http_servers(1, peer=ledger, knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS,
                                                                  "keepalive_header": f"timeout={PL08_TIMEOUT_S}"})
    (max_srv,) = topology.http_servers(1, peer=ledger, knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS,
                                                              "keepalive_header": "timeout=5, max=1"})
    timeout_ms = PL08_TIMEOUT_S * 1000
    window_ms = timeout_ms + PL08_SWEEP_MS + TOLERANCE_MS + WINDOW_MARGIN_MS
    plan = {"knobs": {},
            "phases": [{"op": "burst", "n": BURST_N, "path": BURST_PATH, "target": 0},
                       {"op": "sequential", "n": PL08_MAX_N, "path": PL08_MAX_PATH, "target": 1},
                       {"op": "sleep", "ms": window_ms}]}
    run = topology.run_http_client(peer=http_client_peer, servers=[timeout_srv, max_srv], plan=plan,
                                   timeout_ms=window_ms + AGENT_RUN_SLACK_MS)
    require_baseline(run, phase=0, what=f"the {BURST_N}-wide burst (timeout={PL08_TIMEOUT_S} server)")
    require_baseline(run, phase=1, what=f"the {PL08_MAX_N} requests to the max=1 server")
    timeout_view, max_view = timeout_srv.ledger.ledger(), max_srv.ledger.ledger()
    cf.history.observe("ledger_timeout", [connection_paths(c) for c in timeout_view["connections"]])
    cf.history.observe("ledger_max", [connection_paths(c) for c in max_view["connections"]])

    # timeout=N: closed by the client within N … N + 5 s of going idle.
    idle_from = max(r.end_ms for r in run.phase(0))
    window_end = idle_from + window_ms
    earliest, latest = timeout_ms, timeout_ms + PL08_SWEEP_MS
    rows = [{"conn": c["id"], "closed_by": c["closed_by"],
             "closed_after_idle_ms": None if c["closed_ms"] is None else round(c["closed_ms"] - idle_from)}
            for c in serving(timeout_view, BURST_PATH)]
    timeout_numbers = {"header": f"Keep-Alive: timeout={PL08_TIMEOUT_S}", "band_ms": [earliest, latest],
                       "observed_for_ms": window_ms, "connections": rows}
    cf.history.observe("timeout_closes", timeout_numbers)
    at_ms = cf.history.relative_ms_from_wall(idle_from)
    kept = [r for r in rows if r["closed_by"] != "client" or r["closed_after_idle_ms"] is None
            or idle_from + r["closed_after_idle_ms"] > window_end - WINDOW_MARGIN_MS / 2]
    cf.check(rows and not kept, at_ms=at_ms,
             expected=f"Keep-Alive: timeout={PL08_TIMEOUT_S}: each idle connection closed by the client within "
                      f"{earliest} … {latest} ms (± {TOLERANCE_MS}) of going idle",
             actual=timeout_numbers, hint="still open at the end of the window: the timeout was not honoured")

    # max=1: one request per connection, each closed by the client right after its response.
    max_conns = serving(max_view, PL08_MAX_PATH)
    max_rows = []
    for conn in max_conns:
        last = conn["request_log"][-1]
        max_rows.append({"conn": conn["id"], "requests": conn["requests"], "closed_by": conn["closed_by"],
                         "closed_after_response_ms": None if conn["closed_ms"] is None
                         else round(conn["closed_ms"] - last["t_ms"])})
    max_numbers = {"header": "Keep-Alive: timeout=5, max=1", "requests": PL08_MAX_N, "connections": max_rows}
    cf.history.observe("max_closes", max_numbers)
    first_ms = cf.history.relative_ms_from_wall(min(r.start_ms for r in run.phase(1)))
    cf.check(len(max_rows) == PL08_MAX_N and all(r["requests"] == 1 for r in max_rows), at_ms=first_ms,
             expected=f"Keep-Alive: max=1: {PL08_MAX_N} requests on {PL08_MAX_N} connections, one request each",
             actual=max_numbers, hint="a connection served more than one request: max=1 was not honoured")
    cf.check(all(r["closed_by"] == "client" for r in max_rows), at_ms=first_ms,
             expected="Keep-Alive: max=1: each connection closed by the client after its response",
             actual=max_numbers)

    late = [r for r in rows if not earliest - TOLERANCE_MS <= r["closed_after_idle_ms"] <= latest + TOLERANCE_MS]
    late += [r for r in max_rows if r["closed_after_response_ms"] > TOLERANCE_MS]
    numbers = {"timeout": timeout_numbers, "max": max_numbers}
    if late:
        cf.late(expected=f"timeout={PL08_TIMEOUT_S}: closed {earliest} … {latest} ms after idle; max=1: closed "
                         f"within {TOLERANCE_MS} ms of the response", actual=numbers, at_ms=at_ms)
    delays = ", ".join(str(r["closed_after_idle_ms"]) for r in rows)
    after = ", ".join(str(r["closed_after_response_ms"]) for r in max_rows)
    cf.ok(f"timeout={PL08_TIMEOUT_S}: {len(rows)} connection(s) closed by the client {delays} ms after idle "
          f"(band {earliest}..{latest}); max=1: {len(max_rows)} connections, each closed {after} ms after its response",
          expected=f"timeout: closed in [{earliest}, {latest}] ± {TOLERANCE_MS} ms; max=1: one request per connection",
          actual=numbers)


# -- PL-17 -----------------------------------------------------------------------------------------
PL17_TIMEOUT_S = 2  # Keep-Alive: timeout=2 (Node keeps a socket N - 1 s: 1 s here, not 0)
PL17_WINDOW_MS = PL17_TIMEOUT_S * 1000 + PL08_SWEEP_MS + TOLERANCE_MS + WINDOW_MARGIN_MS  # the JDK's sweep fits


@case("PL-17", "INFO", timeout_s=90)
def test_keepalive_timeout_header_per_stack(cf, topology, peer_registry, http_client_peer):
    """HTTP: a server's `Keep-Alive: timeout=N` → record per stack whether the client acts on it (closes the idle connection near N, or at its next use) or ignores it (keeps it past N + 5 s and reuses it), against the same run without the header.

    Two runs of the same plan — one GET, idle N + 5 s + margin (the JDK's sweep), one GET —
    against a ledger that keeps idle connections 30 s itself, so only the client can close early:
    once announcing ``Keep-Alive: timeout=2``, once with no header. What the header changed is
    the record (OkHttp: square/okhttp#269, hyper#2720 say ignored; the JDK's HttpURLConnection
    and Node's http.Agent read it). A stack whose own idle handling closes the connection the same
    way without the header is recorded as "cannot tell".
    """
    ledger = peer_registry.get("http-server", "ledger")
    with_header = keepalive_header.idle_then_next(topology, ledger, http_client_peer, f"timeout={PL17_TIMEOUT_S}",
                                                  window_ms=PL17_WINDOW_MS)
    without = keepalive_header.idle_then_next(topology, ledger, http_client_peer, None, window_ms=PL17_WINDOW_MS)
    observed = {"with Keep-Alive: timeout=2": with_header, "without the header": without,
                "idle window ms": PL17_WINDOW_MS}
    cf.history.observe("pl17", observed)
    detail = f"Keep-Alive: timeout={PL17_TIMEOUT_S}: {keepalive_header.effect(with_header, without)}"
    cf.ok(detail, expected="recorded, no requirement", actual=observed)
    cf.informational(detail, **observed)
