"""A Jepsen-style append-only history of one case (SPEC §4.6).

Every actor that matters writes here: client operations (``invoke`` then ``ok``/``fail``/``info``),
faults and their healing, observations, notes and run metadata. Each event carries:

- ``seq``: 0, 1, 2, ... in append order (the total order checkers rely on);
- ``t_ms``: monotonic milliseconds since the history started (``harness.wait.now_ms``), the
  clock of every timing band;
- ``wall_ms``: epoch milliseconds, to line events up with peer logs and agent events;
- ``kind``: invoke | ok | fail | info | fault | healed | observe | note | meta (or any custom kind).

Events are written to a JSONL file as they happen (one flushed line each, so a crashed or hung
case still leaves its history) and kept in memory for the checkers. Values that JSON cannot hold
become their ``repr``, in memory as on disk, so a loaded history equals the live one.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessError
from harness.observe.checks import excerpt_for
from harness.wait import now_ms

__all__ = ["History", "RESERVED_FIELDS", "json_safe"]

# Filled in by ``append``; a caller passing one of these would silently corrupt the order.
RESERVED_FIELDS = frozenset({"seq", "t_ms", "wall_ms", "kind"})


def json_safe(value: Any) -> Any:
    """Return ``value`` as plain JSON data: containers recursed, anything else as its ``repr``.

    Tuples and sets become lists (sets sorted by repr so the output is stable), dict keys become
    strings, non-finite floats become their repr (JSON has no NaN).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [json_safe(v) for v in sorted(value, key=repr)]
    return repr(value)


class History:
    """The append-only event log of one case; safe to append to from any thread.

    Parameters:
        path: the JSONL file to write (created with its folders, truncated if present);
            ``None`` keeps the history in memory only.

    Events returned by any method are copies: mutating them does not change the history.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.start_mono_ms = now_ms()
        self.start_wall_ms = time.time() * 1000.0
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    # -- writing ---------------------------------------------------------------------------

    def append(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        """Record one event of ``kind`` with ``fields``; returns (a copy of) the stored event."""
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise HarnessError(
                f"history event {kind!r} passes reserved field(s) {sorted(clash)}; "
                "the history sets seq, t_ms, wall_ms and kind itself: rename the field"
            )
        payload = json_safe(fields)
        with self._lock:
            # Time is read under the lock so that seq order and t_ms order never disagree.
            event = {
                "seq": len(self._events),
                "t_ms": round(now_ms() - self.start_mono_ms, 3),
                "wall_ms": round(time.time() * 1000.0, 3),
                "kind": str(kind),
                **payload,
            }
            self._events.append(event)
            self._write_line(json.dumps(event, ensure_ascii=False))
        return dict(event)

    def invoke(self, process: str, f: str, value: Any = None) -> dict[str, Any]:
        """``process`` starts operation ``f`` (Jepsen ``:invoke``)."""
        return self.append("invoke", process=process, f=f, value=value)

    def ok(self, process: str, f: str, value: Any = None) -> dict[str, Any]:
        """Operation ``f`` of ``process`` completed and took effect."""
        return self.append("ok", process=process, f=f, value=value)

    def fail(self, process: str, f: str, value: Any = None, error: Any = None) -> dict[str, Any]:
        """Operation ``f`` of ``process`` definitely did not take effect."""
        return self.append("fail", process=process, f=f, value=value, error=error)

    def info(self, process: str, f: str, value: Any = None) -> dict[str, Any]:
        """Operation ``f`` of ``process`` ended indeterminately (timeout: may or may not have happened)."""
        return self.append("info", process=process, f=f, value=value)

    def fault(self, action: str, **detail: Any) -> dict[str, Any]:
        """A fault was injected (``proxy_down``, ``toxic_added``, ``kill``, ``pause``, ...)."""
        return self.append("fault", action=action, **detail)

    def healed(self, action: str, **detail: Any) -> dict[str, Any]:
        """A fault was removed (``proxy_up``, ``toxic_removed``, ``resume``, ...)."""
        return self.append("healed", action=action, **detail)

    def observe(self, what: str, value: Any) -> dict[str, Any]:
        """An observation: a ``current`` snapshot, socket counts, agent events, a ledger."""
        return self.append("observe", what=what, value=value)

    def note(self, text: str) -> dict[str, Any]:
        """Free text for the human reading the history."""
        return self.append("note", text=text)

    def meta(self, **kv: Any) -> dict[str, Any]:
        """Run metadata: seed, peer names, knobs."""
        return self.append("meta", **kv)

    def close(self) -> None:
        """Close the file; idempotent. Late appends (a stray log pump) still reach the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def events(
        self,
        kind: str | Collection[str] | None = None,
        since_ms: float | None = None,
        until_ms: float | None = None,
    ) -> list[dict[str, Any]]:
        """Events in order, optionally of ``kind`` (one or several) with ``since_ms <= t_ms <= until_ms``."""
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        return [
            dict(e)
            for e in self._snapshot()
            if (kinds is None or e["kind"] in kinds)
            and (since_ms is None or e["t_ms"] >= since_ms)
            and (until_ms is None or e["t_ms"] <= until_ms)
        ]

    def around(
        self, t_ms: float, before_ms: float = 1000.0, after_ms: float = 1000.0, limit: int = 40
    ) -> list[dict[str, Any]]:
        """The events near ``t_ms`` (at most ``limit``, nearest first kept, in order): a failure excerpt."""
        return excerpt_for(self._snapshot(), t_ms, before_ms=before_ms, after_ms=after_ms, limit=limit)

    def first(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first event for which ``pred`` holds, or None."""
        for event in self._snapshot():
            if pred(event):
                return dict(event)
        return None

    def elapsed_ms(self) -> float:
        """Milliseconds since the history started, on the same clock as ``t_ms``."""
        return now_ms() - self.start_mono_ms

    def relative_ms(self, mono_ms: float) -> float:
        """Convert a monotonic timestamp (``now_ms()``, ``Waited.at_mono_ms``) to history ``t_ms``."""
        return mono_ms - self.start_mono_ms

    def relative_ms_from_wall(self, wall_ms: float) -> float:
        """Convert an epoch-ms timestamp (agent events) to history ``t_ms`` (as exact as the wall clock)."""
        return wall_ms - self.start_wall_ms

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events())

    @classmethod
    def load(cls, path: Path) -> History:
        """Read a JSONL history back (in memory only; appends do not touch ``path``).

        A torn last line (the writer died mid-line) is dropped; a bad line elsewhere is an error.
        """
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        history = cls(None)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):
                    break
                raise HarnessError(f"{path}:{number}: not a JSON history line ({exc})") from exc
            history._events.append(event)
        if history._events:
            first = history._events[0]
            history.start_wall_ms = first["wall_ms"] - first["t_ms"]
        return history

    # -- internals -------------------------------------------------------------------------

    def _snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def _write_line(self, line: str) -> None:
        # Called with the lock held. Flush per line: the history must survive a crash or a kill.
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        elif self.path is not None:
            with self.path.open("a", encoding="utf-8") as late:
                late.write(line + "\n")
