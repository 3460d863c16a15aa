"""Just enough HTTP/1.1 for the ledger server: read one request off an asyncio stream, build one
response as a single byte string (one ``write`` per response: no Nagle/delayed-ACK split between
headers and body, research/http-pools.md §7).

No pipelining support is needed (none of the clients pipeline, research §7), so a request is
read whole, body included, before it is answered.
"""

from __future__ import annotations

import asyncio
import http
import re
import urllib.parse
from dataclasses import dataclass, field

from harness import strict

__all__ = ["BadRequest", "Request", "read_request", "build_response", "MAX_HEAD_BYTES"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
_TOKEN_METHOD = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.x request we can answer (-> 400, close)."""


@dataclass
class Request:
    method: str
    target: str
    version: str  # "HTTP/1.1" | "HTTP/1.0"
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names; repeats joined with ", "
    body: bytes = b""

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query, keep_blank_values=True))

    @property
    def connection_tokens(self) -> set[str]:
        return {t.strip().lower() for t in self.headers.get("connection", "").split(",") if t.strip()}

    @property
    def wants_close(self) -> bool:
        """The client asked for the connection to end after this exchange (RFC 9112 §9.3)."""
        if "close" in self.connection_tokens:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in self.connection_tokens


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None on a clean EOF before its first byte.

    Raises ``asyncio.IncompleteReadError`` (EOF inside a request), ``ConnectionError`` (RST),
    ``BadRequest`` (malformed).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(f"request head longer than {MAX_HEAD_BYTES} bytes") from exc
    try:
        lines = head[:-4].decode("latin-1").split("\r\n")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(str(exc)) from exc
    while lines and not lines[0]:  # RFC 9112 §2.2: ignore empty lines before the request line
        lines.pop(0)
    if not lines:
        raise BadRequest("empty request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN_METHOD:
        raise BadRequest(f"bad request line {lines[0][:200]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported version {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line[:200]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    request = Request(method=method, target=target, version=version, headers=headers)
    request.body = await _read_body(reader, headers)
    return request


_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")  # ASCII only, at most 4 GiB


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    length = strict.ascii_int(length_text, minimum=0)
    if length is None:
        raise BadRequest(f"bad Content-Length {length_text[:40]!r}")
    if length > MAX_BODY_BYTES:
        raise BadRequest(f"body of {length} bytes is over the ledger's {MAX_BODY_BYTES}")
    return await reader.readexactly(length) if length else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_line):
            raise BadRequest(f"bad chunk size {size_line[:40]!r}")
        size = int(size_line, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise BadRequest(f"chunked body over the ledger's {MAX_BODY_BYTES} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def build_response(
    status: int,
    body: bytes = b"",
    *,
    headers: list[tuple[str, str]] | None = None,
    head_only: bool = False,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """One complete response. ``head_only`` (HEAD) keeps Content-Length but sends no body; 204
    and 304 carry neither (RFC 9110 §8.6)."""
    no_body = status in (204, 304) or 100 <= status < 200
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    if not no_body:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{k}: {v}" for k, v in headers or ())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if (no_body or head_only) else head + body
