"""A raw Nacos wire probe: one gRPC channel = one TCP transport, driven step by step so a case
can do what no well-behaved client does (a request before setup, a malformed body, two
transports side by side). Built on ``harness.protocol.nacos`` only."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from harness.ports import check_loopback
from harness.protocol.nacos import codec, wire

_CLOSE = object()


class RawNacosConnection:
    """One transport to ``host:grpc_port``. Use as a context manager."""

    def __init__(self, host: str, grpc_port: int, *, client_ip: str = "127.0.0.1", timeout_s: float = 5.0):
        check_loopback(host)
        self.target = f"{host}:{grpc_port}"
        self.client_ip = client_ip
        self.timeout_s = timeout_s
        # A local subchannel pool: without it two channels to one target share a TCP connection.
        self._channel = grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
        self._unary = self._channel.unary_unary(
            wire.UNARY_METHOD, request_serializer=wire.serialize, response_deserializer=wire.deserialize
        )
        self._outbox: queue.Queue = queue.Queue()
        self._inbox: queue.Queue = queue.Queue()
        self._stream_thread: threading.Thread | None = None
        self._stream_call = None

    # -- unary ---------------------------------------------------------------------------
    def connect(self) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=self.timeout_s)

    def unary(self, payload) -> codec.Message:
        return codec.decode(self._unary(payload, timeout=self.timeout_s))

    def server_check(self) -> codec.Message:
        return self.unary(codec.server_check_request(client_ip=self.client_ip))

    def health_check(self) -> codec.Message:
        return self.unary(codec.health_check_request(client_ip=self.client_ip))

    def send_type(self, type_name: str, body: dict[str, Any]) -> codec.Message:
        return self.unary(codec.encode(type_name, body, client_ip=self.client_ip))

    def send_raw_body(self, type_name: str, raw: bytes) -> codec.Message:
        payload = codec.encode(type_name, {}, client_ip=self.client_ip)
        payload.body.value = raw
        return self.unary(payload)

    # -- bi-stream -----------------------------------------------------------------------
    def open_stream(self) -> None:
        def outgoing() -> Iterator:
            while True:
                item = self._outbox.get()
                if item is _CLOSE:
                    return
                yield item

        self._stream_call = self._channel.stream_stream(
            wire.BISTREAM_METHOD, request_serializer=wire.serialize, response_deserializer=wire.deserialize
        )(outgoing())

        def pump() -> None:
            try:
                for payload in self._stream_call:
                    self._inbox.put(codec.decode(payload))
            except grpc.RpcError as exc:
                self._inbox.put(exc)
            self._inbox.put(None)  # stream ended

        self._stream_thread = threading.Thread(target=pump, name=f"raw-stream-{self.target}", daemon=True)
        self._stream_thread.start()

    def setup(self, *, client_version: str = "Nacos-Connformance-Probe:v0", labels: dict[str, str] | None = None,
              tenant: str | None = None) -> None:
        if self._stream_call is None:
            self.open_stream()
        self._outbox.put(codec.connection_setup_request(
            client_version=client_version,
            labels=labels if labels is not None else codec.SDK_LABELS,
            tenant=tenant,
            client_ip=self.client_ip,
        ))

    def send_on_stream(self, payload) -> None:
        self._outbox.put(payload)

    def next_push(self, timeout_s: float) -> codec.Message | None:
        """The next server push; None when the stream ended; raises queue.Empty on timeout."""
        item = self._inbox.get(timeout=timeout_s)
        if isinstance(item, grpc.RpcError):
            return None
        return item

    def end_stream(self) -> None:
        """Half-close our side of the bi-stream; the transport stays up."""
        self._outbox.put(_CLOSE)

    def close(self) -> None:
        self._outbox.put(_CLOSE)
        self._channel.close()
        if self._stream_thread is not None:
            self._stream_thread.join(timeout=self.timeout_s)

    def __enter__(self) -> RawNacosConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
