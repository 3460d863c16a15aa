"""Deliberately broken http-client agents for the pool timing / fault cases (PL-04, PL-08, PL-11,
PL-14, PL-15): a small asyncio HTTP/1.1 client with its own per-host pool, correct by default,
with ONE behaviour broken per variant, so each case can be shown to FAIL for its own reason.
They live in the tests, never in the product peers.

    python -m tests.broken_peers.pl_timing_agents --variant NAME --url URL --plan PLAN.json [knob flags]

It speaks the http-client agent contract (SPEC §4.4, ``harness.http_plan``) through the Python
agents' ``AsyncDriver`` (the same phase driver httpx and aiohttp run under: a ``cancel_burst``
cancels each request's task ``cancel_after_ms`` after issuing it).

The pool (variant ``reference``, the correct behaviour every other variant starts from):

- per host (``host:port``): at most ``max_conns_per_host`` connections (0 / unset: unlimited);
  over the limit a request waits in a FIFO queue; a waiter canceled while queued leaves the queue,
  and a connection or slot handed to a waiter that is already gone goes to the next one;
- at most ``max_idle_per_host`` idle connections (default 2); more are closed by the client;
- an idle connection is closed by the client ``idle_timeout_ms`` after its last use (a timer per
  connection; unset: never), or after the server's ``Keep-Alive: timeout=N`` (N s) when it sent
  one; ``Keep-Alive: max=1`` (or less) closes the connection after that response;
- at checkout an idle connection the peer already closed or reset is dropped, and a GET that fails
  on a reused connection before any response byte is retried once on a fresh one;
- ``keepalive=false``: ``Connection: close`` on every request, nothing pooled.

Variants:

- ``reference``: all of the above (a control: the cases must not fail it).
- ``ignores-idle-timeout``: takes ``idle_timeout_ms`` and never arms the idle timer (PL-04 FAILS).
- ``ignores-keepalive-header``: declares it honours ``Keep-Alive`` but never parses it: neither
  ``timeout=N`` nor ``max=1`` (PL-08 FAILS).
- ``leaks-slot-on-cancel``: a canceled queued waiter stays in the queue; a slot later handed to it
  is lost, so the pool runs out of slots for good (PL-11 FAILS).
- ``grows-past-limit``: a waiter that has waited longer than 100 ms for a slot opens an extra
  connection anyway ("don't keep callers waiting"): fine on a fast link, past the limit under
  latency (PL-14 FAILS).
- ``reuses-dead-connections``: no liveness check at checkout, no retry, and a connection that
  failed goes back to the pool: it keeps handing out the dead connection (PL-15 FAILS).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.agents.python.http_agent import AsyncDriver, Emitter, Outcome, describe_error
from harness.http_plan import (
    EXIT_UNSUPPORTED,
    KNOB_FLAGS,
    KNOBS,
    Phase,
    Plan,
    PlanError,
    knob_from_text,
    parse_knobs,
    parse_plan,
    split_urls,
)
from harness.ports import check_loopback

VARIANTS = (
    "reference",
    "ignores-idle-timeout",
    "ignores-keepalive-header",
    "leaks-slot-on-cancel",
    "grows-past-limit",
    "reuses-dead-connections",
)
EXIT_BAD_PLAN = 2
DEFAULT_MAX_IDLE_PER_HOST = 2
GROW_AFTER_WAIT_S = 0.100  # grows-past-limit: how long a waiter waits before opening one anyway
READ_LIMIT = 1 << 20
SUPPORTED_KNOBS = ("max_conns_per_host", "max_idle_per_host", "idle_timeout_ms", "keepalive",
                   "block_when_full", "read_error_body")


class RetryableError(Exception):
    """The request failed on a reused connection before any response byte arrived."""


@dataclass(eq=False)
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    local_port: int | None
    requests: int = 0
    idle_timeout_s: float | None = None  # from the knob, or the server's Keep-Alive: timeout=N
    timer: asyncio.TimerHandle | None = None
    closed: bool = False

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.closed:
            self.closed = True
            self.writer.close()

    def looks_dead(self) -> bool:
        """The peer closed or reset it while it sat idle (EOF or an error is buffered)."""
        transport = self.writer.transport
        return (self.closed or transport.is_closing() or self.reader.at_eof()
                or self.reader.exception() is not None)


@dataclass(eq=False)
class HostPool:
    host: str
    port: int
    open_count: int = 0  # connections open or being opened (the limit counts these)
    idle: list[Conn] = field(default_factory=list)  # LIFO
    waiters: collections.deque[asyncio.Future[Conn | None]] = field(default_factory=collections.deque)


class Pool:
    def __init__(self, variant: str, knobs: Mapping[str, Any]) -> None:
        self.variant = variant
        self.limit = int(knobs.get("max_conns_per_host") or 0)
        self.max_idle = int(knobs.get("max_idle_per_host", DEFAULT_MAX_IDLE_PER_HOST))
        timeout_ms = knobs.get("idle_timeout_ms")
        self.idle_timeout_s = timeout_ms / 1000.0 if timeout_ms else None
        self.keepalive = knobs.get("keepalive", True)
        self.hosts: dict[tuple[str, int], HostPool] = {}

    def host_pool(self, host: str, port: int) -> HostPool:
        return self.hosts.setdefault((host, port), HostPool(host, port))

    # -- checkout -------------------------------------------------------------------------------
    async def acquire(self, hp: HostPool) -> tuple[Conn, bool]:
        """A connection for one request and whether it was reused."""
        while hp.idle:
            conn = hp.idle.pop()
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            if self.variant != "reuses-dead-connections" and conn.looks_dead():
                self._discard(hp, conn)
                continue
            return conn, True
        if not self.limit or hp.open_count < self.limit:
            hp.open_count += 1
            return await self._dial(hp), False
        waiter: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
        hp.waiters.append(waiter)
        try:
            if self.variant == "grows-past-limit":
                done, _ = await asyncio.wait({waiter}, timeout=GROW_AFTER_WAIT_S)
                if not done:  # the broken part: waited "too long", open one beyond the limit
                    hp.waiters.remove(waiter)
                    waiter.cancel()
                    hp.open_count += 1
                    return await self._dial(hp), False
            handed = await waiter
        except asyncio.CancelledError:
            if self.variant != "leaks-slot-on-cancel":  # the broken variant stays queued
                with contextlib.suppress(ValueError):
                    hp.waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():  # handed over as we were canceled
                    self._pass_on(hp, waiter.result())
            raise
        if handed is None:  # a slot, not a connection
            return await self._dial(hp), False
        return handed, True

    async def _dial(self, hp: HostPool) -> Conn:
        try:
            reader, writer = await asyncio.open_connection(hp.host, hp.port, limit=READ_LIMIT)
        except BaseException:
            self._slot_freed(hp)
            raise
        sockname = writer.get_extra_info("sockname")
        return Conn(reader, writer, sockname[1] if sockname else None, idle_timeout_s=self.idle_timeout_s)

    # -- return ---------------------------------------------------------------------------------
    def release(self, hp: HostPool, conn: Conn, reusable: bool) -> None:
        if not reusable or not self.keepalive:
            self._discard(hp, conn)
            return
        if self._hand_to_waiter(hp, conn):
            return
        if len(hp.idle) >= self.max_idle:
            self._discard(hp, conn)
            return
        hp.idle.append(conn)
        if conn.idle_timeout_s is not None and self.variant != "ignores-idle-timeout":
            conn.timer = asyncio.get_running_loop().call_later(conn.idle_timeout_s, self._expire, hp, conn)

    def _expire(self, hp: HostPool, conn: Conn) -> None:
        conn.timer = None
        if conn in hp.idle:
            hp.idle.remove(conn)
            self._discard(hp, conn)

    def _discard(self, hp: HostPool, conn: Conn) -> None:
        conn.close()
        self._slot_freed(hp)

    def _slot_freed(self, hp: HostPool) -> None:
        """A connection is gone: its slot goes to the next waiter (who dials), else the count drops."""
        if self._hand_to_waiter(hp, None):
            return
        hp.open_count -= 1

    def _hand_to_waiter(self, hp: HostPool, item: Conn | None) -> bool:
        while hp.waiters:
            waiter = hp.waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
            if self.variant == "leaks-slot-on-cancel":
                # the broken part: the canceled waiter "took" it, so the connection or slot is lost
                if item is not None:
                    item.close()
                return True
        return False

    def _pass_on(self, hp: HostPool, item: Conn | None) -> None:
        if item is None:
            self._slot_freed(hp)
        else:
            self.release(hp, item, reusable=True)

    def close(self) -> None:
        for hp in self.hosts.values():
            for conn in hp.idle:
                conn.close()
            hp.idle.clear()


def _keepalive_params(value: str | None) -> dict[str, int]:
    params: dict[str, int] = {}
    for part in (value or "").split(","):
        name, _, number = part.strip().partition("=")
        if number.strip().isdigit():
            params[name.strip().lower()] = int(number.strip())
    return params


async def _read_response(conn: Conn, head_only: bool) -> tuple[int, dict[str, str], bytes]:
    status_line = await conn.reader.readline()
    if not status_line:
        raise ConnectionResetError("server closed the connection before answering")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"bad status line {status_line!r}")
    headers: dict[str, str] = {}
    while True:
        line = await conn.reader.readline()
        if not line:
            raise ConnectionResetError("server closed the connection inside the headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = b"" if head_only or length == 0 else await conn.reader.readexactly(length)
    return int(parts[1]), headers, body


class PoolDriver(AsyncDriver):
    stack = "pl-timing-pool"
    variant = "reference"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        missing = {k: "not a knob this pool has" for k in knobs if k not in SUPPORTED_KNOBS}
        if knobs.get("block_when_full") is False:
            missing["block_when_full"] = "this pool always waits at its limit"
        return missing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool: Pool | None = None

    def describe(self) -> str:
        return f"pl_timing_agents variant={self.variant} knobs={self.knobs}"

    async def open(self) -> None:
        self.pool = Pool(self.variant, self.knobs)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    async def request(self, phase: Phase) -> Outcome:
        coro = self._request(phase)
        if phase.timeout_ms is not None:
            return await asyncio.wait_for(coro, phase.timeout_ms / 1000.0)
        return await coro

    async def _request(self, phase: Phase) -> Outcome:
        assert self.pool is not None
        url = urllib.parse.urlsplit(self.url(phase))
        hp = self.pool.host_pool(url.hostname or "127.0.0.1", url.port or 80)
        target = url.path + (f"?{url.query}" if url.query else "")
        retry = phase.method in ("GET", "HEAD") and self.variant != "reuses-dead-connections"
        try:
            return await self._exchange(hp, phase, target)
        except RetryableError as exc:
            if not retry:
                raise (exc.__cause__ or exc) from None
            return await self._exchange(hp, phase, target)

    async def _exchange(self, hp: HostPool, phase: Phase, target: str) -> Outcome:
        assert self.pool is not None
        conn, reused = await self.pool.acquire(hp)
        body = phase.body.encode() if phase.body is not None else b""
        head = [f"{phase.method} {target} HTTP/1.1", f"Host: {hp.host}:{hp.port}"]
        if not self.pool.keepalive:
            head.append("Connection: close")
        if body or phase.method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        got_bytes = False
        try:
            conn.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await conn.writer.drain()
            conn.requests += 1
            status, headers, _ = await _read_response(conn, phase.method == "HEAD")
            got_bytes = True
        except BaseException as exc:
            if self.variant == "reuses-dead-connections" and not isinstance(exc, asyncio.CancelledError):
                self.pool.release(hp, conn, reusable=True)  # the broken part: back it goes
            else:
                self.pool._discard(hp, conn)
            if reused and not got_bytes and isinstance(exc, (ConnectionError, OSError, asyncio.IncompleteReadError)):
                raise RetryableError(describe_error(exc)) from exc
            raise
        keep = self.pool.keepalive and "close" not in headers.get("connection", "").lower()
        if self.variant != "ignores-keepalive-header":
            params = _keepalive_params(headers.get("keep-alive"))
            if "timeout" in params:
                conn.idle_timeout_s = float(params["timeout"])
            if "max" in params and params["max"] <= 1:
                keep = False
        self.pool.release(hp, conn, reusable=keep)
        return Outcome(status=status, reused=reused, local_port=conn.local_port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.broken_peers.pl_timing_agents")
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--plan", required=True)
    for flag, knob in KNOB_FLAGS.items():
        p.add_argument(flag, dest=f"knob_{knob}", default=None)
    args = p.parse_args(argv)
    try:
        urls = split_urls(args.url)
        for url in urls:
            check_loopback(urllib.parse.urlsplit(url).hostname or "", namespaced=True)
        with open(args.plan, encoding="utf-8") as f:
            plan = parse_plan(json.load(f), url_count=len(urls), strict_knobs=False)
        flags = {k: knob_from_text(k, getattr(args, f"knob_{k}")) for k in KNOBS if getattr(args, f"knob_{k}") is not None}
        if flags:
            plan = Plan(phases=plan.phases, knobs={**plan.knobs, **parse_knobs(flags)})
    except (OSError, ValueError, PlanError) as exc:
        print(f"pl_timing_agents: bad arguments or plan: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_PLAN
    emit = Emitter()
    missing = PoolDriver.unsupported(plan.knobs, plan.ops)
    if missing:
        emit({"unsupported": sorted(missing), "detail": missing})
        return EXIT_UNSUPPORTED
    driver = PoolDriver(plan, urls, emit)
    driver.variant = args.variant
    print(f"pl_timing_agents: {driver.describe()} urls={urls} t={time.time():.3f}", file=sys.stderr, flush=True)
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
