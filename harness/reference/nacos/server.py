"""The reference Nacos 2.x server: SPEC §4.2 made executable.

    python -m harness.reference.nacos.server --main-port P --grpc-port G [knobs]

One asyncio loop hosts the internal grpc.aio server, the TCP front that owns the public
gRPC port (``transport.py`` says why), and the admin HTTP on the main port. The wire is
2.2.4's (no ``supportAbilityNegotiation``, so clients never wait for a SetupAck); limits
follow the 2.1.x rule model; ejection and reloads follow 2.3+.

Each protocol step is its own method so a test can build a deliberately broken server by
subclassing and overriding one of them, then run it with ``main(server_cls=Broken)``:

- unary: ``handle_unary`` -> ``is_starting``, ``server_check``, ``find_handler``,
  ``check_registered``, ``decode_request``, ``call_handler``;
- bi-stream: ``on_stream_message`` -> ``on_setup`` -> ``build_connection``,
  ``register_connection``, ``reject_setup`` -> ``reset_and_close`` -> ``close_rejected``;
  ``on_client_response``; ``on_stream_end``;
- transports: ``on_transport_ready``, ``on_transport_terminated`` -> ``unregister``;
- reset and eject (``ejector.py``): ``load_single``, ``load_count``, ``eject_pass``,
  ``eject_outdated``, ``probe``, ``eject_over_limit``;
- bookkeeping: ``connection_manager_class`` (``check_limit``, ``register``, ``unregister``,
  ``_increment_client_ip``, ``_decrement_client_ip``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from harness.protocol.nacos import codec, wire

from ..memory import trim_forever
from . import admin
from .config import ServerConfig, parse_args
from .connections import Connection, ConnectionManager, ConnectionMeta
from .ejector import EjectorMixin
from .naming import NamingError, NamingStore
from .pushes import ConnectionClosed, PushCenter, PushChannel, PushTimeout
from .transport import Transport, TransportFront

__all__ = ["EXIT_CANNOT_BIND", "NacosRefServer", "main"]

log = logging.getLogger("nacos-ref.server")

Handler = Callable[[codec.Message, Connection], "tuple[str, dict[str, Any]] | Awaitable[tuple[str, dict[str, Any]]]"]


class NacosRefServer(EjectorMixin):
    connection_manager_class = ConnectionManager
    naming_store_class = NamingStore
    front_class = TransportFront

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.started = config.startup_delay_ms <= 0
        self.naming = self.naming_store_class()
        self.connections = self.connection_manager_class(config.limits, listeners=[self.naming])
        self.pushes = PushCenter()
        self.front: TransportFront | None = None
        self.grpc_server: grpc.aio.Server | None = None
        self.main_port = config.main_port
        self.grpc_port = config.grpc_port
        self._admin_runner: Any = None
        self._tasks: set[asyncio.Task] = set()
        self.handlers: dict[str, Handler] = {
            codec.HEALTH_CHECK_REQUEST: self.handle_health_check,
            "InstanceRequest": self.naming.instance,
            "BatchInstanceRequest": self.naming.batch_instance,
            "ServiceQueryRequest": self.naming.query,
            "SubscribeServiceRequest": self.naming.subscribe,
            "ServiceListRequest": self.naming.list_services,
        }

    # ---- lifecycle -------------------------------------------------------------------

    def grpc_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", self.config.max_inbound_message_bytes),
            ("grpc.so_reuseport", 0),
            # Lenient ping policy: a quiet client pinging every 60 s (Go, Python) must never
            # get GOAWAY too_many_pings, which would silently mint a new transport id.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            # channelz keeps a node per socket; nothing here reads it, and under connect/close
            # churn it is memory that is never given back.
            ("grpc.enable_channelz", 0),
        ]

    async def start(self) -> None:
        self.grpc_server = grpc.aio.server(options=self.grpc_options())
        self.grpc_server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(wire.REQUEST_SERVICE, {"request": grpc.unary_unary_rpc_method_handler(
                self._unary_entry, request_deserializer=wire.deserialize, response_serializer=wire.serialize)}),
            grpc.method_handlers_generic_handler(wire.BISTREAM_SERVICE, {
                "requestBiStream": grpc.stream_stream_rpc_method_handler(
                    self._bi_stream_entry, request_deserializer=wire.deserialize,
                    response_serializer=wire.serialize)}),
        ))
        internal_port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        await self.grpc_server.start()
        self.front = self.front_class(self.config.host, self.config.grpc_port, internal_port,
                                      on_ready=self.on_transport_ready, on_terminated=self.on_transport_terminated)
        await self.front.start()
        self.grpc_port = self.front.port
        self._admin_runner, self.main_port = await admin.start_admin(self, self.config.host, self.config.main_port)
        if self.config.eject_interval_ms > 0:
            self.spawn(self.run_ejector())
        self.spawn(trim_forever())
        if not self.started:
            asyncio.get_running_loop().call_later(self.config.startup_delay_ms / 1000.0, self.mark_started)
        log.info("listening main=%d grpc=%d (internal gRPC 127.0.0.1:%d) starting=%s limits=%s",
                 self.main_port, self.grpc_port, internal_port, not self.started, self.config.limits)

    def mark_started(self) -> None:
        self.started = True
        log.info("server started (startup delay %d ms over)", self.config.startup_delay_ms)

    async def stop(self) -> None:
        log.info("stopping: %d transport(s), %d registered", len(self.front.transports()) if self.front else 0,
                 self.connections.count())
        for task in list(self._tasks):
            task.cancel()
        if self.front is not None:
            await self.front.stop()  # closes every transport -> unregisters
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=None)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("stopped")

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        """A background task the server owns (cancelled at stop, errors logged)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # ---- transports ------------------------------------------------------------------

    def on_transport_ready(self, t: Transport) -> None:
        log.debug("transport %s ready", t.id)

    def on_transport_terminated(self, t: Transport) -> None:
        """``transportTerminated``: release pending pushes, unregister (once)."""
        self.pushes.release(t.id, f"transport {t.cause}")
        self.unregister(t.id, f"transport {t.cause}")

    def unregister(self, connection_id: str, reason: str) -> Connection | None:
        return self.connections.unregister(connection_id, reason)

    # ---- unary /Request/request ------------------------------------------------------

    async def _unary_entry(self, payload: Any, context: grpc.aio.ServicerContext) -> Any:
        t = self.front.by_peer(context.peer()) if self.front else None
        try:
            return await self.handle_unary(t, payload)
        except Exception as exc:  # never let a bug kill the call without an answer
            log.exception("unary %s failed", payload.metadata.type)
            return codec.error_response(codec.SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    async def handle_unary(self, t: Transport | None, payload: Any) -> Any:
        """``GrpcRequestAcceptor.request``: the dispatch order is the spec (SR-02, SR-04, SR-05)."""
        type_name = payload.metadata.type
        if self.is_starting():
            return codec.error_response(codec.INVALID_SERVER_STATUS)
        if type_name == codec.SERVER_CHECK_REQUEST:
            return self.server_check(t)
        handler = self.find_handler(type_name)
        if handler is None:
            return codec.error_response(codec.NO_HANDLER, f"RequestHandler Not Found: {type_name}")
        if t is None or not self.check_registered(t.id):
            return codec.error_response(codec.UN_REGISTER)
        try:
            msg = self.decode_request(payload)
        except codec.BadBody as exc:
            return codec.error_response(codec.BAD_GATEWAY, str(exc))
        self.connections.refresh_active_time(t.id)
        conn = self.connections.get(t.id)
        if conn is None:  # unregistered between the check and now
            return codec.error_response(codec.UN_REGISTER)
        return await self.call_handler(handler, msg, conn)

    def is_starting(self) -> bool:
        return not self.started

    def server_check(self, t: Transport | None) -> Any:
        if t is None:
            return codec.error_response(codec.SERVER_ERROR, "transport of this call is unknown")
        return codec.server_check_response(t.id)  # 2.2.4 shape: no supportAbilityNegotiation

    def find_handler(self, type_name: str) -> Handler | None:
        return self.handlers.get(type_name)

    def check_registered(self, connection_id: str) -> bool:
        return self.connections.check_valid(connection_id)

    def decode_request(self, payload: Any) -> codec.Message:
        if not payload.body.value:
            raise codec.BadBody("Invalid request")  # Java: parse gives null
        return codec.decode(payload)

    async def call_handler(self, handler: Handler, msg: codec.Message, conn: Connection) -> Any:
        try:
            result = handler(msg, conn)
            if inspect.isawaitable(result):
                result = await result
            resp_type, fields = result
        except NamingError as exc:
            return codec.error_response(exc.code, str(exc))
        except Exception as exc:  # ErrorResponse.build(e)
            log.exception("handler for %s failed", msg.type)
            return codec.error_response(codec.SERVER_ERROR, str(exc) or type(exc).__name__)
        return codec.encode(resp_type, codec.response_body(**fields))

    def handle_health_check(self, msg: codec.Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        return codec.HEALTH_CHECK_RESPONSE, {}

    # ---- bi-stream /BiRequestStream/requestBiStream ----------------------------------

    async def _bi_stream_entry(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        t = self.front.by_peer(context.peer()) if self.front else None
        if t is None:
            log.warning("bi-stream from unknown transport %s", context.peer())
            return
        channel = PushChannel(context.write, t.id)
        try:
            while True:
                payload = await context.read()
                if payload is grpc.aio.EOF:
                    break
                try:
                    self.on_stream_message(t, channel, payload)
                except Exception:
                    log.exception("stream message on %s failed", t.id)
        finally:
            channel.closed = True
            self.on_stream_end(t, channel)

    def on_stream_message(self, t: Transport, channel: PushChannel, payload: Any) -> None:
        """``GrpcBiStreamRequestAcceptor.onNext``; never blocks the reader."""
        try:
            msg = codec.decode(payload)
        except codec.BadBody as exc:
            log.warning("dropping unparsable stream message on %s: %s", t.id, exc)
            return
        if msg.type == codec.CONNECTION_SETUP_REQUEST:
            self.on_setup(t, channel, msg)
        elif msg.is_response:
            self.on_client_response(t, msg)
        else:
            log.warning("dropping unknown stream payload %r on %s", msg.type, t.id)

    def on_setup(self, t: Transport, channel: PushChannel, msg: codec.Message) -> None:
        conn = self.build_connection(t, channel, msg)
        if self.is_starting() and conn.meta.sdk_source:
            self.reject_setup(conn, "server is not started")
            return
        existing = self.connections.get(conn.id)
        if existing is not None:  # a second setup on the same transport: keep it, push on the newest stream
            existing.channel = channel
            return
        if not self.register_connection(conn):
            self.reject_setup(conn, "server is over limited")

    def build_connection(self, t: Transport, channel: PushChannel | None, msg: codec.Message | None) -> Connection:
        body = msg.body if msg is not None else {}
        raw_labels = body.get("labels")
        labels = {str(k): v for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
        app_name = labels.get("AppName")
        meta = ConnectionMeta(
            connection_id=t.id,
            client_ip=(msg.client_ip if msg is not None else "") or "",
            remote_ip=t.peer_ip,
            remote_port=t.peer_port,
            local_port=t.local_port,
            version=str(body.get("clientVersion") or ""),
            app_name="-" if app_name is None else str(app_name),
            tenant=body.get("tenant"),
            labels=labels,
        )
        return Connection(meta, channel=channel, is_open=t.is_open,
                          closer=lambda: self.front.close(t.id, cause="unregistered"))

    def register_connection(self, conn: Connection) -> bool:
        return self.connections.register(conn)

    def reject_setup(self, conn: Connection, reason: str) -> None:
        log.warning("reject %s clientIp=%s: Connection register fail, reason: %s", conn.id, conn.meta.client_ip,
                    reason)
        self.spawn(self.reset_and_close(conn, reason))

    async def reset_and_close(self, conn: Connection, reason: str) -> None:
        """Push ConnectResetRequest (no address), wait for its answer off the reader task
        (unlike Java's deadlock, research §2.3), then really close the transport."""
        try:
            await self.pushes.push(conn.id, conn.channel, codec.CONNECT_RESET_REQUEST, {},
                                   timeout_ms=self.config.reset_timeout_ms)
        except (ConnectionClosed, PushTimeout) as exc:
            log.info("reset of rejected %s unanswered: %s", conn.id, exc)
        finally:
            self.close_rejected(conn)

    def close_rejected(self, conn: Connection) -> None:
        self.front.close(conn.id, cause="rejected")

    def on_client_response(self, t: Transport, msg: codec.Message) -> None:
        self.pushes.answer(t.id, msg)
        self.connections.refresh_active_time(t.id)

    def on_stream_end(self, t: Transport, channel: PushChannel) -> None:
        """A stream's end is not a transport's end: the connection stays registered."""
        self.pushes.release_channel(channel, "stream ended")
        log.info("bi-stream of %s ended (transport %s)", t.id, "closed" if t.closed else "open")


# ---- process entry ------------------------------------------------------------------------

def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S",
    )


async def serve(server: NacosRefServer) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(f"nacos-ref-server ready main={server.main_port} grpc={server.grpc_port}", flush=True)
        await stop.wait()
    finally:
        await server.stop()


EXIT_CANNOT_BIND = 3  # argparse uses 2 for bad arguments


def main(argv: Sequence[str] | None = None, *, server_cls: type[NacosRefServer] | None = None) -> int:
    """Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad arguments, 3 a port could not be bound."""
    config = parse_args(argv)
    setup_logging()
    try:
        asyncio.run(serve((server_cls or NacosRefServer)(config)))
    except OSError as exc:
        log.error("cannot serve main=%d grpc=%d: %s", config.main_port, config.grpc_port, exc)
        return EXIT_CANNOT_BIND
    return 0


if __name__ == "__main__":
    sys.exit(main())
