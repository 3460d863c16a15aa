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
from harness.scenarios.bounds import POLL_MS, RUNNING_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.wait import WaitTimeout, eventually, now_ms

GAPS_TO_OBSERVE = 3
REF_HEALTH_INTERVAL_MS = 1000  # scaled-down timers for peers that take them
REF_HEALTH_TIMEOUT_MS = 500
EJECT_INTERVAL_MS = 250
PROBE_TIMEOUT_MS = 500


@pytest.mark.slow
@case("SR-19", "MUST", timeout_s=90, subject="both")
def test_idle_client_health_checks_at_its_interval(cf, topology, nacos_server_peer, nacos_client_peer):
    """An idle client keeps its connection alive: HealthCheck at its interval (5 s ± tolerance), server's lastActiveTime refreshed, never ejected."""
    knobs = {k: v for k, v in (("health_interval_ms", REF_HEALTH_INTERVAL_MS),
                               ("health_timeout_ms", REF_HEALTH_TIMEOUT_MS)) if nacos_client_peer.supports(k)}
    interval_ms = nacos_client_peer.timer("health_interval_ms", knobs)
    timeout_ms = nacos_client_peer.timer("health_timeout_ms", knobs)
    retries = nacos_client_peer.timer("health_retry", knobs, default=0)
    # A HealthCheck whose first attempt times out lands one timeout later (only with retries:
    # a single-attempt client reconnects instead, which the same-id check catches).
    retry_allowance_ms = timeout_ms if retries > 0 else 0
    bound_ms = interval_ms + TOLERANCE_MS
    late_bound_ms = bound_ms + retry_allowance_ms
    idle_threshold_ms = late_bound_ms + 2 * TOLERANCE_MS  # idle a little longer than allowed -> probed
    server_knobs = {"idle_threshold_ms": idle_threshold_ms, "eject_interval_ms": EJECT_INTERVAL_MS,
                    "probe_timeout_ms": PROBE_TIMEOUT_MS}
    if not all(nacos_server_peer.supports(k) for k in server_knobs):
        # A server whose ejector has no settings (the real ones) keeps its own threshold: the
        # case still judges the refreshes it shows in `current` and that it never ejected.
        server_knobs = {}
        idle_threshold_ms = nacos_server_peer.timer("idle_threshold_ms", default=20_000)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=server_knobs)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
    try:
        state = wait_client_running(cf.history, client, timeout_ms=RUNNING_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} RUNNING within {RUNNING_TIMEOUT_MS} ms (baseline)",
                actual=f"last state {exc.last!r}", hint="the handshake did not complete; see the peer logs")
        raise
    live = state.get("connection_id")
    snapshot = wait_registered(cf.history, server, timeout_ms=3000, connection_id=live, count=None if live else 1)
    live = live or next(iter(snapshot))

    # Observe: poll `current` fast; every distinct lastActiveTime is one refresh (its value is the
    # server's own clock, so the gaps are exact whatever the sampling delay).
    if "lastActiveTime" not in (snapshot[live].get("metaInfo") or {}):
        cf.unimplemented(f"{nacos_server_peer.label} lists its registrations without lastActiveTime: the refreshes "
                         "this case judges cannot be seen")
    refreshes: list[int] = [int(snapshot[live]["metaInfo"]["lastActiveTime"])]
    gone_at: list[float] = []
    window_ms = GAPS_TO_OBSERVE * interval_ms + interval_ms / 2
    started = now_ms()

    def sample() -> bool:
        current = server.admin.current()
        entry = current.get(live)
        if entry is None:
            gone_at.append(cf.history.elapsed_ms())
            cf.history.observe("current", {"ids": sorted(current), "missing": live})
            return True
        active = int(entry["metaInfo"]["lastActiveTime"])
        if active != refreshes[-1]:
            refreshes.append(active)
            cf.history.observe("last_active_time", {"connection_id": live, "lastActiveTime": active,
                                                    "gap_ms": active - refreshes[-2]})
        return now_ms() - started >= window_ms

    eventually(sample, timeout_ms=window_ms + 1000, what="keep-alive observation window", interval_ms=POLL_MS)
    window_end_wall = cf.history.start_wall_ms + cf.history.elapsed_ms()

    final = client.control.state()
    gaps = [b - a for a, b in zip(refreshes, refreshes[1:], strict=False)]
    open_gap = round(window_end_wall - refreshes[-1])  # the time since the last refresh counts too
    probes = []
    disconnects = []
    if nacos_server_peer.has_capability("pushes"):
        probes = [p for p in server.admin.pushes() if p["connectionId"] == live and p["type"] == "ClientDetectionRequest"]
    if server.events.available:
        disconnects = [e for e in server.events.all() if e["event"] == "disconnected" and e["connectionId"] == live]
    client_disconnects = [e for e in final.get("events", []) if e["kind"] == "disconnected"]
    observed = {"interval_ms": interval_ms, "refresh_gaps_ms": gaps, "since_last_refresh_ms": open_gap,
                "idle_threshold_ms": idle_threshold_ms, "client_detection_probes": len(probes),
                "connection_id": {"start": live, "end": final.get("connection_id")}, "status": final.get("status")}
    cf.history.observe("sr19", observed)

    cf.check(not gone_at and not disconnects, expected=f"{live} stays registered (never ejected)",
             actual={**observed, "left current at t_ms": gone_at[:1], "server disconnected events": disconnects},
             at_ms=gone_at[0] if gone_at else None)
    cf.check(final.get("connection_id") in (None, live) and final.get("status") == "RUNNING" and not client_disconnects,
             expected=f"the same connection {live} throughout, RUNNING, no disconnected event",
             actual={**observed, "client disconnected events": client_disconnects})
    cf.check(not probes, expected=f"the client refreshes lastActiveTime itself: never idle for idle_threshold "
                                  f"{idle_threshold_ms} ms, so never probed with ClientDetectionRequest",
             actual={**observed, "probes": [{k: p.get(k) for k in ("t_ms", "outcome")} for p in probes[:5]]},
             hint="the connection stays up only because it answers the server's probes: no HealthCheck at its interval")
    worst = max([*gaps, open_gap])
    cf.check(len(gaps) >= GAPS_TO_OBSERVE - 1 and worst <= late_bound_ms,
             expected=f"lastActiveTime refreshed every ≤ {bound_ms} ms (interval {interval_ms} + {TOLERANCE_MS})"
                      + (f", ≤ {late_bound_ms} ms after a timed-out attempt" if retry_allowance_ms else ""),
             actual=observed, hint="no HealthCheck at the client's interval")
    if worst > bound_ms:
        cf.late(expected=f"refresh gaps ≤ interval {interval_ms} + {TOLERANCE_MS} ms", actual=observed)
    short = [g for g in gaps[1:] if g < interval_ms - TOLERANCE_MS]  # the first gap starts mid-interval
    if short:
        cf.late(expected=f"HealthCheck at its interval ({interval_ms} ± {TOLERANCE_MS} ms)", actual=observed)
    cf.ok(f"{len(gaps)} refreshes, gaps {min(gaps)}..{max(gaps)} ms (interval {interval_ms}); same id, never probed",
          expected=f"gaps ≤ {bound_ms} ms, no probe, no eject", actual=observed)
