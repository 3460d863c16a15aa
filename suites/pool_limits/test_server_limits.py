"""PL — the server's own limits (SPEC §5 PL-12, PL-13; research/http-pools.md §3.1 and §6.3 T5,
research/nacos-protocol.md §2.4–§2.5).

PL-12 is the seed's Tomcat story: an HTTP server with ``max_connections=1`` and two clients.
Tomcat's acceptor (``LimitLatch``) and the ledger's slots do not refuse the connection over the
limit: it waits in the accept queue (or accepted, unserved) until the slot frees. The clients are
one fixed stack (Go ``net/http``: it reports the connection each request used and has no default
response timeout, so a waiting request simply waits); the server is the peer under test.

PL-13 churns raw Nacos transports that all report one client IP against a server whose per-IP
limit for that IP is n (the 2.1.x ``countLimitPerClientIp`` rule): setups admitted up to n,
rejected beyond, transports closed at random — some before their setup is even processed — for
50 cycles, while a sampler reads ``current`` and the per-IP counter (``clientIpCounts``). A
counter read is trusted only when ``current`` and the ``events`` log did not move around it, so a
mismatch is drift, not a race of the two reads. Afterwards every registration and count must be
gone, and the limit must still admit exactly n: a counter that drifted up admits fewer, one that
drifted down admits more — visible even on a server without the counter extension.
"""

from __future__ import annotations

import random

from fixtures.case import case
from harness.scenarios.server_limits import (
    REQUESTS,
    SETTLE_MS,
    CountWatch,
    churn,
    fresh_admissions,
    judge_one_at_a_time,
    two_clients_one_slot,
)

# -- PL-12 ---------------------------------------------------------------------------------------
FIXED_CLIENT = "go-net-http"
# Servers whose manifest maps no max_connections, and why no knob could (shown in UNIMPLEMENTED).
NO_QUEUEING_LIMIT = {
    "nginx": "nginx has no limit that queues: worker_connections counts every connection of a worker "
             "(the listening socket and upstreams too), and at the limit ngx_event_accept() closes the "
             "socket it just accepted once ngx_get_connection() fails (after ngx_drain_connections() "
             "reclaimed idle keep-alive ones; src/event/ngx_event_accept.c, src/core/ngx_connection.c) — "
             "it refuses the second client instead of making it wait",
}


@case("PL-12", "MUST", timeout_s=60)
def test_server_max_connections_serves_one_connection_at_a_time(cf, topology, peer_registry, http_server_peer):
    """Server `max_connections=1` (the seed's Tomcat story): two clients → requests are served strictly one connection at a time; the second waits, is not refused, and completes.

    Client A (two sequential 300 ms requests, then 800 ms alive with its connection idle in the
    pool) starts first; once the server holds A's connection, client B (two sequential 300 ms
    requests) starts. B's first response may only end after A's connection is released (the
    ledger's close time; for servers without a ledger A's exit, which is at least 800 ms after A's
    last response) plus one request's 300 ms, minus the tolerance; every request of both clients
    must succeed. The ledger also reports how many connections held a serving slot at once (≤ 1).
    Tomcat accepts one connection beyond the limit without serving it (research §6.3 T5): the
    server-side socket count is recorded, not judged.
    """
    if not http_server_peer.supports("max_connections"):
        why = NO_QUEUEING_LIMIT.get(http_server_peer.name) or http_server_peer.lacks.get(
            "max_connections", "the implementation's setting is not mapped")
        cf.unimplemented(f"{http_server_peer.label} maps no knob max_connections: {why}")
    client_peer = peer_registry.get("http-client", FIXED_CLIENT)
    (srv,) = topology.http_servers(1, peer=http_server_peer, knobs={"max_connections": 1})
    runs = two_clients_one_slot(cf, topology, client_peer, srv)
    timings = judge_one_at_a_time(cf, srv, runs)
    cf.ok(f"B waited {timings['B first request waited ms']} ms for A's slot, then {REQUESTS} × 200; "
          f"server-side connections at once ≤ {timings['max server-side ESTABLISHED on the server port']}",
          expected="one connection served at a time; the second waits and completes", actual=timings)


# -- PL-13 ---------------------------------------------------------------------------------------
LIMIT = 3  # n
CHURN_IP = "10.0.13.13"


@case("PL-13", "MUST", timeout_s=90)
def test_per_client_ip_limit_holds_under_churn(cf, topology, nacos_server_peer):
    """Server per-client-IP limit (Nacos rule) holds under churn: 50 connect/disconnect cycles never leave the count above n or the counter drifting from `current`.

    n = 3 for one reported IP (knob ``count_limit_per_client_ip``). Each cycle opens a raw
    transport reporting that IP and sends ServerCheck + ConnectionSetup; then, by the run's seed,
    closes it at once (racing its setup), or waits for its admission and keeps it, closing a
    random older one when more than n + 2 are open. A sampler reads ``current`` and
    ``clientIpCounts`` every 15 ms: never above n; a counter read bracketed by two equal
    ``current`` reads and an unchanged ``events`` log must equal the IP's tally. Then all close:
    within 2 s + tolerance the IP is gone from both. Last, n + 1 fresh setups: exactly n admitted.
    """
    nacos_server_peer.require_knobs(["count_limit_per_client_ip"])
    nacos_server_peer.require_capabilities(["limits"])
    has_counts = nacos_server_peer.has_capability("client_ip_counts")
    has_events = nacos_server_peer.has_capability("events")
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"count_limit_per_client_ip": {CHURN_IP: LIMIT}})
    watch = CountWatch(CHURN_IP, LIMIT, has_counts, has_events)

    churned = churn(cf, server, watch, random.Random(cf.seed))
    left, cycles, churn_ms, tally = churned.left, churned.cycles, churned.churn_ms, churned.tally
    summary = {**watch.summary(), "cycles": cycles, "churn ms": round(churn_ms), "setups": tally}
    cf.history.observe("churn_summary", summary)
    cf.check(not watch.drift,
             expected="the per-IP counter equals the IP's registrations in current at every trusted read "
                      "(nothing moved around it)",
             actual={**summary, "first drifting samples": watch.drift[:5]})
    cf.check(not watch.over,
             expected=f"{CHURN_IP} never above n={LIMIT} in current or in the per-IP counter",
             actual={**summary, "first samples above n": watch.over[:5]})
    if left is not None:
        drifted = isinstance(left, dict) and not left.get("ids") and left.get("counter")
        cf.fail(expected=(f"the per-IP counter equals the IP's registrations in current once all its transports "
                          f"closed: 0 within {SETTLE_MS} ms") if drifted else
                (f"every registration of {CHURN_IP} gone from current (and the counter at 0) within "
                 f"{SETTLE_MS} ms of its transports closing"),
                actual={**summary, "left": left})
    if tally["registered"] <= LIMIT or tally["reset"] == 0:
        cf.history.note(f"churn admitted {tally['registered']} and reset {tally['reset']}: the limit was barely pressed")

    # The limit still admits exactly n: a drifted counter admits fewer (up) or more (down).
    outcomes, final = fresh_admissions(cf, server, watch, LIMIT + 1)
    cf.check(outcomes == ["registered"] * LIMIT + ["reset"],
             expected=f"after the churn the limit still admits exactly n={LIMIT} of {LIMIT + 1} fresh setups "
                      "(the per-IP counter did not drift from current)",
             actual={"outcomes in order": outcomes, "sample": final, **summary})
    cf.ok(f"{cycles} cycles in {churn_ms:.0f} ms ({tally}); {CHURN_IP} ≤ {LIMIT} over {watch.samples} samples, "
          f"counter == current at {watch.trusted} trusted reads; afterwards {LIMIT} of {LIMIT + 1} admitted",
          expected=f"never above {LIMIT}; no drift; clean after close; exactly {LIMIT} admitted again",
          actual={**summary, "fresh outcomes": outcomes})
