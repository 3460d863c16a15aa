"""Pure checkers over history events (SPEC §4.6): no I/O, no clocks, no pytest.

An event is a dict as written by ``History`` (``seq``, ``t_ms``, ``kind`` and its fields). The
suites turn what these return into a ``ConformanceFailure`` with ``excerpt_for`` as its excerpt.
More checkers arrive with the suites; keep each one a small function of its inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

__all__ = [
    "TimingClass",
    "classify_timing",
    "count_events",
    "event_matches",
    "excerpt_for",
    "first_event",
    "format_event",
    "within_band",
]

TimingClass = Literal["OK", "LATE"]

_MISSING = object()


def within_band(t_ms: float, earliest_ms: float, latest_ms: float) -> bool:
    """True if ``earliest_ms <= t_ms <= latest_ms`` (both ends inclusive)."""
    if earliest_ms > latest_ms:
        raise ValueError(f"empty band: earliest {earliest_ms} ms is after latest {latest_ms} ms")
    return earliest_ms <= t_ms <= latest_ms


def classify_timing(actual_ms: float, bound_ms: float, tolerance_ms: float) -> TimingClass:
    """"OK" if ``actual_ms`` is within ``bound_ms + tolerance_ms``, else "LATE".

    Only for behaviour that did happen: something that never happened is a failure, not late.
    """
    if tolerance_ms < 0:
        raise ValueError(f"tolerance must be >= 0 ms, got {tolerance_ms}")
    return "OK" if actual_ms <= bound_ms + tolerance_ms else "LATE"


def event_matches(event: dict[str, Any], /, **match: Any) -> bool:
    """True if every ``field=value`` holds; a callable value is a predicate on the field.

    A field the event lacks never matches (not even ``field=None``). The arguments before ``/``
    are positional-only so that any field name (``event=``, ``kind=``) can be matched.
    """
    for field, wanted in match.items():
        got = event.get(field, _MISSING)
        if got is _MISSING:
            return False
        if callable(wanted):
            if not wanted(got):
                return False
        elif got != wanted:
            return False
    return True


def count_events(history_events: Iterable[dict[str, Any]], kind: str, /, **match: Any) -> int:
    """How many events of ``kind`` match ``match`` (see ``event_matches``)."""
    return sum(1 for e in history_events if e.get("kind") == kind and event_matches(e, **match))


def first_event(events: Iterable[dict[str, Any]], /, **match: Any) -> dict[str, Any] | None:
    """The first event (in the given order) matching ``match``, or None. ``kind=`` is a field like any."""
    for event in events:
        if event_matches(event, **match):
            return event
    return None


def excerpt_for(
    events: Sequence[dict[str, Any]],
    t_ms: float,
    *,
    before_ms: float = 1000.0,
    after_ms: float = 1000.0,
    limit: int = 40,
) -> list[dict[str, Any]]:
    """The events within [t_ms - before_ms, t_ms + after_ms], in order, as copies.

    When more than ``limit`` fall in the window the ones nearest ``t_ms`` are kept: the moment
    of the violation matters more than the edges of the window.
    """
    window: list[tuple[int, dict[str, Any]]] = [
        (i, e) for i, e in enumerate(events) if t_ms - before_ms <= e["t_ms"] <= t_ms + after_ms
    ]
    if len(window) > limit:
        nearest = sorted(window, key=lambda pair: (abs(pair[1]["t_ms"] - t_ms), pair[0]))
        window = sorted(nearest[: max(limit, 0)], key=lambda pair: pair[0])
    return [dict(e) for _, e in window]


def format_event(event: dict[str, Any]) -> str:
    """One event as one readable line: ``  1234.5 ms  fault    {"action": "kill", ...}``."""
    rest = {k: v for k, v in event.items() if k not in ("seq", "t_ms", "wall_ms", "kind")}
    t_ms = event.get("t_ms")
    when = f"{t_ms:>9.1f} ms" if isinstance(t_ms, (int, float)) else "        ? ms"
    return f"{when}  {str(event.get('kind', '?')):<8} {json.dumps(rest, ensure_ascii=False, default=repr)}"
