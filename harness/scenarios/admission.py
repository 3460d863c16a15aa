"""Steps of the admission cases (SR-05, SR-11): raw probes that set up where a server must turn
them away, the watch of that rejection from the probe's side (reset pushed, stream ended, socket
gone from the server's port), a server started with a startup delay, and the watch that SDK
connections never pass a count limit. Observers record; the ``expect_*`` steps judge."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from harness.errors import SetupError
from harness.observe import sockets
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import CONTROL_ERRORS, RESET_ANSWER_TIMEOUT_MS, RUNNING_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.scenarios.rejection import (
    CLOSE_BOUND_MS,  # SPEC TC-07: a rejected transport closed 1 s after the reject
)
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

# Nacos waits this long for the answer to a ConnectResetRequest before it closes anyway
# (GrpcBiStreamRequestAcceptor / loadSingle, research §2.3, §2.4).
# A rejected connection is really closed within 1 s (SPEC TC-07).


def established(server: NacosServerHandle) -> int:
    """ESTABLISHED sockets of the server on its real gRPC port (the proxy's upstream side), on
    its own address only: another worker's server listens on the same port in its own block."""
    port = server.grpc_port
    return sockets.count(sockets.snapshot([port]), state="ESTABLISHED", local_port=port, local_ip=server.bind_host)


def is_sdk(entry: dict[str, Any]) -> bool:
    labels = entry.get("labels") or (entry.get("metaInfo") or {}).get("labels") or {}
    return str(labels.get("source", "")).lower() == "sdk"


def server_check(cf, probe: RawNacosConnection, name: str, *, expected: str) -> str:
    """ServerCheck on a raw probe; returns its connectionId (a missing one fails ``expected``)."""
    cf.history.invoke(name, "ServerCheck", {"target": probe.target})
    msg = probe.server_check()
    cf.history.ok(name, "ServerCheck", {"type": msg.type, "body": msg.body})
    connection_id = msg.body.get("connectionId")
    if msg.type != codec.SERVER_CHECK_RESPONSE or not connection_id:
        cf.fail(expected=expected, actual=f"{msg.type} {msg.body}")
    return connection_id


class RejectedSetup:
    """What a rejected setup looked like from the probe's side (times in history ms)."""

    def __init__(self) -> None:
        self.reset: codec.Message | None = None
        self.other_pushes: list[dict[str, Any]] = []
        self.setup_t_ms = 0.0
        self.reset_t_ms: float | None = None
        self.stream_end_t_ms: float | None = None
        self.closed_t_ms: float | None = None
        self.sockets_left: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reset": self.reset.body if self.reset else None, "other_pushes": self.other_pushes,
                "reset_after_ms": after(self.reset_t_ms, self.setup_t_ms),
                "stream_end_after_ms": after(self.stream_end_t_ms, self.setup_t_ms),
                "closed_after_ms": after(self.closed_t_ms, self.setup_t_ms), "sockets_left": self.sockets_left}


def after(t_ms: float | None, since_ms: float) -> float | None:
    return None if t_ms is None else round(t_ms - since_ms, 1)


def setup_and_watch_rejection(cf, probe: RawNacosConnection, server: NacosServerHandle, name: str,
                               sockets_after: int, *, labels: dict[str, str],
                               registered: Callable[[dict[str, Any]], bool]) -> RejectedSetup:
    """Send a setup that must be rejected; answer the reset as a client would; record when the
    stream ended and when the transport's socket went (``sockets_after`` = ESTABLISHED sockets
    on the server port expected once it has). Stops early once ``registered(current)`` holds:
    such a setup was plainly not rejected. Observes only; the caller judges."""
    seen = RejectedSetup()
    hard_bound_ms = RESET_ANSWER_TIMEOUT_MS + CLOSE_BOUND_MS + TOLERANCE_MS
    cf.history.invoke(name, "ConnectionSetup", {"labels": labels})
    seen.setup_t_ms = cf.history.elapsed_ms()
    probe.setup(labels=labels)
    deadline = now_ms() + hard_bound_ms
    while seen.stream_end_t_ms is None and now_ms() < deadline:
        try:
            item = probe.next_push(timeout_s=min(0.1, max(0.0, deadline - now_ms()) / 1000.0))
        except queue.Empty:
            if seen.reset is None and registered(server.admin.current()):
                cf.history.observe("rejection", {"probe": name, "registered": True})
                return seen
            continue
        if item is None:
            seen.stream_end_t_ms = cf.history.elapsed_ms()
            cf.history.observe("probe_stream", {"probe": name, "state": "ended"})
        elif item.type == codec.CONNECT_RESET_REQUEST and seen.reset is None:
            seen.reset, seen.reset_t_ms = item, cf.history.elapsed_ms()
            cf.history.observe("probe_push", {"probe": name, "type": item.type, "body": item.body})
            # Answer as every client does (same requestId), so the server need not wait 3 s.
            probe.send_on_stream(codec.push_response(codec.CONNECT_RESET_RESPONSE, item.request_id))
        else:
            seen.other_pushes.append({"type": item.type, "body": item.body})
            cf.history.observe("probe_push", {"probe": name, "type": item.type, "body": item.body})
    try:
        waited = eventually(lambda: established(server), timeout_ms=max(0.0, deadline - now_ms()) + TOLERANCE_MS,
                            what=f"{name}'s transport closed on the server port",
                            accept=lambda n: n <= sockets_after, interval_ms=20)
        seen.closed_t_ms = cf.history.relative_ms(waited.at_mono_ms)
        seen.sockets_left = waited.value
    except WaitTimeout as exc:
        seen.sockets_left = exc.last  # type: ignore[assignment]
    cf.history.observe("rejection", {"probe": name, **seen.as_dict()})
    return seen


def judge_rejection(cf, seen: RejectedSetup, name: str, why: str) -> list[dict[str, Any]]:
    """FAILED for a missing reset or a transport left open; returns timing misses (late)."""
    bound_ms = RESET_ANSWER_TIMEOUT_MS + CLOSE_BOUND_MS + TOLERANCE_MS
    reset, reset_t, closed_t = seen.reset, seen.reset_t_ms, seen.closed_t_ms
    if reset is None or reset_t is None:
        cf.fail(expected=f"{name}'s setup ({why}) is rejected with a ConnectResetRequest pushed on its bi-stream",
                actual=f"no reset push within {bound_ms} ms; {seen.as_dict()}", at_ms=seen.setup_t_ms)
        return []
    address = {k: reset.body.get(k) for k in ("serverIp", "serverPort") if reset.body.get(k)}
    cf.check(not address, expected=f"the reset rejecting {name} carries no address (ConnectResetRequest())",
             actual=reset.body)
    if closed_t is None or seen.stream_end_t_ms is None:
        cf.fail(expected=f"then {name}'s transport really closed: its bi-stream ends and no ESTABLISHED socket of it "
                         f"is left on the server port within {bound_ms} ms",
                actual=seen.as_dict(), at_ms=seen.setup_t_ms)
        return []
    if closed_t - reset_t > CLOSE_BOUND_MS + TOLERANCE_MS:
        return [{"what": f"{name}'s transport closed {closed_t - reset_t:.0f} ms after the answered reset",
                 "bound_ms": CLOSE_BOUND_MS + TOLERANCE_MS}]
    return []


def no_connected(cf, server: NacosServerHandle, has_events: bool, ids: Callable[[str], bool], what: str) -> None:
    if not has_events:
        return
    connected = [e for e in server.admin.events() if e.get("event") == "connected" and ids(e.get("connectionId", ""))]
    cf.history.observe("events", {"connected": connected, "for": what})
    cf.check(not connected, expected=f"{what} never registered: no connected event", actual=connected)


# The server counts its delay from its own start, just before it is ready: the probe's steps
# (~0.1 s) always fit; the client under test (0.3-0.7 s to start) usually starts inside it too,
# which the case records from the server's own answer.
STARTUP_DELAY_MS = 4000  # room for the probe's ServerCheck, setup and a full close watch (1 s + tolerance) under load
MAX_STARTUP_DELAY_MS = 60_000


def still_starting(cf, server: NacosServerHandle, what: str) -> bool:
    """Ask the server on a fresh transport whether it is still starting (ServerCheck → 300).
    It starts once and for all, so a 300 now means it was starting at every earlier instant."""
    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        msg = probe.server_check()
    cf.history.observe("server_starting", {"at": what, "type": msg.type, "errorCode": msg.error_code})
    return msg.type == codec.ERROR_RESPONSE and msg.error_code == codec.INVALID_SERVER_STATUS


def starting_server_and_probe(cf, topology, peer):
    """A server started with ``startup_delay_ms`` and a probe's first ServerCheck answer, asked
    while the delay still runs. A server slower to get ready than the delay (its start outlasted
    it) is started once more with a delay sized on its measured start, so a server that ignores
    the delay is still caught answering inside it (FAILED), not excused as a slow machine."""
    delay_ms = STARTUP_DELAY_MS
    for attempt in (1, 2):
        launched_wall_ms = time.time() * 1000.0
        (server,) = topology.nacos_servers(1, peer=peer, knobs={"startup_delay_ms": delay_ms})
        ready_after_ms = time.time() * 1000.0 - launched_wall_ms
        # The server starts its delay after launch: it cannot have started before this instant.
        starts_not_before_wall_ms = launched_wall_ms + delay_ms
        probe = RawNacosConnection(server.host, server.proxied_grpc_port)
        cf.history.invoke("probe", "ServerCheck", {"target": probe.target, "attempt": attempt})
        check = probe.server_check()
        cf.history.ok("probe", "ServerCheck", {"type": check.type, "body": check.body})
        if check.type == codec.ERROR_RESPONSE or time.time() * 1000.0 < starts_not_before_wall_ms:
            return server, probe, check, delay_ms, starts_not_before_wall_ms
        probe.close()
        server.node.stop()
        cf.history.note(f"the server got ready {ready_after_ms:.0f} ms after launch, past its {delay_ms} ms delay: "
                        "started again with a delay sized on that")
        delay_ms = int(min(MAX_STARTUP_DELAY_MS, 2 * ready_after_ms + STARTUP_DELAY_MS))
    raise SetupError(f"SR-05: twice the server answered ServerCheck only after its startup delay had run out (the "
                     f"last {delay_ms} ms, sized on its start); the machine is too loaded for this case (nothing was judged)")


def judge_late_closes(cf, late: Any, rejected: Any) -> None:
    """NON-STRICT when a rejected transport was closed, but later than the bound after its answered reset."""
    if late:
        cf.late(expected=f"a rejected transport closed within {CLOSE_BOUND_MS} + {TOLERANCE_MS} ms of the "
                         "answered reset", actual=late, at_ms=rejected.setup_t_ms)


class CountLimitWatch:
    """Every `current` the case reads while the limit matters goes through here: SDK
    connections must never exceed the limit, and while no slot is free only the ``holders``
    (the connections that filled it) may be registered as SDK connections."""

    def __init__(self, cf, server: NacosServerHandle, limit: int) -> None:
        self.cf, self.server, self.limit = cf, server, limit
        self.holders: set[str] = set()
        self.slot_free = False  # once True, anyone may take the free slot, nobody beyond it
        self.violation: dict[str, Any] | None = None
        self.max_sdk = 0

    def poll(self) -> dict[str, dict[str, Any]]:
        snapshot = self.server.admin.current()
        sdk = sorted(cid for cid, entry in snapshot.items() if is_sdk(entry))
        self.max_sdk = max(self.max_sdk, len(sdk))
        intruders = [] if self.slot_free else sorted(set(sdk) - self.holders)
        if self.violation is None and (len(sdk) > self.limit or intruders):
            self.violation = {"t_ms": round(self.cf.history.elapsed_ms(), 1), "sdk": sdk, "not_allowed": intruders}
            self.cf.history.observe("limit_violation", self.violation)
        return snapshot

    def check(self, while_what: str) -> None:
        self.cf.check(self.violation is None,
                      expected=f"SDK connections in current stay at countLimit {self.limit} while {while_what}: "
                               "over-limit setups are never registered",
                      actual=self.violation, at_ms=(self.violation or {}).get("t_ms"))


def quiet_streams(cf, probes: dict[str, RawNacosConnection], watch: CountLimitWatch, ids: set[str]) -> None:
    """End the probes' bi-streams, keeping their transports (and so their registrations).

    Why: the next step starts a peer process, and a fork while this process has gRPC calls in
    flight crashes the child now and then (SIGSEGV/SIGABRT: grpcio's fork support meets the
    runtime's ``preexec_fn``). A stream's end is not a transport's end (research §2.7): the
    connections stay registered, which is checked.
    """
    for probe in probes.values():
        probe.end_stream()
    for name, probe in probes.items():
        try:
            while probe.next_push(timeout_s=3.0) is not None:
                pass
        except queue.Empty:
            cf.fail(expected=f"the server ends {name}'s bi-stream after the probe half-closed it",
                    actual="still open after 3 s")
    cf.history.observe("probe_streams", {"ended": sorted(probes)})
    snapshot = watch.poll()
    cf.check(ids <= set(snapshot),
             expected="connections whose bi-stream ended stay registered while their transports live "
                      "(only a transport's end unregisters, research §2.7)",
             actual={"missing": sorted(ids - set(snapshot)), "current": sorted(snapshot)})




BASELINE = "baseline: ServerCheckResponse through the proxy"
Probes = dict[str, tuple[RawNacosConnection, str]]  # name -> (probe, its connectionId)


def open_probe(cf, stack: ExitStack, server: NacosServerHandle, name: str) -> tuple[RawNacosConnection, str]:
    """A raw probe through the proxy, closed with ``stack``, after its ServerCheck."""
    probe = stack.enter_context(RawNacosConnection(server.host, server.proxied_grpc_port))
    return probe, server_check(cf, probe, name, expected=BASELINE)


def fill_with_sdk_probes(cf, stack: ExitStack, server: NacosServerHandle, watch: CountLimitWatch) -> Probes:
    """Baseline: ``limit`` SDK probes register (the limit allows them); they hold the slots."""
    fill: Probes = {}
    for i in range(watch.limit):
        name = f"sdk-probe-{i}"
        probe, cid = fill[name] = open_probe(cf, stack, server, name)
        watch.holders.add(cid)
        cf.history.invoke(name, "ConnectionSetup", {"labels": codec.SDK_LABELS})
        probe.setup(labels=codec.SDK_LABELS)
    try:
        eventually(watch.poll, timeout_ms=3000, what=f"{watch.limit} SDK probes registered",
                   accept=lambda snap: watch.holders <= set(snap), swallow=CONTROL_ERRORS)
    except WaitTimeout as exc:
        cf.fail(expected=f"baseline: {watch.limit} SDK connections register up to countLimit {watch.limit}",
                actual=f"current {sorted(exc.last or {})}")
    cf.history.observe("current", {"ids": sorted(watch.poll()), "holders": sorted(watch.holders)})
    return fill


def expect_cluster_exempt(cf, stack: ExitStack, server: NacosServerHandle,
                          watch: CountLimitWatch) -> tuple[RawNacosConnection, str]:
    """A ``source=cluster`` setup registers with the SDK connections at the limit (exempt)."""
    cluster, cluster_id = open_probe(cf, stack, server, "cluster-probe")
    cf.history.invoke("cluster-probe", "ConnectionSetup", {"labels": codec.CLUSTER_LABELS})
    cluster.setup(labels=codec.CLUSTER_LABELS)
    try:
        eventually(watch.poll, timeout_ms=3000, what="the cluster probe registered",
                   accept=lambda snap: cluster_id in snap, swallow=CONTROL_ERRORS)
    except WaitTimeout as exc:
        pushed = []
        with contextlib.suppress(queue.Empty):
            item = cluster.next_push(timeout_s=0.05)
            pushed.append("stream ended" if item is None else {"type": item.type, "body": item.body})
        cf.fail(expected=f"cluster-source connections are exempt from countLimit: a source=cluster setup "
                         f"registers with {watch.limit} SDK connections at the limit",
                actual=f"current {sorted(exc.last or {})}; pushed to it: {pushed}")
    return cluster, cluster_id


def expect_over_limit_rejected(cf, stack: ExitStack, server: NacosServerHandle, watch: CountLimitWatch,
                               has_events: bool) -> tuple[RejectedSetup, list[dict[str, Any]], str]:
    """One more SDK probe is rejected (reset without address, stream ended, socket gone) and
    never registered. Returns what was seen, the late closes, and the probe's id."""
    sockets_at_limit = established(server)
    cf.history.observe("sockets", {"server_port": server.grpc_port, "established": sockets_at_limit})
    over, over_id = open_probe(cf, stack, server, "over-probe")
    rejected = setup_and_watch_rejection(cf, over, server, "over-probe", sockets_at_limit, labels=codec.SDK_LABELS,
                                         registered=lambda snap: over_id in snap)
    watch.poll()
    watch.check("a third SDK probe sets up")
    no_connected(cf, server, has_events, lambda cid: cid == over_id, f"the over-limit probe {over_id}")
    late = judge_rejection(cf, rejected, "the over-limit probe", f"countLimit {watch.limit} reached")
    over.close()
    return rejected, late, over_id


def expect_client_kept_out(cf, server: NacosServerHandle, client: NacosClientHandle, watch: CountLimitWatch, *,
                           known: set[str], since_push: int, has_events: bool) -> None:
    """The client under test, over the limit, is rejected: a reset pushed to a new connection
    whose transport is gone since (capability ``events``); without it, ``current`` is watched for
    as long as a rejection takes at most. Either way the limit holds."""
    if has_events:
        bound_ms = RUNNING_TIMEOUT_MS + RESET_ANSWER_TIMEOUT_MS + CLOSE_BOUND_MS + TOLERANCE_MS

        def rejected_client() -> dict[str, Any] | None:
            watch.poll()
            resets = [p for p in server.admin.pushes(since_push) if p.get("type") == codec.CONNECT_RESET_REQUEST
                      and p.get("connectionId") not in known and p.get("outcome") != "pending"]
            open_ids = {t.get("id") for t in server.admin.transports()}
            return next((p for p in resets if p.get("connectionId") not in open_ids), None)

        try:
            first = eventually(rejected_client, timeout_ms=bound_ms, what=f"{client.name}'s setup rejected",
                               accept=lambda p: p is not None, swallow=CONTROL_ERRORS, interval_ms=50).value
        except WaitTimeout:
            watch.check(f"{client.name} connects")
            cf.fail(expected=f"{client.name}'s setup over countLimit {watch.limit} is rejected: a "
                             "ConnectResetRequest pushed to it, then its transport closed",
                    actual=f"none within {bound_ms} ms; pushes {server.admin.pushes(since_push)}; "
                           f"state {client.control.state()}")
        cf.history.observe("client_rejected", first)
    else:
        holds_for(watch.poll, duration_ms=RESET_ANSWER_TIMEOUT_MS + CLOSE_BOUND_MS + TOLERANCE_MS,
                  what="the limit holds", accept=lambda _snap: watch.violation is None)
    watch.check(f"{client.name} tries to connect over the limit")
    state = client.control.state()
    cf.history.observe("client_state_over_limit", {k: state.get(k) for k in ("status", "server", "connection_id")})


def free_a_slot(cf, watch: CountLimitWatch, name: str, probe: RawNacosConnection, cid: str) -> None:
    """Close one slot holder; it must leave ``current`` once its transport closed."""
    cf.history.invoke(name, "close", {"connectionId": cid})
    probe.close()
    try:
        eventually(watch.poll, timeout_ms=CLOSE_BOUND_MS + TOLERANCE_MS, what=f"{cid} unregistered",
                   accept=lambda snap: cid not in snap, swallow=CONTROL_ERRORS)
    except WaitTimeout as exc:
        cf.fail(expected=f"a slot frees: {cid} leaves current once its transport closed",
                actual=f"current {sorted(exc.last or {})}")
    cf.history.ok(name, "close", {"connectionId": cid})
    watch.slot_free = True


def expect_admitted(cf, client: NacosClientHandle, watch: CountLimitWatch, known: set[str]) -> Any:
    """Once a slot is free the client gets in (RUNNING, registered as a new SDK connection) and
    nobody beyond the limit. Returns the wait's result."""
    def admitted() -> tuple[dict[str, Any], dict[str, Any]]:
        return watch.poll(), client.control.state()

    def client_in(seen: tuple[dict[str, Any], dict[str, Any]]) -> bool:
        snapshot, state = seen
        newcomers = [cid for cid, entry in snapshot.items() if is_sdk(entry) and cid not in known]
        return bool(newcomers) and state.get("status") == "RUNNING" and state.get("connection_id") in (None, *newcomers)

    admit_bound_ms = RUNNING_TIMEOUT_MS + RESET_ANSWER_TIMEOUT_MS
    try:
        waited = eventually(admitted, timeout_ms=admit_bound_ms, interval_ms=50,
                            what=f"{client.name} admitted", accept=client_in, swallow=CONTROL_ERRORS)
    except WaitTimeout as exc:
        watch.check("a slot is freed")
        snapshot, state = exc.last if isinstance(exc.last, tuple) else ({}, {})
        cf.fail(expected=f"once a slot is free, {client.name} gets in within {admit_bound_ms} ms: RUNNING "
                         "and registered",
                actual={"current": sorted(snapshot), "state": {k: state.get(k) for k in
                                                              ("status", "server", "connection_id")}})
    snapshot, state = waited.value
    cf.history.observe("client_admitted", {"connection_id": state.get("connection_id"), "ids": sorted(snapshot),
                                           "after_ms": round(waited.elapsed_ms, 1)})
    watch.poll()
    watch.check(f"{client.name} is admitted")
    return waited


def expect_running_after_start(cf, client: NacosClientHandle, server: NacosServerHandle, *,
                               timeout_ms: float) -> tuple[str | None, dict[str, Any]]:
    """The client ends RUNNING and registered once the server has started (it must retry after
    a 300, not give up). Returns its connection id and the server's ``current``."""
    try:
        state = wait_client_running(cf.history, client, timeout_ms=timeout_ms)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} ends RUNNING once the server has started", actual=f"last state {exc.last!r}",
                hint="a client must retry after a 300 (starting), not give up")
    client_id = state.get("connection_id")
    try:
        snapshot = wait_registered(cf.history, server, timeout_ms=3000, connection_id=client_id,
                                   count=None if client_id else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} RUNNING and registered once the server has started",
                actual=f"current {exc.last!r}")
    return client_id, snapshot


def expect_no_registration_before(cf, server: NacosServerHandle, started_wall_ms: float, delay_ms: int) -> None:
    """No ``connected`` event dated before the server finished starting (capability ``events``)."""
    early = [e for e in server.admin.events() if e.get("event") == "connected"
             and float(e.get("t_ms", 0)) < started_wall_ms]
    cf.check(not early, expected=f"no registration while starting (before launch + {delay_ms} ms)", actual=early)
