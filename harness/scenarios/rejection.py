"""Rejected and pending connections as steps (SPEC §5 TC-07, TC-10): raw probes that a limited or
starting server rejects (``Probe``, ``Rejection``), a watch of the rejected transport until it
is closed (``RejectionWatch``: the push log where the server has one, else the socket table and
``current``), and a ``reloadClient`` call left pending on a thread (``ReloadCall``).
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from harness.errors import SetupError
from harness.observe.sockets import snapshot
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import (
    RESET_ANSWER_TIMEOUT_MS,
    TOLERANCE_MS,
)

# Helpers shared with TC-01..TC-03 (one owner; no test function is imported).
from harness.scenarios.cleanup import (
    transport_peer,
)
from harness.topology import NacosServerHandle
from harness.wait import now_ms

CLOSE_BOUND_MS = 1000  # SPEC TC-07: closed 1 s after the reject completed
CLOSE_WATCH_MS = 4000  # a rejected transport still open this long after its bound: FAILED
COUNT_LIMIT = 1
STARTING_FOR_MS = 60_000  # the starting server stays starting for the whole case
OPEN_STATES = ("ESTABLISHED", "CLOSE_WAIT")  # the server has not closed its side


def wall_ms() -> float:
    return time.time() * 1000.0




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


class Probe:
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
        self.cf.history.invoke(self.name, "ConnectionSetup", {"labels": codec.SDK_LABELS})
        self.conn.setup(labels=codec.SDK_LABELS)

    def take_reset(self, timeout_ms: float) -> codec.Message | None:
        """The reset pushed to it (answered at once when ``answers``); None when its stream
        ended first or nothing came."""
        try:
            item = self.conn.next_push(timeout_s=max(0.0, timeout_ms) / 1000.0)
        except queue.Empty:
            return None
        if item is None:
            self.rejection.stream_end_wall_ms = wall_ms()
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
    return server.peer.timer("reset_timeout_ms", server.knobs, default=RESET_ANSWER_TIMEOUT_MS)


def completion_wall_ms(push: dict[str, Any], wait_ms: float) -> float | None:
    outcome = push.get("outcome")
    if outcome == "answered" and push.get("answer_ms") is not None:
        return float(push["t_ms"]) + float(push["answer_ms"])
    if outcome == "timeout":
        return float(push["t_ms"]) + wait_ms
    if outcome == "closed":  # the transport was already gone when the push failed
        return float(push["t_ms"])
    return None  # pending


def server_side_open(server: NacosServerHandle, connection_id: str, entries: list) -> list[str] | None:
    """The server-side socket of that transport still open (ESTABLISHED / CLOSE_WAIT), as
    strings; None when the id names no 4-tuple."""
    peer = transport_peer(connection_id)
    if peer is None:
        return None
    ip, port = peer
    return [f"{e.local_ip}:{e.local_port}<-{ip}:{port} {e.state}" for e in entries
            if e.local_port == server.grpc_port and e.remote_port == port and e.remote_ip == ip
            and e.state in OPEN_STATES]


class RejectionWatch:
    """Polls both servers' pushes logs and gRPC ports: completes each rejection's record and
    notes when its socket went. The client-under-test's rejections on ``limited`` are the
    reset pushes to ids that are neither a probe's nor the admitted client's."""

    def __init__(self, cf, probes: list[Probe], limited: NacosServerHandle, admitted_id: str,
                 seqs: dict[str, int]) -> None:
        self.cf, self.probes, self.limited, self.admitted_id, self.seqs = cf, probes, limited, admitted_id, seqs
        self.servers = {p.rejection.server.main_address: p.rejection.server for p in probes}
        self.servers[limited.main_address] = limited
        self.client_rejections: dict[str, Rejection] = {}

    def all(self) -> list[Rejection]:
        return [p.rejection for p in self.probes] + list(self.client_rejections.values())

    def poll(self) -> RejectionWatch:
        pushes = {addr: [p for p in s.admin.pushes(self.seqs[addr]) if p.get("type") == codec.CONNECT_RESET_REQUEST]
                  for addr, s in self.servers.items()}
        entries = snapshot([s.grpc_port for s in self.servers.values()])
        now = wall_ms()
        for probe in self.probes:
            r = probe.rejection
            server_pushes = pushes[r.server.main_address]
            if r.push is None or r.push.get("outcome") == "pending":
                match = [p for p in server_pushes if r.connection_id and p.get("connectionId") == r.connection_id]
                r.push = match[0] if match else r.push
            if r.push is not None:
                r.connection_id = r.connection_id or r.push.get("connectionId")
                r.completed_wall_ms = completion_wall_ms(r.push, reset_wait_ms(r.server))
        probe_ids = {p.rejection.connection_id for p in self.probes}
        for push in pushes[self.limited.main_address]:
            cid = push.get("connectionId")
            if cid in probe_ids or cid == self.admitted_id:
                continue
            r = self.client_rejections.setdefault(cid, Rejection(f"client-{len(self.client_rejections)}",
                                                                 f"over count_limit {COUNT_LIMIT}", self.limited,
                                                                 connection_id=cid))
            r.push = push
            r.completed_wall_ms = completion_wall_ms(push, reset_wait_ms(self.limited))
        for r in self.all():
            if r.gone_wall_ms is not None:
                continue
            if r.connection_id is None:
                if r.stream_end_wall_ms is not None:  # no id to look up, but the probe saw it end
                    r.gone_wall_ms = r.stream_end_wall_ms
                continue
            still = server_side_open(r.server, r.connection_id, entries)
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
        now = wall_ms()
        probes_done = all(p.rejection.resolved(now) for p in self.probes)
        return probes_done and any(r.resolved(now) for r in self.client_rejections.values())

    def answering_done(self, _: Any = None) -> bool:
        now = wall_ms()
        return all(p.rejection.resolved(now) for p in self.probes if p.answers)


def starting_probe_check(cf, probe: Probe) -> None:
    check = probe.server_check()
    if not (check.type == codec.ERROR_RESPONSE and check.error_code == codec.INVALID_SERVER_STATUS):
        raise SetupError(f"TC-07: the server given startup_delay_ms={STARTING_FOR_MS} answered ServerCheck with "
                         f"{check.type} {check.body} instead of 300 (starting); nothing was judged")


class ReloadCall(threading.Thread):
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


# ---- TC-07 as steps ----------------------------------------------------------------------------

def rejection_probes(cf, stack: ExitStack, limited: NacosServerHandle, starting: NacosServerHandle) -> list[Probe]:
    """Four raw probes — over the limit on ``limited`` and on the ``starting`` server, one
    answering the reset and one silent each — past their ServerCheck (a connectionId from the
    limited server, a 300 from the starting one: the baseline), then each sends an SDK setup."""
    why = f"over count_limit {COUNT_LIMIT}"
    probes = [
        Probe(cf, stack, limited, "over-limit-answers", why, answers=True),
        Probe(cf, stack, limited, "over-limit-silent", why, answers=False),
        Probe(cf, stack, starting, "starting-answers", "server starting", answers=True),
        Probe(cf, stack, starting, "starting-silent", "server starting", answers=False),
    ]
    for probe in probes:
        if probe.rejection.server is starting:
            starting_probe_check(cf, probe)
            continue
        check = probe.server_check()
        cf.baseline(bool(probe.rejection.connection_id),
                    expected=f"ServerCheck through {limited.main_address}'s proxy → connectionId",
                    actual=f"{check.type} {check.body}")
    for probe in probes:
        probe.setup()
    return probes


def take_resets(cf, probes: list[Probe], seqs: dict[str, int]) -> None:
    """Each probe takes the reset pushed to it (the answering ones first, the silent ones read
    after), within the servers' push timeout; a probe on the starting server, which has no id
    from its ServerCheck, learns it from the push's requestId in the server's pushes log."""
    deadline = now_ms() + max(reset_wait_ms(p.rejection.server) for p in probes) + TOLERANCE_MS
    request_ids: dict[str, str | None] = {}
    for probe in sorted(probes, key=lambda p: not p.answers):
        reset = probe.take_reset(deadline - now_ms())
        request_ids[probe.name] = reset.request_id if reset is not None else None
    cf.history.observe("probe_resets", request_ids)
    for probe in probes:
        rid, server = request_ids[probe.name], probe.rejection.server
        if probe.rejection.connection_id is None and rid is not None:
            match = [p for p in server.admin.pushes(seqs[server.main_address]) if p.get("requestId") == rid]
            if match:
                probe.rejection.connection_id = match[0].get("connectionId")


def judge_rejections(cf, probes: list[Probe], watch: RejectionWatch, second: Any, *, guard_ms: float,
                     bound_ms: float) -> list[Rejection]:
    """FAILED for a probe never rejected, a second client never rejected, or a rejected transport
    still open CLOSE_WATCH_MS past its bound; NON-STRICT for one seen open past the bound.
    Returns every rejection judged."""
    now = wall_ms()
    for probe in probes:
        r = probe.rejection
        if r.push is None and r.stream_end_wall_ms is None:
            cf.fail(expected=f"{r.name}'s setup ({r.why}) is rejected: a ConnectResetRequest pushed, then its "
                             "transport really closed",
                    actual=f"no reset push, stream still open; {r.as_dict()}", verdict="FAILED")
    client_done = [r for r in watch.client_rejections.values() if r.resolved(now)]
    if not client_done:
        cf.fail(expected=f"{second.name}, over count_limit {COUNT_LIMIT} while another client holds the slot, is "
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
    if late:
        cf.late(expected=f"every rejected transport closed within {CLOSE_BOUND_MS} + {TOLERANCE_MS} ms of its reject "
                         "completing", actual="; ".join(late))
    return judged
