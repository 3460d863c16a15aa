"""Bounded waits on conditions. Never sleep-then-assert: poll a condition with a deadline and
record when it became true."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waited(Generic[T]):
    """A condition that became true: its value, and when (monotonic ms) and after how long."""

    value: T
    at_mono_ms: float
    elapsed_ms: float


class WaitTimeout(Exception):
    """The condition did not hold within its deadline. ``last`` is the last value seen."""

    def __init__(self, what: str, timeout_ms: float, last: object, last_error: BaseException | None):
        self.what = what
        self.timeout_ms = timeout_ms
        self.last = last
        self.last_error = last_error
        detail = f"; last error: {last_error!r}" if last_error else ""
        super().__init__(f"waited {timeout_ms:.0f} ms for {what}; last value: {last!r}{detail}")


def now_ms() -> float:
    """Monotonic milliseconds; the clock of every history and every band."""
    return time.monotonic() * 1000.0


def eventually(
    probe: Callable[[], T],
    *,
    timeout_ms: float,
    what: str,
    interval_ms: float = 20.0,
    accept: Callable[[T], bool] = bool,
    swallow: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> Waited[T]:
    """Call ``probe`` until ``accept(value)`` holds or ``timeout_ms`` passes.

    Exceptions listed in ``swallow`` count as "not yet" (a peer still starting refuses
    connections). Raises ``WaitTimeout`` with the last value and error.
    """
    start = now_ms()
    deadline = start + timeout_ms
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            last, last_error = value, None
            if accept(value):
                t = now_ms()
                return Waited(value, t, t - start)
        except swallow as exc:
            last_error = exc
        if now_ms() >= deadline:
            raise WaitTimeout(what, timeout_ms, last, last_error)
        # Polling interval, not synchronisation: the loop exits on the condition.
        time.sleep(min(interval_ms, max(0.0, deadline - now_ms())) / 1000.0)


def holds_for(
    probe: Callable[[], T],
    *,
    duration_ms: float,
    what: str,
    interval_ms: float = 50.0,
    accept: Callable[[T], bool] = bool,
) -> tuple[bool, T | None, float]:
    """Check that ``accept(probe())`` stays true for ``duration_ms``.

    Returns (held, first_bad_value, ms_when_broken). Used for "never more than n" checks.
    """
    start = now_ms()
    while True:
        value = probe()
        if not accept(value):
            return False, value, now_ms() - start
        if now_ms() - start >= duration_ms:
            return True, None, now_ms() - start
        time.sleep(interval_ms / 1000.0)


def settled(probe: Callable[[], T], *, stable_ms: float, timeout_ms: float, what: str,
            accept: Callable[[T], bool] = lambda _: True, interval_ms: float = 50.0) -> T:
    """Wait until ``probe()`` returns one accepted value, unchanged for ``stable_ms``; raises
    WaitTimeout after ``timeout_ms``. For counts that move for a while and then stay put."""
    seen: dict[str, object] = {"value": object(), "since": now_ms()}

    def watch() -> tuple[T, float]:
        value, t = probe(), now_ms()
        if value != seen["value"]:
            seen.update(value=value, since=t)
        return value, t - float(seen["since"])  # type: ignore[arg-type]

    return eventually(watch, accept=lambda vt: accept(vt[0]) and vt[1] >= stable_ms, timeout_ms=timeout_ms,
                      what=what, interval_ms=interval_ms).value[0]
