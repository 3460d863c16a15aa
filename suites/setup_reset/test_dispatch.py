"""SR — unary dispatch and the server's message shapes: error codes for requests the server
cannot serve, and the JSON it pushes and answers with (SPEC §4.2, §5 SR-04, SR-20;
research/nacos-protocol.md §1.2–§1.5, §2.2, §2.3, §5.2).

Both cases prove the baseline first (the client under test RUNNING through its proxy), then
drive a raw wire probe over the same proxy for the steps no well-behaved client takes: a type
nobody handles, a body that is not JSON, an answer to a reset shaped like the Go client's.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from fixtures.case import case
from harness.control.http import ControlError
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import (
    ANSWER_MARGIN_MS,
    CONTROL_ERRORS,
    RESET_ANSWER_TIMEOUT_MS,
    TOLERANCE_MS,
)
from harness.scenarios.nacos import current
from harness.scenarios.steps import probe_registered, running
from harness.wait import WaitTimeout, eventually, now_ms

# Real libraries connect within a few seconds (ServerCheck 3 s timeout + setup wait).
# Nacos waits this long for the answer to a ConnectResetRequest (loadSingle, research §2.4).
# A type no server has a handler for (PayloadRegistry would not know it either).
UNKNOWN_TYPE = "ConnformanceUnknownRequest"
# Bodies of a known request type that no JSON reader can turn into that request.
MALFORMED_BODIES = {
    "truncated JSON": b'{"headers":{},"module":"internal"',
    "a JSON array, not an object": b"[1,2,3]",
}
_DECIMAL = re.compile(r"[0-9]+")


def _unary(cf, probe: RawNacosConnection, what: str, send: Callable[[], codec.Message], *,
           expected: str) -> codec.Message:
    """One unary call of the probe, recorded; a gRPC-level failure is a failed expectation."""
    cf.history.invoke("probe", what, {"target": probe.target})
    try:
        msg = send()
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "?"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        cf.history.fail("probe", what, error=f"{code}: {details}")
        cf.fail(expected=expected, actual=f"{what}: the call failed at the gRPC level ({code}: {details})",
                hint="the server must answer with a Payload, not end the call with a gRPC status")
    cf.history.ok("probe", what, {"type": msg.type, "body": msg.body})
    return msg


def _is_error(msg: codec.Message, error_code: int) -> bool:
    return (msg.type == codec.ERROR_RESPONSE and msg.error_code == error_code
            and msg.result_code != 200 and msg.body.get("success") is not True)


def _is_ok_response(msg: codec.Message) -> bool:
    return msg.result_code == 200 and msg.body.get("success") is True


def _stream_state(cf, probe: RawNacosConnection, window_ms: float) -> str:
    """Read whatever the server sent on the probe's bi-stream within ``window_ms``: "open"
    when nothing ended it, "ended" when it ended (unexpected pushes are recorded, not fatal)."""
    deadline_s = window_ms / 1000.0
    while True:
        try:
            item = probe.next_push(timeout_s=deadline_s)
        except queue.Empty:
            cf.history.observe("probe_stream", {"state": "open", "window_ms": window_ms})
            return "open"
        if item is None:
            cf.history.observe("probe_stream", {"state": "ended"})
            return "ended"
        cf.history.observe("probe_push", {"type": item.type, "body": item.body})
        deadline_s = 0.05


@case("SR-04", "MUST", timeout_s=90, subject="server")
def test_unknown_type_and_bad_body_keep_connection_usable(cf, topology, nacos_server_peer, nacos_client_peer):
    """Unknown type → 302, malformed body → 502; the connection stays usable.

    Procedure: the client under test RUNNING (baseline); a raw probe on the same proxy sends an
    unknown type before setup (302: the handler lookup precedes the registration check,
    research §2.2), sets up, sends the unknown type again (302) and a HealthCheckRequest whose
    body is not a JSON object, twice (502 each). Then the probe's transport must be the same
    (ServerCheck gives the same connectionId), still registered, its HealthCheck must succeed and
    its bi-stream must still be open; the client under test stays RUNNING and its request succeeds.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    state = running(cf, client)

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        check = _unary(cf, probe, "ServerCheck", probe.server_check,
                       expected="baseline: ServerCheckResponse through the proxy")
        probe_id = check.body.get("connectionId")
        cf.check(check.type == codec.SERVER_CHECK_RESPONSE and bool(probe_id),
                 expected="baseline: ServerCheckResponse with a connectionId through the proxy",
                 actual=f"{check.type} {check.body}")

        before = _unary(cf, probe, f"{UNKNOWN_TYPE} before setup",
                        lambda: probe.send_type(UNKNOWN_TYPE, {"headers": {}, "module": "internal"}),
                        expected="ErrorResponse with errorCode 302 for an unknown type before setup")
        cf.check(_is_error(before, codec.NO_HANDLER),
                 expected="ErrorResponse with errorCode 302 for an unknown type before setup "
                          "(handler lookup precedes the registration check: 302, not 301)",
                 actual=f"{before.type} {before.body}")

        probe_registered(cf, server, probe, probe_id)

        unknown = _unary(cf, probe, f"{UNKNOWN_TYPE} after setup",
                         lambda: probe.send_type(UNKNOWN_TYPE, {"headers": {}, "module": "internal"}),
                         expected="ErrorResponse with errorCode 302 for an unknown type on a registered connection")
        cf.check(_is_error(unknown, codec.NO_HANDLER),
                 expected="ErrorResponse with errorCode 302 for an unknown type on a registered connection",
                 actual=f"{unknown.type} {unknown.body}")

        for label, raw in MALFORMED_BODIES.items():
            expected = f"ErrorResponse with errorCode 502 for a malformed body ({label})"
            bad = _unary(cf, probe, f"HealthCheckRequest with {label}",
                         lambda raw=raw: probe.send_raw_body(codec.HEALTH_CHECK_REQUEST, raw), expected=expected)
            cf.check(_is_error(bad, codec.BAD_GATEWAY), expected=expected, actual=f"{bad.type} {bad.body}")

        # The connection stays usable: same transport, still registered, requests succeed,
        # the bi-stream (the server's only way to push) not ended.
        usable = "the connection stays usable after 302/502: "
        again = _unary(cf, probe, "ServerCheck after errors", probe.server_check,
                       expected=usable + "ServerCheck on the same transport still answers")
        cf.check(again.body.get("connectionId") == probe_id,
                 expected=usable + f"the same transport (ServerCheck still gives {probe_id})",
                 actual=f"{again.type} {again.body}",
                 hint="a different id means the server closed the transport and gRPC silently opened a new one")
        health = _unary(cf, probe, "HealthCheck after errors", probe.health_check,
                        expected=usable + "HealthCheck succeeds")
        cf.check(_is_ok_response(health), expected=usable + "HealthCheck succeeds (resultCode 200, success true)",
                 actual=f"{health.type} {health.body}")
        snapshot = current(cf.history, server)
        cf.check(probe_id in snapshot, expected=usable + f"{probe_id} still registered in current",
                 actual=sorted(snapshot))
        stream = _stream_state(cf, probe, TOLERANCE_MS)
        cf.check(stream == "open", expected=usable + "its bi-stream still open (the server can still push)",
                 actual=f"the bi-stream {stream}")

    cf.history.invoke(client.name, "request")
    answer = client.control.request()
    cf.history.ok(client.name, "request", answer)
    cf.check(answer.get("ok") is True, expected=f"{client.name}'s request succeeds afterwards", actual=answer)
    after = client.control.state()
    cf.check(after.get("status") == "RUNNING" and after.get("connection_id") == state.get("connection_id"),
             expected=f"{client.name} still RUNNING on {state.get('connection_id')}",
             actual={k: after.get(k) for k in ("status", "server", "connection_id")})
    cf.ok(f"302 before and after setup, 502 for {len(MALFORMED_BODIES)} malformed bodies; {probe_id} still "
          f"usable; {client.name}'s request succeeded")


def _go_style_reset_answer(request_id: str) -> Any:
    """What nacos-sdk-go sends back for a ConnectResetRequest: resultCode 200 but, as its
    Response struct has a plain ``Success bool`` never set, ``"success": false`` (research §5.2)."""
    body = {"resultCode": 200, "errorCode": 0, "success": False, "message": "", "requestId": request_id}
    return codec.encode(codec.CONNECT_RESET_RESPONSE, body)


@case("SR-20", "MUST", timeout_s=90, subject="server")
def test_push_shape_and_answer_judging(cf, topology, nacos_server_peer, nacos_client_peer):
    """The server pushes resets with `"headers": {}`, `module` internal and a decimal `requestId`, and judges a client's answer by `resultCode` alone (the Go client answers resets with resultCode 200 and `success: false`); its own responses always carry `"success": true` on success (Go clients reconnect every 5 s otherwise).

    Procedure: the client under test RUNNING (baseline); a raw probe checks that ServerCheck and
    HealthCheck answers carry `"success": true`, then `reloadClient` of the probe's id makes the
    server push a ConnectResetRequest whose JSON is checked; the probe answers it like the Go
    client (resultCode 200, `success: false`) and the server's `pushes` log (capability
    `events`) must count it answered with resultCode 200, not time it out. The client under
    test's request succeeds afterwards.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    running(cf, client)
    has_log = nacos_server_peer.has_capability("pushes")
    push_seq = max((p.get("seq", 0) for p in server.admin.pushes()), default=0) if has_log else 0

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sr20-reload") as pool:
        check = _unary(cf, probe, "ServerCheck", probe.server_check,
                       expected='ServerCheckResponse with resultCode 200 and "success": true')
        probe_id = check.body.get("connectionId")
        cf.check(check.type == codec.SERVER_CHECK_RESPONSE and _is_ok_response(check) and bool(probe_id),
                 expected='ServerCheckResponse with resultCode 200 and "success": true (a JSON boolean)',
                 actual=f"{check.type} {check.body}")
        probe_registered(cf, server, probe, probe_id)
        health = _unary(cf, probe, "HealthCheck", probe.health_check,
                        expected='HealthCheckResponse with resultCode 200 and "success": true')
        cf.check(health.type == codec.HEALTH_CHECK_RESPONSE and _is_ok_response(health),
                 expected='HealthCheckResponse with resultCode 200 and "success": true (a JSON boolean)',
                 actual=f"{health.type} {health.body}")

        # reloadClient blocks until the answer (or its 3 s wait): run it beside the probe.
        reloader = server.new_admin()
        cf.history.invoke("admin", "reloadClient", {"connectionId": probe_id})
        reload_started_ms = now_ms()
        reload_future = pool.submit(reloader.reload_client, probe_id)
        try:
            push = probe.next_push(timeout_s=(RESET_ANSWER_TIMEOUT_MS + TOLERANCE_MS) / 1000.0)
        except queue.Empty:
            push = None
        cf.history.observe("probe_push", {"type": push.type, "body": push.body} if push else None)
        if push is None or push.type != codec.CONNECT_RESET_REQUEST:
            cf.fail(expected=f"reloadClient({probe_id}) pushes a ConnectResetRequest on the probe's bi-stream "
                             f"within {RESET_ANSWER_TIMEOUT_MS + TOLERANCE_MS} ms",
                    actual=f"{push.type} {push.body}" if push else "nothing (or the stream ended)")
        body = push.body
        request_id = body.get("requestId")
        # Answer first (echoing whatever id came), so the server never waits on a shape failure.
        cf.history.invoke("probe", "ConnectResetResponse (Go style)", {"requestId": request_id})
        probe.send_on_stream(_go_style_reset_answer(request_id))
        cf.check(isinstance(body.get("headers"), dict) and body["headers"] == {},
                 expected='the push body carries "headers": {} (as Nacos serialises every request)',
                 actual=body)
        cf.check(body.get("module") == codec.INTERNAL_MODULE,
                 expected='the push body carries "module": "internal"', actual=body)
        cf.check(isinstance(request_id, str) and bool(_DECIMAL.fullmatch(request_id)),
                 expected="the push body carries a decimal requestId (a JSON string of digits, as "
                          "PushAckIdGenerator's; Go reads it into a string field)",
                 actual=f"requestId {request_id!r} in {body}")
        try:
            reload_body = reload_future.result(timeout=(RESET_ANSWER_TIMEOUT_MS + 2 * TOLERANCE_MS) / 1000.0 + 5)
        except ControlError as exc:
            cf.fail(expected="reloadClient answers", actual=str(exc))
        finally:
            reloader.close()
        reload_took_ms = now_ms() - reload_started_ms
        cf.history.ok("admin", "reloadClient", {"body": reload_body, "took_ms": round(reload_took_ms, 1)})
        cf.check(reload_body.strip() == "success", expected="reloadClient answers success", actual=reload_body)

    if has_log:
        answered = 'the server counts the Go-style answer (resultCode 200, "success": false) as answered: ' \
                   'its pushes log shows outcome "answered" with answer_result_code 200'

        def record() -> dict[str, Any] | None:
            for entry in server.admin.pushes(push_seq):
                if entry.get("requestId") == request_id and entry.get("connectionId") == probe_id:
                    return entry
            return None

        try:
            entry = eventually(record, timeout_ms=1000, what=f"push {request_id} settled in the pushes log",
                               accept=lambda e: e is not None and e.get("outcome") != "pending",
                               swallow=CONTROL_ERRORS).value
        except WaitTimeout as exc:
            cf.fail(expected=answered, actual=f"pushes log entry {exc.last!r}")
        cf.history.observe("pushes_log", entry)
        cf.check(entry.get("answered") is True and entry.get("outcome") == "answered"
                 and entry.get("answer_result_code") == 200,
                 expected=answered, actual=entry,
                 hint="a server judging by the answer's `success` field rejects every Go client's reset answer")

    cf.history.invoke(client.name, "request")
    answer = client.control.request()
    cf.history.ok(client.name, "request", answer)
    cf.check(answer.get("ok") is True,
             expected=f"{client.name}'s request succeeds (it judges the server's responses as successful)",
             actual=answer)
    if not has_log:
        # No pushes log: loadSingle blocks on the push until the answer is matched or its wait
        # ends, so a matched answer shows as reloadClient returning well inside the wait.
        wait_ms = nacos_server_peer.timer("reset_answer_timeout_ms", default=RESET_ANSWER_TIMEOUT_MS)
        cf.check(reload_took_ms < wait_ms - ANSWER_MARGIN_MS,
                 expected=f'the server takes the Go-style answer (resultCode 200, "success": false): reloadClient '
                          f"returns as soon as it is answered, well inside its {wait_ms:.0f} ms wait",
                 actual=f"reloadClient returned after {reload_took_ms:.0f} ms: the server waited out the answer",
                 hint="a server judging by the answer's `success` field rejects every Go client's reset answer")
    cf.ok(f'ServerCheck/HealthCheck "success": true; reset push headers {{}}, module internal, requestId '
          f'{request_id}; Go-style answer counted answered; {client.name}\'s request succeeded')
