"""One client connection: a dedicated gRPC channel (hence its own TCP transport) to one server,
the unary stub, and the bi-stream. Mirrors ``GrpcConnection`` in the Java client.

A channel per connection matters: the server identifies a connection by its transport, so two
connections must never share a TCP connection. grpc's global subchannel pool would share one
between channels with equal arguments; ``grpc.use_local_subchannel_pool`` turns that off.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import grpc

from harness.protocol.nacos.codec import Message, decode
from harness.protocol.nacos.wire import BISTREAM_METHOD, UNARY_METHOD, deserialize, serialize

from .client_logic import ServerAddress

# Java DefaultGrpcClientConfig: channel keepalive 6 min / 20 s, inbound max 10 MiB.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 6 * 60 * 1000),
    ("grpc.keepalive_timeout_ms", 20 * 1000),
    ("grpc.max_receive_message_length", 10 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]


COLLECT_AFTER_CLOSE_S = (0.5, 2.0)  # once the cancelled calls' coroutines have run


class RpcConnection:
    """A connection candidate, then (after setup) the client's current connection."""

    def __init__(self, server: ServerAddress, grpc_port: int) -> None:
        self.server = server
        self.grpc_port = grpc_port
        self.connection_id: str | None = None
        self.abandoned = False  # set before we close it on purpose: its stream's end is not news
        self.closed = False
        self.channel = grpc.aio.insecure_channel(f"{server.ip}:{grpc_port}", options=CHANNEL_OPTIONS)
        self._unary = self.channel.unary_unary(
            UNARY_METHOD, request_serializer=serialize, response_deserializer=deserialize)
        self._bistream = self.channel.stream_stream(
            BISTREAM_METHOD, request_serializer=serialize, response_deserializer=deserialize)
        self.call: grpc.aio.StreamStreamCall | None = None
        self.reader_task: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()  # grpc.aio allows one pending write per call

    def __repr__(self) -> str:
        return f"<RpcConnection {self.server} id={self.connection_id} abandoned={self.abandoned}>"

    async def unary(self, payload: Any, timeout_ms: float) -> Message:
        """One ``/Request/request`` call; raises ``grpc.aio.AioRpcError`` on transport failure
        and ``ConnectionClosed`` when this connection is (being) closed by a switch."""
        unary = self._unary
        if self.closed or unary is None:
            raise ConnectionClosed(f"{self!r} is closed")
        try:
            reply = await unary(payload, timeout=timeout_ms / 1000.0)
        except asyncio.CancelledError:
            # channel.close() during a switch cancels calls in flight; unless our own task is
            # being cancelled, that is the connection going away (Java: the future fails and
            # RpcClient.request retries on the new connection).
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise ConnectionClosed(f"{self!r} closed while the call was in flight") from None
        except grpc.aio.UsageError as exc:  # the channel closed between the check and the call
            raise ConnectionClosed(f"{self!r} is closed: {exc}") from exc
        return decode(reply)

    def open_stream(self) -> grpc.aio.StreamStreamCall:
        self.call = self._bistream()
        return self.call

    async def send(self, payload: Any) -> None:
        if self.call is None:
            raise RuntimeError("bi-stream not open")
        async with self._write_lock:
            await self.call.write(payload)

    async def close(self) -> None:
        """Java ``GrpcConnection.close``: complete the stream, then shut the channel down now."""
        if self.closed:
            return
        self.closed = True
        had_stream = self.call is not None
        if self.call is not None and not self.call.done():
            try:
                async with self._write_lock:
                    await asyncio.wait_for(self.call.done_writing(), timeout=0.2)
            except (TimeoutError, grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError):
                pass
        await self.channel.close(grace=None)  # cancels the stream
        reader = self.reader_task
        if reader is not None and not reader.done() and reader is not asyncio.current_task():
            try:
                await asyncio.wait_for(asyncio.shield(reader), timeout=1.0)
            except (TimeoutError, asyncio.CancelledError):
                reader.cancel()
        # grpc core keeps the TCP connection open while any call object is alive, even after
        # channel.close(): drop ours so the transport really closes now, not at the next GC.
        self.call = None
        self.reader_task = None
        self._unary = self._bistream = None  # type: ignore[assignment]
        # Calls cancelled by the close (a request or HealthCheck in flight) live on in the
        # traceback cycles of their exceptions, which only the cyclic collector frees, and only
        # once their coroutines have handled the cancellation: without this, a switch under
        # packet loss left the old transport ESTABLISHED for good (TC-18). A connect attempt that
        # failed before its stream opened has no calls in flight: no collection (SR-18's pacing).
        if had_stream:
            loop = asyncio.get_running_loop()
            for delay_s in COLLECT_AFTER_CLOSE_S:
                loop.call_later(delay_s, gc.collect)


class ConnectionClosed(Exception):
    """The connection was closed (replaced by a switch) before or during a call: retryable."""


def describe_error(exc: BaseException) -> str:
    """One line for an event's ``reason``."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc {exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
