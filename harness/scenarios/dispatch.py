"""Unary dispatch and the server's message shapes as steps (SR-04, SR-20): one recorded unary call
of a raw probe, the error codes and ``success`` flags of its answers, whether the connection is
still usable afterwards, and a reset pushed by ``reloadClient`` answered the way the Go client
answers it."""

from __future__ import annotations

import queue
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from harness.control.http import ControlError
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import ANSWER_MARGIN_MS, CONTROL_ERRORS, RESET_ANSWER_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.nacos import current
from harness.topology import NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

# A type no server has a handler for (PayloadRegistry would not know it either).
UNKNOWN_TYPE = "ConnformanceUnknownRequest"
# Bodies of a known request type that no JSON reader can turn into that request.
MALFORMED_BODIES = {
    "truncated JSON": b'{"headers":{},"module":"internal"',
    "a JSON array, not an object": b"[1,2,3]",
}
DECIMAL = re.compile(r"[0-9]+")
GO_ANSWER_JUDGED = "a server judging by the answer's `success` field rejects every Go client's reset answer"


def unary(cf, probe: RawNacosConnection, what: str, send: Callable[[], codec.Message], *,
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


def is_error(msg: codec.Message, error_code: int) -> bool:
    return (msg.type == codec.ERROR_RESPONSE and msg.error_code == error_code
            and msg.result_code != 200 and msg.body.get("success") is not True)


def is_ok_response(msg: codec.Message) -> bool:
    return msg.result_code == 200 and msg.body.get("success") is True


def expect_error(cf, probe: RawNacosConnection, what: str, send: Callable[[], codec.Message], *, error_code: int,
                 expected: str) -> None:
    """The call is answered with an ErrorResponse carrying ``error_code``."""
    msg = unary(cf, probe, what, send, expected=expected)
    cf.check(is_error(msg, error_code), expected=expected, actual=f"{msg.type} {msg.body}")


def expect_success(cf, probe: RawNacosConnection, what: str, send: Callable[[], codec.Message], *,
                   response_type: str) -> codec.Message:
    """The call is answered with ``response_type``, resultCode 200 and ``"success": true``."""
    expected = f'{response_type} with resultCode 200 and "success": true'
    msg = unary(cf, probe, what, send, expected=expected)
    cf.check(msg.type == response_type and is_ok_response(msg), expected=expected + " (a JSON boolean)",
             actual=f"{msg.type} {msg.body}")
    return msg


def probe_id_of(cf, probe: RawNacosConnection) -> str:
    """The probe's connectionId from its ServerCheck through the proxy (the baseline)."""
    check = unary(cf, probe, "ServerCheck", probe.server_check, expected="ServerCheckResponse through the proxy")
    probe_id = check.body.get("connectionId")
    cf.baseline(check.type == codec.SERVER_CHECK_RESPONSE and bool(probe_id),
                expected="ServerCheckResponse with a connectionId through the proxy", actual=f"{check.type} {check.body}")
    return str(probe_id)


def stream_state(cf, probe: RawNacosConnection, window_ms: float) -> str:
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


def expect_still_usable(cf, server: NacosServerHandle, probe: RawNacosConnection, probe_id: str) -> None:
    """After the errors: the same transport (ServerCheck gives the same id), still registered, a
    HealthCheck succeeds and the bi-stream (the server's only way to push) has not ended."""
    usable = "the connection stays usable after 302/502: "
    again = unary(cf, probe, "ServerCheck after errors", probe.server_check,
                  expected=usable + "ServerCheck on the same transport still answers")
    cf.check(again.body.get("connectionId") == probe_id,
             expected=usable + f"the same transport (ServerCheck still gives {probe_id})",
             actual=f"{again.type} {again.body}",
             hint="a different id means the server closed the transport and gRPC silently opened a new one")
    health = unary(cf, probe, "HealthCheck after errors", probe.health_check, expected=usable + "HealthCheck succeeds")
    cf.check(is_ok_response(health), expected=usable + "HealthCheck succeeds (resultCode 200, success true)",
             actual=f"{health.type} {health.body}")
    snapshot = current(cf.history, server)
    cf.check(probe_id in snapshot, expected=usable + f"{probe_id} still registered in current", actual=sorted(snapshot))
    stream = stream_state(cf, probe, TOLERANCE_MS)
    cf.check(stream == "open", expected=usable + "its bi-stream still open (the server can still push)",
             actual=f"the bi-stream {stream}")


# ---- SR-20: a reset answered like the Go client --------------------------------------------

def go_style_reset_answer(request_id: str) -> Any:
    """What nacos-sdk-go sends back for a ConnectResetRequest: resultCode 200 but, as its
    Response struct has a plain ``Success bool`` never set, ``"success": false`` (research §5.2)."""
    body = {"resultCode": 200, "errorCode": 0, "success": False, "message": "", "requestId": request_id}
    return codec.encode(codec.CONNECT_RESET_RESPONSE, body)


@dataclass
class GoAnswered:
    request_id: Any
    reload_took_ms: float


def reset_answered_go_style(cf, server: NacosServerHandle, probe: RawNacosConnection, probe_id: str) -> GoAnswered:
    """``reloadClient(probe)`` on a thread (it blocks until the answer or its wait); the push on
    the probe's bi-stream is answered at once the Go way, then its JSON shape is checked:
    ``"headers": {}``, module internal, a decimal requestId; reloadClient must answer success."""
    reloader = server.new_admin()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sr20-reload") as pool:
        cf.history.invoke("admin", "reloadClient", {"connectionId": probe_id})
        started_ms = now_ms()
        reload_future = pool.submit(reloader.reload_client, probe_id)
        try:
            push = probe.next_push(timeout_s=(RESET_ANSWER_TIMEOUT_MS + TOLERANCE_MS) / 1000.0)
        except queue.Empty:
            push = None
        cf.history.observe("probe_push", {"type": push.type, "body": push.body} if push else None)
        if push is None or push.type != codec.CONNECT_RESET_REQUEST:
            reloader.close()
            cf.fail(expected=f"reloadClient({probe_id}) pushes a ConnectResetRequest on the probe's bi-stream "
                             f"within {RESET_ANSWER_TIMEOUT_MS + TOLERANCE_MS} ms",
                    actual=f"{push.type} {push.body}" if push else "nothing (or the stream ended)")
            raise AssertionError("unreachable: fail() raises")
        body, request_id = push.body, push.body.get("requestId")
        # Answer first (echoing whatever id came), so the server never waits on a shape failure.
        cf.history.invoke("probe", "ConnectResetResponse (Go style)", {"requestId": request_id})
        probe.send_on_stream(go_style_reset_answer(request_id))
        try:
            cf.check(isinstance(body.get("headers"), dict) and body["headers"] == {},
                     expected='the push body carries "headers": {} (as Nacos serialises every request)', actual=body)
            cf.check(body.get("module") == codec.INTERNAL_MODULE,
                     expected='the push body carries "module": "internal"', actual=body)
            cf.check(isinstance(request_id, str) and bool(DECIMAL.fullmatch(request_id)),
                     expected="the push body carries a decimal requestId (a JSON string of digits, as "
                              "PushAckIdGenerator's; Go reads it into a string field)",
                     actual=f"requestId {request_id!r} in {body}")
            reload_body = reload_future.result(timeout=(RESET_ANSWER_TIMEOUT_MS + 2 * TOLERANCE_MS) / 1000.0 + 5)
        except ControlError as exc:
            cf.fail(expected="reloadClient answers", actual=str(exc))
        finally:
            reloader.close()
    took_ms = now_ms() - started_ms
    cf.history.ok("admin", "reloadClient", {"body": reload_body, "took_ms": round(took_ms, 1)})
    cf.check(reload_body.strip() == "success", expected="reloadClient answers success", actual=reload_body)
    return GoAnswered(request_id, took_ms)


def expect_go_answer_counted(cf, server: NacosServerHandle, push_seq: int, probe_id: str, seen: GoAnswered) -> None:
    """The server took the Go-style answer: its pushes log shows the push answered with
    resultCode 200; without a log, reloadClient returned well inside the server's answer wait
    (loadSingle blocks on the push until the answer is matched or its wait ends)."""
    if not server.peer.has_capability("pushes"):
        wait_ms = server.peer.timer("reset_answer_timeout_ms", default=RESET_ANSWER_TIMEOUT_MS)
        cf.check(seen.reload_took_ms < wait_ms - ANSWER_MARGIN_MS,
                 expected=f'the server takes the Go-style answer (resultCode 200, "success": false): reloadClient '
                          f"returns as soon as it is answered, well inside its {wait_ms:.0f} ms wait",
                 actual=f"reloadClient returned after {seen.reload_took_ms:.0f} ms: the server waited out the answer",
                 hint=GO_ANSWER_JUDGED)
        return
    answered = 'the server counts the Go-style answer (resultCode 200, "success": false) as answered: ' \
               'its pushes log shows outcome "answered" with answer_result_code 200'

    def record() -> dict[str, Any] | None:
        for entry in server.admin.pushes(push_seq):
            if entry.get("requestId") == seen.request_id and entry.get("connectionId") == probe_id:
                return entry
        return None

    try:
        entry = eventually(record, timeout_ms=1000, what=f"push {seen.request_id} settled in the pushes log",
                           accept=lambda e: e is not None and e.get("outcome") != "pending",
                           swallow=CONTROL_ERRORS).value
    except WaitTimeout as exc:
        cf.fail(expected=answered, actual=f"pushes log entry {exc.last!r}")
        raise
    cf.history.observe("pushes_log", entry)
    cf.check(entry.get("answered") is True and entry.get("outcome") == "answered"
             and entry.get("answer_result_code") == 200, expected=answered, actual=entry, hint=GO_ANSWER_JUDGED)
