"""Dead links, judged on the peers' own timers (TC-04, TC-05, TC-06, TC-09 and the packet-level
cases): the steps that watch a client leave a dead server (``watch_move``) or a server drop a
dead connection (``watch_current``), from the instant a fault took effect on both clocks
(``Clock``). The bounds they are judged against (``HealthBound``, ``EjectBound``) live in
``harness.scenarios.bounds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import SetupError
from harness.observe.sockets import TcpEntry, owners, snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import (
    CONTROL_ERRORS,
    FAIL_FACTOR,
    POLL_MS,
    REGISTER_TIMEOUT_MS,
    SCALED_CLIENT_HEALTH,
    HealthBound,
    supported,
)
from harness.scenarios.nacos import last_event_seq, wait_registered
from harness.scenarios.steps import brief, registered_id, running, server_of
from harness.topology import CLOSE_WAIT_GRACE_MS, NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms


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


def expect_moved(cf, client: NacosClientHandle, move: Move, alive: NacosServerHandle, *, bound: Any,
                 fault: str, at_ms: float, hint: str = "") -> str | None:
    """FAILED unless the client ended RUNNING on another server (``alive``) within the watch, with
    its new connection registered there; returns that connection's id (None: the agent names none)."""
    if move.moved_ms is None:
        noticed = (f"it noticed after {move.detected_ms:.0f} ms ({move.detected_by}) but" if move.detected_ms is not None
                   else "it never noticed and")
        cf.fail(expected=f"{client.name} detects the {fault} within {bound} and runs on {alive.main_address}",
                actual=f"{noticed} was not RUNNING on another server {FAIL_FACTOR * bound.bound_ms} ms after the "
                       f"{fault}; last state {brief(move.state)}",
                verdict="FAILED", at_ms=at_ms, hint=hint)
    new_id = move.state.get("connection_id")
    try:
        wait_registered(cf.history, alive, timeout_ms=REGISTER_TIMEOUT_MS, connection_id=new_id,
                        count=None if new_id else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"the client's new connection registered on {alive.main_address}",
                actual=f"current there: {sorted(exc.last or {})}", verdict="FAILED", at_ms=at_ms)
    return new_id


@dataclass
class OnOneOfTwo:
    """A client with scaled health timers (where it takes them), RUNNING on one of two servers."""

    client: NacosClientHandle
    health: HealthBound
    on: NacosServerHandle  # the server it runs on: the one the fault hits
    other: NacosServerHandle  # where it must go
    connection_id: str  # its registration on ``on``


def client_on_one_of_two(cf, topology, server_peer: PeerManifest, client_peer: PeerManifest, *,
                         server_knobs: dict[str, Any] | None = None) -> OnOneOfTwo:
    """Baseline of the dead-server cases: two servers, one client listing both, RUNNING and
    registered on one of them."""
    client_knobs = supported(client_peer, SCALED_CLIENT_HEALTH)
    servers = topology.nacos_servers(2, peer=server_peer, knobs=server_knobs or {})
    client = topology.nacos_client(peer=client_peer, servers=servers, knobs=client_knobs)
    state = running(cf, client)
    on = server_of(servers, state.get("server"))
    other = next(s for s in servers if s is not on)
    return OnOneOfTwo(client, HealthBound.of(client_peer, client_knobs), on, other, registered_id(cf, on, state))


def expect_detected(cf, move: Move, bound: Any, alive: NacosServerHandle, *, what: str, at_ms: float) -> None:
    """NON-STRICT when the client's first sign of ``what`` came after its health-check bound (or
    never, though it moved)."""
    if move.detected_ms is None or move.detected_ms > bound.bound_ms:
        cf.late(expected=f"{what} detected within {bound}",
                actual=f"first sign after {rounded(move.detected_ms)} ms ({move.detected_by}); running on "
                       f"{alive.main_address} after {move.moved_ms:.0f} ms", at_ms=at_ms)


def judge_removal(cf, removed_ms: float | None, bound: Any, clock: Clock, *, what: str, after: str, never: str,
                  hint: str) -> float:
    """Grade a dead registration's removal, ``removed_ms`` after ``clock``'s fault: FAILED when it was
    never removed (``never`` says what was still held), NON-STRICT when removed past ``bound``;
    returns ``removed_ms`` for the OK message."""
    at_ms = cf.history.relative_ms(clock.mono_ms)
    if removed_ms is None:
        cf.fail(expected=f"{what} within {bound}", actual=never, verdict="FAILED", at_ms=at_ms, hint=hint)
        raise AssertionError("unreachable: fail() raises")
    if removed_ms > bound.bound_ms:
        cf.late(expected=f"{what} within {bound}", actual=f"held {removed_ms:.0f} ms after {after}",
                at_ms=at_ms + removed_ms)
    return removed_ms


def answered_probes(server: NacosServerHandle, connection_id: str) -> int | None:
    """How many of the server's ClientDetectionRequests to ``connection_id`` were answered (its
    pushes log: detail only, None without the extension). An answered probe means the client
    still holds that transport open and alive, whatever it reports."""
    if not server.peer.has_capability("pushes"):
        return None
    return sum(1 for p in server.admin.pushes() if p.get("connectionId") == connection_id
               and p.get("type") == "ClientDetectionRequest" and p.get("outcome") == "answered")


# ---- TC-04: a blackholed connection the server must eject ------------------------------------

@dataclass
class Blackholed:
    """TC-04's baseline: one client RUNNING on one server, registered as ``connection_id``."""

    client: NacosClientHandle
    server: NacosServerHandle
    connection_id: str
    has_events: bool  # timed events (the extension) date the ejection
    events_seq: int  # the server's events log before the fault


def one_client_registered(cf, topology, server_peer: PeerManifest, client_peer: PeerManifest, *,
                          server_knobs: dict[str, Any]) -> Blackholed:
    """One server, one client listing only it (no second registration to tell apart), RUNNING and
    registered; still registered right before the fault (an id gone before it is no ejection)."""
    (server,) = topology.nacos_servers(1, peer=server_peer, knobs=server_knobs)
    client = topology.nacos_client(peer=client_peer, servers=[server])
    dead_id = registered_id(cf, server, running(cf, client))
    has_events = server_peer.has_capability("events")
    since_seq = last_event_seq(server)
    before = server.admin.current()
    cf.baseline(dead_id in before and client.control.state().get("connection_id") in (None, dead_id),
                expected=f"{dead_id} registered and still the client's connection before the blackhole",
                actual={"current": sorted(before), "client": brief(client.control.state())},
                hint="the connection was dropped before the fault (a client not answering probes? see SR-19)")
    return Blackholed(client, server, dead_id, has_events, since_seq)


def ejection_evidence(base: Blackholed, clock: Clock, gone_ms: float | None, bound: Any,
                      last: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """When the server ejected ``base``'s connection after the fault: its timed ``disconnected``
    event where it has one (the extension), else when the id left ``current``; with what the
    reference server's push log shows of the probes that kept it and the one that did not."""
    server, dead_id = base.server, base.connection_id
    event_ms = None
    if base.has_events:
        ends = [e for e in server.admin.events(base.events_seq)
                if e["event"] == "disconnected" and e["connectionId"] == dead_id]
        if ends and gone_ms is not None:
            event_ms = clock.of_wall(ends[0]["t_ms"])
    probes = []
    if server.peer.has_capability("pushes"):
        probes = [{"after_fault_ms": rounded(clock.of_wall(p["t_ms"])), "outcome": p.get("outcome")}
                  for p in server.admin.pushes() if p["connectionId"] == dead_id and p["type"] == "ClientDetectionRequest"]
    observed = {"connection_id": dead_id, "bound": str(bound), "left current after (ms)": rounded(gone_ms),
                "disconnected event after (ms)": rounded(event_ms), "current at the end": sorted(last),
                "ClientDetectionRequest probes (before the fault < 0)": probes[-6:]}
    return (event_ms if event_ms is not None else gone_ms), observed


# ---- TC-06: what a client keeps towards a killed server --------------------------------------

def client_close_wait(proxy_port: int) -> list[TcpEntry]:
    """Client-side sockets towards ``proxy_port`` in CLOSE_WAIT: the proxy closed, the client did not."""
    return [e for e in snapshot([proxy_port]) if e.state == "CLOSE_WAIT" and e.remote_port == proxy_port]


def no_close_wait_before(server: NacosServerHandle) -> None:
    """SetupError when sockets towards ``server``'s proxy port are in CLOSE_WAIT before the fault."""
    port = server.proxied_grpc_port
    baseline = client_close_wait(port)
    if baseline:
        raise SetupError(f"baseline: expected no client-side CLOSE_WAIT towards {server.host}:{port} before the "
                         f"kill, found {baseline}: another run's sockets on this port? Rerun the case alone")


def expect_no_close_wait(cf, client: NacosClientHandle, dead: NacosServerHandle, clock: Clock, *,
                         at_ms: float) -> None:
    """FAILED when the client still holds a socket in CLOSE_WAIT towards ``dead``'s proxy port a
    grace after it moved (the proxy closed it; the client never closed its own side)."""
    port = dead.proxied_grpc_port
    try:
        eventually(lambda: client_close_wait(port), timeout_ms=CLOSE_WAIT_GRACE_MS,
                   what=f"no client-side CLOSE_WAIT towards :{port}", accept=lambda left: not left,
                   swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
    except WaitTimeout as exc:
        left: list[TcpEntry] = exc.last or []
        pids = owners(left)
        leaked = [{"socket": f"{e.local_ip}:{e.local_port} -> {e.remote_ip}:{e.remote_port}", "state": e.state,
                   "pid": pids.get(e.inode), "client pid": client.node.pid} for e in left]
        cf.history.observe("client_close_wait", leaked)
        cf.fail(expected=f"no client-side CLOSE_WAIT towards the dead server's proxy {dead.host}:{port} "
                         f"{CLOSE_WAIT_GRACE_MS} ms after the client moved",
                actual=f"{len(left)} socket(s) still in CLOSE_WAIT {clock.since():.0f} ms after the kill: {leaked}",
                verdict="FAILED", at_ms=at_ms, hint="the client never closed its side after the proxy closed it")


# ---- TC-15: the server's side of a half-open link ----------------------------------------------

def upstream_ports(server) -> list[int]:
    """The proxy's upstream sockets to the server's gRPC port (their source ports), ESTABLISHED."""
    return sorted({e.remote_port for e in snapshot([server.grpc_port])
                   if e.local_port == server.grpc_port and e.local_ip == server.bind_host
                   and e.remote_ip == server.namespace.host_ip and e.state == "ESTABLISHED"})
