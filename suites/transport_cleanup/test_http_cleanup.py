"""TC — HTTP servers closing what they should, and clients living with it (SPEC §5 TC-11..TC-14, TC-19, TC-20;
research/http-pools.md §3.1 Tomcat, §3.2 nginx, §6.3 T2/T4/C1, §1.5 and §2.1 client retries).

TC-11..TC-13 drive the server under test with a raw HTTP/1.1 client (a socket and http.client's
response parser) that dials the server's proxy, so the FIN the server sends is what the client
sees, timed from the end of the last response. Tomcat and nginx have no ledger: they are also
observed through the kernel socket table on their real port, where the proxy's upstream
connections end. TC-12's second half and TC-14 run real client stacks (SPEC §4.4 agents).

TC-11 is Tomcat's rule (``Http11Processor.statusDropsConnection``): close after 400, 408, 411,
413, 414, 500, 501, 503, keep after 404, 429, 502, 504. The ledger is told that list explicitly
(knob ``close_on_status``). nginx is not a Tomcat-style server — it drops the connection after its
own error pages for 400, 413, 414, 500, 501 and answers ``return 408`` by closing without a
response (``ngx_http_special_response_handler``; manifest note) — so TC-11 does not bind it:
its behaviour is measured and reported in an UNIMPLEMENTED reason, never graded FAILED.
"""

from __future__ import annotations

from fixtures.case import case
from harness.observe.sockets import SocketSampler, local_sockets, time_wait_by_side
from harness.reference.http.config import TOMCAT_CLOSE_ON_STATUS
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.http_cleanup import (
    CLIENT_RUN_MS,
    RawHttp,
    drop_run,
    fin_per_status,
    held_connections,
    proxy_address,
    server_side_states,
    status_then_watch,
    stuck_sockets,
    wait_closed,
)
from harness.scenarios.steps import Background
from harness.wait import WaitTimeout, eventually, now_ms

FIXED_CLIENT = "go-net-http"

# TC-11
TOMCAT_KEEPS = (404, 429, 502, 504)
FIN_BAND_MS = 100 + TOLERANCE_MS  # "FIN within 100 ms + tolerance"
FIN_LATE_MS = 2000  # a FIN after the band but before this: right, late (NON-STRICT); none: FAILED
# Servers known to follow another rule than Tomcat's (measured, reported, not graded).
OWN_CLOSE_RULE = {
    "nginx": "nginx drops the connection after its own error pages for 400, 413, 414, 500, 501 and closes "
             "without a response for 408 (ngx_http_special_response_handler; research/http-pools.md §3.2, "
             "harness/peers/builtin/http-server-nginx.toml)",
}

# TC-12
KEEPALIVE_TIMEOUT_MS = 1000  # T
EARLY_SLACK_MS = 100  # the client's idle clock starts after the server's; it can only read a little short
IDLE_LATE_EXTRA_MS = 2000  # after T + granularity + tolerance: late (NON-STRICT) until this much more
CLIENT_IDLE_PAST_BAND_MS = 300  # the fixed client idles this long past the band before its next request

# TC-13
CLIENT_CLOSE_BAND_MS = 1000 + TOLERANCE_MS
CLIENT_CLOSE_LATE_MS = 5000
CONNECTION_SHAPES = (("fresh, no request", 0), ("idle after 1 request", 1), ("idle after 3 requests", 3))

# TC-20
SERVER_IDLE_MS = 1000  # the ledger's keep-alive timeout: shorter than every stack's own
IDLE_PAST_CLOSE_MS = 600  # the client idles past it by this: the server's FIN has arrived
ROUNDS_AFTER_IDLE = 3


@case("TC-11", "MUST", timeout_s=60)
def test_server_closes_after_tomcat_error_statuses(cf, topology, http_server_peer):
    """HTTP: a Tomcat-style server closes the connection after 400/408/411/413/414/500/501/503 (FIN within 100 ms + tolerance) and keeps it after 404/429/502/504.

    One raw connection per status, through the proxy: a keep-alive `GET /` (200, the baseline:
    a used pooled connection), then `GET /status/<code>`. For the closing statuses the FIN must
    reach the client within 100 ms + 250 ms of the response (later but within 2 s: NON-STRICT;
    never: FAILED). For the keeping statuses the connection must stay open through that window
    and answer one more `GET /` with 200. The server-side TIME_WAIT count on the server's port
    (the active closer keeps it) is recorded.
    """
    http_server_peer_label = http_server_peer.label
    native_rule = OWN_CLOSE_RULE.get(http_server_peer.name)
    knobs = {}
    if http_server_peer.supports("close_on_status"):
        knobs["close_on_status"] = list(TOMCAT_CLOSE_ON_STATUS)  # declare Tomcat's rule
    elif not http_server_peer.has_capability("close_on_status") and native_rule is None:
        cf.unimplemented(f"{http_server_peer_label} neither maps knob close_on_status nor declares the "
                         "capability close_on_status (closes after error statuses on its own)")
    (srv,) = topology.http_servers(1, peer=http_server_peer, knobs=knobs)
    codes = [*TOMCAT_CLOSE_ON_STATUS, *TOMCAT_KEEPS]
    run = status_then_watch(cf, srv, codes, closers=TOMCAT_CLOSE_ON_STATUS, keepers=TOMCAT_KEEPS,
                            band_ms=FIN_BAND_MS, late_ms=FIN_LATE_MS)
    observed = fin_per_status(run)
    server_tw = time_wait_by_side(local_sockets(srv.host, srv.port), server_port=srv.port)["server"]
    cf.history.observe("tc11_statuses", {"observed": observed, "server-side TIME_WAIT": server_tw})

    closed = [c for c in codes if observed[str(c)]["FIN after ms"] is not None]
    kept = [c for c in codes if c not in closed]
    if native_rule is not None:
        cf.unimplemented(f"{http_server_peer_label} is not a Tomcat-style server: {native_rule}. "
                         f"Measured: closed after {closed}, kept after {kept}; "
                         f"TC-11 requires Tomcat's list {list(TOMCAT_CLOSE_ON_STATUS)}")

    wrong_status = {c: observed[str(c)]["status"] for c in codes
                    if run.answers[c].status not in (c, None)}
    cf.check(not wrong_status, expected="each /status/<code> answered with that code",
             actual=wrong_status, hint="the peer's /status path is broken")
    never = [c for c in TOMCAT_CLOSE_ON_STATUS if observed[str(c)]["FIN after ms"] is None]
    cf.check(not never,
             expected=f"a Tomcat-style server closes after {list(TOMCAT_CLOSE_ON_STATUS)}: "
                      f"FIN within {FIN_BAND_MS} ms of the response",
             actual={"no FIN within ms": FIN_LATE_MS, "kept after": never, "observed": observed})
    dropped = [c for c in TOMCAT_KEEPS if observed[str(c)]["FIN after ms"] is not None
               or observed[str(c)].get("next GET /") != 200]
    cf.check(not dropped,
             expected=f"a Tomcat-style server keeps the connection after {list(TOMCAT_KEEPS)}: no FIN within "
                      f"{FIN_BAND_MS} ms and the next GET / on it answers 200",
             actual={"dropped after": dropped, "observed": observed})
    late = {c: observed[str(c)]["FIN after ms"] for c in TOMCAT_CLOSE_ON_STATUS
            if observed[str(c)]["FIN after ms"] > FIN_BAND_MS}
    if late:
        cf.late(expected=f"FIN within {FIN_BAND_MS} ms (100 ms + {TOLERANCE_MS} ms) of the response",
                actual={"late FINs (ms)": late, "observed": observed})
    fins = [observed[str(c)]["FIN after ms"] for c in TOMCAT_CLOSE_ON_STATUS]
    cf.ok(f"closed after {list(TOMCAT_CLOSE_ON_STATUS)} (FIN after {min(fins)}–{max(fins)} ms), "
          f"kept after {list(TOMCAT_KEEPS)}; server-side TIME_WAIT {server_tw}",
          expected=f"close {list(TOMCAT_CLOSE_ON_STATUS)} within {FIN_BAND_MS} ms, keep {list(TOMCAT_KEEPS)}",
          actual={"observed": observed, "server-side TIME_WAIT": server_tw})


@case("TC-12", "MUST", timeout_s=60)
def test_server_keepalive_timeout_fin_and_client_reconnects(cf, topology, peer_registry, http_server_peer):
    """HTTP: server keep-alive timeout T → server FIN at T + its granularity; the client's next request succeeds on a new connection (no error surfaced for idempotent requests).

    T = 1000 ms (knob ``keepalive_timeout_ms``); the granularity is the peer's
    ``idle_sweep_interval_ms`` timer (Tomcat's poller: 1 s; nginx and the ledger: 0). Server
    half: a raw client through the proxy sends one `GET /` and idles; the FIN must reach it
    within [T − 100 ms, T + granularity + 250 ms] of the response (later, within 2 s more:
    NON-STRICT; never: FAILED). Client half, at the same time on its own connection, with one
    fixed stack (Go ``net/http``, which watches its idle connections and drops a closed one at
    once): `GET /`, idle past the band, `GET /` — both 200, the second on a new connection.
    """
    http_server_peer.require_knobs(["keepalive_timeout_ms"])
    client_peer = peer_registry.get("http-client", FIXED_CLIENT)
    granularity_ms = http_server_peer.timer("idle_sweep_interval_ms", default=0)
    knobs = {"keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS}
    (srv,) = topology.http_servers(1, peer=http_server_peer, knobs=knobs)
    band_high_ms = KEEPALIVE_TIMEOUT_MS + granularity_ms + TOLERANCE_MS
    band_low_ms = KEEPALIVE_TIMEOUT_MS - EARLY_SLACK_MS
    plan = {"knobs": {}, "phases": [{"op": "sequential", "n": 1, "path": "/"},
                                    {"op": "sleep", "ms": band_high_ms + CLIENT_IDLE_PAST_BAND_MS},
                                    {"op": "sequential", "n": 1, "path": "/"}]}
    host, port = proxy_address(srv)

    conn = RawHttp(host, port)
    try:
        first = conn.exchange("/")
        cf.baseline(first.status == 200 and conn.closed_ms is None,
                    expected="GET / through the proxy answers 200 on a kept connection",
                    actual={"status": first.status, "connection": first.connection})
        job = Background("tc12-client", lambda: topology.run_http_client(
            peer=client_peer, servers=[srv], plan=plan, timeout_ms=CLIENT_RUN_MS)).start()
        try:
            wait_closed([conn], until_ms=first.done_ms + band_high_ms + IDLE_LATE_EXTRA_MS,
                         done=lambda: conn.closed_ms is not None)
            server_states = server_side_states(srv)
        finally:
            run = job.result(CLIENT_RUN_MS + 2000)
    finally:
        conn.close()

    fin_ms = None if conn.closed_ms is None else round(conn.closed_ms - first.done_ms, 1)
    announced = first.headers.get("keep-alive")
    server_half = {"T ms": KEEPALIVE_TIMEOUT_MS, "granularity ms": granularity_ms, "FIN after idle ms": fin_ms,
                   "Keep-Alive header": announced, "server-side states after": server_states}
    cf.history.observe("tc12_server_half", server_half)
    cf.check(fin_ms is not None,
             expected=f"server FIN at T + granularity: within {band_high_ms} ms of idling (T={KEEPALIVE_TIMEOUT_MS})",
             actual={**server_half, "no FIN within ms": band_high_ms + IDLE_LATE_EXTRA_MS})
    cf.check(fin_ms >= band_low_ms,
             expected=f"server FIN at T + granularity: not before {band_low_ms} ms of idling (T={KEEPALIVE_TIMEOUT_MS})",
             actual=server_half)
    if srv.ledger is not None:
        raw = [c for c in srv.ledger.connections() if c["request_log"] and c["request_log"][0]["path"] == "/"]
        cf.history.observe("ledger", [{k: c[k] for k in ("id", "peer", "closed_by", "close_reason", "requests")}
                                      for c in raw])

    records = run.records
    second = run.phase(2)
    first_c = run.phase(0)
    new_connection = bool(second and first_c and (
        second[0].reused is False
        or (second[0].local_port is not None and first_c[0].local_port is not None
            and second[0].local_port != first_c[0].local_port)))
    client_half = {"requests": [{"phase": r.phase, "status": r.status, "error": r.error, "reused": r.reused,
                                 "local_port": r.local_port} for r in records]}
    client_idle_ms = band_high_ms + CLIENT_IDLE_PAST_BAND_MS
    if fin_ms > client_idle_ms:  # the server closed after the client's next request: nothing to judge there
        cf.late(expected=f"server FIN within {band_high_ms} ms of idling (T + granularity + {TOLERANCE_MS} ms)",
                actual={**server_half, **client_half,
                        "client half": f"not judged: the server closed after the client's {client_idle_ms} ms idle"})
    cf.check(all(r.ok and r.status == 200 for r in records),
             expected=f"{client_peer.name}: the request after the server's idle close succeeds (no error surfaced)",
             actual=client_half)
    cf.check(new_connection,
             expected=f"{client_peer.name}: the request after the server's idle close goes on a new connection",
             actual=client_half)
    if fin_ms > band_high_ms:
        cf.late(expected=f"server FIN within {band_high_ms} ms of idling (T + granularity + {TOLERANCE_MS} ms)",
                actual=server_half)
    cf.ok(f"FIN {fin_ms} ms after idling (T={KEEPALIVE_TIMEOUT_MS}, granularity {granularity_ms}); "
          f"{client_peer.name}'s next GET: 200 on a new connection",
          expected=f"FIN in [{band_low_ms}, {band_high_ms}] ms; next request 200 on a new connection",
          actual={**server_half, **client_half})


@case("TC-13", "MUST", timeout_s=60)
def test_server_closes_its_side_after_the_client(cf, topology, http_server_peer):
    """HTTP: after the client closes, the server closes its side within 1 s — no server-side CLOSE_WAIT left (the 60 s CLOSE_WAIT in the seed's Tomcat story is what this catches).

    Three raw connections through the proxy — one that never sent a request, one idle after one
    request, one idle after three — are held open by the server (baseline: three server-side
    ESTABLISHED sockets on its real port), then the client closes all three at once. Within
    1 s + 250 ms no server-side socket on that port may be left in CLOSE_WAIT or ESTABLISHED
    (later, within 5 s: NON-STRICT; never: FAILED with the leaking sockets and their owner).
    """
    (srv,) = topology.http_servers(1, peer=http_server_peer)
    conns = held_connections(cf, srv, CONNECTION_SHAPES)

    def lingering() -> dict[str, int]:
        return {s: n for s, n in server_side_states(srv).items() if s in ("CLOSE_WAIT", "ESTABLISHED")}

    with SocketSampler(cf.history, [srv.port], interval_ms=20, name="server_port", hosts=[srv.host]) as sampler:
        closed_at = now_ms()
        for conn in conns:
            conn.close()
        cf.history.observe("client_closed", {"connections": len(conns)})
        try:
            waited = eventually(lingering, timeout_ms=CLIENT_CLOSE_LATE_MS,
                                what=f"no server-side CLOSE_WAIT/ESTABLISHED on :{srv.port}",
                                accept=lambda s: not s, interval_ms=20)
            cleared_ms: float | None = waited.at_mono_ms - closed_at
            left: dict[str, int] = {}
        except WaitTimeout as exc:
            cleared_ms, left = None, exc.last or {}
    max_close_wait = sampler.max_count(srv.port, "CLOSE_WAIT", "server")

    observed = {"connections": [s for s, _ in CONNECTION_SHAPES], "cleared after ms": cleared_ms and round(cleared_ms),
                "max server-side CLOSE_WAIT seen": max_close_wait, "server-side states now": server_side_states(srv)}
    if cleared_ms is None:
        cf.fail(expected=f"after the client closes, the server closes its side within {CLIENT_CLOSE_BAND_MS} ms: "
                         "no server-side CLOSE_WAIT left",
                actual={**observed, "left": left, "no clean-up within ms": CLIENT_CLOSE_LATE_MS, **stuck_sockets(srv)})
    if cleared_ms > CLIENT_CLOSE_BAND_MS:
        cf.late(expected=f"the server closes its side within {CLIENT_CLOSE_BAND_MS} ms (1 s + {TOLERANCE_MS} ms)",
                actual=observed)
    cf.ok(f"server side clean {cleared_ms:.0f} ms after the client closed {len(conns)} connections "
          f"(CLOSE_WAIT seen at most {max_close_wait})",
          expected=f"no server-side CLOSE_WAIT after {CLIENT_CLOSE_BAND_MS} ms", actual=observed)


@case("TC-14", "INFO", timeout_s=90)
def test_client_retry_of_request_dropped_on_reused_connection(cf, topology, peer_registry, http_client_peer):
    """HTTP: a request dropped on a reused connection → record retry behaviour per client (Go retries GET not POST; JDK retries POST too: duplicate POST).

    Against the ledger, two runs of the client under test, each two sequential requests to
    ``/drop-nth?n=2`` (the ledger reads the second request on a connection and closes without
    answering): once GET, once POST with a body. Recorded per method: what the application saw
    for the dropped request, how many times the server saw the request (3 = re-sent once; a
    re-sent POST is a duplicate), and on how many connections.
    """
    server_peer = peer_registry.get("http-server", "ledger")
    (srv,) = topology.http_servers(1, peer=server_peer)
    observed = {method: drop_run(cf, topology, http_client_peer, srv, method) for method in ("GET", "POST")}

    def say(method: str) -> str:
        o = observed[method]
        if not o["dropped on a reused connection"]:
            return f"{method}: the 2nd request did not go on the reused connection (no drop)"
        resent = o["re-sent by the client"]
        how = (f"re-sent {resent}× on a new connection" if resent else "not re-sent")
        dup = " (duplicate POST)" if method == "POST" and resent else ""
        return f"{method}: {how}{dup}, application saw {o['client outcome of the dropped request']}"

    detail = f"{http_client_peer.name}: {say('GET')}; {say('POST')}"
    cf.ok(detail, expected="recorded, no requirement (Go: GET retried, POST not; JDK: both, POST duplicated)",
          actual=observed)
    cf.informational(detail, **{m: o for m, o in observed.items()})


@case("TC-19", "SHOULD", timeout_s=90)
def test_client_does_not_resend_a_post_the_server_read(cf, topology, peer_registry, http_client_peer):
    """HTTP: a POST whose reused connection is closed unanswered after the server read it is not re-sent silently: the server sees it once and the application gets the error (RFC 9110 §9.2.2: a user agent SHOULD NOT retry a non-idempotent request automatically).

    The same run as TC-14's POST half: against the ledger, two sequential POSTs with a body to
    ``/drop-nth?n=2`` (the ledger reads the second request on a connection and closes without
    answering). The ledger counts how many times it read the POST; a re-sent POST lands on a
    fresh connection, where it is the first request and is answered, so the application sees a
    success for a request the server received twice (the duplicate the stale-connection reports
    are about: square/okhttp#8587, JDK sun.net.http.retryPost). A client that did not put the
    second POST on the reused connection cannot be judged (UNIMPLEMENTED, with what it did).
    """
    server_peer = peer_registry.get("http-server", "ledger")
    (srv,) = topology.http_servers(1, peer=server_peer)
    observed = drop_run(cf, topology, http_client_peer, srv, "POST")
    if not observed["dropped on a reused connection"]:
        cf.unimplemented(f"{http_client_peer.label} did not send its 2nd POST on the reused connection, so no POST "
                         f"was dropped after the server read it: {observed}")
    resent = observed["re-sent by the client"]
    cf.check(resent == 0, expected="the dropped POST read once by the server (2 POSTs in all) and its error given to "
                                   "the application (RFC 9110 §9.2.2: SHOULD NOT retry a non-idempotent request)",
             actual={"re-sent silently": f"{resent}×: a duplicate POST", **observed})
    cf.ok(f"POST not re-sent; the application saw {observed['client outcome of the dropped request']}",
          expected="the dropped POST read once by the server", actual=observed)


@case("TC-20", "MUST", timeout_s=90)
def test_client_outlives_a_server_idle_timeout_shorter_than_its_own(cf, topology, peer_registry, http_client_peer):
    """HTTP: a server whose keep-alive timeout is shorter than the client's own idle timeout closes each idle connection first → every GET after such an idle succeeds with no error surfaced, round after round: a connection the server already closed is never given to the application (nginx 75 s, ALB 60 s, Node 5 s below Go's and reqwest's 90 s, OkHttp's 5 min).

    The ledger closes idle connections after 1 s; the client under test (its own idle timeout
    left at its default, which must be longer) sends a GET, then three times idles 1.6 s (the
    server's FIN has arrived) and sends another GET. Every request must succeed; the ledger must
    show idle connections closed by the server (the baseline: else the scenario never happened).
    Recorded per round: whether the GET went on a new connection.
    """
    own_ms = http_client_peer.timers.get("idle_timeout_ms")
    if own_ms is not None and own_ms <= SERVER_IDLE_MS + IDLE_PAST_CLOSE_MS:
        cf.unimplemented(f"{http_client_peer.label}'s own idle timeout ({own_ms} ms) is not longer than the "
                         f"server's {SERVER_IDLE_MS} ms + {IDLE_PAST_CLOSE_MS} ms idle: it would close first")
    (srv,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"),
                                   knobs={"keepalive_timeout_ms": SERVER_IDLE_MS})
    get = {"op": "sequential", "n": 1, "path": "/?tc20=after-idle"}
    phases = [get]
    for _ in range(ROUNDS_AFTER_IDLE):
        phases += [{"op": "sleep", "ms": SERVER_IDLE_MS + IDLE_PAST_CLOSE_MS}, get]
    run = topology.run_http_client(peer=http_client_peer, servers=[srv], plan={"knobs": {}, "phases": phases},
                                   timeout_ms=CLIENT_RUN_MS)
    view = srv.ledger.ledger()
    conns = sorted(view["connections"], key=lambda c: c["opened_ms"])
    cf.history.observe("ledger", [{k: c[k] for k in ("id", "opened_ms", "closed_ms", "closed_by", "requests")}
                                  for c in conns])
    gets = [run.phase(i)[0] for i in range(0, len(phases), 2) if run.phase(i)]
    rounds = [{"round": n, "status": r.status, "error": r.error, "reused": r.reused} for n, r in enumerate(gets)]
    closed_first = sum(1 for c in conns if c["closed_by"] == "server-idle")
    cf.baseline(closed_first >= 1,
                expected=f"the ledger closes idle connections after {SERVER_IDLE_MS} ms, before the next GET",
                actual={"server idle closes": closed_first, "connections": len(conns)})
    failed = [r for r in rounds if r["error"] is not None or r["status"] != 200]
    cf.check(not failed and len(gets) == ROUNDS_AFTER_IDLE + 1,
             expected=f"every GET after a {SERVER_IDLE_MS + IDLE_PAST_CLOSE_MS} ms idle succeeds (the server closed "
                      "the idle connection first): no error surfaced",
             actual={"rounds": rounds, "server idle closes": closed_first, "connections": len(conns)})
    cf.ok(f"{len(gets)} GETs, each after the server's idle close, all 200 on {len(conns)} connections",
          expected="no error surfaced after the server's idle close", actual={"rounds": rounds})
