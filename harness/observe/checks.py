"""Pure helpers over history events (SPEC §4.6): no I/O, no clocks, no pytest.

An event is a dict as written by ``History`` (``seq``, ``t_ms``, ``kind`` and its fields).
``excerpt_for`` picks the events around a violation for a ``ConformanceFailure``; ``format_event``
renders one as a line of a report. The checks themselves live with the steps that make them
(``harness/scenarios``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["excerpt_for", "format_event"]


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
