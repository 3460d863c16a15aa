"""TC — dead links: a blackholed connection (Toxiproxy ``timeout`` toxic with timeout 0 on both
directions) must be ejected by the server and left by the client (SPEC §5 TC-04, TC-05;
research/nacos-protocol.md §2.6 eject, §4.4 and §5.1 client health checks;
research/toxiproxy-and-anchors.md §A3 "blackhole is application-level").

A blackhole drops data but keeps both TCP sides open, so only application keep-alives notice
it: the server's idle detection + ClientDetectionRequest probe (TC-04) and the client's
HealthCheck (TC-05). Two facts of Toxiproxy v2.12.0 shape the cases (checked by hand against
the pinned binary, and in ``Shopify/toxiproxy:toxics/timeout.go``):

- a FIN is *not* a chunk: ``Pipe`` closes its stub on the input's end (``c == nil``), so one
  side's close crosses a blackhole at once and closes the other side. A client that gives up on
  the link and closes its transport therefore unregisters itself on the server through the
  blackhole. TC-04 judges the server's *ejection*, so the client is paused (SIGSTOP) for the
  observation: frozen like a host that lost power, it cannot close anything, and the server is
  left with exactly the half-dead connection a real partition leaves. Its single-server list
  keeps any reconnect from adding registrations the check would have to tell apart.
- removing a timeout toxic closes the connections it held: after the heal, peers reconnect.

Bounds are the peer's configured timers plus the SPEC §5 tolerance: TC-04 ``idle_threshold +
eject_interval + probe_timeout``, TC-05 ``interval + attempts × timeout`` where attempts =
``health_retry + 1`` (Java: 3 retries = 4 attempts; nacos-sdk-python: 1 attempt). The reference
peers run scaled-down timers; real libraries keep their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fixtures.case import case
from harness.control.http import ControlError
from harness.faults import Blackhole, Pause
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
    """A server's dead-connection bound: ``idle_threshold + eject_interval + probe_timeout + tolerance``."""

    idle_threshold_ms: int
    eject_interval_ms: int
    probe_timeout_ms: int

    @classmethod
    def of(cls, peer: PeerManifest, knobs: dict[str, Any]) -> EjectBound:
        """The peer's timers; where it declares none, the spec's 2.3+ numbers (SPEC §4.2): the
        bound the requirement sets, whether or not the server has such a mechanism."""
        return cls(peer.timer("idle_threshold_ms", knobs, default=SPEC_IDLE_THRESHOLD_MS),
                   peer.timer("eject_interval_ms", knobs, default=SPEC_EJECT_INTERVAL_MS),
                   peer.timer("probe_timeout_ms", knobs, default=SPEC_PROBE_TIMEOUT_MS))

    @property
    def bound_ms(self) -> int:
        return self.idle_threshold_ms + self.eject_interval_ms + self.probe_timeout_ms + TOLERANCE_MS

    def __str__(self) -> str:
        return (f"idle {self.idle_threshold_ms} + eject interval {self.eject_interval_ms} + probe "
                f"{self.probe_timeout_ms} + {TOLERANCE_MS} = {self.bound_ms} ms")


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
        return {"left": self.away_from, "first sign after (ms)": _r(self.detected_ms), "first sign": self.detected_by,
                "running elsewhere after (ms)": _r(self.moved_ms), "final": brief(self.state),
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
            cf.history.observe("client_state", {"client": client.name, **brief(state), "after_fault_ms": _r(clock.since())})
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
    move.signs = [{"after_fault_ms": _r(clock.of_wall(e["t_ms"])), "kind": e["kind"], "server": e.get("server"),
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


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ---- TC-04 ----------------------------------------------------------------------------------

@case("TC-04", "SHOULD", timeout_s=120, subject="server")
def test_server_ejects_blackholed_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Blackhole (timeout toxic, both directions) → the server ejects the connection within `idle_threshold + eject_interval + probe_timeout + tolerance`; a server that never ejects gets FAILED with the time it held the dead registration (Nacos 2.2.0–2.2.4 would)."""
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=server_knobs)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])  # one server: no second registration
    state = running(cf, client)
    dead_id = registered_id(cf, server, state)  # baseline: registered through the proxy
    has_events = nacos_server_peer.has_capability("events")  # timed events (the extension) date the ejection
    since_seq = max((e["seq"] for e in server.admin.events()), default=0) if has_events else 0
    # Still registered right before the fault: an id gone before the blackhole is no ejection of it.
    before = server.admin.current()
    if dead_id not in before or client.control.state().get("connection_id") not in (None, dead_id):
        cf.fail(expected=f"baseline: {dead_id} registered and still the client's connection before the blackhole",
                actual={"current": sorted(before), "client": brief(client.control.state())}, verdict="FAILED",
                hint="the connection was dropped before the fault (a client not answering probes? see SR-19)")

    gone_ms: float | None = None
    held = {}
    # The client is frozen first, so its own reaction cannot close the transport through the
    # blackhole (a FIN crosses it, see the module docstring); then the link goes dark.
    with Pause(client.node, history=cf.history, label="client"), \
            Blackhole(server.proxy, history=cf.history, label=server.node.name):
        clock = Clock(cf)

        def still_held() -> dict[str, Any]:
            snapshot = server.admin.current()
            held["last"] = sorted(snapshot)
            held["entry"] = snapshot.get(dead_id, {})
            return snapshot

        try:
            eventually(still_held, timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{dead_id} ejected",
                       accept=lambda snapshot: dead_id not in snapshot, swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
            gone_ms = clock.since()
        except WaitTimeout:
            gone_ms = None
        held_for_ms = clock.since()

    event_ms = None
    if has_events:
        ends = [e for e in server.admin.events(since_seq) if e["event"] == "disconnected" and e["connectionId"] == dead_id]
        if ends and gone_ms is not None:
            event_ms = clock.of_wall(ends[0]["t_ms"])
    ejected_ms = event_ms if event_ms is not None else gone_ms
    probes = []
    if nacos_server_peer.has_capability("pushes"):  # the reference server's push log: the probes that kept it, and the one that did not
        probes = [{"after_fault_ms": _r(clock.of_wall(p["t_ms"])), "outcome": p.get("outcome")}
                  for p in server.admin.pushes() if p["connectionId"] == dead_id and p["type"] == "ClientDetectionRequest"]
    observed = {"connection_id": dead_id, "bound": str(eject), "left current after (ms)": _r(gone_ms),
                "disconnected event after (ms)": _r(event_ms), "current at the end": held.get("last"),
                "ClientDetectionRequest probes (before the fault < 0)": probes[-6:]}
    cf.history.observe("tc04", observed)

    if ejected_ms is None:
        # `connected` of the entry (Nacos's Connection JSON has it) tells the two ways to fail apart.
        closed = held.get("entry", {}).get("connected") is False
        cf.fail(expected=f"the blackholed connection {dead_id} ejected within {eject}",
                actual=f"the dead registration was still held {held_for_ms:.0f} ms after the blackhole "
                       f"({FAIL_FACTOR}× the bound){', its transport closed' if closed else ''}; "
                       f"current {held.get('last')}",
                verdict="FAILED", at_ms=cf.history.relative_ms(clock.mono_ms),
                hint="the transport was closed but the registration kept" if closed else
                "no idle detection / ClientDetectionRequest probe, as the Nacos 2.2.0-2.2.4 ejector")
    if ejected_ms > eject.bound_ms:
        cf.late(expected=f"{dead_id} ejected within {eject}",
                actual=f"the dead registration was held {ejected_ms:.0f} ms after the blackhole",
                at_ms=cf.history.relative_ms(clock.mono_ms) + ejected_ms)
    cf.ok(f"ejected {ejected_ms:.0f} ms after the blackhole (bound {eject.bound_ms} ms)",
          expected=f"ejected within {eject}", actual=observed)


# ---- TC-05 ----------------------------------------------------------------------------------

@case("TC-05", "MUST", timeout_s=120)
def test_client_leaves_blackholed_server(cf, topology, nacos_server_peer, nacos_client_peer):
    """Blackhole → the client detects it through failed HealthChecks within `interval + retries × timeout + tolerance` and moves to another server."""
    client_knobs = supported(nacos_client_peer, SCALED_CLIENT_HEALTH)
    health = HealthBound.of(nacos_client_peer, client_knobs)
    servers = topology.nacos_servers(2, peer=nacos_server_peer, knobs=supported(nacos_server_peer, QUIET_SERVER))
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers, knobs=client_knobs)
    state = running(cf, client)
    dead = server_of(servers, state.get("server"))
    alive = next(s for s in servers if s is not dead)
    dead_id = registered_id(cf, dead, state)
    # No request through the client before the fault: a request refreshes the client's idle clock,
    # and Java, nacos-sdk-python and the reference client then skip the next HealthCheck wake, which
    # stretches the detection to 2 × interval + attempts × timeout. The bound is an idle client's.

    with Blackhole(dead.proxy, history=cf.history, label=dead.node.name):
        clock = Clock(cf)
        move = watch_move(cf, client, clock, away_from=dead.main_address, timeout_ms=FAIL_FACTOR * health.bound_ms)

    observed = {"bound": str(health), "connection_id": dead_id, **move.observed()}
    at = cf.history.relative_ms(clock.mono_ms)
    if move.moved_ms is None:
        noticed = (f"it noticed after {move.detected_ms:.0f} ms ({move.detected_by}) but" if move.detected_ms is not None
                   else "it never noticed and")
        cf.fail(expected=f"{client.name} detects the blackhole within {health} and runs on {alive.main_address}",
                actual=f"{noticed} was not RUNNING on another server {FAIL_FACTOR * health.bound_ms} ms after the "
                       f"blackhole; last state {brief(move.state)}",
                verdict="FAILED", at_ms=at, hint="no HealthCheck, a HealthCheck timeout taken as healthy, or no rotation")
    new_id = move.state.get("connection_id")
    try:
        wait_registered(cf.history, alive, timeout_ms=3000, connection_id=new_id, count=None if new_id else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"the client's new connection registered on {alive.main_address}",
                actual=f"current there: {sorted(exc.last or {})}", verdict="FAILED", at_ms=at)
    if move.detected_ms is None or move.detected_ms > health.bound_ms:
        cf.late(expected=f"the blackhole detected within {health}",
                actual=f"first sign after {_r(move.detected_ms)} ms ({move.detected_by}); running on "
                       f"{alive.main_address} after {move.moved_ms:.0f} ms", at_ms=at)
    cf.ok(f"detected after {move.detected_ms:.0f} ms (bound {health.bound_ms}), RUNNING on {alive.main_address} "
          f"after {move.moved_ms:.0f} ms", expected=f"detection within {health}, then another server", actual=observed)
