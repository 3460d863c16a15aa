"""TC — what the server still holds for a connection it is done with: a setup it rejected, and a
push pending on a connection that died (SPEC §4.2 "Limits", "A server that is starting"; §5 TC-07,
TC-10; research/nacos-protocol.md §2.3 — the rejected connection Java 2.2.4 may leave open —,
§2.4 ``loadSingle``, §2.7 ``RpcAckCallbackInitorOrCleaner``).

TC-07 — a rejected connection is really closed. The server answers a rejected setup with a
``ConnectResetRequest`` and then closes the transport once the client answered, or after its 3 s
push timeout (nacos-sdk-python never answers a reset; the server's timer ``reset_timeout_ms`` if
its manifest declares one). The 1 s is counted from that moment, read from the server's
``pushes`` log (answer time, or push time + the timeout), and "closed" is read from the kernel's
table: the transport's server-side socket (the id ``<ms>_<peerIp>_<peerPort>`` names its 4-tuple
on the server's real gRPC port) is neither ESTABLISHED nor in CLOSE_WAIT (the peer closed, the
server did not). The table is polled every 50 ms: NON-STRICT needs positive evidence (the socket
*seen* open past the bound), FAILED is a socket still open 4 s past it, and a close is reported as
"closed by +N ms" (the first poll that saw it gone). Rejections covered: over ``count_limit`` — a
second instance of the client under test while a first one holds the only slot, and raw probes
that answer the reset or stay silent but never close their side, so only the server's close can
end them — and while starting (raw probes only: real clients abandon on the 300 of ServerCheck
and never send a setup).

TC-10 — a pending push is released when its connection dies. The client under test is
blackholed (Toxiproxy ``timeout`` toxics both ways: nothing is delivered, nothing closes), then
``reloadClient`` is called in a thread, so the server pushes a ConnectResetRequest that cannot be
answered; once the ``pushes`` log shows it pending, the proxy is disabled, which kills the
transport. ``reloadClient`` must return within the push's 3 s timeout + tolerance (OK), later but
within its 10 s HTTP guard (NON-STRICT, with how long it hung), or not at all (FAILED); the push's
outcome must be ``closed`` or ``timeout``; and the dead connection is unregistered as in TC-01.

Both need the server's ``pushes`` log (capability ``pushes``); TC-07 also the ``limits`` and
``startup_delay`` capabilities and knobs, TC-10 the ``loader`` API (and, for its cleanup part,
``events`` and ``client_ip_counts`` as TC-01).
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from fixtures.case import case
from harness.control.http import ControlError
from harness.errors import SetupError
from harness.faults import ProxyDown
from harness.observe.sockets import snapshot
from harness.probe.nacos_raw import RawNacosConnection
from harness.reference.nacos import codec

# Helpers shared with TC-01..TC-03 (one owner; no test function is imported).
from harness.scenarios.cleanup import (
    RUNNING_TIMEOUT_MS,
    TOLERANCE_MS,
    finish,
    judge_cleanup,
    prove_registered,
    recheck_one_disconnect,
    registration,
    running,
    transport_peer,
    watch_unregister,
)
from harness.scenarios.nacos import wait_registered
from harness.topology import NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

RESET_WAIT_MS = 3000  # Nacos waits this long for a ConnectResetResponse (research §2.3, §2.4)
CLOSE_BOUND_MS = 1000  # SPEC TC-07: closed 1 s after the reject completed
CLOSE_WATCH_MS = 4000  # a rejected transport still open this long after its bound: FAILED
RELOAD_GUARD_S = 10.0  # TC-10: reloadClient's HTTP timeout (NacosAdmin.reload_client); beyond it: a hang
PENDING_WAIT_MS = 2000  # TC-10: the reset shows up as pending in the pushes log within this
POLL_MS = 50
PROBE_IP = "127.0.0.210"  # TC-10's probe: an IP no client reports
SDK_LABELS = {"source": "sdk", "module": "naming"}
COUNT_LIMIT = 1
STARTING_FOR_MS = 60_000  # the starting server stays starting for the whole case
OPEN_STATES = ("ESTABLISHED", "CLOSE_WAIT")  # the server has not closed its side

_SWALLOW = (OSError, ValueError, ControlError)


def _wall_ms() -> float:
    return time.time() * 1000.0


def _last_seq(entries: list[dict[str, Any]]) -> int:
    return max((int(e.get("seq", 0)) for e in entries), default=0)


# ---- TC-07 ------------------------------------------------------------------------------------

@dataclass
class Rejection:
    """One rejected transport: who, why, when the reject completed, when its socket went."""

    name: str
    why: str
    server: NacosServerHandle
    connection_id: str | None = None
    push: dict[str, Any] | None = None  # its ConnectResetRequest in the server's pushes log
    completed_wall_ms: float | None = None  # answered, or pushed + 3 s on a timeout
    gone_wall_ms: float | None = None  # first poll with no open server-side socket
    last_open_wall_ms: float | None = None  # last poll that saw it open (the close came after)
    stream_end_wall_ms: float | None = None  # (probes) the probe saw its stream end
    open_states: list[str] = field(default_factory=list)

    @property
    def closed_after_ms(self) -> float | None:
        """At most this long after the reject completed (the first poll that saw it gone)."""
        if self.gone_wall_ms is None or self.completed_wall_ms is None:
            return None
        return max(0.0, self.gone_wall_ms - self.completed_wall_ms)

    @property
    def open_after_ms(self) -> float | None:
        """Seen still open this long after the reject completed (None: never seen open after it).
        Lateness is judged on this positive evidence, never on a late first poll."""
        if self.last_open_wall_ms is None or self.completed_wall_ms is None:
            return None
        after = self.last_open_wall_ms - self.completed_wall_ms
        return after if after > 0 else None

    def resolved(self, now_wall_ms: float) -> bool:
        """Judgeable: gone with its reject complete (or gone with no push at all), or overdue."""
        if self.gone_wall_ms is not None:
            return self.completed_wall_ms is not None or self.push is None
        return (self.completed_wall_ms is not None
                and now_wall_ms > self.completed_wall_ms + CLOSE_BOUND_MS + TOLERANCE_MS + CLOSE_WATCH_MS)

    def as_dict(self) -> dict[str, Any]:
        push = self.push or {}
        return {"name": self.name, "why": self.why, "connection_id": self.connection_id,
                "outcome": push.get("outcome"), "answer_ms": push.get("answer_ms"),
                "closed_after_completion_ms": None if self.closed_after_ms is None else round(self.closed_after_ms, 1),
                "seen_open_after_completion_ms": None if self.open_after_ms is None else round(self.open_after_ms, 1),
                "still_open": self.open_states}


class _Probe:
    """A raw wire probe whose setup is meant to be rejected: it answers the reset (or stays
    silent) and never closes its own side, so only the server can end its transport."""

    def __init__(self, cf, stack: ExitStack, server: NacosServerHandle, name: str, why: str, *, answers: bool) -> None:
        self.cf, self.name, self.answers = cf, name, answers
        self.rejection = Rejection(name, why, server)
        self.conn = stack.enter_context(RawNacosConnection(server.host, server.proxied_grpc_port))
        self.check: codec.Message | None = None

    def server_check(self) -> codec.Message:
        self.cf.history.invoke(self.name, "ServerCheck", {"target": self.conn.target})
        self.check = self.conn.server_check()
        self.cf.history.ok(self.name, "ServerCheck", {"type": self.check.type, "body": self.check.body})
        if self.check.type == codec.SERVER_CHECK_RESPONSE:
            self.rejection.connection_id = self.check.body.get("connectionId")
        return self.check

    def setup(self) -> None:
        self.cf.history.invoke(self.name, "ConnectionSetup", {"labels": SDK_LABELS})
        self.conn.setup(labels=SDK_LABELS)

    def take_reset(self, timeout_ms: float) -> codec.Message | None:
        """The reset pushed to it (answered at once when ``answers``); None when its stream
        ended first or nothing came."""
        try:
            item = self.conn.next_push(timeout_s=max(0.0, timeout_ms) / 1000.0)
        except queue.Empty:
            return None
        if item is None:
            self.rejection.stream_end_wall_ms = _wall_ms()
            self.cf.history.observe("probe_stream", {"probe": self.name, "state": "ended"})
            return None
        self.cf.history.observe("probe_push", {"probe": self.name, "type": item.type, "body": item.body})
        if item.type == codec.CONNECT_RESET_REQUEST and self.answers:
            self.conn.send_on_stream(codec.push_response(codec.CONNECT_RESET_RESPONSE, item.request_id))
            self.cf.history.ok(self.name, "ConnectResetResponse", {"requestId": item.request_id})
        return item


def reset_wait_ms(server: NacosServerHandle) -> int:
    """The server's push timeout for a ConnectResetRequest: its timer ``reset_timeout_ms`` when
    the manifest declares one, else Nacos's 3000 ms."""
    return server.peer.timer("reset_timeout_ms", server.knobs, default=RESET_WAIT_MS)


def _completion_wall_ms(push: dict[str, Any], wait_ms: float) -> float | None:
    outcome = push.get("outcome")
    if outcome == "answered" and push.get("answer_ms") is not None:
        return float(push["t_ms"]) + float(push["answer_ms"])
    if outcome == "timeout":
        return float(push["t_ms"]) + wait_ms
    if outcome == "closed":  # the transport was already gone when the push failed
        return float(push["t_ms"])
    return None  # pending


def _server_side_open(server: NacosServerHandle, connection_id: str, entries: list) -> list[str] | None:
    """The server-side socket of that transport still open (ESTABLISHED / CLOSE_WAIT), as
    strings; None when the id names no 4-tuple."""
    peer = transport_peer(connection_id)
    if peer is None:
        return None
    ip, port = peer
    return [f"{e.local_ip}:{e.local_port}<-{ip}:{port} {e.state}" for e in entries
            if e.local_port == server.grpc_port and e.remote_port == port and e.remote_ip == ip
            and e.state in OPEN_STATES]


class _RejectionWatch:
    """Polls both servers' pushes logs and gRPC ports: completes each rejection's record and
    notes when its socket went. The client-under-test's rejections on ``limited`` are the
    reset pushes to ids that are neither a probe's nor the admitted client's."""

    def __init__(self, cf, probes: list[_Probe], limited: NacosServerHandle, admitted_id: str,
                 seqs: dict[str, int]) -> None:
        self.cf, self.probes, self.limited, self.admitted_id, self.seqs = cf, probes, limited, admitted_id, seqs
        self.servers = {p.rejection.server.main_address: p.rejection.server for p in probes}
        self.servers[limited.main_address] = limited
        self.client_rejections: dict[str, Rejection] = {}

    def all(self) -> list[Rejection]:
        return [p.rejection for p in self.probes] + list(self.client_rejections.values())

    def poll(self) -> _RejectionWatch:
        pushes = {addr: [p for p in s.admin.pushes(self.seqs[addr]) if p.get("type") == codec.CONNECT_RESET_REQUEST]
                  for addr, s in self.servers.items()}
        entries = snapshot([s.grpc_port for s in self.servers.values()])
        now = _wall_ms()
        for probe in self.probes:
            r = probe.rejection
            server_pushes = pushes[r.server.main_address]
            if r.push is None or r.push.get("outcome") == "pending":
                match = [p for p in server_pushes if r.connection_id and p.get("connectionId") == r.connection_id]
                r.push = match[0] if match else r.push
            if r.push is not None:
                r.connection_id = r.connection_id or r.push.get("connectionId")
                r.completed_wall_ms = _completion_wall_ms(r.push, reset_wait_ms(r.server))
        probe_ids = {p.rejection.connection_id for p in self.probes}
        for push in pushes[self.limited.main_address]:
            cid = push.get("connectionId")
            if cid in probe_ids or cid == self.admitted_id:
                continue
            r = self.client_rejections.setdefault(cid, Rejection(f"client-{len(self.client_rejections)}",
                                                                 f"over count_limit {COUNT_LIMIT}", self.limited,
                                                                 connection_id=cid))
            r.push = push
            r.completed_wall_ms = _completion_wall_ms(push, reset_wait_ms(self.limited))
        for r in self.all():
            if r.gone_wall_ms is not None:
                continue
            if r.connection_id is None:
                if r.stream_end_wall_ms is not None:  # no id to look up, but the probe saw it end
                    r.gone_wall_ms = r.stream_end_wall_ms
                continue
            still = _server_side_open(r.server, r.connection_id, entries)
            if still is None:
                continue
            r.open_states = still
            if still:
                r.last_open_wall_ms = now
            else:
                r.gone_wall_ms = now
                self.cf.history.observe("rejected_transport_closed", r.as_dict())
        return self

    def done(self, _: Any = None) -> bool:
        now = _wall_ms()
        probes_done = all(p.rejection.resolved(now) for p in self.probes)
        return probes_done and any(r.resolved(now) for r in self.client_rejections.values())

    def answering_done(self, _: Any = None) -> bool:
        now = _wall_ms()
        return all(p.rejection.resolved(now) for p in self.probes if p.answers)


def _starting_probe_check(cf, probe: _Probe) -> None:
    check = probe.server_check()
    if not (check.type == codec.ERROR_RESPONSE and check.error_code == codec.INVALID_SERVER_STATUS):
        raise SetupError(f"TC-07: the server given startup_delay_ms={STARTING_FOR_MS} answered ServerCheck with "
                         f"{check.type} {check.body} instead of 300 (starting); nothing was judged")


@case("TC-07", "MUST", timeout_s=120, subject="server")
def test_rejected_connection_is_really_closed(cf, topology, nacos_server_peer, nacos_client_peer):
    """A connection rejected at setup (over limit, starting) is really closed: no ESTABLISHED socket from it remains on the server port after 1 s.

    Procedure: server L with `count_limit` 1, server S with `startup_delay_ms` 60 s. Baseline:
    the client under test RUNNING and registered on L (it holds the only slot); S answers 300.
    Raw probes send SDK setups — to L (over the limit) and to S (starting) — one answering the
    reset, one silent, neither ever closing its side. Then a second instance of the client under
    test starts on L and is rejected over the limit. For every rejection the 1 s runs from the
    reset's answer or the 3 s push timeout (server's `pushes` log) and ends when the
    transport's server-side socket is neither ESTABLISHED nor CLOSE_WAIT.
    """
    nacos_server_peer.require_capabilities(["limits", "startup_delay", "pushes"])
    nacos_server_peer.require_knobs(["count_limit", "startup_delay_ms"])
    (limited,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"count_limit": COUNT_LIMIT})
    (starting,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"startup_delay_ms": STARTING_FOR_MS})
    first = topology.nacos_client(peer=nacos_client_peer, servers=[limited])
    reg = prove_registered(cf, first, limited)
    seqs = {s.main_address: _last_seq(s.admin.pushes()) for s in (limited, starting)}
    bound_ms = CLOSE_BOUND_MS + TOLERANCE_MS

    with ExitStack() as stack:
        probes = [
            _Probe(cf, stack, limited, "over-limit-answers", f"over count_limit {COUNT_LIMIT}", answers=True),
            _Probe(cf, stack, limited, "over-limit-silent", f"over count_limit {COUNT_LIMIT}", answers=False),
            _Probe(cf, stack, starting, "starting-answers", "server starting", answers=True),
            _Probe(cf, stack, starting, "starting-silent", "server starting", answers=False),
        ]
        for probe in probes:
            if probe.rejection.server is starting:
                _starting_probe_check(cf, probe)
            else:
                check = probe.server_check()
                if not probe.rejection.connection_id:
                    cf.fail(expected=f"baseline: ServerCheck through {limited.main_address}'s proxy → connectionId",
                            actual=f"{check.type} {check.body}", verdict="FAILED")
        for probe in probes:
            probe.setup()
        resets: dict[str, codec.Message | None] = {}
        deadline = now_ms() + max(reset_wait_ms(limited), reset_wait_ms(starting)) + TOLERANCE_MS
        for probe in sorted(probes, key=lambda p: not p.answers):  # answer first, read the silent ones after
            resets[probe.name] = probe.take_reset(deadline - now_ms())
        request_ids = {p.name: (resets[p.name].request_id if resets[p.name] is not None else None) for p in probes}
        cf.history.observe("probe_resets", request_ids)

        # Probes on the starting server have no id from ServerCheck: find theirs by the requestId.
        for probe in probes:
            rid = request_ids[probe.name]
            if probe.rejection.connection_id is None and rid is not None:
                server = probe.rejection.server
                match = [p for p in server.admin.pushes(seqs[server.main_address]) if p.get("requestId") == rid]
                if match:
                    probe.rejection.connection_id = match[0].get("connectionId")

        watch = _RejectionWatch(cf, probes, limited, reg.connection_id, seqs)
        # The answered rejections complete now: watch them before the second client's start
        # (which blocks until its agent is up) so their close is timed closely.
        try:
            eventually(watch.poll, timeout_ms=bound_ms + CLOSE_WATCH_MS, what="the answered rejections closed",
                       accept=watch.answering_done, swallow=_SWALLOW, interval_ms=POLL_MS)
        except WaitTimeout:
            pass
        second = topology.nacos_client(peer=nacos_client_peer, servers=[limited])
        guard_ms = RUNNING_TIMEOUT_MS + reset_wait_ms(limited) + bound_ms + CLOSE_WATCH_MS
        try:
            eventually(watch.poll, timeout_ms=guard_ms, what="every rejected transport closed (or overdue)",
                       accept=watch.done, swallow=_SWALLOW, interval_ms=POLL_MS)
        except WaitTimeout:
            pass
        rejections = watch.all()
        cf.history.observe("rejections", [r.as_dict() for r in rejections])
        registered = limited.admin.current()

    cf.check(set(registered) == {reg.connection_id},
             expected=f"count_limit {COUNT_LIMIT} holds on {limited.main_address}: only {reg.connection_id} registered",
             actual=sorted(registered), verdict="FAILED", hint="an over-limit setup was registered, not rejected")
    now = _wall_ms()
    for probe in probes:
        r = probe.rejection
        if r.push is None and r.stream_end_wall_ms is None:
            cf.fail(expected=f"{r.name}'s setup ({r.why}) is rejected: a ConnectResetRequest pushed, then its "
                             "transport really closed",
                    actual=f"no reset push, stream still open; {r.as_dict()}", verdict="FAILED")
    client_done = [r for r in watch.client_rejections.values() if r.resolved(now)]
    if not client_done:
        cf.fail(expected=f"{second.name}, over count_limit {COUNT_LIMIT} while {first.name} holds the slot, is "
                         f"rejected (a ConnectResetRequest to it) and its transport closed within {guard_ms} ms",
                actual={"its rejections": [r.as_dict() for r in watch.client_rejections.values()],
                        "state": second.control.state().get("status")}, verdict="FAILED")
    judged = [p.rejection for p in probes] + client_done
    late = []
    for r in judged:
        if r.gone_wall_ms is None:
            if r.completed_wall_ms is None:
                actual = (f"its reset push is still {(r.push or {}).get('outcome')!r} and the transport open "
                          f"{reset_wait_ms(r.server) + CLOSE_WATCH_MS} ms on: {r.open_states}")
            else:
                held_ms = (r.last_open_wall_ms or now) - r.completed_wall_ms
                actual = f"still open {held_ms:.0f} ms after the reject completed: {r.open_states}"
            cf.fail(expected=f"rejected transport {r.connection_id} ({r.name}, {r.why}) really closed: no ESTABLISHED "
                             f"socket of it on the server port {bound_ms} ms after the reject completed "
                             f"(push outcome {(r.push or {}).get('outcome')})",
                    actual=actual,
                    verdict="FAILED", at_ms=cf.history.relative_ms_from_wall(r.completed_wall_ms or now),
                    hint="the server rejected the setup but never closed the transport (Java 2.2.4 may, research §2.3)")
        if r.open_after_ms is not None and r.open_after_ms > bound_ms:
            late.append(f"{r.name} ({r.connection_id}) still open {r.open_after_ms:.0f} ms after its reject completed, "
                        f"closed by {r.closed_after_ms:.0f} ms")
    summary = {r.name: r.as_dict() for r in judged}
    if late:
        cf.late(expected=f"every rejected transport closed within {CLOSE_BOUND_MS} + {TOLERANCE_MS} ms of its reject "
                         "completing", actual="; ".join(late))
    cf.ok("rejected transports closed: " + ", ".join(
        f"{r.name} {(r.push or {}).get('outcome') or 'stream ended'} → closed by +{(r.closed_after_ms or 0):.0f} ms"
        for r in judged),
        expected=f"closed within {bound_ms} ms of the reject completing", actual=summary)


# ---- TC-10 ------------------------------------------------------------------------------------

class _ReloadCall(threading.Thread):
    """``reloadClient`` off the case's thread, on its own HTTP session; times its return."""

    def __init__(self, server: NacosServerHandle, connection_id: str) -> None:
        super().__init__(name=f"tc10-reload-{connection_id}", daemon=True)
        self.admin = server.new_admin()
        self.connection_id = connection_id
        self.invoked_at = 0.0
        self.returned_at: float | None = None
        self.answer: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        self.invoked_at = now_ms()
        try:
            self.answer = self.admin.reload_client(self.connection_id)
            self.returned_at = now_ms()
        except Exception as exc:  # noqa: BLE001 - a timeout here is the finding
            self.error = repr(exc)
        finally:
            self.admin.close()

    @property
    def took_ms(self) -> float | None:
        return None if self.returned_at is None else self.returned_at - self.invoked_at


@case("TC-10", "MUST", timeout_s=90, subject="server")
def test_pending_reset_released_when_transport_dies(cf, topology, nacos_server_peer, nacos_client_peer):
    """A reset pushed to a connection that dies mid-request → the pending push is released (no hang beyond its 3 s timeout) and the connection is unregistered.

    Procedure: baseline (the client under test RUNNING); a raw probe connects, sets up and is
    registered; `reloadClient(probe)` in a thread; the probe receives the ConnectResetRequest and
    withholds its answer (the push is pending: reloadClient blocks on it); then the proxy is
    disabled (the transport dies). `reloadClient` returns within 3 s + tolerance of its call, and
    the probe's id is cleaned up as in TC-01 (from the disable). The pushes log, where the server
    has one, adds the push's outcome (`closed` or `timeout`).
    """
    nacos_server_peer.require_capabilities(["loader"])
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    running(cf, client)
    bound_ms = reset_wait_ms(server) + TOLERANCE_MS
    # The probe reports an IP of its own: its per-IP counter must not share the client's, which
    # the proxy's disable takes down at the same moment.
    with RawNacosConnection(server.host, server.proxied_grpc_port, client_ip=PROBE_IP, timeout_s=5.0) as probe:
        probe_id = probe.server_check().body.get("connectionId")
        probe.setup(labels=SDK_LABELS)
        try:
            ids = wait_registered(cf.history, server, connection_id=probe_id, timeout_ms=3000)
        except WaitTimeout as exc:
            raise SetupError(f"TC-10: the probe's setup did not register {probe_id} ({exc.last!r}); nothing was "
                             "judged") from None
        reg = registration(cf, server, probe_id, ids)
        push_seq = _last_seq(server.admin.pushes()) if server.peer.has_capability("pushes") else 0
        reload = _ReloadCall(server, probe_id)
        cf.history.invoke("harness", "reloadClient", {"connectionId": probe_id})
        reload.start()
        try:
            pushed = probe.next_push(timeout_s=PENDING_WAIT_MS / 1000.0)
        except queue.Empty:
            pushed = None
        if pushed is None or pushed.type != codec.CONNECT_RESET_REQUEST:
            raise SetupError(f"TC-10: reloadClient({probe_id}) pushed no ConnectResetRequest to the probe within "
                             f"{PENDING_WAIT_MS} ms (got {pushed!r}); nothing was judged (SR-20 judges the push)")
        cf.history.observe("probe_push", {"type": pushed.type, "body": pushed.body, "answered": False})
        # A server that does not wait for the answer has nothing pending to release: the release
        # is then not observable, but the transport's death and its cleanup still are.
        never_pending = not reload.is_alive()
        if never_pending:
            cf.history.note(f"reloadClient returned ({reload.answer!r}) before the transport died although the "
                            "push was not answered: the server does not wait for the answer (no pending push)")
        down_at = now_ms()
        with ProxyDown(server.proxy, history=cf.history):
            seen = watch_unregister(cf, reg, fault="transport's death (proxy disable)", fault_at_ms=down_at)
            reload.join(timeout=max(0.0, reload.invoked_at / 1000.0 + RELOAD_GUARD_S + 1.0 - now_ms() / 1000.0))
    if reload.returned_at is not None:
        cf.history.ok("harness", "reloadClient", {"answer": reload.answer, "took_ms": round(reload.took_ms or 0, 1)})
    else:
        cf.history.fail("harness", "reloadClient", {"alive": reload.is_alive()}, error=reload.error)
    died_after_ms = down_at - reload.invoked_at
    if reload.returned_at is None:
        cf.fail(expected=f"the pending reset is released: reloadClient({probe_id}) returns within "
                         f"{bound_ms} ms of its call (its transport died {died_after_ms:.0f} ms into it)",
                actual=f"no answer {RELOAD_GUARD_S:.0f} s after the call ({reload.error or 'still waiting'})",
                verdict="FAILED", at_ms=cf.history.relative_ms(down_at),
                hint="the push waits on a dead connection: release pending pushes when the transport terminates")
    push = None
    if server.peer.has_capability("pushes"):
        found = [p for p in server.admin.pushes(push_seq)
                 if p.get("type") == codec.CONNECT_RESET_REQUEST and p.get("connectionId") == probe_id]
        push = found[-1] if found else None
        cf.history.observe("push", push)
        cf.check(push is not None and push.get("outcome") in ("closed", "timeout"),
                 expected="the released push's outcome is closed (transport gone) or timeout",
                 actual=push, verdict="FAILED")
    late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(down_at))
    recheck_one_disconnect(cf, reg)
    took = reload.took_ms or 0.0
    if never_pending:
        finish(cf, reg, seen, late, f"reset to {probe_id} never pending (reloadClient back {took:.0f} ms after its "
                                    f"call, unanswered); left current {seen.gone_ms:.0f} ms after the transport died")
        return
    if took > bound_ms:
        late.insert(0, f"the pending reset was released only {took:.0f} ms after reloadClient's call "
                       f"({took - died_after_ms:.0f} ms after its transport died)")
    finish(cf, reg, seen, late, f"reset to {probe_id} {(push or {}).get('outcome') or 'released'}; reloadClient back "
                                f"{took:.0f} ms after its call ({took - died_after_ms:.0f} ms after the transport died); "
                                f"left current {seen.gone_ms:.0f} ms after")
