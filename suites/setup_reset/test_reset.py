"""SR — the server-driven reset: ``reloadClient`` with and without a redirect, a reset that races
the client's start or switch, and the application's requests across a reset (SPEC §5 SR-06,
SR-07, SR-08, SR-14, SR-15; research/nacos-protocol.md §2.4 ``loadSingle``, §4.4–§4.5 the Java
client, §5.1 nacos-sdk-python).

Semantics of record are the Java 2.2.4 client's: a ConnectResetRequest is always answered with
its own requestId and acted on only while RUNNING; without an address the client moves to the
next server of its own list; with one it goes there if that IP is in its list, else it drops the
recommendation and rotates. The server never closes the connection it reset: the old id leaves
``current`` when the client closes its transport.

Every case proves its baseline first (the client RUNNING through its proxy and registered on the
server it names), then reads the server's ``pushes`` log for what was pushed and how it was
answered, the servers' ``current`` for registrations, and the agent's events for what the client
did. A client that never answers a reset is FAILED on the spot, with what it did instead.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from fixtures.case import case
from harness.control.http import ControlError
from harness.control.nacos_admin import NacosAdmin
from harness.errors import SetupError
from harness.observe.history import History
from harness.scenarios.nacos import client_state, wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

RUNNING_TIMEOUT_MS = 15000  # real libraries: ServerCheck 3 s timeout + setup wait, from a cold start
REGISTER_TIMEOUT_MS = 3000
TOLERANCE_MS = 250  # SPEC §5: default tolerance on a loaded 2-core machine
RESET_ANSWER_TIMEOUT_MS = 3000  # loadSingle waits this long for the ConnectResetResponse (research §2.4)
ANSWER_MARGIN_MS = 500  # without a pushes log: reloadClient back this long before the wait's end = answered
SWITCH_SLACK_MS = 2000  # a switch's bound: the peer's ServerCheck timeout + setup wait + this
UNREGISTER_BAND_MS = 1000  # the old id leaves `current` within this of the client closing it (as TC-01)
LEAVE_LIMIT_MS = 5000  # ... and a still-registered old id after this never left
START_WINDOW_MS = 800  # SR-14: the reference client's setup wait, widened so a reset lands inside it
SETTLE_MS = 300  # SR-14: "settled" must hold this long (a queued second switch starts within it)
REQUESTS_AFTER_SWITCH = 10  # SR-15
MAX_FAILED_REQUESTS = 1  # SR-15: "no 301 storm: at most 1 failed request"
UN_REGISTER = 301

_SWALLOW = (OSError, ValueError, ControlError)


# ---- baseline ---------------------------------------------------------------------------------

def _running(cf, client: NacosClientHandle, timeout_ms: float = RUNNING_TIMEOUT_MS) -> dict[str, Any]:
    cf.history.invoke(client.name, "wait_running", {"timeout_ms": timeout_ms})
    try:
        waited = eventually(client.control.state, timeout_ms=timeout_ms, what=f"{client.name} RUNNING",
                            accept=lambda s: s.get("status") == "RUNNING", swallow=_SWALLOW, interval_ms=20)
    except WaitTimeout as exc:
        cf.history.fail(client.name, "wait_running", {"last": exc.last}, error=str(exc))
        cf.fail(expected=f"{client.name} RUNNING within {timeout_ms} ms (baseline)", actual=f"last state {exc.last!r}",
                hint="the handshake did not complete; see the peer logs")
    state = waited.value
    cf.history.ok(client.name, "wait_running", {"server": state.get("server"), "connection_id": state.get("connection_id"),
                                                 "after_ms": round(waited.elapsed_ms, 1)})
    return state


def _baseline(cf, client: NacosClientHandle, servers: list[NacosServerHandle]) -> tuple[NacosServerHandle, str]:
    """The client RUNNING, on one of ``servers``, registered there under the id it reports."""
    state = _running(cf, client)
    by_address = {s.main_address: s for s in servers}
    server = by_address.get(state.get("server") or "")
    if server is None:
        cf.fail(expected=f"{client.name} reports which of {sorted(by_address)} it is on (baseline)",
                actual=f"server {state.get('server')!r}")
    cid = state.get("connection_id")
    try:
        snapshot = wait_registered(cf.history, server, timeout_ms=REGISTER_TIMEOUT_MS, connection_id=cid,
                                   count=None if cid else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name}'s connection {cid or '(one)'} registered on {server.main_address} (baseline)",
                actual=f"current holds {sorted(exc.last or {})}")
    return server, cid or next(iter(snapshot))


def _switch_bound_ms(client: NacosClientHandle) -> float:
    """How long a switch may take: one ServerCheck timeout + the setup wait + slack."""
    peer, knobs = client.peer, client.knobs
    return (peer.timer("server_check_timeout_ms", knobs, default=3000) + peer.timer("setup_wait_ms", knobs, default=100)
            + SWITCH_SLACK_MS)


def _next_in_list(client: NacosClientHandle, address: str) -> str:
    servers = client.servers
    return servers[(servers.index(address) + 1) % len(servers)]


def _require(server_peer, client_peer, *, client: tuple[str, ...], server: tuple[str, ...] = ("loader",)) -> None:
    """``loader``: reloadClient. The ``pushes`` log adds the push's shape and its answer; without
    it the answer is known from how long reloadClient blocked (``Reset.answered``)."""
    server_peer.require_capabilities(server)
    client_peer.require_capabilities(client)


# ---- the reset --------------------------------------------------------------------------------

@dataclass
class Reset:
    server: NacosServerHandle
    connection_id: str
    redirect: str | None
    push: dict[str, Any] | None  # the server's pushes-log record of the ConnectResetRequest (extension)
    t_ms: float  # history time of the reloadClient call
    wall_ms: float  # the same instant, epoch ms (agent and server logs use it)
    took_ms: float

    @property
    def request_id(self) -> str | None:
        return self.push.get("requestId") if self.push else None

    @property
    def wait_ms(self) -> float:
        """How long the server waits for the answer (loadSingle's ``request(..., 3000L)``)."""
        return self.server.peer.timer("reset_answer_timeout_ms", default=RESET_ANSWER_TIMEOUT_MS)

    @property
    def answered(self) -> bool:
        """From the server's pushes log when it has one; else from reloadClient itself, which
        returns when the answer arrives or when the server gives up waiting (any Nacos server:
        ConnectionManager.loadSingle blocks on the push): an answer is a return well inside the
        wait."""
        if self.push is not None:
            return bool(self.push.get("answered") and self.push.get("answer_result_code") == 200)
        return self.took_ms < self.wait_ms - ANSWER_MARGIN_MS

    @property
    def witness(self) -> str:
        if self.push is not None:
            return "the server's pushes log"
        return (f"reloadClient returned after {self.took_ms:.0f} ms (the server waits up to {self.wait_ms:.0f} ms "
                f"for the answer)")


def _last_push_seq(server: NacosServerHandle, admin: NacosAdmin | None = None) -> int:
    if not server.peer.has_capability("pushes"):
        return 0
    return max((p["seq"] for p in (admin or server.admin).pushes(0)), default=0)


def _reset(history: History, server: NacosServerHandle, connection_id: str, redirect: str | None = None, *,
           admin: NacosAdmin | None = None, push_since: int | None = None) -> Reset:
    """``reloadClient`` (answered once the client answered or after loadSingle's 3 s), then
    the push it caused, from the server's pushes log."""
    admin = admin or server.admin
    since = _last_push_seq(server, admin) if push_since is None else push_since
    wall = time.time() * 1000.0
    invoked = history.invoke("harness", "reloadClient", {"server": server.main_address, "connectionId": connection_id,
                                                          "redirectAddress": redirect})
    started = now_ms()
    answer = admin.reload_client(connection_id, redirect)
    took = now_ms() - started
    pushes = [p for p in (admin.pushes(since) if server.peer.has_capability("pushes") else [])
              if p.get("type") == "ConnectResetRequest" and p.get("connectionId") == connection_id]
    push = pushes[-1] if pushes else None
    history.ok("harness", "reloadClient", {"server": server.main_address, "answer": answer, "ms": round(took, 1),
                                            "push": push})
    return Reset(server, connection_id, redirect, push, invoked["t_ms"], wall, took)


def _check_push(cf, r: Reset, *, server_ip: str | None = None, server_port: int | None = None) -> None:
    """The push itself: a ConnectResetRequest, module internal, a decimal requestId, and the
    redirect split into serverIp/serverPort (absent without one). Seen in the server's pushes
    log; a server without one has its pushes judged on the wire by SR-20's probe instead."""
    if not r.server.peer.has_capability("pushes"):
        cf.history.note("push shape not seen here (no pushes log); SR-20 judges it on the wire")
        return
    cf.check(r.push is not None, expected=f"reloadClient pushes a ConnectResetRequest to {r.connection_id} "
             f"(server pushes log)", actual="no push recorded", at_ms=r.t_ms)
    body = r.push["body"]
    rid = body.get("requestId")
    expected = {"module": "internal", "requestId": "a decimal string",
                "serverIp": server_ip, "serverPort": None if server_port is None else str(server_port)}
    actual = {"module": body.get("module"), "requestId": rid, "serverIp": body.get("serverIp"),
              "serverPort": body.get("serverPort")}
    ok = (body.get("module") == "internal" and isinstance(rid, str) and rid.isdigit()
          and (body.get("serverIp") or None) == server_ip
          and (None if body.get("serverPort") in (None, "") else str(body.get("serverPort")))
          == expected["serverPort"])
    cf.check(ok, expected=f"ConnectResetRequest {expected}", actual=actual, at_ms=r.t_ms)


def _agent_events(state: dict[str, Any], since_wall_ms: float, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in state.get("events") or []
            if e.get("t_ms", 0) >= since_wall_ms and (not kinds or e.get("kind") in kinds)]


def _check_answered(cf, client: NacosClientHandle, r: Reset, *, then: str) -> None:
    """The client answered the push with its requestId (the server matched it: ``answered``,
    resultCode 200). If not, fail now and say what the client did instead."""
    if r.answered:
        return
    if r.push is None and r.server.peer.has_capability("pushes"):
        cf.fail(expected=f"reloadClient pushes a ConnectResetRequest to {r.connection_id} (server pushes log)",
                actual="no push recorded", at_ms=r.t_ms)
    push = r.push or {"answered": False, "outcome": f"no answer: {r.witness}"}
    state = client_state(cf.history, client)
    since_ms = now_ms() - cf.history.start_mono_ms - r.t_ms
    if state.get("connection_id") in (None, r.connection_id):
        did = (f"no switch: still {state.get('status')} on {state.get('server')} as {state.get('connection_id')}, "
               f"{since_ms:.0f} ms after the reset")
    else:
        did = f"switched to {state.get('server')} as {state.get('connection_id')}"
    if push.get("answered"):
        what = f"reset answered with resultCode {push.get('answer_result_code')}"
    elif push.get("outcome") == "closed":
        what = (f"reset never answered: no ConnectResetResponse with requestId {r.request_id} before the "
                f"connection closed")
    else:
        what = (f"reset never answered: no ConnectResetResponse with requestId {r.request_id} within "
                f"{RESET_ANSWER_TIMEOUT_MS} ms (push outcome {push.get('outcome')!r})")
    errors = [e.get("detail") for e in _agent_events(state, r.wall_ms, "error")]
    cf.fail(expected=f"a ConnectResetResponse with requestId {r.request_id} (resultCode 200), then {then}",
            actual=f"{what}; {did}" + (f"; client errors: {errors}" if errors else ""), at_ms=r.t_ms,
            hint="the server matches an answer by requestId on the same connection (pushes log `answered`); "
                 "see the client's log for what it made of the push")


def _wait_switch(cf, client: NacosClientHandle, old_id: str, timeout_ms: float) -> dict[str, Any] | None:
    """The client RUNNING on a connection other than ``old_id``; None after ``timeout_ms``."""
    cf.history.invoke(client.name, "wait_switch", {"from": old_id, "timeout_ms": round(timeout_ms)})
    try:
        waited = eventually(client.control.state, timeout_ms=timeout_ms, what=f"{client.name} off {old_id}",
                            accept=lambda s: s.get("status") == "RUNNING"
                            and s.get("connection_id") not in (None, old_id),
                            swallow=_SWALLOW, interval_ms=20)
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, dict) else {}
        cf.history.fail(client.name, "wait_switch", {"status": last.get("status"), "server": last.get("server"),
                                                     "connection_id": last.get("connection_id")}, error=str(exc)[:300])
        return None
    state = waited.value
    cf.history.ok(client.name, "wait_switch", {"server": state.get("server"), "connection_id": state.get("connection_id"),
                                               "after_ms": round(waited.elapsed_ms, 1)})
    return state


def _switched(cf, client: NacosClientHandle, r: Reset, *, then: str) -> dict[str, Any]:
    """The reset was answered and the client moved off the reset connection (else FAILED)."""
    _check_answered(cf, client, r, then=then)
    bound = _switch_bound_ms(client)
    state = _wait_switch(cf, client, r.connection_id, bound)
    if state is None:
        last = client_state(cf.history, client)
        cf.fail(expected=f"after answering the reset, {then}",
                actual=f"answered (requestId {r.request_id}) but no switch: still {last.get('status')} on "
                       f"{last.get('server')} as {last.get('connection_id')} after {bound:.0f} ms",
                at_ms=r.t_ms)
    return state


def _check_old_leaves(cf, client: NacosClientHandle, r: Reset, new_state: dict[str, Any]) -> str:
    """The reset id leaves the server's ``current`` once the client has closed its transport:
    within UNREGISTER_BAND_MS (+ tolerance) of the client's own `disconnected` (else of its
    `connected` on the new connection). Late -> NON-STRICT; never -> FAILED. Runs last."""
    old, server = r.connection_id, r.server
    try:
        gone = eventually(server.admin.current, timeout_ms=LEAVE_LIMIT_MS, what=f"{old} leaves current",
                          accept=lambda c: old not in c, swallow=_SWALLOW, interval_ms=20)
    except WaitTimeout:
        cf.fail(expected=f"the reset connection {old} leaves {server.main_address}'s current once the client "
                         f"closed it", actual=f"still registered {LEAVE_LIMIT_MS} ms after the switch was seen",
                at_ms=r.t_ms)
    cf.history.observe("current", {"server": server.main_address, "ids": sorted(gone.value), "left": old})
    events = client.control.state().get("events") or []
    closed = next((e for e in events if e.get("kind") == "disconnected"
                   and (e.get("detail") or {}).get("connection_id") == old), None) or next(
        (e for e in events if e.get("kind") == "connected"
         and (e.get("detail") or {}).get("connection_id") == new_state.get("connection_id")), None)
    left = next((e for e in server.admin.events(0) if e.get("event") == "disconnected"
                 and e.get("connectionId") == old), None) if server.peer.has_capability("events") else None
    if closed is None or left is None:  # no timed witness of the unregister: it left, that is judged
        return f"{old} left current"
    delay = left["t_ms"] - closed["t_ms"]
    if delay > UNREGISTER_BAND_MS + TOLERANCE_MS:
        cf.late(expected=f"{old} leaves current within {UNREGISTER_BAND_MS} ms (+{TOLERANCE_MS}) of the client "
                         f"closing it", actual=f"left {delay:.0f} ms after the client's {closed.get('kind')} event",
                at_ms=r.t_ms)
    return f"{old} left current {max(delay, 0):.0f} ms after the client closed it"


# ---- background observers (SR-14) --------------------------------------------------------------

class _RegistrationSampler:
    """Samples the registrations across servers every few ms in a thread of its own, records
    each change in the history, and keeps the maximum seen since the last ``take_max``."""

    def __init__(self, history: History, servers: list[NacosServerHandle], interval_ms: float = 15) -> None:
        self.history = history
        self.interval_s = interval_ms / 1000.0
        self._admins = [(s.main_address, s.new_admin(timeout_s=2.0)) for s in servers]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sr14-sampler", daemon=True)
        self.last: dict[str, list[str]] = {}
        self._max = 0
        self._max_at: dict[str, list[str]] = {}
        self.errors = 0

    def __enter__(self) -> _RegistrationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for _, admin in self._admins:
            admin.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                by_server = {addr: sorted(admin.current()) for addr, admin in self._admins}
            except _SWALLOW:
                self.errors += 1
            else:
                total = sum(len(ids) for ids in by_server.values())
                with self._lock:
                    if by_server != self.last:
                        self.history.observe("registrations", {"total": total, "by_server": by_server})
                        self.last = by_server
                    if total > self._max:
                        self._max, self._max_at = total, by_server
            self._stop.wait(self.interval_s)  # the sampling period, not a synchronisation

    def take_max(self) -> tuple[int, dict[str, list[str]]]:
        """The most registrations seen at once since the last call (then restart from now)."""
        with self._lock:
            seen, at = self._max, self._max_at
            self._max = sum(len(ids) for ids in self.last.values())
            self._max_at = self.last
            return seen, at


class _ResetOnRegister(threading.Thread):
    """Polls the servers' ``events`` every few ms and resets the first connection registered
    after ``since`` the moment it appears (the client is then still in its setup wait)."""

    def __init__(self, history: History, servers: list[NacosServerHandle], timeout_ms: float) -> None:
        super().__init__(name="sr14-reset-on-register", daemon=True)
        self.history = history
        self.servers = servers
        self.timeout_ms = timeout_ms
        self._admins = {s.main_address: s.new_admin(timeout_s=5.0) for s in servers}
        self._events_since = {s.main_address: max((e["seq"] for e in s.admin.events(0)), default=0) for s in servers}
        self._push_since = {s.main_address: _last_push_seq(s) for s in servers}
        self.reset: Reset | None = None
        self.error: BaseException | None = None
        self.registered_wall_ms: float | None = None

    def _probe(self) -> tuple[NacosServerHandle, dict[str, Any]] | None:
        for server in self.servers:
            admin = self._admins[server.main_address]
            for event in admin.events(self._events_since[server.main_address]):
                if event.get("event") == "connected":
                    return server, event
        return None

    def run(self) -> None:
        try:
            waited = eventually(self._probe, timeout_ms=self.timeout_ms, what="a new registration", interval_ms=5,
                                accept=lambda v: v is not None, swallow=_SWALLOW)
            server, event = waited.value
            self.registered_wall_ms = event.get("t_ms")
            self.history.observe("registered", {"server": server.main_address, "event": event})
            admin = self._admins[server.main_address]
            self.reset = _reset(self.history, server, event["connectionId"], admin=admin,
                                push_since=self._push_since[server.main_address])
        except BaseException as exc:  # surfaced in the case by result()
            self.error = exc
        finally:
            for admin in self._admins.values():
                admin.close()

    def result(self, cf, *, what: str, expected: str) -> Reset:
        self.join(timeout=(self.timeout_ms + RESET_ANSWER_TIMEOUT_MS) / 1000.0 + 5)
        if isinstance(self.error, WaitTimeout):
            cf.fail(expected=f"{what}: {expected} within {self.timeout_ms:.0f} ms",
                    actual="no new registration on any server")
        if self.error is not None:
            raise self.error
        if self.reset is None:
            raise SetupError(f"{what}: the reset-on-register watcher did not finish")
        return self.reset


def _max_in_flight(events: list[dict[str, Any]], *, start_open: bool) -> tuple[int, list[str]]:
    """How many connection attempts the client had in flight at once, by its own events: its
    start (until the first `connected`), and each `switching` (until the next `connected`)."""
    in_flight = 1 if start_open else 0
    most, trace = in_flight, []
    for event in sorted(events, key=lambda e: e.get("t_ms", 0)):
        kind = event.get("kind")
        if kind == "switching":
            in_flight += 1
        elif kind == "connected":
            in_flight = max(0, in_flight - 1)
        else:
            continue
        trace.append(f"{kind}@{event.get('server')}")
        most = max(most, in_flight)
    return most, trace


def _settled(cf, client: NacosClientHandle, servers: list[NacosServerHandle], *, timeout_ms: float,
             what: str) -> dict[str, Any]:
    """The client RUNNING, registered exactly once across all servers under the id it reports,
    no switch of its own in flight, and all of that holding for SETTLE_MS."""

    def probe() -> dict[str, Any]:
        state = client.control.state()
        regs = {s.main_address: sorted(s.admin.current()) for s in servers}
        open_switches = 0
        for event in sorted(state.get("events") or [], key=lambda e: e.get("t_ms", 0)):
            if event.get("kind") == "switching":
                open_switches += 1
            elif event.get("kind") == "connected":
                open_switches = max(0, open_switches - 1)
        ids = [cid for ids in regs.values() for cid in ids]
        return {"status": state.get("status"), "server": state.get("server"), "connection_id": state.get("connection_id"),
                "registrations": regs, "ids": ids, "switch_open": open_switches > 0}

    def accept(v: dict[str, Any]) -> bool:
        return (v["status"] == "RUNNING" and not v["switch_open"] and len(v["ids"]) == 1
                and (v["connection_id"] is None or v["ids"] == [v["connection_id"]]))

    try:
        waited = eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=_SWALLOW, interval_ms=20)
        held, bad, _ = holds_for(probe, duration_ms=SETTLE_MS, what=what, accept=accept, interval_ms=30)
        if not held:  # it moved on (a queued switch): wait for the next settled state
            waited = eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=_SWALLOW,
                                interval_ms=20)
    except WaitTimeout as exc:
        cf.fail(expected=f"{what}: RUNNING, exactly one registration across all servers (its own id), "
                         f"no switch in flight", actual=exc.last, hint="a second registration left behind means two "
                         "switches ran at once or one connection was never closed")
    cf.history.observe("settled", waited.value)
    return waited.value


# ---- cases ------------------------------------------------------------------------------------

@case("SR-06", "MUST", timeout_s=60, subject="both", interop=True)
def test_reload_client_moves_to_next_server(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadClient(id)` → the client gets ConnectResetRequest (`module` internal, `requestId` set), answers ConnectResetResponse with the same requestId, and moves to the next server in its list; the old id leaves `current` once its transport closes."""
    _require(nacos_server_peer, nacos_client_peer, client=("reset",))
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = _baseline(cf, client, servers)
    expected_next = _next_in_list(client, origin.main_address)

    r = _reset(cf.history, origin, old_id)
    _check_push(cf, r)
    state = _switched(cf, client, r, then=f"a switch to {expected_next}, the next server in its list")
    cf.check(state.get("server") == expected_next,
             expected=f"reconnects to {expected_next}, the next server after {origin.main_address} in its list "
                      f"{client.servers}", actual=f"reconnected to {state.get('server')}", at_ms=r.t_ms)
    by_address = {s.main_address: s for s in servers}
    try:
        wait_registered(cf.history, by_address[expected_next], connection_id=state["connection_id"],
                        timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the new connection {state['connection_id']} registered on {expected_next}",
                actual=f"current holds {sorted(exc.last or {})}", at_ms=r.t_ms)
    left = _check_old_leaves(cf, client, r, state)
    cf.ok(f"reset answered ({r.witness}); {origin.main_address} -> {expected_next} "
          f"as {state['connection_id']}; {left}",
          expected=f"answered; next server {expected_next}; old id unregistered",
          actual={"requestId": r.request_id, "server": state.get("server")})


@case("SR-07", "MUST", timeout_s=60, subject="both", interop=True)
def test_reload_client_redirect_in_list(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadClient(id, redirectAddress)` with an address in the client's list → the client reconnects to exactly that server."""
    _require(nacos_server_peer, nacos_client_peer, client=("reset", "redirect"))
    servers = topology.nacos_servers(3, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = _baseline(cf, client, servers)
    rotation = _next_in_list(client, origin.main_address)
    # Not where it is, and not where plain rotation would take it: only the redirect leads there.
    target = next(s for s in servers if s.main_address not in (origin.main_address, rotation))

    r = _reset(cf.history, origin, old_id, target.main_address)
    _check_push(cf, r, server_ip=target.host, server_port=target.main_port)
    state = _switched(cf, client, r, then=f"a reconnect to exactly {target.main_address}")
    connects = [e.get("server") for e in _agent_events(client.control.state(), r.wall_ms, "connected")]
    cf.check(state.get("server") == target.main_address and connects in ([], [target.main_address]),
             expected=f"reconnects to exactly {target.main_address} (the redirect; rotation would give {rotation})",
             actual=f"reconnected to {state.get('server')}; connected events since the reset: {connects}",
             at_ms=r.t_ms)
    try:
        wait_registered(cf.history, target, connection_id=state["connection_id"], timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the new connection {state['connection_id']} registered on {target.main_address}",
                actual=f"current holds {sorted(exc.last or {})}", at_ms=r.t_ms)
    left = _check_old_leaves(cf, client, r, state)
    cf.ok(f"redirect to {target.main_address} (rotation: {rotation}) followed as {state['connection_id']}; {left}",
          expected=f"on {target.main_address}", actual={"server": state.get("server")})


@case("SR-08", "INFO", timeout_s=60)
def test_reload_client_redirect_out_of_list(cf, topology, nacos_server_peer, nacos_client_peer):
    """Redirect to an address not in the client's list → record what the client does (Java: ignores it, rotates)."""
    _require(nacos_server_peer, nacos_client_peer, client=("reset",))
    servers = topology.nacos_servers(3, peer=nacos_server_peer)
    listed, outsider = servers[:2], servers[2]  # a live server, proxied, in nobody's list
    client = topology.nacos_client(peer=nacos_client_peer, servers=listed)
    origin, old_id = _baseline(cf, client, listed)
    rotation = _next_in_list(client, origin.main_address)

    r = _reset(cf.history, origin, old_id, outsider.main_address)
    _check_push(cf, r, server_ip=outsider.host, server_port=outsider.main_port)
    if r.answered:
        state = _wait_switch(cf, client, old_id, _switch_bound_ms(client)) or client_state(cf.history, client)
    else:
        state = client_state(cf.history, client)
    after = state.get("server")
    moved = state.get("connection_id") not in (None, old_id)
    if not moved:
        went = f"stayed on {origin.main_address} (no switch)"
    elif after == outsider.main_address:
        went = f"followed the redirect to {outsider.main_address}, which is not in its list"
    elif after == rotation:
        went = f"ignored the redirect and rotated to {rotation}, the next server in its list"
    elif after == origin.main_address:
        went = f"ignored the redirect and reconnected to {origin.main_address} (same server, new id)"
    else:
        went = f"moved to {after}"
    outsider_ids = sorted(outsider.admin.current())
    switching = [e.get("detail") for e in _agent_events(client.control.state(), r.wall_ms, "switching")]
    answered = (f"answered (requestId {r.request_id})" if r.answered
                else f"never answered (push outcome {(r.push or {}).get('outcome')!r})")
    cf.informational(f"redirect to {outsider.main_address} (not in its list {client.servers}): reset {answered}; "
                     f"{went}", answered=r.answered, server_before=origin.main_address, server_after=after,
                     moved=moved, rotation=rotation, outsider=outsider.main_address,
                     outsider_registrations=outsider_ids, switching=switching)


@case("SR-14", "MUST", timeout_s=60)
def test_reset_while_starting_or_switching(cf, topology, nacos_server_peer, nacos_client_peer):
    """A reset that arrives while the client is still starting or reconnecting is answered and does not cause a second concurrent switch.

    Phase 1 resets the client's first connection the moment the server registers it (the client
    is then in its post-setup wait, still STARTING); phase 2 resets the connection a reset-driven
    switch is bringing up, the same way. Each time: the push is answered; the client's own events
    never show two connection attempts in flight; `current`, sampled every 15 ms across all
    servers, never holds more than one registration in phase 1 (two, old + new, during a switch
    the client itself reports) nor more than two in phase 2; and the client settles with exactly
    one registration, its own. The reference client's setup wait is widened to 800 ms.
    """
    # Needs to see a registration the moment it happens, and when the reset was pushed.
    _require(nacos_server_peer, nacos_client_peer, client=("reset",), server=("loader", "pushes", "events"))
    knobs = {"setup_wait_ms": START_WINDOW_MS} if nacos_client_peer.supports("setup_wait_ms") else {}
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    bound = RUNNING_TIMEOUT_MS
    with _RegistrationSampler(cf.history, servers) as sampler:
        # Phase 1: the reset lands while the client is starting.
        watcher = _ResetOnRegister(cf.history, servers, timeout_ms=RUNNING_TIMEOUT_MS)
        watcher.start()
        started_wall = time.time() * 1000.0
        client = topology.nacos_client(peer=nacos_client_peer, servers=servers, knobs=knobs)
        r1 = watcher.result(cf, what="phase 1 (starting)", expected="the client registers")
        _check_answered(cf, client, r1, then="no second concurrent switch")
        _running(cf, client)
        first = _settled(cf, client, servers, timeout_ms=bound, what="phase 1 (reset while starting)")
        events = _agent_events(client.control.state(), started_wall)
        first_connected = next((e for e in events if e.get("kind") == "connected"), None)
        _check_window(cf, client, r1, first_connected, "starting")
        in_flight, trace = _max_in_flight(events, start_open=True)
        cf.check(in_flight <= 1, expected="phase 1: at most one connection attempt in flight (the start)",
                 actual=f"{in_flight} at once; events: {trace}", at_ms=r1.t_ms)
        deferred = first_connected is not None and any(
            e.get("kind") == "switching" and e.get("t_ms", 0) >= first_connected.get("t_ms", 0) for e in events)
        allowed = 2 if deferred else 1
        most, at = sampler.take_max()
        cf.check(most <= allowed, expected=f"phase 1: never more than {allowed} registration(s) at once "
                 "(one, plus the new one while a switch the client reports after its start is in flight)",
                 actual=f"{most} at once: {at}", at_ms=r1.t_ms)

        # Phase 2: the reset lands on the connection a switch is bringing up.
        by_address = {s.main_address: s for s in servers}
        origin = by_address[first["server"]] if first.get("server") in by_address else next(
            s for s in servers if first["ids"][0] in first["registrations"][s.main_address])
        phase2_wall = time.time() * 1000.0
        watcher = _ResetOnRegister(cf.history, servers, timeout_ms=_switch_bound_ms(client))
        watcher.start()
        r_switch = _reset(cf.history, origin, first["ids"][0])
        _check_answered(cf, client, r_switch, then="a switch")
        r2 = watcher.result(cf, what="phase 2 (switching)",
                            expected="after answering the reset, the client switches and its new connection registers")
        _check_answered(cf, client, r2, then="no second concurrent switch")
        second = _settled(cf, client, servers, timeout_ms=2 * _switch_bound_ms(client) + bound,
                          what="phase 2 (reset while switching)")
        events = _agent_events(client.control.state(), phase2_wall)
        brought_up = next((e for e in events if e.get("kind") == "connected"
                           and (e.get("detail") or {}).get("connection_id") == r2.connection_id), None)
        _check_window(cf, client, r2, brought_up, "switching")
        in_flight, trace = _max_in_flight(events, start_open=False)
        cf.check(in_flight <= 1, expected="phase 2: at most one switch in flight",
                 actual=f"{in_flight} at once; events: {trace}", at_ms=r2.t_ms)
        most, at = sampler.take_max()
        cf.check(most <= 2, expected="phase 2: never more than two registrations at once (old + new of one switch)",
                 actual=f"{most} at once: {at}", at_ms=r2.t_ms)
    cf.ok(f"reset while starting (requestId {r1.request_id} on {r1.server.main_address}) and while switching "
          f"(requestId {r2.request_id} on {r2.server.main_address}) "
          f"both answered; one attempt in flight at a time; settled on {second['server']} as {second['ids'][0]}",
          expected="answered; no concurrent switch; one registration",
          actual={"phase1": first["ids"], "phase2": second["ids"]})


def _check_window(cf, client: NacosClientHandle, r: Reset, up: dict[str, Any] | None, phase: str) -> None:
    """The reset must have reached the client before it reported that connection up; otherwise
    the case did not test what it means to (a harness or timing limit, not a peer failure)."""
    pushed = (r.push or {}).get("t_ms")
    if up is None or pushed is None or pushed < up.get("t_ms", 0):
        return
    cf.history.note(f"{phase}: the reset was pushed {pushed - up['t_ms']:.0f} ms after the client reported "
                    f"the connection up")
    if not client.peer.supports("setup_wait_ms"):
        cf.unimplemented(f"could not land a reset while {phase}: the client's post-setup wait is fixed and "
                         f"shorter than the harness's reaction (no setup_wait_ms knob to widen it)")
    raise SetupError(f"{phase}: the reset reached the client {pushed - up['t_ms']:.0f} ms after it reported the "
                     f"connection up, although its setup wait was widened to {START_WINDOW_MS} ms: host too loaded")


@case("SR-15", "MUST", timeout_s=60, subject="client", interop=True)
def test_requests_succeed_after_reset(cf, topology, nacos_server_peer, nacos_client_peer):
    """After a reset, requests issued by the application succeed on the new connection (no 301 storm: at most 1 failed request).

    Requests are issued back to back from the moment the reset is answered until the client
    reports its new connection, then 10 more; all of them count.
    """
    _require(nacos_server_peer, nacos_client_peer, client=("reset", "request"))
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = _baseline(cf, client, servers)
    baseline = _request(cf, client, "baseline", 0)
    cf.check(baseline.get("ok") is True, expected="a request succeeds before the reset (baseline)", actual=baseline)

    r = _reset(cf.history, origin, old_id)
    _check_answered(cf, client, r, then="a switch, with the application's requests succeeding on the new connection")
    results: list[tuple[str, dict[str, Any]]] = []
    deadline = now_ms() + _switch_bound_ms(client)
    state = client.control.state()
    while state.get("connection_id") in (None, old_id) or state.get("status") != "RUNNING":
        if now_ms() > deadline:
            last = client_state(cf.history, client)
            cf.fail(expected="after answering the reset, a switch off the reset connection",
                    actual=f"answered but no switch within {_switch_bound_ms(client):.0f} ms: {last.get('status')} on "
                           f"{last.get('server')} as {last.get('connection_id')}", at_ms=r.t_ms)
        results.append(("during switch", _request(cf, client, "during switch", len(results))))
        state = client.control.state()
    new_id = state.get("connection_id")
    cf.history.observe("switched", {"server": state.get("server"), "connection_id": new_id})
    for i in range(REQUESTS_AFTER_SWITCH):
        results.append(("after switch", _request(cf, client, "after switch", i)))

    failed = [(phase, a) for phase, a in results if a.get("ok") is not True]
    with_301 = [(phase, a) for phase, a in results if _saw_301(a)]
    counts = {"during switch": sum(1 for p, _ in results if p == "during switch"), "after switch": REQUESTS_AFTER_SWITCH,
              "failed": len(failed), "with a 301": len(with_301)}
    cf.check(len(failed) <= MAX_FAILED_REQUESTS,
             expected=f"at most {MAX_FAILED_REQUESTS} failed request after the reset (no 301 storm)",
             actual=f"{len(failed)} of {len(results)} failed ({len(with_301)} saw a 301): "
                    f"{[(p, a.get('error_code'), str(a.get('error'))[:80]) for p, a in failed[:5]]}",
             at_ms=r.t_ms)
    after_ok = [a for p, a in results if p == "after switch" and a.get("ok") is True]
    cf.check(bool(after_ok), expected="requests succeed on the new connection",
             actual=f"none of {REQUESTS_AFTER_SWITCH} requests after the switch succeeded", at_ms=r.t_ms)
    cf.ok(f"switched {origin.main_address} -> {state.get('server')} as {new_id}; {counts}",
          expected=f"<= {MAX_FAILED_REQUESTS} failed", actual=counts)


def _request(cf, client: NacosClientHandle, phase: str, i: int) -> dict[str, Any]:
    """One application request through the agent. An agent that drops the HTTP exchange counts
    as a failed request (the application's call blew up), not as a harness error."""
    cf.history.invoke(client.name, "request", {"phase": phase, "i": i})
    try:
        answer = client.control.request()
    except ControlError as exc:
        answer = {"ok": False, "error_code": None, "error": f"the agent dropped the request: {exc}"}
    if answer.get("ok") is True:
        cf.history.ok(client.name, "request", answer)
    else:
        cf.history.fail(client.name, "request", answer, error=answer.get("error"))
    return answer


def _saw_301(answer: dict[str, Any]) -> bool:
    """A 301 anywhere in the answer: its error code, an attempt's, or the server's message (the
    Python SDK turns an ErrorResponse 301 into NacosException(500, "Connection is unregistered."))."""
    if answer.get("error_code") == UN_REGISTER:
        return True
    if any(a.get("error_code") == UN_REGISTER for a in answer.get("attempts") or []):
        return True
    return "unregistered" in str(answer.get("error") or "").lower()
