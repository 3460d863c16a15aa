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
from contextlib import ExitStack

from fixtures.case import case
from harness.errors import SetupError
from harness.faults import ProxyDown
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import (
    CONTROL_ERRORS,
    POLL_MS,
    RUNNING_TIMEOUT_MS,
    TOLERANCE_MS,
)
from harness.scenarios.cleanup import (
    finish,
    judge_cleanup,
    prove_registered,
    recheck_one_disconnect,
    registration,
    watch_unregister,
)
from harness.scenarios.nacos import last_seq, wait_registered
from harness.scenarios.rejection import (
    CLOSE_BOUND_MS,
    CLOSE_WATCH_MS,
    COUNT_LIMIT,
    STARTING_FOR_MS,
    RejectionWatch,
    ReloadCall,
    judge_rejections,
    rejection_probes,
    reset_wait_ms,
    take_resets,
)
from harness.scenarios.steps import running
from harness.wait import WaitTimeout, eventually, now_ms

RELOAD_GUARD_S = 10.0  # TC-10: reloadClient's HTTP timeout (NacosAdmin.reload_client); beyond it: a hang
PENDING_WAIT_MS = 2000  # TC-10: the reset shows up as pending in the pushes log within this
PROBE_IP = "127.0.0.210"  # TC-10's probe: an IP no client reports


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
    seqs = {s.main_address: last_seq(s.admin.pushes()) for s in (limited, starting)}
    bound_ms = CLOSE_BOUND_MS + TOLERANCE_MS

    with ExitStack() as stack:
        probes = rejection_probes(cf, stack, limited, starting)
        take_resets(cf, probes, seqs)
        watch = RejectionWatch(cf, probes, limited, reg.connection_id, seqs)
        # The answered rejections complete now: watch them before the second client's start
        # (which blocks until its agent is up) so their close is timed closely.
        try:
            eventually(watch.poll, timeout_ms=bound_ms + CLOSE_WATCH_MS, what="the answered rejections closed",
                       accept=watch.answering_done, swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
        except WaitTimeout:
            pass
        second = topology.nacos_client(peer=nacos_client_peer, servers=[limited])
        guard_ms = RUNNING_TIMEOUT_MS + reset_wait_ms(limited) + bound_ms + CLOSE_WATCH_MS
        try:
            eventually(watch.poll, timeout_ms=guard_ms, what="every rejected transport closed (or overdue)",
                       accept=watch.done, swallow=CONTROL_ERRORS, interval_ms=POLL_MS)
        except WaitTimeout:
            pass
        rejections = watch.all()
        cf.history.observe("rejections", [r.as_dict() for r in rejections])
        registered = limited.admin.current()

    cf.check(set(registered) == {reg.connection_id},
             expected=f"count_limit {COUNT_LIMIT} holds on {limited.main_address}: only {reg.connection_id} registered",
             actual=sorted(registered), verdict="FAILED", hint="an over-limit setup was registered, not rejected")
    judged = judge_rejections(cf, probes, watch, second, guard_ms=guard_ms, bound_ms=bound_ms)
    summary = {r.name: r.as_dict() for r in judged}
    cf.ok("rejected transports closed: " + ", ".join(
        f"{r.name} {(r.push or {}).get('outcome') or 'stream ended'} → closed by +{(r.closed_after_ms or 0):.0f} ms"
        for r in judged),
        expected=f"closed within {bound_ms} ms of the reject completing", actual=summary)


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
        probe.setup(labels=codec.SDK_LABELS)
        try:
            ids = wait_registered(cf.history, server, connection_id=probe_id, timeout_ms=3000)
        except WaitTimeout as exc:
            raise SetupError(f"TC-10: the probe's setup did not register {probe_id} ({exc.last!r}); nothing was "
                             "judged") from None
        reg = registration(cf, server, probe_id, ids)
        push_seq = last_seq(server.admin.pushes()) if server.peer.has_capability("pushes") else 0
        reload = ReloadCall(server, probe_id)
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
