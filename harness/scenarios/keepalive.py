"""Keep-alive of an idle client as steps (SR-19): the bounds from the client's HealthCheck timers,
a server set to probe an idle connection soon after them, and the refreshes of the connection's
``lastActiveTime`` watched in ``current`` (its value is the server's own clock, so the gaps are
exact whatever the sampling delay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.peers import PeerManifest
from harness.scenarios.bounds import POLL_MS, TOLERANCE_MS, supported
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import eventually, now_ms

GAPS_TO_OBSERVE = 3
SCALED_HEALTH = {"health_interval_ms": 1000, "health_timeout_ms": 500}  # for peers that take them
EJECT_INTERVAL_MS = 250
PROBE_TIMEOUT_MS = 500
REAL_SERVER_IDLE_THRESHOLD_MS = 20_000  # Nacos's ejector default, for a server without the knob


@dataclass
class KeepaliveBounds:
    client_knobs: dict[str, Any]
    interval_ms: int
    bound_ms: int  # a refresh at least this often (interval + tolerance) ...
    late_bound_ms: int  # ... or this, after an attempt that timed out (clients with retries)
    server_knobs: dict[str, Any]
    idle_threshold_ms: int

    @property
    def retry_allowance_ms(self) -> int:
        return self.late_bound_ms - self.bound_ms

    @classmethod
    def of(cls, client_peer: PeerManifest, server_peer: PeerManifest) -> KeepaliveBounds:
        """The client's scaled timers where it takes them; a server set to probe a connection idle a
        little longer than allowed (a server whose ejector has no settings keeps its own threshold:
        the refreshes in ``current`` and the absence of an eject are judged all the same)."""
        knobs = supported(client_peer, SCALED_HEALTH)
        interval_ms = client_peer.timer("health_interval_ms", knobs)
        retries = client_peer.timer("health_retry", knobs, default=0)
        # A HealthCheck whose first attempt times out lands one timeout later (only with retries:
        # a single-attempt client reconnects instead, which the same-id check catches).
        bound_ms = interval_ms + TOLERANCE_MS
        late_bound_ms = bound_ms + (client_peer.timer("health_timeout_ms", knobs) if retries > 0 else 0)
        idle_threshold_ms = late_bound_ms + 2 * TOLERANCE_MS
        server_knobs = {"idle_threshold_ms": idle_threshold_ms, "eject_interval_ms": EJECT_INTERVAL_MS,
                        "probe_timeout_ms": PROBE_TIMEOUT_MS}
        if not all(server_peer.supports(k) for k in server_knobs):
            server_knobs = {}
            idle_threshold_ms = server_peer.timer("idle_threshold_ms", default=REAL_SERVER_IDLE_THRESHOLD_MS)
        return cls(knobs, interval_ms, bound_ms, late_bound_ms, server_knobs, idle_threshold_ms)


@dataclass
class Refreshes:
    """The connection's lastActiveTime values seen (the first at the start), and when it left."""

    values: list[int]
    gone_at_ms: list[float] = field(default_factory=list)
    open_gap_ms: int = 0  # from the last refresh to the end of the window: it counts too

    @property
    def gaps_ms(self) -> list[int]:
        return [b - a for a, b in zip(self.values, self.values[1:], strict=False)]


def watch_refreshes(cf, server: NacosServerHandle, live: str, snapshot: dict[str, Any], *,
                    interval_ms: int) -> Refreshes:
    """Poll ``current`` fast for GAPS_TO_OBSERVE intervals and a half: every distinct
    lastActiveTime is one refresh; the id leaving ``current`` ends the watch (UNIMPLEMENTED for a
    server that lists no lastActiveTime)."""
    if "lastActiveTime" not in (snapshot[live].get("metaInfo") or {}):
        cf.unimplemented(f"{server.peer.label} lists its registrations without lastActiveTime: the refreshes "
                         "this case judges cannot be seen")
    seen = Refreshes([int(snapshot[live]["metaInfo"]["lastActiveTime"])])
    window_ms = GAPS_TO_OBSERVE * interval_ms + interval_ms / 2
    started = now_ms()

    def sample() -> bool:
        current = server.admin.current()
        entry = current.get(live)
        if entry is None:
            seen.gone_at_ms.append(cf.history.elapsed_ms())
            cf.history.observe("current", {"ids": sorted(current), "missing": live})
            return True
        active = int(entry["metaInfo"]["lastActiveTime"])
        if active != seen.values[-1]:
            seen.values.append(active)
            cf.history.observe("last_active_time", {"connection_id": live, "lastActiveTime": active,
                                                    "gap_ms": active - seen.values[-2]})
        return now_ms() - started >= window_ms

    eventually(sample, timeout_ms=window_ms + 1000, what="keep-alive observation window", interval_ms=POLL_MS)
    seen.open_gap_ms = round(cf.history.start_wall_ms + cf.history.elapsed_ms() - seen.values[-1])
    return seen


def expect_kept_alive(cf, server: NacosServerHandle, client: NacosClientHandle, live: str, seen: Refreshes,
                      bounds: KeepaliveBounds) -> dict[str, Any]:
    """Never ejected (the server's view and its events), the same connection RUNNING throughout,
    never probed with ClientDetectionRequest (the pushes log, where there is one), and refreshed
    at least every ``late_bound_ms``. Returns what was observed."""
    final = client.control.state()
    gaps = seen.gaps_ms
    probes = [p for p in server.admin.pushes() if p["connectionId"] == live and p["type"] == "ClientDetectionRequest"] \
        if server.peer.has_capability("pushes") else []
    disconnects = [e for e in server.events.all() if e["event"] == "disconnected" and e["connectionId"] == live] \
        if server.events.available else []
    client_disconnects = [e for e in final.get("events", []) if e["kind"] == "disconnected"]
    observed = {"interval_ms": bounds.interval_ms, "refresh_gaps_ms": gaps, "since_last_refresh_ms": seen.open_gap_ms,
                "idle_threshold_ms": bounds.idle_threshold_ms, "client_detection_probes": len(probes),
                "connection_id": {"start": live, "end": final.get("connection_id")}, "status": final.get("status")}
    cf.history.observe("sr19", observed)
    cf.check(not seen.gone_at_ms and not disconnects, expected=f"{live} stays registered (never ejected)",
             actual={**observed, "left current at t_ms": seen.gone_at_ms[:1], "server disconnected events": disconnects},
             at_ms=seen.gone_at_ms[0] if seen.gone_at_ms else None)
    cf.check(final.get("connection_id") in (None, live) and final.get("status") == "RUNNING" and not client_disconnects,
             expected=f"the same connection {live} throughout, RUNNING, no disconnected event",
             actual={**observed, "client disconnected events": client_disconnects})
    cf.check(not probes, expected=f"the client refreshes lastActiveTime itself: never idle for idle_threshold "
                                  f"{bounds.idle_threshold_ms} ms, so never probed with ClientDetectionRequest",
             actual={**observed, "probes": [{k: p.get(k) for k in ("t_ms", "outcome")} for p in probes[:5]]},
             hint="the connection stays up only because it answers the server's probes: no HealthCheck at its interval")
    cf.check(len(gaps) >= GAPS_TO_OBSERVE - 1 and max([*gaps, seen.open_gap_ms]) <= bounds.late_bound_ms,
             expected=f"lastActiveTime refreshed every ≤ {bounds.bound_ms} ms (interval {bounds.interval_ms} + "
                      f"{TOLERANCE_MS})"
                      + (f", ≤ {bounds.late_bound_ms} ms after a timed-out attempt" if bounds.retry_allowance_ms else ""),
             actual=observed, hint="no HealthCheck at the client's interval")
    return observed
