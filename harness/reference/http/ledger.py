"""The ``ledger`` http-server (SPEC §4.5): an HTTP/1.1 server whose truth is its connection ledger.

    python -m harness.reference.http.ledger --host 127.0.0.1 --port P [knobs]

Paths (any method; HEAD answers without a body):

- ``/sleep?ms=N``     200 after N ms. If the client closes meanwhile, that is recorded at once.
- ``/status/<code>``  that status (100..599; 1xx is refused with 400).
- ``/bytes?n=N``      200 with N bytes of ``x``.
- ``/drop-nth?n=N``   the N-th request on a connection is read and then the connection closed
                      without an answer (``server-drop``); other requests get 200.
- ``/``               200 ``ok``; anything else 404 (which keeps the connection).

Knobs (Tomcat's defaults, research/http-pools.md §0 and §6.3):

- ``--keepalive-timeout-ms`` (20000): time to wait for the next request head, measured from the
  end of the previous response (for a connection's first request: from the moment it is served).
  Expiry closes with FIN (``server-idle``), or RST with ``--rst-on-idle`` (SO_LINGER 0). A
  negative value waits forever.
- ``--max-keepalive-requests`` (100): the N-th response carries ``Connection: close`` and the
  server closes (``server-close-hdr``). -1 = unlimited, 1 = no keep-alive.
- ``--keepalive-header`` (none): sent verbatim as ``Keep-Alive:`` on every response that keeps
  the connection. Advisory, as on the wire: enforcement is the two knobs above.
- ``--max-connections`` (-1): connections beyond it are accepted but not served until a slot
  frees (Tomcat's acceptor blocking; PL-12 "the second waits, is not refused"). A queued
  connection's request is read but not answered; its ``served_ms`` is when it got the slot.
- ``--close-on-status`` (400,408,411,413,414,500,501,503; ``""`` for none): answer those with
  ``Connection: close`` and close (``server-close-hdr``). A request carrying ``Connection:
  close`` (or HTTP/1.0 without keep-alive) is also answered and closed by the server.

Who closed (``closed_by``): ``client`` (EOF read first), ``client-reset`` (ECONNRESET/EPIPE),
``server-idle``, ``server-close-hdr``, ``server-drop``; ``server-shutdown`` when SIGTERM ends
it. The first decision wins. ``close_reason`` says which rule fired; ``close_mode`` is ``fin``
or ``rst`` for the server's own closes.

Admin, on the same port: ``GET /_ledger`` and ``POST /_ledger/reset`` (``harness.http_run.LedgerAdmin``).
A connection whose FIRST request is under ``/_ledger`` is an admin connection: it is answered
with ``Connection: close``, never takes a serving slot (so the ledger can be read while
``--max-connections`` is saturated) and never appears in the ledger or its counts. Same port,
so the manifest needs no second port; the price is that an admin connection is known as such
only once its first request head arrived, which is why counts are computed from the event
sequence afterwards rather than kept as a running counter.

Prints ``ledger ready port=P`` once listening. SIGTERM/SIGINT: close every connection, exit 0.
Binds loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import asdict

from harness import strict

from .book import ConnRecord, Ledger, Slots
from .config import LedgerConfig, parse_args
from .http1 import MAX_HEAD_BYTES, BadRequest, Request, build_response, read_request

__all__ = ["LedgerConfig", "LedgerServer", "parse_args", "main"]

log = logging.getLogger("connformance.ledger")

EXIT_CANNOT_BIND = 3
MAX_SLEEP_MS = 600_000
MAX_BYTES = 64 * 1024 * 1024


class _Reader(asyncio.StreamReader):
    """A StreamReader that also says, without consuming data, when the peer ended the stream
    (FIN or RST): used to notice a client that goes away in the middle of ``/sleep``."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self.ended = asyncio.Event()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.ended.set()

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        self.ended.set()


class _Closed(Exception):
    """The connection ended; the ledger already has the reason."""


class _Admin(Exception):
    """The connection's first request is under /_ledger: it is an admin connection."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.target)
        self.request = request


class LedgerServer:
    def __init__(self, config: LedgerConfig) -> None:
        self.config = config
        self.ledger = Ledger()
        self.slots = Slots(config.max_connections)
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._live: dict[asyncio.StreamWriter, ConnRecord | None] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            reader = _Reader(MAX_HEAD_BYTES)
            return asyncio.StreamReaderProtocol(reader, self._on_connection)

        self._server = await loop.create_server(protocol, self.config.host, self.config.port, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer, record in list(self._live.items()):
            if record is not None:
                self.ledger.closed(record, "server-shutdown", "SIGTERM", "fin")
            writer.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- one connection ------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(reader, _Reader)
        peer = writer.get_extra_info("peername") or ("?", 0)
        record = self.ledger.opened(f"{peer[0]}:{peer[1]}")
        self._live[writer] = record
        slot = self.slots.request()
        first = asyncio.ensure_future(read_request(reader))
        try:
            while not slot.done():  # queued behind --max-connections: admin requests still pass
                ended = asyncio.ensure_future(reader.ended.wait())
                waiting = {slot, ended} | ({first} if not first.done() else set())
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                admin_request = _admin_request(first)
                if admin_request is not None:
                    raise _Admin(admin_request)
                if reader.ended.is_set() and not slot.done():
                    self._client_closed(record, reader, "closed while queued for a slot")
                    return
            self.ledger.served(record)
            await self._serve(record, reader, writer, first)
        except _Admin as admin:
            self.slots.give_up(slot)  # an admin connection never holds a slot while it is served
            self.ledger.mark_admin(record)
            self._live[writer] = None
            await self._serve_admin(admin.request, writer)
        except _Closed:
            pass
        except Exception:  # noqa: BLE001 - a bug here must not kill the server; the ledger says so
            log.exception("connection %s failed", record.id)
            self.ledger.closed(record, "server-drop", "ledger internal error", "fin")
        finally:
            first.cancel()
            self.slots.give_up(slot)
            self._live.pop(writer, None)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, record: ConnRecord, reader: _Reader, writer: asyncio.StreamWriter,
                     pending: asyncio.Future) -> None:
        """Serve requests until one side closes. ``pending`` is the first request's read."""
        while True:
            request = await self._next_request(record, reader, writer, pending)
            if record.requests == 0 and _is_admin(request):
                raise _Admin(request)
            entry = self.ledger.request(record, request.method, request.target, request.headers.get("connection"))
            status, body, drop = await self._route(record, request, reader)
            if drop:
                self.ledger.closed(record, "server-drop", f"drop-nth: request #{record.requests} not answered", "fin")
                writer.close()
                raise _Closed
            entry["status"] = status
            close_reason = self._close_reason(record, request, status)
            headers = self._connection_headers(request, close_reason)
            payload = build_response(status, body, headers=headers, head_only=request.method == "HEAD")
            try:
                writer.write(payload)
                await writer.drain()
            except ConnectionError:
                self.ledger.closed(record, "client-reset", "write failed: the client reset the connection")
                raise _Closed from None
            if close_reason:
                self.ledger.closed(record, "server-close-hdr", close_reason, "fin")
                writer.close()
                raise _Closed
            pending = asyncio.ensure_future(read_request(reader))

    async def _next_request(self, record: ConnRecord, reader: _Reader, writer: asyncio.StreamWriter,
                            pending: asyncio.Future) -> Request:
        timeout_ms = self.config.keepalive_timeout_ms
        try:
            if timeout_ms < 0:
                request = await pending
            else:
                request = await asyncio.wait_for(pending, timeout_ms / 1000.0)
        except TimeoutError:
            self._close_idle(record, writer, timeout_ms)
            raise _Closed from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self._client_closed(record, reader, f"{type(exc).__name__} while reading a request")
            raise _Closed from None
        except BadRequest as exc:
            self.ledger.request(record, "?", "?", None)["status"] = 400
            self.ledger.closed(record, "server-close-hdr", f"bad request: {exc}", "fin")
            with contextlib.suppress(ConnectionError):
                writer.write(build_response(400, f"{exc}\n".encode(), headers=[("Connection", "close")]))
                await writer.drain()
            writer.close()
            raise _Closed from None
        if request is None:
            self._client_closed(record, reader, "EOF between requests")
            raise _Closed
        return request

    def _close_idle(self, record: ConnRecord, writer: asyncio.StreamWriter, timeout_ms: int) -> None:
        if self.config.rst_on_idle:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.ledger.closed(record, "server-idle", f"idle {timeout_ms} ms (RST)", "rst")
            writer.transport.abort()
        else:
            self.ledger.closed(record, "server-idle", f"idle {timeout_ms} ms", "fin")
            writer.close()

    def _client_closed(self, record: ConnRecord, reader: _Reader, detail: str) -> None:
        by = "client-reset" if isinstance(reader.exception(), ConnectionError) else "client"
        self.ledger.closed(record, by, detail)

    def _close_reason(self, record: ConnRecord, request: Request, status: int) -> str | None:
        if request.wants_close:
            return "the request asked for Connection: close"
        if status in self.config.close_on_status:
            return f"status {status} is in --close-on-status"
        limit = self.config.max_keepalive_requests
        if limit >= 0 and record.requests >= max(limit, 1):
            return f"request #{record.requests} reached --max-keepalive-requests {limit}"
        return None

    def _connection_headers(self, request: Request, close_reason: str | None) -> list[tuple[str, str]]:
        if close_reason:
            return [("Connection", "close")]
        headers = []
        if "keep-alive" in request.connection_tokens:
            headers.append(("Connection", "keep-alive"))
        if self.config.keepalive_header:
            headers.append(("Keep-Alive", self.config.keepalive_header))
        return headers

    async def _route(self, record: ConnRecord, request: Request, reader: _Reader) -> tuple[int, bytes, bool]:
        """(status, body, drop) for one request."""
        path, query = request.path, request.query
        try:
            if path == "/sleep":
                ms = _int_param(query, "ms", 0, MAX_SLEEP_MS)
                await self._sleep_unless_client_leaves(record, reader, ms)
                return 200, f"slept {ms} ms\n".encode(), False
            if path.startswith("/status/"):
                code = strict.ascii_int(path[len("/status/"):], minimum=200, maximum=599)
                if code is None:
                    raise ValueError(f"status {path[len('/status/'):][:20]!r} is not a final status 200..599")
                return code, f"status {code}\n".encode(), False
            if path == "/bytes":
                return 200, b"x" * _int_param(query, "n", 0, MAX_BYTES), False
            if path == "/drop-nth":
                nth = _int_param(query, "n", 1, 1_000_000)
                return 200, f"request #{record.requests} answered; #{nth} is dropped\n".encode(), record.requests == nth
            if path == "/":
                return 200, b"ok\n", False
            if path.startswith("/_ledger"):  # on a counted connection: answer, stays counted
                return 200, self._ledger_json(), False
        except ValueError as exc:
            return 400, f"{exc}\n".encode(), False
        return 404, f"no such path {path}\n".encode(), False

    async def _sleep_unless_client_leaves(self, record: ConnRecord, reader: _Reader, ms: int) -> None:
        ended = asyncio.ensure_future(reader.ended.wait())
        try:
            done, _ = await asyncio.wait({ended}, timeout=ms / 1000.0)
        finally:
            ended.cancel()
        if done:
            self._client_closed(record, reader, f"closed during /sleep?ms={ms}")
            raise _Closed

    # -- admin ---------------------------------------------------------------------------
    def _ledger_json(self) -> bytes:
        config = asdict(self.config)
        config["close_on_status"] = list(self.config.close_on_status)
        return strict.dumps(self.ledger.view(config, self.slots.queued)).encode()

    async def _serve_admin(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path == "/_ledger" and request.method in ("GET", "HEAD"):
            status, body = 200, self._ledger_json()
        elif request.path == "/_ledger/reset" and request.method == "POST":
            self.ledger.reset()
            status, body = 200, b'{"ok": true}'
        else:
            status, body = 404, strict.dumps({"error": f"no admin route {request.method} {request.path}"}).encode()
        payload = build_response(status, body, headers=[("Connection", "close")],
                                 head_only=request.method == "HEAD", content_type="application/json")
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()


def _admin_request(first: asyncio.Future) -> Request | None:
    """The first request if it has arrived and is an admin one."""
    if first.done() and not first.cancelled() and first.exception() is None and _is_admin(first.result()):
        return first.result()
    return None


def _is_admin(request: Request | None) -> bool:
    return request is not None and (request.path == "/_ledger" or request.path.startswith("/_ledger/"))


def _int_param(query: dict[str, str], name: str, low: int, high: int) -> int:
    text = query.get(name)
    value = strict.ascii_int(text)
    if value is None:
        raise ValueError(f"query parameter {name} must be an integer, got {text!r}")
    if not low <= value <= high:
        raise ValueError(f"query parameter {name}={value} is outside {low}..{high}")
    return value


async def _run(config: LedgerConfig) -> int:
    server = LedgerServer(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"ledger: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_BIND
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ledger ready port={server.port}", flush=True)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad arguments, 3 the port could not be bound."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = parse_args(argv)
    return asyncio.run(_run(config))


if __name__ == "__main__":
    sys.exit(main())
