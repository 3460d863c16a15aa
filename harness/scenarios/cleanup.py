"""Unregister when a transport dies, judged on any Nacos server (SPEC §5 TC-01..TC-03, TC-10):
the registration leaves ``current``, the per-client-IP counter of its IP drops by one (the
``client_ip_counts`` extension: the reference server alone shows it), and the disconnect listeners
fire exactly once (``ServerEvents``: the ``events`` extension, or the server's own log).

``prove_registered`` takes the baseline (a client RUNNING and registered, the counter and the
event log's position read before the fault), ``watch_unregister`` observes from the fault,
``judge_cleanup`` grades what it saw (FAILED for a registration never dropped, a second event, a
counter not decremented; what was right but late comes back for ``finish``). A check that the
server cannot show is named in ``finish``'s UNIMPLEMENTED, after the rest was judged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from harness.control.agent import AgentControl
from harness.errors import SetupError
from harness.observe.sockets import TcpEntry, snapshot
from harness.scenarios.bounds import CONTROL_ERRORS, FINE_POLL_MS, TOLERANCE_MS, HealthBound, reconnect_ms
from harness.scenarios.steps import brief, registered_on, running
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

UNREGISTER_BOUND_MS = 1000  # SPEC TC-01: the server unregisters within 1 s
UNREGISTER_WATCH_MS = 5000  # a registration still held after this is never cleaned up: FAILED


# ---- baseline ---------------------------------------------------------------------------------

@dataclass
class Registered:
    """The client under test as the server knew it before the fault."""

    server: NacosServerHandle
    client: NacosClientHandle | None  # None: a raw probe's connection
    connection_id: str
    client_ip: str
    ip_count: int | None  # clientIpCounts[client_ip] before the fault (None without client_ip_counts)
    events_seq: int  # last seq of the events log before the fault
    has_events: bool  # capability ``events``: the listener-notification log
    has_counts: bool  # capability ``client_ip_counts``: the per-IP counter

    def missing(self) -> list[str]:
        return [what for what, has in (("the per-IP counter (extension client_ip_counts)", self.has_counts),
                                       ("listener notifications (events extension or a [witness] log)",
                                        self.has_events)) if not has]

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server.main_address, "connection_id": self.connection_id, "client_ip": self.client_ip,
                "ip_count": self.ip_count, "events_seq": self.events_seq}


def prove_registered(cf, client: NacosClientHandle, server: NacosServerHandle) -> Registered:
    """Baseline: ``client`` RUNNING on ``server`` (through its proxy), registered under the id it
    reports, counted in ``clientIpCounts``; the event log's position is taken here."""
    state = running(cf, client)
    if state.get("server") not in (None, server.main_address):
        cf.fail(expected=f"{client.name} RUNNING on {server.main_address}, its only server (baseline)",
                actual=brief(state), verdict="FAILED")
    cid, ids = registered_on(cf, client, server, state)
    return registration(cf, server, cid, ids, client=client)


def registration(cf, server: NacosServerHandle, cid: str, ids: dict[str, Any],
                 client: NacosClientHandle | None = None) -> Registered:
    """The baseline of one registered connection ``cid`` (``ids``: ``current`` holding it): its
    IP's counter and the event log's position, read before the fault (a raw probe's too)."""
    client_ip = str((ids[cid].get("metaInfo") or {}).get("clientIp") or "")
    has_events = server.events.available  # the events extension, or the server's own log
    has_counts = server.peer.has_capability("client_ip_counts")
    ip_count, seq = None, 0
    if has_events:
        seq = server.events.cursor()
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
    # When the last query that still showed each part undone was *sent* (ms after the fault). A
    # part is held past a bound only if a query sent after the bound still showed it: a slow answer
    # (a loaded JVM's HTTP turn-around) delays when we see it, not when the server did it.
    still_registered_sent_ms: float | None = None
    still_counted_sent_ms: float | None = None
    no_event_sent_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)
        return {"fault": self.fault, "connection_id": self.connection_id, "client_ip": self.client_ip,
                "gone_from_current_after_ms": r(self.gone_ms), "ip_count_decremented_after_ms": r(self.counted_ms),
                "disconnected_event_after_ms": r(self.event_ms), "watched_ms": round(self.watched_ms),
                "last_ip_count": self.last_count, "disconnected_events": len(self.disconnected),
                "last_query_still_showing_ms": {"registered": r(self.still_registered_sent_ms),
                                                "counted": r(self.still_counted_sent_ms),
                                                "no event": r(self.no_event_sent_ms)}}

    def held_past(self, bound_ms: float) -> list[str]:
        """What a query sent after ``bound_ms`` still showed undone (right, but late)."""
        late = []
        for what, seen_ms, held_ms in (("left current", self.gone_ms, self.still_registered_sent_ms),
                                       ("per-IP count decremented", self.counted_ms, self.still_counted_sent_ms),
                                       ("disconnected event", self.event_ms, self.no_event_sent_ms)):
            if seen_ms is not None and held_ms is not None and held_ms > bound_ms:
                late.append(f"{what} {seen_ms:.0f} ms after the {self.fault} (a query sent at {held_ms:.0f} ms "
                            "still showed it undone)")
        return late


def watch_unregister(cf, reg: Registered, *, fault: str, fault_at_ms: float,
                     watch_ms: float = UNREGISTER_WATCH_MS) -> Cleanup:
    """Poll ``current``, ``clientIpCounts`` and ``events`` together until the id is gone, the
    count is down by one and a ``disconnected`` event is there, or ``watch_ms`` after the fault
    (monotonic ``fault_at_ms``). Observes only; ``judge_cleanup`` judges."""
    seen = Cleanup(fault, reg.connection_id, reg.client_ip)
    admin = reg.server.admin

    def poll() -> Cleanup:
        sent = now_ms() - fault_at_ms
        ids = admin.current()
        if seen.gone_ms is None:
            if reg.connection_id not in ids:
                seen.gone_ms = now_ms() - fault_at_ms
            else:
                seen.still_registered_sent_ms = sent
        if reg.has_counts:
            assert reg.ip_count is not None
            sent = now_ms() - fault_at_ms
            seen.last_count = int(admin.client_ip_counts().get(reg.client_ip, 0))
            if seen.counted_ms is None:
                if seen.last_count == reg.ip_count - 1:
                    seen.counted_ms = now_ms() - fault_at_ms
                else:
                    seen.still_counted_sent_ms = sent
        if reg.has_events:
            sent = now_ms() - fault_at_ms
            seen.disconnected = disconnected_events(reg)
            if seen.event_ms is None:
                if seen.disconnected:
                    seen.event_ms = now_ms() - fault_at_ms
                else:
                    seen.no_event_sent_ms = sent
        seen.watched_ms = now_ms() - fault_at_ms
        return seen

    def done(s: Cleanup) -> bool:
        return (s.gone_ms is not None and (not reg.has_counts or s.counted_ms is not None)
                and (not reg.has_events or s.event_ms is not None))

    try:
        eventually(poll, timeout_ms=max(0.0, fault_at_ms + watch_ms - now_ms()), what=f"{reg.connection_id} cleaned up",
                   accept=done, swallow=CONTROL_ERRORS, interval_ms=FINE_POLL_MS)
    except WaitTimeout:
        seen.watched_ms = now_ms() - fault_at_ms
    cf.history.observe("cleanup", seen.as_dict())
    return seen


def disconnected_events(reg: Registered) -> list[dict[str, Any]]:
    return [e for e in reg.server.events.since(reg.events_seq)
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
    return seen.held_past(bound_ms)


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
        judged = f"left current after {seen.gone_ms:.0f} ms"
        if reg.has_events:
            judged += f", exactly one disconnected event ({reg.server.events.source})"
        cf.unimplemented(f"{reg.server.peer.name}: {detail}; {judged} (judged, held); not observable on "
                         f"this server: {'; '.join(reg.missing())}")
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


def states_of(entries: list[TcpEntry]) -> list[str]:
    return sorted(f"{e.local_ip}:{e.local_port}->{e.remote_ip}:{e.remote_port} {e.state}" for e in entries)


# ---- TC-03: a real RST ------------------------------------------------------------------------

RST_WAIT_MS = 3000  # the armed toxic fires on the client's request within this
CLOSING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSING")


class TriggerRequest(threading.Thread):
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


def established_transport(cf, reg: Registered) -> tuple[str, int]:
    """The client end of ``reg``'s transport, named by its Nacos-form id and ESTABLISHED on the
    server's port (UNIMPLEMENTED for an id of another form; SetupError when no such socket)."""
    server, peer = reg.server, transport_peer(reg.connection_id)
    if peer is None:
        cf.unimplemented(f"{server.peer.name}'s connection id {reg.connection_id!r} is not <ms>_<peerIp>_<peerPort> "
                         "(Nacos's form): the transport's own sockets cannot be picked out, so the RST that "
                         "TC-03 is about cannot be shown to have happened")
        raise AssertionError("unreachable: unimplemented() raises")
    before = transport_sockets(server, peer)
    cf.history.observe("transport_sockets", {"phase": "baseline", "peer": peer, "states": states_of(before)})
    if not any(e.state == "ESTABLISHED" and e.local_port == server.grpc_port for e in before):
        raise SetupError(f"TC-03: no ESTABLISHED socket {server.host}:{server.grpc_port} <- {peer[0]}:{peer[1]} for "
                         f"{reg.connection_id}; the id does not name its transport, nothing was judged")
    return peer


@dataclass
class Rst:
    at_mono_ms: float  # when the server's socket was seen gone
    evidence: dict[str, Any]
    trigger: TriggerRequest


def fire_rst(cf, reset: Any, reg: Registered, client: NacosClientHandle, peer: tuple[str, int]) -> Rst:
    """Raise the armed toxic's toxicity and have the client send one request: its first chunk
    resets both sockets. SetupError unless the server's socket went away with no closing state
    left on the 4-tuple (a FIN close leaves one): then the fault did not happen as designed."""
    armed_at = now_ms()
    reset.fire()
    trigger = TriggerRequest(client, timeout_ms=1000)
    cf.history.invoke(client.name, "request", {"why": "its first chunk fires the armed reset_peer"})
    trigger.start()
    try:
        gone = eventually(lambda: transport_sockets(reg.server, peer), timeout_ms=RST_WAIT_MS, interval_ms=10,
                          what=f"transport {peer[0]}:{peer[1]} reset",
                          accept=lambda es: not any(e.state == "ESTABLISHED" for e in es))
    except WaitTimeout as exc:
        raise SetupError(f"TC-03: the armed reset_peer did not reset {reg.connection_id} within {RST_WAIT_MS} ms of "
                         f"the request (sockets {states_of(exc.last or [])}); nothing was judged") from None
    evidence = {"peer": peer, "armed_to_reset_ms": round(gone.at_mono_ms - armed_at, 1), "left": states_of(gone.value)}
    cf.history.observe("rst", evidence)
    if any(e.state in CLOSING_STATES for e in gone.value):
        raise SetupError(f"TC-03: {reg.connection_id} was closed with a FIN, not an RST (left {states_of(gone.value)}); "
                         "linger 0 was not set on it, nothing was judged")
    return Rst(gone.at_mono_ms, evidence, trigger)


# ---- TC-02: back once after the link returns ---------------------------------------------------

REJOIN_SETTLE_MS = 500  # "registered again once" must still hold this long after the rejoin


def rejoin_guard_ms(client: NacosClientHandle) -> float:
    """Hang guard for the rejoin after the link is back: the client may only notice through a
    failed HealthCheck, then backs off once and connects (no timing requirement, a bound only)."""
    return HealthBound.of(client.peer, client.knobs).bound_ms + reconnect_ms(client.peer, client.knobs)


def connected_events(reg: Registered) -> list[dict[str, Any]]:
    return [e for e in reg.server.events.since(reg.events_seq) if e.get("event") == "connected"]


def expect_rejoined_once(cf, client: NacosClientHandle, reg: Registered, *, healed_at_ms: float) -> tuple[str, float]:
    """After the link is back: the client RUNNING under a new id that is registered (within the
    rejoin guard), then registered exactly once (``current`` == the new id, one ``connected`` event
    since the fault) for REJOIN_SETTLE_MS, and the per-IP count back at its baseline. Returns the
    new id and how long after the heal it rejoined."""
    server = reg.server
    guard_ms = rejoin_guard_ms(client)

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
                            accept=rejoined, swallow=CONTROL_ERRORS, interval_ms=50)
    except WaitTimeout as exc:
        state, ids = exc.last if isinstance(exc.last, tuple) else ({}, {})
        cf.fail(expected=f"after the proxy is re-enabled, {client.name} reconnects and is registered again "
                         f"(within the {guard_ms:.0f} ms guard)",
                actual={"state": brief(state), "current": sorted(ids)}, verdict="FAILED")
        raise
    state, ids = waited.value
    new_id = state.get("connection_id") or next(iter(set(ids) - {reg.connection_id}))
    rejoin_ms = now_ms() - healed_at_ms
    cf.history.ok(client.name, "rejoin", {"connection_id": new_id, "after_ms": round(rejoin_ms, 1)})

    def once() -> dict[str, Any]:
        view: dict[str, Any] = {"current": sorted(server.admin.current())}
        if reg.has_events:
            view["connected"] = [e.get("connectionId") for e in connected_events(reg)]
        return view

    def exactly_once(view: dict[str, Any]) -> bool:
        return view["current"] == [new_id] and (not reg.has_events or view["connected"] == [new_id])

    held, bad, broken_after_ms = holds_for(once, duration_ms=REJOIN_SETTLE_MS, what="registered again exactly once",
                                           accept=exactly_once, interval_ms=50)
    cf.check(held, expected=f"{client.name} registered again exactly once: current == [{new_id}] and one connected "
                            f"event since the fault (for {new_id}), for {REJOIN_SETTLE_MS} ms",
             actual={"seen": bad, "after_ms": round(broken_after_ms, 1)}, verdict="FAILED",
             hint="the client registered twice (two transports), or the old id came back")
    if reg.has_counts:
        counts = server.admin.client_ip_counts()
        cf.history.observe("client_ip_counts", counts)
        cf.check(counts.get(reg.client_ip, 0) == reg.ip_count,
                 expected=f"per-IP count of {reg.client_ip} back at {reg.ip_count} once the client is registered again",
                 actual=counts, verdict="FAILED")
    return new_id, rejoin_ms
