"""Deliberately broken reference servers for the server-protocol SR cases (SR-04, SR-05,
SR-09, SR-11, SR-20). Each variant breaks ONE step of the reference server, in the way a real
implementation plausibly would, so the case that guards that step can be shown to FAIL for
the intended reason. They live in the tests, never in the product peer's code paths.

    python -m tests.broken_peers.sr_server_protocol --variant NAME <reference server flags>
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from harness.protocol.nacos import codec
from harness.reference.nacos import pushes, server
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.limits import LimitVerdict, check_limit
from harness.reference.nacos.server import NacosRefServer
from tests.broken_peers.variants import run_variant

log = logging.getLogger("nacos-ref.broken")


# ---- SR-04 ---------------------------------------------------------------------------------

class UnknownTypeAs301(NacosRefServer):
    """SR-04: an unknown request type is answered 301 ("unregistered") instead of 302, before
    setup (the registration check runs first) as after."""

    def find_handler(self, type_name: str) -> Any:
        handler = super().find_handler(type_name)
        if handler is not None:
            return handler
        return lambda msg, conn: (codec.ERROR_RESPONSE, {"result_code": 500, "error_code": codec.UN_REGISTER,
                                                         "message": codec.MESSAGES[codec.UN_REGISTER]})


class BadBodyEndsStream(NacosRefServer):
    """SR-04: a malformed body is answered 502, but the connection's bi-stream is ended first
    (as a server that treats a protocol error as fatal for the connection's push channel)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._streams: dict[str, asyncio.Task] = {}

    async def _bi_stream_entry(self, request_iterator: Any, context: Any) -> None:
        t = self.front.by_peer(context.peer()) if self.front else None
        task = asyncio.ensure_future(super()._bi_stream_entry(request_iterator, context))
        if t is not None:
            self._streams[t.id] = task
        try:
            await asyncio.wait({task})  # returns (does not raise) when the stream task is cancelled
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if t is not None and self._streams.get(t.id) is task:
                del self._streams[t.id]
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def handle_unary(self, t: Any, payload: Any) -> Any:
        answer = await super().handle_unary(t, payload)
        if t is not None and codec.decode(answer).error_code == codec.BAD_GATEWAY:
            task = self._streams.get(t.id)
            if task is not None:
                log.warning("ending the bi-stream of %s after a bad body", t.id)
                task.cancel()
                await asyncio.wait({task})
        return answer


# ---- SR-05 ---------------------------------------------------------------------------------

class RegisterWhileStarting(NacosRefServer):
    """SR-05: answers 300 while starting, but registers an SDK setup anyway (no
    ``rejectSdkOnStarting``)."""

    def on_setup(self, t: Any, channel: Any, msg: codec.Message) -> None:
        conn = self.build_connection(t, channel, msg)
        existing = self.connections.get(conn.id)
        if existing is not None:
            existing.channel = channel
            return
        if not self.register_connection(conn):
            self.reject_setup(conn, "server is over limited")


# ---- SR-09 ---------------------------------------------------------------------------------

class ResetAllOnUnknownReload(NacosRefServer):
    """SR-09: ``reloadClient`` for an id it does not know resets every SDK connection instead
    of doing nothing (a fallback "reload everyone" on a lookup miss)."""

    async def load_single(self, connection_id: str, redirect_address: str | None) -> bool:
        if self.connections.get(connection_id) is not None:
            return await super().load_single(connection_id, redirect_address)
        sdk = [c.id for c in self.connections.current.values() if c.meta.sdk_source]
        log.warning("reload of unknown %s: resetting all %d sdk connections", connection_id, len(sdk))
        results = await asyncio.gather(*(super(ResetAllOnUnknownReload, self).load_single(cid, redirect_address)
                                         for cid in sdk))
        return all(results)


# ---- SR-11 ---------------------------------------------------------------------------------

class _NoTotalLimitManager(ConnectionManager):
    def check_limit(self, conn: Connection) -> LimitVerdict:
        return LimitVerdict(True, "none", "countLimit not enforced (broken)")


class CountLimitIgnored(NacosRefServer):
    """SR-11: ``countLimit`` is parsed but never enforced (Nacos 2.2.4's no-op control plugin)."""

    connection_manager_class = _NoTotalLimitManager


class _ClusterCountedManager(ConnectionManager):
    def check_limit(self, conn: Connection) -> LimitVerdict:
        meta = conn.meta
        return check_limit(self.rule, client_ip=meta.client_ip, app_name=meta.app_name, cluster_source=False,
                           sdk_count=self.count(), ip_count=self.client_ip_counts.get(meta.client_ip, 0))


class ClusterNotExempt(NacosRefServer):
    """SR-11: cluster-source connections are limited like SDK ones, and counted in the total."""

    connection_manager_class = _ClusterCountedManager


# ---- SR-20 ---------------------------------------------------------------------------------

def _server_push_without_headers(type_name: str, request_id: str, **fields: Any) -> Any:
    body = {"requestId": request_id, "module": codec.INTERNAL_MODULE, **fields}
    return codec.encode(type_name, body)


class PushWithoutHeaders(NacosRefServer):
    """SR-20: pushes leave out ``"headers"`` (as a Go-style encoder with ``json:"-"`` would).

    The push body is built by ``codec.server_push`` inside ``PushCenter.push``; this process is
    this variant only, so the builder is swapped for the whole process at start."""

    async def start(self) -> None:
        codec.server_push = _server_push_without_headers  # type: ignore[assignment]
        await super().start()


class _HexIdPushCenter(pushes.PushCenter):
    def next_request_id(self) -> str:
        return f"0x{int(super().next_request_id()):x}"


class PushHexRequestId(NacosRefServer):
    """SR-20: push requestIds are hexadecimal (``0x1``), not the decimal counter."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.pushes = _HexIdPushCenter()


class JudgeAnswerBySuccess(NacosRefServer):
    """SR-20: a client's answer to a push counts only when its JSON says ``"success": true``;
    the Go client's ``resultCode 200, success false`` is dropped, so the push times out."""

    def on_client_response(self, t: Any, msg: codec.Message) -> None:
        if msg.body.get("success") is not True:
            log.warning("ignoring %s requestId=%s from %s: success is not true", msg.type, msg.request_id, t.id)
            self.connections.refresh_active_time(t.id)
            return
        super().on_client_response(t, msg)


SLOW_START_S = 5.0  # longer than SR-05's first startup delay (4 s)


def _slow_start_ignoring_delay(flags: list[str]) -> int:
    """SR-05: a server that takes longer to start than the case's first delay, and ignores the
    ``--startup-delay-ms`` it is given (answers 200 as soon as it is up): the case must size a
    second delay on its start and catch it answering inside that one."""
    time.sleep(SLOW_START_S)  # the peer's own slow start, before it binds anything
    if "--startup-delay-ms" in flags:
        i = flags.index("--startup-delay-ms")
        flags = flags[:i] + flags[i + 2:]
    return server.main(flags)


VARIANTS: dict[str, type[NacosRefServer]] = {
    "unknown-type-301": UnknownTypeAs301,
    "bad-body-ends-stream": BadBodyEndsStream,
    "register-while-starting": RegisterWhileStarting,
    "reset-all-on-unknown-reload": ResetAllOnUnknownReload,
    "count-limit-ignored": CountLimitIgnored,
    "cluster-not-exempt": ClusterNotExempt,
    "push-without-headers": PushWithoutHeaders,
    "push-hex-request-id": PushHexRequestId,
    "judge-answer-by-success": JudgeAnswerBySuccess,
}


def main(argv: list[str]) -> int:
    if argv[:2] == ["--variant", "slow-start-ignores-delay"]:
        return _slow_start_ignoring_delay(argv[2:])
    return run_variant(argv, VARIANTS, lambda flags, cls: server.main(flags, server_cls=cls), "server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
