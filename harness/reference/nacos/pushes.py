"""Server -> client pushes on the bi-stream (research/nacos-protocol.md §2.3, SPEC SR-20, TC-10).

- ``requestId`` comes from one server-global counter, a decimal string starting at 1
  (``PushAckIdGenerator``); bodies carry ``"headers": {}`` and ``"module": "internal"``.
- A push waits for the client's Response with the same ``requestId`` *on the same
  connection*, up to its timeout. The answer is judged by the caller, by ``resultCode``
  alone (Go answers resets with resultCode 200 and ``success: false``).
- A pending push is released (fails with ``ConnectionClosed``) as soon as its connection's
  transport dies or its stream ends: nothing waits on a dead connection (TC-10).
- Every push is recorded for the ``pushes`` extension: who, what, and how it was answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from harness.protocol.nacos import codec

from .connections import SeqLog, epoch_ms

__all__ = ["ConnectionClosed", "PushCenter", "PushChannel", "PushTimeout"]

log = logging.getLogger("nacos-ref.pushes")


class ConnectionClosed(Exception):
    """The push cannot be delivered or answered: stream or transport gone
    (``ConnectionAlreadyClosedException`` in Nacos)."""


class PushTimeout(Exception):
    """No answer within the push's timeout."""


class PushChannel:
    """The write side of one bi-stream. grpc.aio allows one write at a time per call, and
    pushes come from many tasks (admin, ejector, setup rejection), so writes are serialised."""

    def __init__(self, write: Callable[[Any], Awaitable[None]], connection_id: str) -> None:
        self._write = write
        self.connection_id = connection_id
        self.closed = False
        self._lock = asyncio.Lock()

    async def send(self, payload: Any) -> None:
        if self.closed:
            raise ConnectionClosed(f"stream of {self.connection_id} has ended")
        async with self._lock:
            try:
                await self._write(payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # grpc raises several types once the call is over
                self.closed = True
                raise ConnectionClosed(f"write to {self.connection_id} failed: {exc!r}") from exc


@dataclass
class _Pending:
    future: asyncio.Future
    record: dict[str, Any]
    channel: PushChannel
    started_ms: float


class PushCenter:
    """Request ids, pending pushes by (connectionId, requestId), and the push log."""

    def __init__(self) -> None:
        self._last_request_id = 0
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.log = SeqLog()

    def next_request_id(self) -> str:
        self._last_request_id += 1
        return str(self._last_request_id)

    def pending_count(self, connection_id: str | None = None) -> int:
        return sum(1 for (cid, _) in self._pending if connection_id is None or cid == connection_id)

    async def push(self, connection_id: str, channel: PushChannel | None, type_name: str,
                   fields: dict[str, Any], *, timeout_ms: float) -> codec.Message:
        """Send one server request and wait for its answer. Raises ``ConnectionClosed`` or
        ``PushTimeout``; returns the client's Response otherwise (any resultCode)."""
        request_id = self.next_request_id()
        payload = codec.server_push(type_name, request_id, **fields)
        record = self.log.append(
            connectionId=connection_id, type=type_name, requestId=request_id,
            body=codec.decode(payload).body, answered=False, answer_result_code=None, answer_ms=None,
            outcome="pending",
        )
        if channel is None:
            record["outcome"] = "closed"
            raise ConnectionClosed(f"{connection_id} has no stream to push on")
        loop = asyncio.get_running_loop()
        key = (connection_id, request_id)
        pending = _Pending(loop.create_future(), record, channel, epoch_ms())
        self._pending[key] = pending
        log.info("push %s requestId=%s to %s %s", type_name, request_id, connection_id,
                 {k: v for k, v in fields.items() if v is not None})
        try:
            async with asyncio.timeout(timeout_ms / 1000.0):
                await channel.send(payload)
                answer: codec.Message = await pending.future
            record["outcome"] = "answered"
            return answer
        except TimeoutError:
            record["outcome"] = "timeout"
            raise PushTimeout(f"{type_name} requestId={request_id} to {connection_id}: "
                              f"no answer within {timeout_ms:.0f} ms") from None
        except ConnectionClosed:
            record["outcome"] = "closed"
            raise
        finally:
            self._pending.pop(key, None)

    def answer(self, connection_id: str, msg: codec.Message) -> bool:
        """A client Response arrived on ``connection_id``'s stream: complete its push."""
        request_id = msg.request_id
        pending = self._pending.get((connection_id, request_id)) if request_id else None
        if pending is None:
            log.info("answer %s requestId=%s from %s matches no pending push", msg.type, request_id, connection_id)
            return False
        record = pending.record
        record["answered"] = True
        record["answer_result_code"] = msg.result_code
        record["answer_ms"] = epoch_ms() - pending.started_ms
        if not pending.future.done():
            pending.future.set_result(msg)
        return True

    def release(self, connection_id: str, reason: str) -> int:
        """Fail every pending push of a dead connection now (no wait for the timeout)."""
        return self._release(lambda cid, p: cid == connection_id, f"{connection_id}: {reason}")

    def release_channel(self, channel: PushChannel, reason: str) -> int:
        """Fail the pushes sent on a stream that ended: their answers can no longer arrive."""
        return self._release(lambda cid, p: p.channel is channel, f"{channel.connection_id}: {reason}")

    def _release(self, match: Callable[[str, _Pending], bool], why: str) -> int:
        n = 0
        for (cid, _rid), pending in list(self._pending.items()):
            if match(cid, pending) and not pending.future.done():
                pending.future.set_exception(ConnectionClosed(why))
                n += 1
        if n:
            log.info("released %d pending push(es), %s", n, why)
        return n
