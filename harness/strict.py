"""Strict parsing of what arrives from the wire or an admin URL (the reference peers are fuzzed:
they must answer nonsense with a clear refusal, never a traceback).

- Numbers are ASCII only: ``str.isdigit()`` accepts ``²`` and ``٣``, and ``int()`` accepts the
  second, so a check with one and a parse with the other crash on the first and misread the
  second. Here a number is ``[0-9]`` text of bounded length, or nothing.
- Floats are finite: ``nan``, ``inf`` and what overflows to it are refused.
- JSON in is bounded in nesting (a deeply nested body would blow the parser's recursion) and has
  no ``NaN``/``Infinity`` (not JSON); JSON out is strict (``allow_nan=False``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "StrictError", "ascii_int", "dumps", "finite_float", "loads"]

MAX_JSON_DEPTH = 64
_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_FLOAT = re.compile(r"[+-]?([0-9]{1,18}(\.[0-9]{0,18})?|\.[0-9]{1,18})([eE][+-]?[0-9]{1,3})?", re.ASCII)


class StrictError(ValueError):
    """Input that a strict parser refuses; the message says what was wrong."""


def ascii_int(text: Any, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """The integer ``text`` spells in ASCII digits (an int passes as itself), else None; out of
    ``[minimum, maximum]`` is None too."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        value = text
    elif isinstance(text, str) and _INT.fullmatch(text.strip()):
        value = int(text.strip())
    else:
        return None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return None
    return value


def finite_float(text: Any) -> float | None:
    """The finite float ``text`` spells in ASCII, else None (no nan, inf or overflow)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    elif isinstance(text, str) and _FLOAT.fullmatch(text.strip()):
        value = float(text.strip())
    else:
        return None
    return value if math.isfinite(value) else None


def _depth(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` (strings skipped); O(len)."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _no_constants(name: str) -> Any:
    raise StrictError(f"{name} is not JSON")


def _finite_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictError(f"number {text[:20]!r} overflows")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 64:
        raise StrictError(f"integer of {len(text)} digits")
    return int(text)


def loads(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses invalid UTF-8, nesting deeper than ``max_depth`` and
    ``NaN``/``Infinity``, each with a StrictError."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise StrictError(f"not UTF-8: {exc}") from None
    if _depth(text) > max_depth:
        raise StrictError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite_number, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise StrictError(f"not JSON: {exc}") from None


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes a bare ``NaN``/``Infinity``: a non-finite float is
    written as null (the one JSON value that says "no number")."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
