"""Dead links, judged on the peers' own timers (TC-04, TC-05, TC-06, TC-09 and the packet-level
cases): a client's health-check bound, a server's eject bound, and the steps that watch a client
leave a dead server (``watch_move``) and take the instant a fault took effect on both clocks
(``Clock``).

Bounds are the peer's configured timers plus the SPEC §5 tolerance: ``interval + attempts ×
timeout`` for a client (attempts = ``health_retry + 1``), ``idle_threshold + eject_interval +
probe_timeout`` for a server (the spec's 2.3+ numbers where a server declares none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.control.http import ControlError
from harness.peers import PeerManifest
from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

TOLERANCE_MS = 250  # SPEC §5 preamble
RUNNING_TIMEOUT_MS = 15000  # the handshake's own hang guard (real libraries: ServerCheck 3 s + setup)
POLL_MS = 50
FAIL_FACTOR = 2  # "never": not within FAIL_FACTOR × the bound

# Scaled-down timers for peers that take them (brief: server eject 500 / idle 1500 / probe 500;
# client health 1000 / timeout 500 / 1 retry).
SCALED_SERVER_EJECT = {"eject_interval_ms": 500, "idle_threshold_ms": 1500, "probe_timeout_ms": 500}
SCALED_CLIENT_HEALTH = {"health_interval_ms": 1000, "health_timeout_ms": 500, "health_retry": 1}
# Where a client's reaction is judged, the server must not eject the connection first (an
# ejection closes the transport, which crosses the blackhole and hands the client a stream end).
QUIET_SERVER = {"idle_threshold_ms": 120_000}

CONTROL_ERRORS = (OSError, ValueError, ControlError)
SPEC_IDLE_THRESHOLD_MS, SPEC_EJECT_INTERVAL_MS, SPEC_PROBE_TIMEOUT_MS = 20_000, 3000, 5000  # SPEC §4.2


# ---- timers ---------------------------------------------------------------------------------

def supported(peer: PeerManifest, wanted: dict[str, Any]) -> dict[str, Any]:
    """The knobs of ``wanted`` the peer has; the rest keep the peer's defaults."""
    return {k: v for k, v in wanted.items() if peer.supports(k)}


@dataclass(frozen=True)
class HealthBound:
    """A client's dead-link detection bound: ``interval + attempts × timeout (+ jitter) + tolerance``."""

    interval_ms: int
    timeout_ms: int
    attempts: int
    jitter_ms: int = 0

    @classmethod
    def of(cls, peer: PeerManifest, knobs: dict[str, Any]) -> HealthBound:
        return cls(peer.timer("health_interval_ms", knobs), peer.timer("health_timeout_ms", knobs),
                   peer.timer("health_retry", knobs, default=0) + 1, peer.timer("health_jitter_ms", knobs, default=0))

    @property
    def bound_ms(self) -> int:
        return self.interval_ms + self.jitter_ms + self.attempts * self.timeout_ms + TOLERANCE_MS

    def __str__(self) -> str:
        jitter = f" + jitter {self.jitter_ms}" if self.jitter_ms else ""
        return (f"interval {self.interval_ms}{jitter} + {self.attempts} × timeout {self.timeout_ms} "
                f"+ {TOLERANCE_MS} = {self.bound_ms} ms")


@dataclass(frozen=True)
class EjectBound:
    """A server's dead-connection bound: ``idle_threshold + eject_interval + probe_timeout
    (+ probe_check_granularity) + tolerance``. The granularity is for a server that notices an
    unanswered probe only on its next pass rather than when the probe's timeout fires (from its
    source, in its manifest's ``[timers]``; 0 for Nacos 2.3+, whose probe callback times out on
    its own)."""

    idle_threshold_ms: int
    eject_interval_ms: int
    probe_timeout_ms: int
    probe_check_granularity_ms: int = 0

    @classmethod
    def of(cls, peer: PeerManifest, knobs: dict[str, Any]) -> EjectBound:
        """The peer's timers; where it declares none, the spec's 2.3+ numbers (SPEC §4.2): the
        bound the requirement sets, whether or not the server has such a mechanism."""
        return cls(peer.timer("idle_threshold_ms", knobs, default=SPEC_IDLE_THRESHOLD_MS),
                   peer.timer("eject_interval_ms", knobs, default=SPEC_EJECT_INTERVAL_MS),
                   peer.timer("probe_timeout_ms", knobs, default=SPEC_PROBE_TIMEOUT_MS),
                   peer.timer("probe_check_granularity_ms", knobs, default=0))

    @property
    def bound_ms(self) -> int:
        return (self.idle_threshold_ms + self.eject_interval_ms + self.probe_timeout_ms
                + self.probe_check_granularity_ms + TOLERANCE_MS)

    def __str__(self) -> str:
        granularity = (f" + probe check granularity {self.probe_check_granularity_ms}"
                       if self.probe_check_granularity_ms else "")
        return (f"idle {self.idle_threshold_ms} + eject interval {self.eject_interval_ms} + probe "
                f"{self.probe_timeout_ms}{granularity} + {TOLERANCE_MS} = {self.bound_ms} ms")


# ---- steps ----------------------------------------------------------------------------------

def running(cf, client: NacosClientHandle, what: str = "baseline") -> dict[str, Any]:
    """The client RUNNING through its proxy, or the case fails as a setup problem."""
    try:
        return wait_client_running(cf.history, client, timeout_ms=RUNNING_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} RUNNING within {RUNNING_TIMEOUT_MS} ms ({what})",
                actual=f"last state {brief(exc.last)}", verdict="FAILED", hint="see the peer logs")
        raise  # unreachable: fail() raises


def registered_id(cf, server: NacosServerHandle, state: dict[str, Any]) -> str:
    """The client's connection id as the server registered it (the agent's, or the only one)."""
    cid = state.get("connection_id")
    snapshot = wait_registered(cf.history, server, timeout_ms=3000, connection_id=cid, count=None if cid else 1)
    return cid or next(iter(snapshot))


def server_of(servers: list[NacosServerHandle], address: str | None) -> NacosServerHandle:
    for server in servers:
        if server.main_address == address:
            return server
    raise AssertionError(f"the client reports server {address!r}, not one of {[s.main_address for s in servers]}")


def brief(state: Any) -> Any:
    if not isinstance(state, dict):
        return state
    return {k: state.get(k) for k in ("status", "server", "connection_id")}


class Clock:
    """The instant a fault took effect, on both clocks (history/monotonic and agents' epoch)."""

    def __init__(self, cf) -> None:
        self.cf = cf
        self.mono_ms = now_ms()
        self.wall_ms = cf.history.start_wall_ms + cf.history.relative_ms(self.mono_ms)

    def since(self) -> float:
        return now_ms() - self.mono_ms

    def of_wall(self, wall_ms: float) -> float:
        return wall_ms - self.wall_ms


@dataclass
class Move:
    """How a client left a server: the first sign it noticed, and when it ran elsewhere."""

    away_from: str
    detected_ms: float | None = None
    detected_by: str | None = None
    moved_ms: float | None = None
    state: dict[str, Any] = field(default_factory=dict)
    signs: list[dict[str, Any]] = field(default_factory=list)

    def observed(self) -> dict[str, Any]:
        return {"left": self.away_from, "first sign after (ms)": rounded(self.detected_ms), "first sign": self.detected_by,
                "running elsewhere after (ms)": rounded(self.moved_ms), "final": brief(self.state),
                "client events": self.signs[:8]}


# Client events that show it acted on the dead link (both peers report a failed HealthCheck as an
# ``error``: the reference client's "health check failed", the library's ERROR log).
_SIGN_KINDS = ("error", "switching", "disconnected", "connected")


def watch_move(cf, client: NacosClientHandle, clock: Clock, *, away_from: str, timeout_ms: float) -> Move:
    """Poll the client until it is RUNNING on a server other than ``away_from`` (at most
    ``timeout_ms``); record the first sign of detection (its own events, or a state change)."""
    move = Move(away_from)
    last_seen: list[tuple[Any, Any]] = [("RUNNING", away_from)]

    def probe() -> dict[str, Any]:
        state = client.control.state()
        now = (state.get("status"), state.get("server"))
        if now != last_seen[-1]:
            last_seen.append(now)
            cf.history.observe("client_state", {"client": client.name, **brief(state), "after_fault_ms": rounded(clock.since())})
            if move.detected_ms is None:
                move.detected_ms, move.detected_by = clock.since(), f"state {now[0]} on {now[1]}"
        return state

    def elsewhere(state: dict[str, Any]) -> bool:
        return state.get("status") == "RUNNING" and state.get("server") not in (None, away_from)

    try:
        waited = eventually(probe, timeout_ms=timeout_ms, what=f"{client.name} RUNNING away from {away_from}",
                            accept=elsewhere, swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
        move.state = waited.value
        move.moved_ms = clock.since()
    except WaitTimeout as exc:
        move.state = exc.last if isinstance(exc.last, dict) else {}
    events = [e for e in move.state.get("events", []) if e.get("t_ms", 0) >= clock.wall_ms]
    move.signs = [{"after_fault_ms": rounded(clock.of_wall(e["t_ms"])), "kind": e["kind"], "server": e.get("server"),
                   "detail": e.get("detail")} for e in events if e["kind"] in _SIGN_KINDS]
    if move.signs:
        first = move.signs[0]
        if move.detected_ms is None or first["after_fault_ms"] < move.detected_ms:
            move.detected_ms, move.detected_by = first["after_fault_ms"], f"{first['kind']} event {first['detail']}"
    arrived = [e for e in events if e["kind"] == "connected" and e.get("server") not in (None, away_from)]
    if move.moved_ms is not None and arrived:  # the agent's own instant beats the poll's
        move.moved_ms = min(move.moved_ms, clock.of_wall(arrived[0]["t_ms"]))
    cf.history.observe("move", move.observed())
    return move


def watch_current(server: NacosServerHandle, clock: Clock, *, until, timeout_ms: float,
                  what: str) -> tuple[float | None, dict[str, Any]]:
    """Poll the server's ``current`` until ``until(snapshot)`` holds (at most ``timeout_ms``):
    how long after the clock's fault it held (None: never), and the last snapshot read."""
    last: dict[str, Any] = {}

    def read() -> dict[str, Any]:
        snapshot = server.admin.current()
        last.clear()
        last.update(snapshot)
        return snapshot

    try:
        eventually(read, timeout_ms=timeout_ms, what=what, accept=until, swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
        return clock.since(), last
    except WaitTimeout:
        return None, last


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
