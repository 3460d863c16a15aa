"""SR — keep-alive of an idle client: its HealthCheck at its interval keeps the server's
``lastActiveTime`` fresh, so the dead-connection ejector never has to probe or eject it
(SPEC §5 SR-19; research/nacos-protocol.md §2.6, §4.4, §5.1).

The server is set so that an idle connection WOULD be probed soon after the client's interval
(``idle_threshold`` a little above it, a short eject interval and probe timeout). A client that
never health-checks still survives by answering the server's ClientDetectionRequest — which also
refreshes ``lastActiveTime`` — so the case judges the refresh cadence and whether the server had
to probe at all, not only whether the connection survived.
"""

from __future__ import annotations

import pytest

from fixtures.case import case
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.keepalive import KeepaliveBounds, expect_kept_alive, watch_refreshes
from harness.scenarios.steps import registered_on, running


@pytest.mark.slow
@case("SR-19", "MUST", timeout_s=90, subject="both")
def test_idle_client_health_checks_at_its_interval(cf, topology, nacos_server_peer, nacos_client_peer):
    """An idle client keeps its connection alive: HealthCheck at its interval (5 s ± tolerance), server's lastActiveTime refreshed, never ejected."""
    bounds = KeepaliveBounds.of(nacos_client_peer, nacos_server_peer)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=bounds.server_knobs)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=bounds.client_knobs)
    live, snapshot = registered_on(cf, client, server, running(cf, client))

    seen = watch_refreshes(cf, server, live, snapshot, interval_ms=bounds.interval_ms)
    observed = expect_kept_alive(cf, server, client, live, seen, bounds)
    gaps, interval_ms = seen.gaps_ms, bounds.interval_ms
    if max([*gaps, seen.open_gap_ms]) > bounds.bound_ms:
        cf.late(expected=f"refresh gaps ≤ interval {interval_ms} + {TOLERANCE_MS} ms", actual=observed)
    if [g for g in gaps[1:] if g < interval_ms - TOLERANCE_MS]:  # the first gap starts mid-interval
        cf.late(expected=f"HealthCheck at its interval ({interval_ms} ± {TOLERANCE_MS} ms)", actual=observed)
    cf.ok(f"{len(gaps)} refreshes, gaps {min(gaps)}..{max(gaps)} ms (interval {interval_ms}); same id, never probed",
          expected=f"gaps ≤ {bounds.bound_ms} ms, no probe, no eject", actual=observed)
