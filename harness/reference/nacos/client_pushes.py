"""Server pushes on the bi-stream for the reference client (research/nacos-protocol.md §4.2,
§4.5), as a mixin of ``RefNacosClient``.

- ``ConnectResetRequest``: always answered with the same requestId (``reset_response``); acted on
  only when RUNNING — with ``serverIp`` (and a numeric ``serverPort``) as a recommendation,
  otherwise as a plain switch to the next server.
- ``ClientDetectionRequest``: answered with ``ClientDetectionResponse``.
- anything else (e.g. a 2.3 server's ``SetupAckRequest``): logged and dropped, as a 2.2 client.
- the stream ending while RUNNING on a connection we did not abandon → UNHEALTHY + switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc

from harness import strict
from harness.protocol.nacos import codec

from .client_connection import RpcConnection, describe_error
from .client_logic import ServerAddress

if TYPE_CHECKING:
    from .client import RefNacosClient

log = logging.getLogger("connformance.ref_client")


class PushMixin:
    async def _read_stream(self: RefNacosClient, conn: RpcConnection) -> None:
        call = conn.call
        assert call is not None
        error: str | None = None
        try:
            while True:
                payload = await call.read()
                if payload is grpc.aio.EOF:
                    error = "completed by server"
                    break
                await self._dispatch_push(conn, payload)
        except grpc.aio.AioRpcError as exc:
            error = describe_error(exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled (shutdown)
            error = "call cancelled"  # the call was (channel closed): end normally, keep no traceback
        except Exception as exc:
            log.exception("bi-stream reader of %s failed", conn)
            error = repr(exc)
        del call  # a live call object keeps the TCP connection open (client_connection.close)
        self.on_stream_closed(conn, error)

    def on_stream_closed(self: RefNacosClient, conn: RpcConnection, error: str | None) -> None:
        """Java ``onError``/``onCompleted``: only a live, RUNNING, non-abandoned connection counts."""
        if conn.abandoned or self.is_shutdown:
            return
        if self.is_running:
            self.state.record("error", server=str(conn.server),
                              detail={"what": "bi-stream closed", "reason": error, "connection_id": conn.connection_id})
            self.set_status("UNHEALTHY")
            self.switch_server_async(reason="bi-stream closed")
        else:
            self.state.record("error", server=str(conn.server), detail={
                "what": "bi-stream closed while not RUNNING (ignored)", "reason": error,
                "connection_id": conn.connection_id})

    async def _dispatch_push(self: RefNacosClient, conn: RpcConnection, payload: Any) -> None:
        try:
            msg = codec.decode(payload)
        except codec.BadBody as exc:
            log.warning("dropping undecodable push on %s: %s", conn, exc)
            return
        if msg.is_response:
            log.info("unexpected response %s on the bi-stream of %s", msg.type, conn)
            return
        response = self.handle_server_request(conn, msg)
        if response is None:
            return
        self.last_active_ms = time.monotonic() * 1000.0
        try:
            await conn.send(response)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as exc:
            log.warning("could not answer %s on %s: %s", msg.type, conn, exc)

    def handle_server_request(self: RefNacosClient, conn: RpcConnection, msg: codec.Message) -> Any | None:
        if msg.type == codec.CONNECT_RESET_REQUEST:
            return self.on_connect_reset(conn, msg)
        if msg.type == codec.CLIENT_DETECTION_REQUEST:
            return self._answer(codec.CLIENT_DETECTION_RESPONSE, msg)
        log.info("no handler for push %s on %s (dropped)", msg.type, conn)  # e.g. a 2.3 SetupAckRequest
        return None

    def on_connect_reset(self: RefNacosClient, conn: RpcConnection, msg: codec.Message) -> Any | None:
        server_ip = msg.body.get("serverIp")
        server_port = msg.body.get("serverPort")
        acted = False
        if self.is_running:
            acted = True
            port = strict.ascii_int(server_port, minimum=1, maximum=65535)
            if isinstance(server_ip, str) and server_ip.strip() and port is not None:
                self.switch_server_async(ServerAddress(server_ip.strip(), port), reason="reset with redirect")
            else:
                self.switch_server_async(reason="reset")
        response = self.reset_response(msg)
        self.state.record("reset_received", server=str(conn.server), detail={
            "connection_id": conn.connection_id, "request_id": msg.request_id, "server_ip": server_ip,
            "server_port": server_port, "acted": acted, "answered": response is not None})
        return response

    def reset_response(self: RefNacosClient, msg: codec.Message) -> Any | None:
        return self._answer(codec.CONNECT_RESET_RESPONSE, msg)

    def _answer(self: RefNacosClient, type_name: str, msg: codec.Message) -> Any:
        return codec.encode(type_name, codec.response_body(request_id=msg.request_id), client_ip=self.config.client_ip)
