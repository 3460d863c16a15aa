"""PL — one host dead, the others untouched: a pool's connects to a host that never answers must
not hold up its connections to any other host (docs/catalogue.md PL-19; #17's SYN-drop case;
harness/scenarios/host_isolation.py).

A dead host that drops SYNs (a crashed VM behind a firewall that drops, a black-holed route) is
the one failure Toxiproxy cannot make: its proxy accepts every connect. So both ledgers run in
network namespaces of their own and the client dials their addresses directly; iptables in the
dead one's namespace drops its SYNs. What the case guards against is the pool that queues every
dial behind one lock, or counts a stuck connect against a limit the other host shares: the
application's requests to a healthy host then wait for the kernel's SYN retries to a dead one.
"""

from __future__ import annotations

from fixtures.case import case
from harness.errors import SetupError
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.host_isolation import REQUEST_TIMEOUT_MS, SYN_DROP_MAX_MS, spread_over_a_dead_host


@case("PL-19", "MUST", timeout_s=120)
def test_a_host_that_drops_syns_does_not_hold_up_the_others(cf, topology, peer_registry, http_client_peer):
    """HTTP: one of two hosts drops every SYN (a connect never answered) → requests to the other host, issued together with requests to the dead one, complete as if it were alone (its /sleep + the client's first-request time, capped at half the timeout, + tolerance), and every request to the dead host fails by a timeout while the SYNs are still dropped, not when the network comes back.

    Procedure: two ledgers, each in its own network namespace, dialled directly (Toxiproxy would
    accept every SYN); iptables in the dead host's namespace drops SYNs to its port before the
    client starts, for at most 15 s. The plan: one GET to the live host, then 8 requests released
    together (even ones to the dead host, odd ones to the live host, `/sleep?ms=300`,
    `timeout_ms` 2000), then 4 GETs to the live host together, then 3 s idle while the kernel's
    table is watched for connects still in SYN_SENT towards the dead host. Timing band
    (NON-STRICT past it): each dead-host request and its connect given up at the request's 2 s
    timeout + tolerance (a library that retries the connect, or keeps dialling after the request
    gave up, is bounded but late).
    """
    ledger = peer_registry.get("http-server", "ledger")
    dead, alive = topology.http_servers(2, peer=ledger, namespaced=True)
    host = spread_over_a_dead_host(cf, topology, http_client_peer, dead, alive)
    observed = host.observed()
    if not host.dropped_syns:
        raise SetupError(f"PL-19: the dead host's SYN drop dropped nothing: the client never dialled it; {observed}")
    at = cf.history.relative_ms_from_wall(host.run.phase(1)[0].start_ms)

    live, live_bound = host.spread(1), host.live_bound_ms
    slow_live = [r for r in live if not r.ok or r.duration_ms > live_bound]
    cf.check(not slow_live, expected=f"each request to the live host answered within {live_bound:.0f} ms while the "
                                     "dead host's connects hang (as if the dead host did not exist)",
             actual=observed, at_ms=at,
             hint="the pool queued the live host's connects behind the dead host's, or counted them against one limit")

    dead = host.spread(0)
    waited_on_the_network = [r for r in dead if r.ok or r.end_ms >= host.lifted_wall_ms]
    cf.check(not waited_on_the_network,
             expected=f"each request to the dead host failed, by a timeout, while the SYNs were still dropped "
                      f"(at the latest {SYN_DROP_MAX_MS} ms)",
             actual=observed, at_ms=at,
             hint="no connect timeout bounded the request: it waited until the network came back")

    after = host.run.phase(2)
    cf.check(len(after) > 0 and all(r.ok for r in after),
             expected="the live host's requests after the stuck connects all answered", actual=observed, at_ms=at)

    dead_bound = REQUEST_TIMEOUT_MS + TOLERANCE_MS
    late = {f"request {r.i} ended after (ms)": round(r.duration_ms) for r in dead if r.duration_ms > dead_bound}
    late |= {f"connect from port {port} pending (ms)": ms for port, ms in host.connects.lifetimes_ms().items()
             if ms > dead_bound}
    if late:
        cf.late(expected=f"each request to the dead host, and its connect, given up at the request's "
                         f"{REQUEST_TIMEOUT_MS} ms timeout + {TOLERANCE_MS} ms",
                actual={**observed, "past the timeout": late}, at_ms=at)
    slowest = max(r.duration_ms for r in live)
    cf.ok(f"live host: {len(live)} answered in ≤ {slowest:.0f} ms (bound {live_bound:.0f}); dead host: "
          f"{len(dead)} failed in ≤ {max(r.duration_ms for r in dead):.0f} ms; "
          f"{observed['stuck connects']} stuck connect(s), longest {observed['longest stuck ms']} ms",
          expected=f"live ≤ {live_bound:.0f} ms, dead ≤ {dead_bound} ms", actual=observed)
