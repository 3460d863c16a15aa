"""The three error families, kept apart (STYLE.md: urllib3 exceptions).

- ``HarnessError``: our bug or a bad configuration (bad manifest, unknown knob).
- ``SetupError``: the environment is not as needed (port busy, Toxiproxy missing, peer never ready).
- ``ConformanceFailure``: the peer misbehaved; carries requirement, expected, actual and a
  history excerpt so the failure reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HarnessError(Exception):
    """The harness itself is wrong or misconfigured; fix the harness or the config."""


class SetupError(Exception):
    """The environment cannot run the case (a missing tool, a busy port, a peer that never got ready)."""


class ConformanceFailure(AssertionError):
    """A peer violated a requirement.

    ``verdict`` may force the grade ("FAILED" or "NON-STRICT"); when None the case's level
    decides (MUST -> FAILED, SHOULD -> NON-STRICT).
    """

    def __init__(
        self,
        requirement: str,
        expected: Any,
        actual: Any,
        *,
        excerpt: Sequence[dict] = (),
        verdict: str | None = None,
        hint: str = "",
    ) -> None:
        self.requirement = requirement
        self.expected = expected
        self.actual = actual
        self.excerpt = list(excerpt)
        self.verdict = verdict
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        lines = [
            f"requirement: {self.requirement}",
            f"expected:    {self.expected}",
            f"actual:      {self.actual}",
        ]
        if self.hint:
            lines.append(f"hint:        {self.hint}")
        if self.excerpt:
            lines.append("history excerpt:")
            lines.extend(f"  {_fmt_event(e)}" for e in self.excerpt)
        return "\n".join(lines)


class Late(ConformanceFailure):
    """The behaviour was right but outside its timing band: always NON-STRICT."""

    def __init__(self, requirement: str, expected: Any, actual: Any, **kw: Any) -> None:
        kw.setdefault("verdict", "NON-STRICT")
        super().__init__(requirement, expected, actual, **kw)


class Unimplemented(Exception):
    """The peer lacks a capability or knob the case needs (UNIMPLEMENTED, not a failure)."""


def _fmt_event(event: dict) -> str:
    t = event.get("t_ms")
    rest = {k: v for k, v in event.items() if k != "t_ms"}
    return f"{t:>10.1f} ms  {rest}" if isinstance(t, (int, float)) else str(event)
