"""TC — the soak: many clients under a seeded storm of transport faults, then exact bookkeeping
once everything has healed (SPEC §5 TC-08; research/toxiproxy-and-anchors.md §A3).

Two reference servers (scaled-down eject timers where the server takes them) and N clients of the
peer under test, each with both servers in its list (the reference client takes scaled-down
health/backoff timers; real libraries keep their defaults) and, where the peer reports a chosen
client IP, one of two IPs, so the per-IP truth is not trivial.

The schedule comes from ``random.Random(cf.seed)`` (``harness.scenarios.soak.soak_schedule``; Toxiproxy's
own ``-seed`` is a no-op, §A3.6) and is recorded whole in the history before anything runs; the
run's ``--chaos-seed S`` replays it exactly. Faults: proxy_down, reset_peer and blackhole on the
server proxies, kill on clients (never restarted: a killed client is no longer live), pause on
clients and servers for a bounded time. Quirks that shape what a fault does (§A3):

- reset_peer RSTs only connections opened while it is installed (Toxiproxy sets linger 0 at
  connect); an existing connection is untouched, so here it hits the reconnects other faults
  cause, and a client on that server keeps its connection. That is fine for chaos.
- healing a blackhole (removing the timeout toxics) closes every connection it held, so clients
  on that server reconnect.

After the schedule healed everything (``run_schedule``'s finally), the case waits — bounded by
the eject bound + the health bound + one reconnect + tolerance, from the peers' effective timers
— for the registrations to settle, then checks, each with expected vs actual and a history
excerpt: the union of ``current`` equals the live clients' connection ids exactly; each server's
``clientIpCounts`` equals the tally of its ``current`` and the live clients' truth; per server and
connection id, exactly one ``connected`` and one ``disconnected`` iff unregistered; no CLOSE_WAIT
on any server port.
"""

from __future__ import annotations

import pytest

from fixtures.case import case
from harness.errors import HarnessError
from harness.scenarios.soak import (
    check_membership,
    convergence_bound_ms,
    observe_cluster,
    soak_schedule,
    wait_converged,
)
from harness.scenarios.soak_steps import expect_exact, expect_no_close_wait, run_storm, soak_cluster
from harness.shrink import user_manifests

SERVERS = 2
BASELINE_TIMEOUT_MS = 30_000  # every client RUNNING and registered before the first fault


@pytest.mark.slow
@case("TC-08", "MUST", timeout_s=240, subject="both")
def test_soak_random_faults_leave_exact_registrations(cf, topology, nacos_server_peer, nacos_client_peer, soak_size):
    """Soak: N clients × M random faults (kill, proxy down, reset_peer, blackhole, pause) with a recorded seed; after healing, `current` == live clients exactly, per-IP counts == truth, connected/disconnected events balance, no CLOSE_WAIT on any server port."""
    size = soak_size
    params = {"servers": SERVERS, "clients": size.clients, "count": size.faults, "window_ms": size.window_ms}
    schedule = soak_schedule(cf.seed, **params)
    if soak_schedule(cf.seed, **params) != schedule:  # replay with --chaos-seed relies on this
        raise HarnessError(f"soak_schedule is not deterministic for seed {cf.seed}")
    cf.history.meta(soak={**params, "seed": cf.seed}, chaos_seed=cf.seed, chaos_schedule=schedule.to_data(),
                    peers_files=user_manifests(nacos_server_peer, nacos_client_peer))  # for connformance shrink
    cluster = soak_cluster(topology, nacos_server_peer, nacos_client_peer, servers=SERVERS, clients=size.clients)
    servers = cluster.servers
    has_events = all(s.events.available for s in servers)  # the extension, or the server's own log

    # Baseline: every client RUNNING and registered exactly, through the proxies.
    view, after_ms = wait_converged(lambda: observe_cluster(servers, cluster.clients), timeout_ms=BASELINE_TIMEOUT_MS)
    cf.history.observe("baseline_view", view.to_data() if view else None)
    cf.baseline(after_ms is not None,
                expected=f"all {size.clients} clients RUNNING and registered within {BASELINE_TIMEOUT_MS} ms",
                actual=check_membership(view).actual if view else "no server or client answered",
                hint="the cluster never came up; see the peer logs")

    storm = run_storm(cf, topology, schedule, cluster, window_ms=size.window_ms)
    # Convergence, bounded by the peers' own timers.
    bound = convergence_bound_ms(nacos_server_peer, cluster.server_knobs, [(nacos_client_peer, cluster.client_knobs)])
    cf.history.note(f"healed; waiting up to {bound['total_ms']} ms for convergence: {bound}")
    view, after_ms = wait_converged(lambda: observe_cluster(servers, storm.live), timeout_ms=bound["total_ms"])
    if view is None:
        cf.fail(expected=f"servers and live clients answer within {bound['total_ms']} ms of healing",
                actual="nothing answered", at_ms=storm.healed_at_ms)
    cf.history.observe("soak_view", {**view.to_data(), "converged_after_ms": after_ms})
    judged = expect_exact(cf, view, has_events=has_events, bound=bound, after_ms=after_ms, at_ms=storm.healed_at_ms)
    expect_no_close_wait(cf, servers)

    converged = f"{after_ms:.0f} ms after healing" if after_ms is not None else "at the end of the wait"
    detail = (f"{size.clients} {nacos_client_peer.name} clients × {sum(storm.applied.values())} faults "
              f"{dict(storm.applied)} (seed {cf.seed}, window {size.window_ms} ms) on {SERVERS} servers; converged "
              f"{converged} (bound {bound['total_ms']} ms): " + "; ".join(r.summary for r in judged) + "; no CLOSE_WAIT")
    unseen = [what for what, seen in (("listener notifications (events extension or a [witness] log)", has_events),
                                      ("the per-IP counter itself (extension client_ip_counts)",
                                       nacos_server_peer.has_capability("client_ip_counts"))) if not seen]
    if unseen:
        cf.unimplemented(f"the rest held: {detail}; not observable on {nacos_server_peer.label}: {'; '.join(unseen)}")
    cf.ok(detail, expected="after healing: exact registrations, per-IP counts, balanced events, no CLOSE_WAIT",
          actual={"converged_after_ms": round(after_ms or 0), "registered": len(view.ids()),
                  "live_clients": len(storm.live), "killed": sorted(storm.killed), "faults": dict(storm.applied)})
