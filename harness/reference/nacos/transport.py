"""The server owns its transports: a TCP front spliced onto an internal grpc.aio server.

Why (DESIGN.md "Transport identity in grpcio"): Nacos semantics hang on the TCP transport,
and Python's grpcio exposes none of it.

- The connection id is minted per transport, ``<ms>_<peerIp>_<peerPort>``, at accept time
  (Java: ``AddressTransportFilter.transportReady``). grpcio has no transport-ready hook.
- Unregistration happens exactly when the transport terminates, and only then: a bi-stream
  that ends while its transport lives must not unregister (research §2.7). grpcio has no
  transport-terminated hook; a stream's end or cancellation is a different event, and
  channelz only shows sockets after the fact, by polling.
- A rejected or ejected connection must really be closed (SR-05, SR-10, TC-07). grpcio
  cannot close one TCP connection; a call can only be aborted, leaving the socket up.

So the public gRPC port is an asyncio TCP listener. Each accepted connection (the *client
side*) gets its own connection to the internal grpc.aio server on 127.0.0.1:<ephemeral>
(the *upstream side*), and bytes are spliced both ways. The front knows exactly when a
transport is ready (upstream connected), when it terminates (EOF or RST on either side: both
sockets are closed, one callback), and can close one transport on demand (FIN, or RST with
SO_LINGER 0). The internal gRPC server maps a call to its transport by ``context.peer()``,
which is the front's upstream local address, through ``by_peer``.

Cost: one extra loopback hop and a copy per 64 KiB read; flow control is end to end
(a side whose peer's write buffer fills stops being read). The upstream side is written
to before the client's bytes are read, so no call can arrive before its transport is known.
A close waits for buffered bytes to flush (a reset push must reach the client), but at most
``FLUSH_GRACE_S``; then the socket is aborted, so no socket outlives its transport.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Transport", "TransportFront"]

log = logging.getLogger("nacos-ref.transport")

READ_SIZE_BYTES = 64 * 1024
FLUSH_GRACE_S = 2.0  # after close(), a side still flushing to a dead peer is aborted


@dataclass(eq=False)
class Transport:
    """One client TCP connection as the server sees it."""

    id: str
    peer_ip: str
    peer_port: int
    local_port: int  # the public gRPC port the client dialled
    opened_ms: float
    upstream_addr: tuple[str, int] | None = None  # front's local address towards the gRPC server
    closed: bool = False
    cause: str = ""  # why it terminated: client-eof, client-reset, server-close, server-reset, ...
    _client: asyncio.Transport | None = field(default=None, repr=False)
    _upstream: asyncio.Transport | None = field(default=None, repr=False)
    _ready: bool = field(default=False, repr=False)

    @property
    def peer(self) -> str:
        return f"{self.peer_ip}:{self.peer_port}"

    def is_open(self) -> bool:
        return not self.closed


class _Side(asyncio.BufferedProtocol):
    """One socket of a splice; reads into the front's buffer and writes to the other side.

    Memory: every side reads into the one buffer of its front (asyncio calls ``get_buffer``,
    ``recv_into`` and ``buffer_updated`` back to back on the loop's thread, and the bytes are
    copied out at once), and a lost side drops its references (other side, link, early bytes),
    so a closed connection costs nothing once asyncio lets go of it: RSS stays flat under
    connect/close churn (``ci/bench_ref_memory.py``)."""

    def __init__(self, front: TransportFront, name: str, link: Transport | None = None,
                 other: _Side | None = None) -> None:
        self.front = front
        self.name = name  # "client" | "upstream"
        self.link = link
        self.other = other  # set at construction for the upstream side: it may speak first
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.early = bytearray()  # read before the other side existed; flushed by flush_early()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.name == "client":
            # Nothing should be read until the upstream side exists. CPython 3.11.2 (Debian 12's
            # python3, in the docker images) still adds the reader after a pause made here (later
            # versions check is_reading() in _SelectorTransport._add_reader), so what arrives
            # anyway is kept in ``early``, never dropped.
            transport.pause_reading()
            self.front._accepted(self)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.front.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.lost or (self.link is not None and self.link.closed):
            return  # the transport is gone: nothing more goes anywhere
        data = bytes(memoryview(self.front.read_buffer)[:nbytes])  # a copy: a partial write may keep it
        other = self.other
        if other is None or other.transport is None:
            self.early += data
            return
        if not other.transport.is_closing():
            other.transport.write(data)

    def flush_early(self) -> None:
        """Forward what was read before the other side was ready (call once it is)."""
        other = self.other
        if self.early and other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.write(bytes(self.early))
        self.early.clear()

    def eof_received(self) -> bool:
        if self.link is not None:
            self.front._terminate(self.link, f"{self.name}-eof")
        return False  # let asyncio close this socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.link is not None:
            self.front._terminate(self.link, f"{self.name}-{'reset' if exc else 'closed'}")
        # Break the side <-> side <-> transport cycles now rather than at the next full GC.
        self.early = bytearray()
        self.other = None
        self.transport = None

    # back-pressure: my write buffer is full -> stop reading the side that feeds me
    def pause_writing(self) -> None:
        if self.other and self.other.transport and not self.other.transport.is_closing():
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other and self.other.transport and not self.other.transport.is_closing():
            self.other.transport.resume_reading()


class TransportFront:
    """The public listener. ``on_ready(t)`` fires once per transport when it can carry calls;
    ``on_terminated(t)`` fires once when it is gone (only for transports that were ready)."""

    def __init__(
        self,
        host: str,
        port: int,
        upstream_port: int,
        *,
        on_ready: Callable[[Transport], None],
        on_terminated: Callable[[Transport], None],
        upstream_host: str = "127.0.0.1",
    ) -> None:
        self.host, self.port = host, port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.on_ready, self.on_terminated = on_ready, on_terminated
        self._server: asyncio.base_events.Server | None = None
        self._by_id: dict[str, Transport] = {}
        self._by_upstream: dict[tuple[str, int], Transport] = {}
        self._sides: dict[str, tuple[_Side, _Side | None]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.read_buffer = bytearray(READ_SIZE_BYTES)  # shared by every side (see _Side)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Side(self, "client"), self.host, self.port,
                                                backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._by_id.values()):
            self.close(t.id, rst=False, cause="server-shutdown")
        for side_pair in list(self._sides.values()):  # half-open accepts that never got ready
            for side in side_pair:
                if side and side.transport:
                    side.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    # ---- lookups ---------------------------------------------------------------------

    def by_id(self, transport_id: str) -> Transport | None:
        return self._by_id.get(transport_id)

    def by_peer(self, grpc_peer: str) -> Transport | None:
        """Map ``context.peer()`` of the internal server (``ipv4:127.0.0.1:54321``)."""
        try:
            rest = grpc_peer.split(":", 1)[1]
            host, port = rest.rsplit(":", 1)
            return self._by_upstream.get((host.strip("[]"), int(port)))
        except (IndexError, ValueError):
            return None

    def transports(self) -> list[Transport]:
        return list(self._by_id.values())

    # ---- closing ---------------------------------------------------------------------

    def close(self, transport_id: str, rst: bool = False, cause: str | None = None) -> bool:
        """Close one transport: FIN after flushing (default) or RST (SO_LINGER 0). Fires
        ``on_terminated`` once. False when the id is unknown or already closed."""
        t = self._by_id.get(transport_id)
        if t is None or t.closed:
            return False
        self._terminate(t, cause or ("server-reset" if rst else "server-close"), rst=rst)
        return True

    # ---- internals -------------------------------------------------------------------

    def _accepted(self, client: _Side) -> None:
        peer = client.transport.get_extra_info("peername") or ("?", 0)
        sockname = client.transport.get_extra_info("sockname") or ("?", self.port)
        now_ms = time.time() * 1000.0
        t = Transport(id=f"{int(now_ms)}_{peer[0]}_{peer[1]}", peer_ip=peer[0], peer_port=int(peer[1]),
                      local_port=int(sockname[1]), opened_ms=now_ms, _client=client.transport)
        client.link = t
        self._sides[t.id] = (client, None)
        task = asyncio.get_running_loop().create_task(self._connect_upstream(t, client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_upstream(self, t: Transport, client: _Side) -> None:
        loop = asyncio.get_running_loop()
        try:
            up_transport, upstream = await loop.create_connection(
                lambda: _Side(self, "upstream", link=t, other=client), self.upstream_host, self.upstream_port)
        except OSError as exc:
            log.error("transport %s: internal gRPC server unreachable: %s", t.id, exc)
            self._sides.pop(t.id, None)
            client.transport.abort()
            return
        if t.closed or client.lost:  # the client (or the upstream) went away while we connected
            up_transport.abort()
            self._sides.pop(t.id, None)
            return
        client.other = upstream
        t._upstream = up_transport
        local = up_transport.get_extra_info("sockname")
        t.upstream_addr = (local[0], int(local[1]))
        self._sides[t.id] = (client, upstream)
        self._by_id[t.id] = t
        self._by_upstream[t.upstream_addr] = t
        t._ready = True
        try:
            self.on_ready(t)
        except Exception:
            log.exception("on_ready failed for %s", t.id)
        client.flush_early()
        client.transport.resume_reading()

    def _terminate(self, t: Transport, cause: str, rst: bool = False) -> None:
        if t.closed:
            return
        t.closed = True
        t.cause = cause
        for tr in (t._client, t._upstream):
            if tr is None or tr.is_closing() and not rst:
                continue
            if rst and tr is t._client:
                _set_linger_zero(tr)
            if rst:
                tr.abort()
            else:
                tr.close()  # flushes what is buffered (e.g. a reset push), then FIN
        self._by_id.pop(t.id, None)
        if t.upstream_addr is not None and self._by_upstream.get(t.upstream_addr) is t:
            del self._by_upstream[t.upstream_addr]
        if not rst:
            asyncio.get_running_loop().call_later(FLUSH_GRACE_S, self._reap, t.id, t)
        else:
            self._sides.pop(t.id, None)
            t._client = t._upstream = None
        if t._ready:
            log.info("transport %s terminated (%s)", t.id, cause)
            try:
                self.on_terminated(t)
            except Exception:
                log.exception("on_terminated failed for %s", t.id)

    def _reap(self, transport_id: str, t: Transport) -> None:
        """A side that did not finish closing in time (peer not reading) is aborted."""
        pair = self._sides.pop(transport_id, None)
        for side in pair or ():
            if side is not None and not side.lost and side.transport is not None:
                log.info("transport %s: %s side still flushing after %.1f s, aborting", t.id, side.name,
                         FLUSH_GRACE_S)
                side.transport.abort()
        t._client = t._upstream = None


def _set_linger_zero(tr: asyncio.BaseTransport) -> None:
    sock = tr.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
