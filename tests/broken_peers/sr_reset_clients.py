"""Deliberately broken reference clients for the reset cases (SR-06..SR-08, SR-12..SR-15): each
overrides ONE behaviour of ``RefNacosClient`` so a case can be shown to FAIL (or, for the INFO
case SR-08, to report something different). They live in the tests, never in the product peer.

    python -m tests.broken_peers.sr_reset_clients --variant NAME <reference client flags>

Variants:

- ``ignores-reset``: answers every ConnectResetRequest (same requestId, 200) and never switches.
- ``ignores-redirect``: drops every recommended server and rotates (a reset with an in-list
  redirect goes to the next server instead).
- ``follows-any-redirect``: connects to a recommended server even when it is not in its own
  server list (the Java client ignores such a recommendation).
- ``answers-wrong-request-id``: acts on resets as the reference does but echoes a requestId
  that is not the push's, so the server's push is never answered.
- ``switches-twice``: a reset that arrives while the client is starting or already switching
  starts another reconnect at once, beside the one in flight (two concurrent switches).
- ``no-retry-after-reset``: after it has acted on a reset, application requests go out on a
  fresh transport to the current server that never did ConnectionSetup (the classic silent
  channel reconnect, research §2.1), and a 301 is returned to the caller as is: neither
  retried nor acted upon. Every request after a reset fails: a 301 storm.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc

from harness.protocol.nacos import codec
from harness.reference.nacos import client as ref_client
from harness.reference.nacos.client import ReconnectContext, RefNacosClient
from harness.reference.nacos.client_connection import RpcConnection, describe_error
from harness.reference.nacos.client_logic import ServerAddress
from tests.broken_peers.variants import run_variant


class IgnoresReset(RefNacosClient):
    """Answers resets, never acts on them."""

    def on_connect_reset(self, conn: RpcConnection, msg: codec.Message) -> Any | None:
        response = self.reset_response(msg)
        self.state.record("reset_received", server=str(conn.server), detail={
            "connection_id": conn.connection_id, "request_id": msg.request_id, "server_ip": msg.body.get("serverIp"),
            "server_port": msg.body.get("serverPort"), "acted": False, "answered": True})
        return response


class IgnoresRedirect(RefNacosClient):
    """Never uses a recommended server: always the next one in rotation."""

    def resolve_recommended(self, recommended: ServerAddress) -> ServerAddress | None:
        return None


class FollowsAnyRedirect(RefNacosClient):
    """Uses a recommended server as given, in its list or not."""

    def resolve_recommended(self, recommended: ServerAddress) -> ServerAddress | None:
        return recommended


class AnswersWrongRequestId(RefNacosClient):
    """Echoes a requestId that is not the push's."""

    def reset_response(self, msg: codec.Message) -> Any | None:
        wrong = f"{msg.request_id or '0'}0"  # "7" -> "70": a decimal id, just not this one
        return codec.encode(codec.CONNECT_RESET_RESPONSE, codec.response_body(request_id=wrong),
                            client_ip=self.config.client_ip)


class SwitchesTwice(RefNacosClient):
    """A reset while starting or switching starts a second reconnect beside the first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._switches_in_flight = 0
        self._extra_switches: set[asyncio.Task] = set()

    async def reconnect(self, ctx: ReconnectContext) -> None:
        self._switches_in_flight += 1
        try:
            await super().reconnect(ctx)
        finally:
            self._switches_in_flight -= 1

    def on_connect_reset(self, conn: RpcConnection, msg: codec.Message) -> Any | None:
        if self.is_running and self._switches_in_flight == 0:
            return super().on_connect_reset(conn, msg)
        task = asyncio.get_running_loop().create_task(
            self.reconnect(ReconnectContext(reason="reset while starting or switching (acted at once)")))
        self._extra_switches.add(task)
        task.add_done_callback(self._extra_switches.discard)
        response = self.reset_response(msg)
        self.state.record("reset_received", server=str(conn.server), detail={
            "connection_id": conn.connection_id, "request_id": msg.request_id, "acted": True,
            "answered": True, "concurrent": True})
        return response

    async def shutdown(self) -> None:
        for task in list(self._extra_switches):
            task.cancel()
        await asyncio.gather(*self._extra_switches, return_exceptions=True)
        await super().shutdown()


class NoRetryAfterReset(RefNacosClient):
    """After a reset: requests on a fresh, never-set-up transport; a 301 is not retried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after_reset = False
        self._side: RpcConnection | None = None

    def on_connect_reset(self, conn: RpcConnection, msg: codec.Message) -> Any | None:
        response = super().on_connect_reset(conn, msg)
        if self.is_running:
            self._after_reset = True
        return response

    async def request(self, build: Callable[[], Any], timeout_ms: float) -> dict[str, Any]:
        if not self._after_reset or self.current is None:
            return await super().request(build, timeout_ms)
        server = self.current.server
        if self._side is None or self._side.server != server:
            if self._side is not None:
                await self._side.close()
            self._side = RpcConnection(server, server.grpc_port(self.config.grpc_port_offset))
        started = time.monotonic() * 1000.0
        try:
            reply = await self._side.unary(build(), timeout_ms)
        except grpc.aio.AioRpcError as exc:
            return {"ok": False, "error_code": codec.SERVER_ERROR, "error": describe_error(exc),
                    "attempts": [{"ok": False, "error": describe_error(exc)}]}
        attempt = {"ok": reply.result_code == 200, "error_code": reply.error_code or None,
                   "connection_id": None, "response_type": reply.type,
                   "ms": time.monotonic() * 1000.0 - started}
        if reply.result_code != 200:
            return {"ok": False, "error_code": reply.error_code, "error": str(reply.body.get("message", "")),
                    "attempts": [attempt]}
        return {"ok": True, "error_code": None, "attempts": [attempt]}

    async def shutdown(self) -> None:
        if self._side is not None:
            await self._side.close()
            self._side = None
        await super().shutdown()


VARIANTS: dict[str, type[RefNacosClient]] = {
    "ignores-reset": IgnoresReset,
    "ignores-redirect": IgnoresRedirect,
    "follows-any-redirect": FollowsAnyRedirect,
    "answers-wrong-request-id": AnswersWrongRequestId,
    "switches-twice": SwitchesTwice,
    "no-retry-after-reset": NoRetryAfterReset,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: ref_client.main(flags, client_cls=cls), "reference client flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
