"""Packet-level faults met by a client itself (TC-16..TC-18): two servers each in its own
network namespace, the client given their own addresses (no proxy in between: Toxiproxy would
accept the SYN a dropped server never answers), its connects towards a dead server watched in the
kernel's table (``ConnectWatch``), its CPU time as the hot-loop detector, and what the server made
of a link silent one way (``server_side``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from harness.errors import SetupError, Unimplemented
from harness.faults import Silence
from harness.observe.sockets import snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import FAIL_FACTOR, SCALED_CLIENT_HEALTH, HealthBound, reconnect_ms, supported
from harness.scenarios.cleanup import transport_peer, transport_sockets
from harness.scenarios.dead_links import Clock, Move, expect_detected, expect_moved, watch_current, watch_move
from harness.scenarios.reconnects import cpu_seconds
from harness.scenarios.steps import registered_id, running
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

SCALED_CONNECT = {"server_check_timeout_ms": 1000, "backoff_cap_ms": 500}  # for peers that take them
CONNECT_SAMPLE_MS = 20
CPU_SETTLE_MS = 1000  # the CPU window runs on this long after the move: a poller left spinning shows
# How long the dead server is watched after the client moved: a FIN that crossed would end the old
# registration at once; where it is lost only the server's own probe can (TC-17).
SERVER_SIDE_WINDOW_MS = 3000
ONE_WAY = {"to_peer": "client→server", "from_peer": "server→client"}  # Silence's direction → what is lost


@dataclass(frozen=True)
class MoveBound:
    """Detection (the client's health-check bound) and then one reconnect elsewhere."""

    health: HealthBound
    reconnect_ms: int

    @property
    def bound_ms(self) -> int:
        return self.health.bound_ms + self.reconnect_ms

    def __str__(self) -> str:
        return f"{self.health} + one reconnect {self.reconnect_ms} = {self.bound_ms} ms"


@dataclass
class DirectPair:
    """A client RUNNING on one of two namespaced servers it reaches at their own addresses."""

    client: NacosClientHandle
    health: HealthBound
    on: NacosServerHandle
    other: NacosServerHandle
    connection_id: str


def client_on_one_of_two_direct(cf, topology, server_peer: PeerManifest, client_peer: PeerManifest, *,
                                server_knobs: dict[str, Any] | None = None) -> DirectPair:
    """Two servers, each alone in its own namespace (not a cluster: members would have to reach
    each other across namespaces); one client listing both by their namespace addresses, with
    scaled health and connect timers where it takes them; RUNNING and registered on one."""
    servers = [topology.nacos_servers(1, peer=server_peer, namespaced=True, knobs=server_knobs)[0] for _ in range(2)]
    if any(s.direct_address is None for s in servers):
        raise Unimplemented(f"{server_peer.label}: its gRPC port is not its main port + 1000, so a client given "
                            "its own address cannot derive it")
    knobs = supported(client_peer, {**SCALED_CLIENT_HEALTH, **SCALED_CONNECT})
    client = topology.nacos_client(peer=client_peer, servers=[s.direct_address for s in servers], knobs=knobs)
    state = running(cf, client)
    by_address = {s.direct_address: s for s in servers}
    on = by_address.get(state.get("server"))
    cf.baseline(on is not None, expected=f"{client.name} RUNNING on one of {sorted(by_address)}",
                actual=state.get("server"))
    other = next(s for s in servers if s is not on)
    return DirectPair(client, HealthBound.of(client_peer, knobs), on, other, registered_id(cf, on, state))


@dataclass
class ConnectWatch:
    """Samples the host's TCP table for connects to ``host:port`` still in SYN_SENT (each by its
    local port), on a daemon thread; ``stop()`` ends it. ``towards(server)`` for a Nacos server's
    gRPC port."""

    host: str
    port: int
    first_seen_ms: dict[int, float] = field(default_factory=dict)
    last_seen_ms: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    @classmethod
    def towards(cls, server: NacosServerHandle) -> ConnectWatch:
        return cls(server.bind_host, server.grpc_port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> ConnectWatch:
        self._thread = threading.Thread(target=self._run, name="connect-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        target = (self.host, self.port)
        try:
            while not self._stop.is_set():
                t = now_ms()
                for e in snapshot([self.port]):
                    if e.state == "SYN_SENT" and (e.remote_ip, e.remote_port) == target:
                        self.first_seen_ms.setdefault(e.local_port, t)
                        self.last_seen_ms[e.local_port] = t
                self._stop.wait(CONNECT_SAMPLE_MS / 1000.0)  # a pace, not synchronisation
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._error is not None:
            raise self._error

    def pending(self) -> list[int]:
        """Local ports in SYN_SENT towards the server right now."""
        target = (self.host, self.port)
        return sorted(e.local_port for e in snapshot([self.port])
                      if e.state == "SYN_SENT" and (e.remote_ip, e.remote_port) == target)

    def lifetimes_ms(self) -> dict[int, float]:
        """How long each connect was seen stuck (first to last sample; a sampling interval short)."""
        return {port: round(self.last_seen_ms[port] - first, 1) for port, first in self.first_seen_ms.items()}

    def observed(self) -> dict[str, Any]:
        lives = self.lifetimes_ms()
        return {"stuck connects": len(lives), "longest stuck ms": max(lives.values(), default=None),
                "stuck ms": sorted(lives.values())[-8:]}


class CpuWatch:
    """The client process's CPU time (with its children) from now, as a fraction of one core."""

    def __init__(self, client: NacosClientHandle) -> None:
        if client.node.pid is None:
            raise SetupError(f"{client.name} has no process id: its CPU time cannot be measured")
        self.pid = client.node.pid
        self.started_ms = now_ms()
        self.cpu_start_s = cpu_seconds(self.pid)

    def fraction(self) -> float:
        elapsed_s = max(1e-3, (now_ms() - self.started_ms) / 1000.0)
        return (cpu_seconds(self.pid) - self.cpu_start_s) / elapsed_s

    def fraction_after(self, settle_ms: float) -> float:
        """The fraction once ``settle_ms`` more have passed (a bounded wait on the clock itself)."""
        until = now_ms() + settle_ms
        eventually(now_ms, accept=lambda t: t >= until, timeout_ms=settle_ms + 1000, what="the CPU window",
                   interval_ms=50)
        return self.fraction()


def transport_states(pair: DirectPair, connection_id: str) -> dict[str, list[str]]:
    """Both ends of a registered connection in the kernels' TCP tables (the client's on the host,
    the server's in its namespace): whether a registration nobody uses is the client's leak (its
    socket still ESTABLISHED) or the server's (the client's socket gone, the server's not)."""
    peer = transport_peer(connection_id)
    if peer is None:
        return {"unknown": [f"{connection_id!r} names no ip_port"]}
    # One table read per server; two servers on one port number see the same sockets: once each.
    entries = list({(e.local_ip, e.local_port, e.remote_ip, e.remote_port): e
                    for server in (pair.on, pair.other) for e in transport_sockets(server, peer)}.values())
    return {"client side": sorted(e.state for e in entries if (e.local_ip, e.local_port) == peer),
            "server side": sorted(e.state for e in entries if (e.remote_ip, e.remote_port) == peer)}


def server_side(pair: DirectPair, clock: Clock, *, window_ms: float) -> dict[str, Any]:
    """What the dead server made of the client's old connection, ``window_ms`` at most: when it
    left its ``current`` (ms after the fault), or that it was still held. Recorded, not judged: the
    client's move is the requirement; this is the other side of the same link."""
    gone_ms, last = watch_current(pair.on, clock, until=lambda snapshot: pair.connection_id not in snapshot,
                                  timeout_ms=window_ms, what=f"{pair.connection_id} gone from {pair.on.direct_address}")
    if gone_ms is None:
        return {"server": f"still held {pair.connection_id} {clock.since():.0f} ms after the fault",
                "server current": sorted(last), "its transport's ends": transport_states(pair, pair.connection_id)}
    return {"server": f"removed {pair.connection_id} {gone_ms:.0f} ms after the fault"}


@dataclass
class OneWayDrop:
    """A client's link with one direction dropped: how the client left, what the server made of it."""

    direction: str
    bound: MoveBound
    move: Move
    at_ms: float  # the fault, in the history's time
    server: dict[str, Any]

    @property
    def lost(self) -> str:
        return ONE_WAY[self.direction]

    def observed(self) -> dict[str, Any]:
        return {"lost": self.lost, "bound": str(self.bound), **self.move.observed(), **self.server}


def drop_one_way(cf, pair: DirectPair, client_peer: PeerManifest, *, direction: str) -> OneWayDrop:
    """Drop one direction of every packet on the client's server's gRPC port (``direction`` as in
    ``Silence``); watch the client until it runs on the other server (FAILED when it does not within
    twice its bound), then the dead server for ``SERVER_SIDE_WINDOW_MS``; heal."""
    bound = MoveBound(pair.health, reconnect_ms(client_peer, pair.client.knobs))
    dead = pair.on
    with Silence(dead, port=dead.grpc_port, direction=direction, history=cf.history, label=dead.node.name):
        clock = Clock(cf)
        move = watch_move(cf, pair.client, clock, away_from=dead.direct_address, timeout_ms=FAIL_FACTOR * bound.bound_ms)
        at_ms = cf.history.relative_ms(clock.mono_ms)
        expect_moved(cf, pair.client, move, pair.other, bound=bound, fault=f"{ONE_WAY[direction]} drop", at_ms=at_ms,
                     hint="no HealthCheck, or a HealthCheck whose lost request or answer is taken as healthy")
        server = server_side(pair, clock, window_ms=SERVER_SIDE_WINDOW_MS)
    drop = OneWayDrop(direction, bound, move, at_ms, server)
    cf.history.observe("one_way_drop", drop.observed())
    return drop


def expect_left_one_way(cf, drops: list[tuple[DirectPair, OneWayDrop]]) -> None:
    """TC-17's grading once the client moved in every direction: a first sign past its health-check
    bound, or a move past detection + one reconnect, is NON-STRICT; otherwise OK with both sides' times."""
    for pair, drop in drops:
        expect_detected(cf, drop.move, pair.health, pair.other, what=f"the {drop.lost} loss", at_ms=drop.at_ms)
        if drop.move.moved_ms > drop.bound.bound_ms:
            cf.late(expected=f"with {drop.lost} lost, RUNNING on {pair.other.direct_address} within {drop.bound}",
                    actual=drop.observed(), at_ms=drop.at_ms)
    cf.ok("; ".join(f"{d.lost} lost: left after {d.move.detected_ms:.0f} ms (bound {p.health.bound_ms}), RUNNING "
                    f"elsewhere after {d.move.moved_ms:.0f} ms (bound {d.bound.bound_ms}), server side: {d.server['server']}"
                    for p, d in drops),
          expected="each direction: move within detection + one reconnect", actual=[d.observed() for _, d in drops])


def expect_no_pending_connect(cf, connects: ConnectWatch, *, after_ms: float, at_ms: float) -> list[int]:
    """Once the client runs elsewhere, no connect of its towards the dead server may stay pending
    longer than ``after_ms`` (its connect timeout + tolerance): FAILED with the sockets left."""
    try:
        eventually(connects.pending, accept=lambda left: not left, timeout_ms=after_ms,
                   what="no connect pending towards the dead server", interval_ms=CONNECT_SAMPLE_MS)
        return []
    except WaitTimeout as exc:
        left = exc.last or []
        cf.fail(expected=f"no connect towards the dead server {connects.address} still pending "
                         f"{after_ms:.0f} ms after the client ran elsewhere (its connect timeout + tolerance)",
                actual={"SYN_SENT from local ports": left, **connects.observed()}, verdict="FAILED", at_ms=at_ms,
                hint="a connect attempt abandoned without closing its socket: the kernel retries the SYN for minutes")
        return left
