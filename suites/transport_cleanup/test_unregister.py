"""TC — unregister when a transport dies: the client process killed, the proxy disabled (FIN both
ways), the link reset (RST) (SPEC §5 TC-01..TC-03; research/nacos-protocol.md §2.4, §2.7;
research/toxiproxy-and-anchors.md §A3).

What must follow a transport's death (Nacos: ``AddressTransportFilter.transportTerminated`` →
``ConnectionManager.unregister``): its id leaves ``current``, the per-client-IP counter of the IP
it reported drops by one (``clientIpCounts``, capability ``client_ip_counts``), and the
disconnect listeners fire exactly once — seen as exactly one ``disconnected`` event for that id
(``events``, capability ``events``). Both are harness extensions (SPEC §4.2): a server without
one is judged on the rest, then gets UNIMPLEMENTED naming what could not be checked.

Bound: 1 s after the fault + the 250 ms tolerance (SPEC §5 preamble). Grading: everything within
the bound → OK; within the 5 s watch → NON-STRICT, the detail says how long the dead registration
was held; not within the watch, a wrong count or a second event → FAILED, saying what was held
for how long.

Each case proves its baseline first: the client under test RUNNING through its server's proxy
and registered under the id it reports, with the per-IP counter and the event log read before
the fault. Nothing can re-register while the cleanup is judged: the killed client is gone, the
disabled proxy refuses connections, and the armed reset_peer toxic resets every new connection
at its first bytes.

TC-03 technique (a real RST): Toxiproxy sets SO_LINGER 0 only on connections made while a
``reset_peer`` toxic is installed, and with ``toxicity`` 0 it skips the toxic but still sets the
linger (research §A3, Shopify/toxiproxy#603). So the toxic (upstream, timeout 0) goes in at
toxicity 0 *before* the client starts — traffic passes and the baseline is proven through it —
then a PATCH raises its toxicity to 1.0 (the live link's stubs restart and re-roll it) and the
client is asked for one request: that first chunk fires the toxic, which closes both sockets of
the link with linger 0, an RST each way. Evidence, from the kernel's table: the transport's
server-side socket (the connection id ``<ms>_<peerIp>_<peerPort>`` names its 4-tuple) vanishes
and neither end of that 4-tuple is left in TIME_WAIT or any other closing state, which a FIN
close would leave. Without that evidence the fault did not happen as designed: a setup error, not
a finding. The 1 s is counted from the moment the socket was seen gone.

Helpers here (``prove_registered``, ``watch_unregister``, ``judge_cleanup``, ...) are shared with
``test_rejected_and_pending`` (TC-10).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fixtures.case import case
from harness.control.agent import AgentControl
from harness.control.http import ControlError
from harness.errors import SetupError
from harness.faults import Kill, ProxyDown
from harness.observe.sockets import TcpEntry, snapshot
from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.toxiproxy import ResetPeer as ResetPeerToxic
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

TOLERANCE_MS = 250  # SPEC §5 preamble
UNREGISTER_BOUND_MS = 1000  # SPEC TC-01: the server unregisters within 1 s
UNREGISTER_WATCH_MS = 5000  # a registration still held after this is never cleaned up: FAILED
RUNNING_TIMEOUT_MS = 15000  # real libraries: ServerCheck 3 s timeout + setup wait, from a cold start
REGISTER_TIMEOUT_MS = 3000
SETTLE_MS = 500  # TC-02: "registered again once" must still hold this long after the rejoin
RST_WAIT_MS = 3000  # TC-03: the armed toxic fires on the client's request within this
POLL_MS = 25
CLOSING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSING")

_SWALLOW = (OSError, ValueError, ControlError)


# ---- baseline ---------------------------------------------------------------------------------

@dataclass
class Registered:
    """The client under test as the server knew it before the fault."""

    server: NacosServerHandle
    client: NacosClientHandle
    connection_id: str
    client_ip: str
    ip_count: int | None  # clientIpCounts[client_ip] before the fault (None without client_ip_counts)
    events_seq: int  # last seq of the events log before the fault
    has_events: bool  # capability ``events``: the listener-notification log
    has_counts: bool  # capability ``client_ip_counts``: the per-IP counter

    def missing(self) -> list[str]:
        return [c for c, has in (("client_ip_counts", self.has_counts), ("events", self.has_events)) if not has]

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server.main_address, "connection_id": self.connection_id, "client_ip": self.client_ip,
                "ip_count": self.ip_count, "events_seq": self.events_seq}


def running(cf, client: NacosClientHandle, *, what: str = "baseline",
            timeout_ms: float = RUNNING_TIMEOUT_MS) -> dict[str, Any]:
    try:
        return wait_client_running(cf.history, client, timeout_ms=timeout_ms)
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, dict) else {}
        cf.fail(expected=f"{client.name} RUNNING within {timeout_ms:.0f} ms ({what})",
                actual=f"last state {_brief(last) or exc.last!r}", hint="the handshake did not complete; see the peer logs",
                verdict="FAILED")
        raise  # unreachable: fail() raises


def prove_registered(cf, client: NacosClientHandle, server: NacosServerHandle) -> Registered:
    """Baseline: ``client`` RUNNING on ``server`` (through its proxy), registered under the id it
    reports, counted in ``clientIpCounts``; the event log's position is taken here."""
    state = running(cf, client)
    if state.get("server") not in (None, server.main_address):
        cf.fail(expected=f"{client.name} RUNNING on {server.main_address}, its only server (baseline)",
                actual=_brief(state), verdict="FAILED")
    cid = state.get("connection_id")
    try:
        ids = wait_registered(cf.history, server, timeout_ms=REGISTER_TIMEOUT_MS, connection_id=cid,
                              count=None if cid else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name}'s connection {cid or '(one)'} registered on {server.main_address} (baseline)",
                actual=f"current holds {sorted(exc.last or {})}", verdict="FAILED")
        raise
    cid = cid or next(iter(ids))
    client_ip = str((ids[cid].get("metaInfo") or {}).get("clientIp") or "")
    has_events = server.peer.has_capability("events")
    has_counts = server.peer.has_capability("client_ip_counts")
    ip_count, seq = None, 0
    if has_events:
        seq = max((int(e["seq"]) for e in server.admin.events()), default=0)
    if has_counts:
        counts = server.admin.client_ip_counts()
        ip_count = int(counts.get(client_ip, 0))
        mine = sum(1 for e in ids.values() if (e.get("metaInfo") or {}).get("clientIp") == client_ip)
        cf.check(ip_count == mine and ip_count >= 1,
                 expected=f"baseline: clientIpCounts[{client_ip}] counts the {mine} registered connection(s) of that IP",
                 actual={"clientIpCounts": counts, "current": sorted(ids)}, verdict="FAILED")
    reg = Registered(server, client, cid, client_ip, ip_count, seq, has_events, has_counts)
    cf.history.observe("baseline", reg.as_dict())
    return reg


def _brief(state: Any) -> Any:
    if not isinstance(state, dict):
        return state
    return {k: state.get(k) for k in ("status", "server", "connection_id")}


# ---- the cleanup watch --------------------------------------------------------------------------

@dataclass
class Cleanup:
    """When each part of the cleanup was first seen, in ms after the fault (None: not seen)."""

    fault: str
    connection_id: str
    client_ip: str
    gone_ms: float | None = None  # the id left `current`
    counted_ms: float | None = None  # clientIpCounts[ip] == baseline - 1
    event_ms: float | None = None  # a `disconnected` event for the id
    watched_ms: float = 0.0
    last_count: int | None = None
    disconnected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)
        return {"fault": self.fault, "connection_id": self.connection_id, "client_ip": self.client_ip,
                "gone_from_current_after_ms": r(self.gone_ms), "ip_count_decremented_after_ms": r(self.counted_ms),
                "disconnected_event_after_ms": r(self.event_ms), "watched_ms": round(self.watched_ms),
                "last_ip_count": self.last_count, "disconnected_events": len(self.disconnected)}


def watch_unregister(cf, reg: Registered, *, fault: str, fault_at_ms: float,
                     watch_ms: float = UNREGISTER_WATCH_MS) -> Cleanup:
    """Poll ``current``, ``clientIpCounts`` and ``events`` together until the id is gone, the
    count is down by one and a ``disconnected`` event is there, or ``watch_ms`` after the fault
    (monotonic ``fault_at_ms``). Observes only; ``judge_cleanup`` judges."""
    seen = Cleanup(fault, reg.connection_id, reg.client_ip)
    admin = reg.server.admin

    def poll() -> Cleanup:
        ids = admin.current()
        t = now_ms() - fault_at_ms
        if seen.gone_ms is None and reg.connection_id not in ids:
            seen.gone_ms = t
        if reg.has_counts:
            assert reg.ip_count is not None
            seen.last_count = int(admin.client_ip_counts().get(reg.client_ip, 0))
            t = now_ms() - fault_at_ms
            if seen.counted_ms is None and seen.last_count == reg.ip_count - 1:
                seen.counted_ms = t
        if reg.has_events:
            seen.disconnected = disconnected_events(reg)
            t = now_ms() - fault_at_ms
            if seen.event_ms is None and seen.disconnected:
                seen.event_ms = t
        seen.watched_ms = now_ms() - fault_at_ms
        return seen

    def done(s: Cleanup) -> bool:
        return (s.gone_ms is not None and (not reg.has_counts or s.counted_ms is not None)
                and (not reg.has_events or s.event_ms is not None))

    try:
        eventually(poll, timeout_ms=max(0.0, fault_at_ms + watch_ms - now_ms()), what=f"{reg.connection_id} cleaned up",
                   accept=done, swallow=_SWALLOW, interval_ms=POLL_MS)
    except WaitTimeout:
        seen.watched_ms = now_ms() - fault_at_ms
    cf.history.observe("cleanup", seen.as_dict())
    return seen


def disconnected_events(reg: Registered) -> list[dict[str, Any]]:
    return [e for e in reg.server.admin.events(reg.events_seq)
            if e.get("event") == "disconnected" and e.get("connectionId") == reg.connection_id]


def judge_cleanup(cf, reg: Registered, seen: Cleanup, *, bound_ms: float = UNREGISTER_BOUND_MS + TOLERANCE_MS,
                  at_ms: float | None = None) -> list[str]:
    """FAILED for a registration never dropped, a second (or no) ``disconnected`` event, or a
    per-IP count not decremented; returns what was right but late (for ``cf.late``)."""
    cid, ip = reg.connection_id, reg.client_ip
    if seen.gone_ms is None:
        cf.fail(expected=f"{cid} gone from current within {bound_ms:.0f} ms of the {seen.fault}",
                actual=f"still registered {seen.watched_ms:.0f} ms after the {seen.fault}: the server held the dead "
                       f"registration for the whole watch", at_ms=at_ms, verdict="FAILED",
                hint="the transport is dead but the server never unregistered it")
    if reg.has_events:
        cf.check(len(seen.disconnected) == 1,
                 expected=f"exactly one disconnected event for {cid} (listeners fire once)",
                 actual={"disconnected events for the id": seen.disconnected, "after_ms": seen.as_dict()},
                 at_ms=at_ms, verdict="FAILED")
    if reg.has_counts:
        if seen.counted_ms is None:
            assert reg.ip_count is not None
            cf.fail(expected=f"per-IP count of {ip} decremented {reg.ip_count} → {reg.ip_count - 1} within "
                             f"{bound_ms:.0f} ms of the {seen.fault}",
                    actual=f"clientIpCounts[{ip}] still {seen.last_count} {seen.watched_ms:.0f} ms after the "
                           f"{seen.fault} (the id left current after {seen.gone_ms:.0f} ms)",
                    at_ms=at_ms, verdict="FAILED", hint="the per-IP counter drifts from current")
    late = []
    for what, t in (("left current", seen.gone_ms), ("per-IP count decremented", seen.counted_ms),
                    ("disconnected event", seen.event_ms)):
        if t is not None and t > bound_ms:
            late.append(f"{what} {t:.0f} ms after the {seen.fault}")
    return late


def recheck_one_disconnect(cf, reg: Registered) -> None:
    """At the end of a case: still exactly one ``disconnected`` event for the dead id."""
    if not reg.has_events:
        return
    events = disconnected_events(reg)
    cf.history.observe("disconnected_events", {"connection_id": reg.connection_id, "events": events})
    cf.check(len(events) == 1, expected=f"exactly one disconnected event for {reg.connection_id} (listeners fire once)",
             actual=events, verdict="FAILED")


def finish(cf, reg: Registered, seen: Cleanup, late: list[str], detail: str) -> None:
    """Grade: NON-STRICT for lateness, UNIMPLEMENTED when an extension was missing, else OK."""
    if late:
        cf.late(expected=f"cleaned up within {UNREGISTER_BOUND_MS} + {TOLERANCE_MS} ms of the {seen.fault}",
                actual=f"the dead registration {reg.connection_id} was held: " + "; ".join(late))
    if reg.missing():
        cf.unimplemented(f"{reg.server.peer.name}: {reg.connection_id} left current after {seen.gone_ms:.0f} ms "
                         f"(judged), but the per-IP count / disconnected event checks need capabilities "
                         f"{reg.missing()}")
    cf.ok(detail, expected=f"gone from current, per-IP count -1, one disconnected event within "
                           f"{UNREGISTER_BOUND_MS} + {TOLERANCE_MS} ms", actual=seen.as_dict())


# ---- sockets of one transport ---------------------------------------------------------------------

def transport_peer(connection_id: str) -> tuple[str, int] | None:
    """The TCP peer the server saw, from an id ``<ms>_<peerIp>_<peerPort>`` (SPEC §4.2)."""
    parts = connection_id.rsplit("_", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def transport_sockets(server: NacosServerHandle, peer: tuple[str, int]) -> list[TcpEntry]:
    """Both ends of one transport on the server's real gRPC port: the server's socket (local =
    gRPC port, remote = peer) and the peer's (the proxy's upstream side)."""
    ip, port = peer
    return [e for e in snapshot([server.grpc_port])
            if (e.local_port == server.grpc_port and e.remote_port == port and e.remote_ip == ip)
            or (e.remote_port == server.grpc_port and e.local_port == port and e.local_ip == ip)]


def _states(entries: list[TcpEntry]) -> list[str]:
    return sorted(f"{e.local_ip}:{e.local_port}->{e.remote_ip}:{e.remote_port} {e.state}" for e in entries)


# ---- TC-01 ------------------------------------------------------------------------------------

@case("TC-01", "MUST", timeout_s=90)
def test_client_kill_unregisters(cf, topology, nacos_server_peer, nacos_client_peer):
    """Client process SIGKILL → server unregisters within 1 s: gone from `current`, per-IP count decremented, exactly one `disconnected` event.

    Procedure: baseline (RUNNING, registered, counted); SIGKILL the client's process group (the
    kernel closes its sockets, Toxiproxy passes the close on); watch `current`, `clientIpCounts`
    and `events` from the kill.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    reg = prove_registered(cf, client, server)

    kill = Kill(client.node, history=cf.history, label=client.name)
    killed_at = now_ms()
    kill.apply()
    seen = watch_unregister(cf, reg, fault="SIGKILL of the client", fault_at_ms=killed_at)
    late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(killed_at))
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the kill"
           + (f", count {reg.ip_count}→{seen.last_count} after {seen.counted_ms:.0f} ms" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else ""))


# ---- TC-02 ------------------------------------------------------------------------------------

def _rejoin_guard_ms(client: NacosClientHandle) -> float:
    """Hang guard for the rejoin after the proxy is back: the client may only notice through a
    failed HealthCheck, then backs off once and connects (no timing requirement, a bound only)."""
    peer, knobs = client.peer, client.knobs
    health = (peer.timer("health_interval_ms", knobs, default=5000)
              + (peer.timer("health_retry", knobs, default=3) + 1) * peer.timer("health_timeout_ms", knobs, default=3000))
    connect = (peer.timer("backoff_cap_ms", knobs, default=5000) + peer.timer("server_check_timeout_ms", knobs, default=3000)
               + peer.timer("setup_wait_ms", knobs, default=100))
    return health + connect + TOLERANCE_MS


def _connected_events(reg: Registered) -> list[dict[str, Any]]:
    return [e for e in reg.server.admin.events(reg.events_seq) if e.get("event") == "connected"]


@case("TC-02", "MUST", timeout_s=120)
def test_proxy_down_unregisters_and_client_rejoins_once(cf, topology, nacos_server_peer, nacos_client_peer):
    """Proxy disabled (FIN both sides) → same as TC-01; after re-enable the client reconnects and is registered again once.

    Procedure: baseline; disable the server's proxy (Toxiproxy closes both sockets of every
    connection: FIN each way; new connects are refused); watch the cleanup from the disable; then
    re-enable it and wait until the client is RUNNING under a new id that is registered. Then
    exactly one `connected` event since the fault (the new id), `current` == {new id} for 500 ms,
    and the per-IP count back at its baseline.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    reg = prove_registered(cf, client, server)
    peer = transport_peer(reg.connection_id)

    down_at = now_ms()
    with ProxyDown(server.proxy, history=cf.history):
        seen = watch_unregister(cf, reg, fault="proxy disable", fault_at_ms=down_at)
        if peer is not None:  # evidence only: an orderly close leaves TIME_WAIT on the closer
            cf.history.observe("transport_sockets", {"peer": peer, "states": _states(transport_sockets(server, peer))})
        late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(down_at))
    healed_at = now_ms()

    guard_ms = _rejoin_guard_ms(client)

    def rejoin() -> tuple[dict[str, Any], dict[str, Any]]:
        return client.control.state(), server.admin.current()

    def rejoined(seen_now: tuple[dict[str, Any], dict[str, Any]]) -> bool:
        state, ids = seen_now
        new = set(ids) - {reg.connection_id}
        if state.get("status") != "RUNNING" or not new:
            return False
        return state.get("connection_id") in (None, *new)

    cf.history.invoke(client.name, "rejoin", {"guard_ms": guard_ms})
    try:
        waited = eventually(rejoin, timeout_ms=guard_ms, what=f"{client.name} RUNNING and registered again",
                            accept=rejoined, swallow=_SWALLOW, interval_ms=50)
    except WaitTimeout as exc:
        state, ids = exc.last if isinstance(exc.last, tuple) else ({}, {})
        cf.fail(expected=f"after the proxy is re-enabled, {client.name} reconnects and is registered again "
                         f"(within the {guard_ms:.0f} ms guard)",
                actual={"state": _brief(state), "current": sorted(ids)}, verdict="FAILED")
        raise
    state, ids = waited.value
    new_id = state.get("connection_id") or next(iter(set(ids) - {reg.connection_id}))
    rejoin_ms = now_ms() - healed_at
    cf.history.ok(client.name, "rejoin", {"connection_id": new_id, "after_ms": round(rejoin_ms, 1)})

    def once() -> dict[str, Any]:
        view: dict[str, Any] = {"current": sorted(server.admin.current())}
        if reg.has_events:
            view["connected"] = [e.get("connectionId") for e in _connected_events(reg)]
        return view

    def exactly_once(view: dict[str, Any]) -> bool:
        return view["current"] == [new_id] and (not reg.has_events or view["connected"] == [new_id])

    held, bad, broken_after_ms = holds_for(once, duration_ms=SETTLE_MS, what="registered again exactly once",
                                           accept=exactly_once, interval_ms=50)
    cf.check(held, expected=f"{client.name} registered again exactly once: current == [{new_id}] and one connected "
                            f"event since the fault (for {new_id}), for {SETTLE_MS} ms",
             actual={"seen": bad, "after_ms": round(broken_after_ms, 1)}, verdict="FAILED",
             hint="the client registered twice (two transports), or the old id came back")
    if reg.has_counts:
        counts = server.admin.client_ip_counts()
        cf.history.observe("client_ip_counts", counts)
        cf.check(counts.get(reg.client_ip, 0) == reg.ip_count,
                 expected=f"per-IP count of {reg.client_ip} back at {reg.ip_count} once the client is registered again",
                 actual=counts, verdict="FAILED")
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the proxy went down"
           + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else "")
           + f"; rejoined once as {new_id} {rejoin_ms:.0f} ms after the proxy came back")


# ---- TC-03 ------------------------------------------------------------------------------------

class _Request(threading.Thread):
    """One ``/request`` on the client's own control connection, off the case's thread (the
    request's bytes are what fires the armed reset_peer toxic; its answer does not matter)."""

    def __init__(self, client: NacosClientHandle, timeout_ms: int) -> None:
        super().__init__(name=f"tc03-request-{client.name}", daemon=True)
        self.control = AgentControl(client.control_port)
        self.timeout_ms = timeout_ms
        self.answer: Any = None

    def run(self) -> None:
        try:
            self.answer = self.control.request(timeout_ms=self.timeout_ms)
        except Exception as exc:  # noqa: BLE001 - recorded, never judged
            self.answer = repr(exc)
        finally:
            self.control.close()


@case("TC-03", "MUST", timeout_s=90)
def test_reset_peer_unregisters(cf, topology, nacos_server_peer, nacos_client_peer):
    """reset_peer (RST; toxic installed before the connection) → same as TC-01.

    Procedure: a reset_peer toxic (upstream, timeout 0) at toxicity 0 on the server's proxy before
    the client starts (linger 0 on its connection, traffic untouched); baseline through it; PATCH
    toxicity to 1.0 and have the client send one request: the toxic fires on that chunk and
    resets both sockets. RST evidence from the socket table (no closing state left on the
    transport's 4-tuple), then the TC-01 watch from the moment the server's socket was gone.
    The toxic stays armed (new connections die at their first bytes) until the judgement is done.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    toxic = ResetPeerToxic(timeout_ms=0, stream="upstream", toxicity=0.0, name="tc03_reset_peer")
    with server.proxy.toxic(toxic) as toxic_name:
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
        reg = prove_registered(cf, client, server)
        peer = transport_peer(reg.connection_id)
        if peer is None:
            raise SetupError(f"TC-03: connection id {reg.connection_id!r} is not <ms>_<peerIp>_<peerPort> (SPEC §4.2); "
                             "the transport's sockets cannot be told apart, so the RST cannot be shown")
        before = transport_sockets(server, peer)
        cf.history.observe("transport_sockets", {"phase": "baseline", "peer": peer, "states": _states(before)})
        if not any(e.state == "ESTABLISHED" and e.local_port == server.grpc_port for e in before):
            raise SetupError(f"TC-03: no ESTABLISHED socket {server.host}:{server.grpc_port} <- {peer[0]}:{peer[1]} for "
                             f"{reg.connection_id}; the id does not name its transport, nothing was judged")

        armed_at = now_ms()
        server.proxy.update_toxic(toxic_name, {}, toxicity=1.0)
        trigger = _Request(client, timeout_ms=1000)
        cf.history.invoke(client.name, "request", {"why": "its first chunk fires the armed reset_peer"})
        trigger.start()
        try:
            gone = eventually(lambda: transport_sockets(server, peer), timeout_ms=RST_WAIT_MS, interval_ms=10,
                              what=f"transport {peer[0]}:{peer[1]} reset",
                              accept=lambda es: not any(e.state == "ESTABLISHED" for e in es))
        except WaitTimeout as exc:
            raise SetupError(f"TC-03: the armed reset_peer did not reset {reg.connection_id} within {RST_WAIT_MS} ms of "
                             f"the request (sockets {_states(exc.last or [])}); nothing was judged") from None
        rst_at = gone.at_mono_ms
        evidence = {"peer": peer, "armed_to_reset_ms": round(rst_at - armed_at, 1), "left": _states(gone.value)}
        cf.history.observe("rst", evidence)
        if any(e.state in CLOSING_STATES for e in gone.value):
            raise SetupError(f"TC-03: {reg.connection_id} was closed with a FIN, not an RST (left {_states(gone.value)}); "
                             "linger 0 was not set on it, nothing was judged")

        seen = watch_unregister(cf, reg, fault="RST", fault_at_ms=rst_at)
        late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(rst_at))
    trigger.join(timeout=10)
    cf.history.info(client.name, "request", trigger.answer)
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"RST {evidence['armed_to_reset_ms']:.0f} ms after arming (no closing state left); {reg.connection_id} "
           f"left current {seen.gone_ms:.0f} ms after it"
           + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else ""))
