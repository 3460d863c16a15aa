"""The ledger's bookkeeping, free of sockets: one record per accepted TCP connection, the
serving slots of ``--max-connections``, and the JSON view served at ``GET /_ledger``.

Everything runs on the server's one event loop, so nothing here locks. Ordering uses a
sequence number per event rather than timestamps: two events in the same millisecond still
have an order, so ``max_simultaneous`` is exact (research/http-pools.md, Appendix B: compute it
from the ordered accept/close stream).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLOSED_BY", "ConnRecord", "Ledger", "Slots", "epoch_ms"]

# Who ended a connection (SPEC §4.5). The first close decision recorded wins.
CLOSED_BY = ("client", "client-reset", "server-idle", "server-close-hdr", "server-drop", "server-shutdown")
REQUEST_LOG_CAP = 1000  # per connection; ``requests`` keeps counting past it


def epoch_ms() -> float:
    return round(time.time() * 1000.0, 1)


@dataclass
class ConnRecord:
    id: int
    peer: str
    opened_ms: float
    open_seq: int
    served_ms: float | None = None  # got a serving slot (== opened_ms unless --max-connections queued it)
    serve_seq: int | None = None
    closed_ms: float | None = None
    close_seq: int | None = None
    closed_by: str | None = None
    close_reason: str | None = None
    close_mode: str | None = None  # "fin" | "rst" for the server's own closes
    requests: int = 0
    request_log: list[dict[str, Any]] = field(default_factory=list)
    admin: bool = False

    @property
    def is_open(self) -> bool:
        return self.closed_by is None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peer": self.peer,
            "opened_ms": self.opened_ms,
            "served_ms": self.served_ms,
            "closed_ms": self.closed_ms,
            "closed_by": self.closed_by,
            "close_reason": self.close_reason,
            "close_mode": self.close_mode,
            "requests": self.requests,
            "request_log": list(self.request_log),
        }


class Ledger:
    """The truth about connections. Admin connections (first request under ``/_ledger``) are
    marked and left out of every count and view."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._records: dict[int, ConnRecord] = {}
        self._epoch_seq = 0

    # -- events --------------------------------------------------------------------------
    def opened(self, peer: str) -> ConnRecord:
        record = ConnRecord(id=next(self._ids), peer=peer, opened_ms=epoch_ms(), open_seq=next(self._seq))
        self._records[record.id] = record
        return record

    def served(self, record: ConnRecord) -> None:
        if record.serve_seq is None:
            record.served_ms, record.serve_seq = epoch_ms(), next(self._seq)

    def request(self, record: ConnRecord, method: str, path: str, connection_hdr: str | None) -> dict[str, Any]:
        """Count one request; returns its log entry (the caller fills in ``status``)."""
        record.requests += 1
        entry: dict[str, Any] = {
            "n": record.requests, "t_ms": epoch_ms(), "method": method, "path": path,
            "connection": connection_hdr, "status": None,
        }
        if len(record.request_log) < REQUEST_LOG_CAP:
            record.request_log.append(entry)
        return entry

    def closed(self, record: ConnRecord, by: str, reason: str, mode: str | None = None) -> bool:
        """Record the end of ``record``; False (and no change) if it was already recorded."""
        if by not in CLOSED_BY:
            raise ValueError(f"closed_by {by!r} is not one of {CLOSED_BY}")
        if not record.is_open:
            return False
        record.closed_ms, record.close_seq = epoch_ms(), next(self._seq)
        record.closed_by, record.close_reason, record.close_mode = by, reason, mode
        return True

    def mark_admin(self, record: ConnRecord) -> None:
        record.admin = True
        self._records.pop(record.id, None)

    def reset(self) -> None:
        """Forget closed connections and restart the maxima from the connections open now
        (they are real and still tracked; their close will be recorded)."""
        self._epoch_seq = next(self._seq)
        self._records = {i: r for i, r in self._records.items() if r.is_open}

    # -- views ---------------------------------------------------------------------------
    def data_records(self) -> list[ConnRecord]:
        return [r for r in self._records.values() if not r.admin]

    def max_simultaneous(self, *, served: bool = False) -> int:
        """Most connections open (or, with ``served``, holding a serving slot) at one time
        since the last reset."""
        events: list[tuple[int, int]] = []
        for r in self.data_records():
            start = r.serve_seq if served else r.open_seq
            if start is None:
                continue
            events.append((max(start, self._epoch_seq), +1))
            if r.close_seq is not None:
                events.append((r.close_seq, -1))
        current = best = 0
        for _, delta in sorted(events):
            current += delta
            best = max(best, current)
        return best

    def view(self, config: dict[str, Any], queued: int) -> dict[str, Any]:
        records = sorted(self.data_records(), key=lambda r: r.id)
        return {
            "now_ms": epoch_ms(),
            "connections": [r.view() for r in records],
            "max_simultaneous": self.max_simultaneous(),
            "max_served_simultaneous": self.max_simultaneous(served=True),
            "open": sum(1 for r in records if r.is_open),
            "queued": queued,
            "config": config,
        }


class Slots:
    """Serving slots for ``--max-connections`` (-1: unlimited), handed out in request order.

    Like Tomcat's acceptor ``LimitLatch``: a connection over the limit is accepted but waits,
    not refused. ``request()`` returns a future that completes when the slot is held;
    ``give_up()`` returns a held slot or withdraws a pending request.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: set[asyncio.Future[None]] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return len(self._held)

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def request(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.limit < 0 or (self.in_use < self.limit and not self.queued):
            self._grant(future)
        else:
            self._waiters.append(future)
        return future

    def give_up(self, future: asyncio.Future[None]) -> None:
        """Return a held slot (handing it to the next waiter) or withdraw a pending request.
        Idempotent."""
        if future in self._held:
            self._held.discard(future)
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    self._grant(waiter)
                    return
        elif not future.done():
            future.cancel()

    def _grant(self, future: asyncio.Future[None]) -> None:
        self._held.add(future)
        future.set_result(None)
