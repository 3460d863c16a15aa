"""The server-driven reset as steps (SPEC §5 SR-06..SR-08, SR-14, SR-15): push a reset with
``reloadClient`` and read how it was pushed and answered (``push_reset``, ``check_push``,
``check_answered``), watch the client switch and its old registration leave (``switched``,
``check_old_leaves``), and the samplers SR-14 needs to catch a second concurrent switch
(``RegistrationSampler``, ``ResetOnRegister``, ``max_in_flight``, ``settled_on_one``).

Semantics of record are the Java 2.2.4 client's (research/nacos-protocol.md §2.4, §4.4–§4.5): a
ConnectResetRequest is always answered with its own requestId and acted on only while RUNNING.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from harness.control.http import ControlError
from harness.control.nacos_admin import NacosAdmin
from harness.errors import SetupError
from harness.observe.history import History
from harness.protocol.nacos import codec
from harness.scenarios.bounds import (
    ANSWER_MARGIN_MS,
    CONTROL_ERRORS,
    RESET_ANSWER_TIMEOUT_MS,
    SWITCH_SLACK_MS,
    TOLERANCE_MS,
)
from harness.scenarios.nacos import client_state, last_push_seq
from harness.scenarios.steps import registered_on, running
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

UNREGISTER_BAND_MS = 1000  # the old id leaves `current` within this of the client closing it (as TC-01)
LEAVE_LIMIT_MS = 5000  # ... and a still-registered old id after this never left
START_WINDOW_MS = 800  # SR-14: the reference client's setup wait, widened so a reset lands inside it
SETTLE_MS = 300  # SR-14: "settled" must hold this long (a queued second switch starts within it)
REQUESTS_AFTER_SWITCH = 10  # SR-15
MAX_FAILED_REQUESTS = 1  # SR-15: "no 301 storm: at most 1 failed request"


def reset_baseline(cf, client: NacosClientHandle, servers: list[NacosServerHandle]) -> tuple[NacosServerHandle, str]:
    """The client RUNNING, on one of ``servers``, registered there under the id it reports."""
    state = running(cf, client)
    by_address = {s.main_address: s for s in servers}
    server = by_address.get(state.get("server") or "")
    if server is None:
        cf.fail(expected=f"{client.name} reports which of {sorted(by_address)} it is on (baseline)",
                actual=f"server {state.get('server')!r}")
    cid, _ = registered_on(cf, client, server, state)
    return server, cid


def switch_bound_ms(client: NacosClientHandle) -> float:
    """How long a switch may take: one ServerCheck timeout + the setup wait + slack."""
    peer, knobs = client.peer, client.knobs
    return (peer.timer("server_check_timeout_ms", knobs, default=3000) + peer.timer("setup_wait_ms", knobs, default=100)
            + SWITCH_SLACK_MS)


def next_in_list(client: NacosClientHandle, address: str) -> str:
    servers = client.servers
    return servers[(servers.index(address) + 1) % len(servers)]


def require_reset_support(server_peer, client_peer, *, client: tuple[str, ...], server: tuple[str, ...] = ("loader",)) -> None:
    """``loader``: reloadClient. The ``pushes`` log adds the push's shape and its answer; without
    it the answer is known from how long reloadClient blocked (``Reset.answered``)."""
    server_peer.require_capabilities(server)
    client_peer.require_capabilities(client)


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




def push_reset(history: History, server: NacosServerHandle, connection_id: str, redirect: str | None = None, *,
           admin: NacosAdmin | None = None, push_since: int | None = None) -> Reset:
    """``reloadClient`` (answered once the client answered or after loadSingle's 3 s), then
    the push it caused, from the server's pushes log."""
    admin = admin or server.admin
    since = last_push_seq(server, admin) if push_since is None else push_since
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


def check_push(cf, r: Reset, *, server_ip: str | None = None, server_port: int | None = None) -> None:
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


def agent_events(state: dict[str, Any], since_wall_ms: float, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in state.get("events") or []
            if e.get("t_ms", 0) >= since_wall_ms and (not kinds or e.get("kind") in kinds)]


def check_answered(cf, client: NacosClientHandle, r: Reset, *, then: str) -> None:
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
    errors = [e.get("detail") for e in agent_events(state, r.wall_ms, "error")]
    cf.fail(expected=f"a ConnectResetResponse with requestId {r.request_id} (resultCode 200), then {then}",
            actual=f"{what}; {did}" + (f"; client errors: {errors}" if errors else ""), at_ms=r.t_ms,
            hint="the server matches an answer by requestId on the same connection (pushes log `answered`); "
                 "see the client's log for what it made of the push")


def wait_switch(cf, client: NacosClientHandle, old_id: str, timeout_ms: float) -> dict[str, Any] | None:
    """The client RUNNING on a connection other than ``old_id``; None after ``timeout_ms``."""
    cf.history.invoke(client.name, "wait_switch", {"from": old_id, "timeout_ms": round(timeout_ms)})
    try:
        waited = eventually(client.control.state, timeout_ms=timeout_ms, what=f"{client.name} off {old_id}",
                            accept=lambda s: s.get("status") == "RUNNING"
                            and s.get("connection_id") not in (None, old_id),
                            swallow=CONTROL_ERRORS, interval_ms=20)
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, dict) else {}
        cf.history.fail(client.name, "wait_switch", {"status": last.get("status"), "server": last.get("server"),
                                                     "connection_id": last.get("connection_id")}, error=str(exc)[:300])
        return None
    state = waited.value
    cf.history.ok(client.name, "wait_switch", {"server": state.get("server"), "connection_id": state.get("connection_id"),
                                               "after_ms": round(waited.elapsed_ms, 1)})
    return state


def switched(cf, client: NacosClientHandle, r: Reset, *, then: str) -> dict[str, Any]:
    """The reset was answered and the client moved off the reset connection (else FAILED)."""
    check_answered(cf, client, r, then=then)
    bound = switch_bound_ms(client)
    state = wait_switch(cf, client, r.connection_id, bound)
    if state is None:
        last = client_state(cf.history, client)
        cf.fail(expected=f"after answering the reset, {then}",
                actual=f"answered (requestId {r.request_id}) but no switch: still {last.get('status')} on "
                       f"{last.get('server')} as {last.get('connection_id')} after {bound:.0f} ms",
                at_ms=r.t_ms)
    return state


def check_old_leaves(cf, client: NacosClientHandle, r: Reset, new_state: dict[str, Any]) -> str:
    """The reset id leaves the server's ``current`` once the client has closed its transport:
    within UNREGISTER_BAND_MS (+ tolerance) of the client's own `disconnected` (else of its
    `connected` on the new connection). Late -> NON-STRICT; never -> FAILED. Runs last."""
    old, server = r.connection_id, r.server
    try:
        gone = eventually(server.admin.current, timeout_ms=LEAVE_LIMIT_MS, what=f"{old} leaves current",
                          accept=lambda c: old not in c, swallow=CONTROL_ERRORS, interval_ms=20)
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


class RegistrationSampler:
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

    def __enter__(self) -> RegistrationSampler:
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
            except CONTROL_ERRORS:
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


class ResetOnRegister(threading.Thread):
    """Polls the servers' ``events`` every few ms and resets the first connection registered
    after ``since`` the moment it appears (the client is then still in its setup wait)."""

    def __init__(self, history: History, servers: list[NacosServerHandle], timeout_ms: float) -> None:
        super().__init__(name="sr14-reset-on-register", daemon=True)
        self.history = history
        self.servers = servers
        self.timeout_ms = timeout_ms
        self._admins = {s.main_address: s.new_admin(timeout_s=5.0) for s in servers}
        self._events_since = {s.main_address: max((e["seq"] for e in s.admin.events(0)), default=0) for s in servers}
        self._push_since = {s.main_address: last_push_seq(s) for s in servers}
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
                                accept=lambda v: v is not None, swallow=CONTROL_ERRORS)
            server, event = waited.value
            self.registered_wall_ms = event.get("t_ms")
            self.history.observe("registered", {"server": server.main_address, "event": event})
            admin = self._admins[server.main_address]
            self.reset = push_reset(self.history, server, event["connectionId"], admin=admin,
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


def max_in_flight(events: list[dict[str, Any]], *, start_open: bool) -> tuple[int, list[str]]:
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


def settled_on_one(cf, client: NacosClientHandle, servers: list[NacosServerHandle], *, timeout_ms: float,
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
        waited = eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS, interval_ms=20)
        held, bad, _ = holds_for(probe, duration_ms=SETTLE_MS, what=what, accept=accept, interval_ms=30)
        if not held:  # it moved on (a queued switch): wait for the next settled state
            waited = eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS,
                                interval_ms=20)
    except WaitTimeout as exc:
        cf.fail(expected=f"{what}: RUNNING, exactly one registration across all servers (its own id), "
                         f"no switch in flight", actual=exc.last, hint="a second registration left behind means two "
                         "switches ran at once or one connection was never closed")
    cf.history.observe("settled", waited.value)
    return waited.value


def check_window(cf, client: NacosClientHandle, r: Reset, up: dict[str, Any] | None, phase: str) -> None:
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


def request_once(cf, client: NacosClientHandle, phase: str, i: int) -> dict[str, Any]:
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


def saw_301(answer: dict[str, Any]) -> bool:
    """A 301 anywhere in the answer: its error code, an attempt's, or the server's message (the
    Python SDK turns an ErrorResponse 301 into NacosException(500, "Connection is unregistered."))."""
    if answer.get("error_code") == codec.UN_REGISTER:
        return True
    if any(a.get("error_code") == codec.UN_REGISTER for a in answer.get("attempts") or []):
        return True
    return "unregistered" in str(answer.get("error") or "").lower()
