"""Verdicts, case levels, one case result, and the grading rules of SPEC §2.

``grade`` is the single place where an outcome (nothing raised, or the exception a case raised)
becomes a verdict; the pytest plugin only maps verdicts onto pytest outcomes with
``PYTEST_OUTCOME`` and never decides a verdict itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from harness.errors import ConformanceFailure, HarnessError, Unimplemented
from harness.observe.checks import format_event
from harness.observe.history import json_safe

__all__ = [
    "FAILING_VERDICTS",
    "PYTEST_OUTCOME",
    "CaseResult",
    "Level",
    "PytestOutcome",
    "Verdict",
    "describe_outcome",
    "grade",
    "run_failed",
    "worst",
]


class Verdict(StrEnum):
    """The graded outcome of one case against one peer combination (SPEC §2).

    ``ERROR`` is not a verdict about the peer: the run itself broke (harness bug, bad config,
    environment). It is reported next to the verdicts so nothing disappears, and it makes the
    run exit non-zero like ``FAILED`` does.
    """

    OK = "OK"
    NON_STRICT = "NON-STRICT"
    FAILED = "FAILED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INFORMATIONAL = "INFORMATIONAL"
    ERROR = "ERROR"


class Level(StrEnum):
    """How binding a case's requirement is."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    INFO = "INFO"


class PytestOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


# SPEC §2: FAILED -> failure; OK / NON-STRICT / INFORMATIONAL -> pass; UNIMPLEMENTED -> skip.
PYTEST_OUTCOME: Mapping[Verdict, PytestOutcome] = MappingProxyType(
    {
        Verdict.OK: PytestOutcome.PASSED,
        Verdict.NON_STRICT: PytestOutcome.PASSED,
        Verdict.INFORMATIONAL: PytestOutcome.PASSED,
        Verdict.UNIMPLEMENTED: PytestOutcome.SKIPPED,
        Verdict.FAILED: PytestOutcome.FAILED,
        Verdict.ERROR: PytestOutcome.FAILED,
    }
)

# A run exits non-zero iff some result has one of these.
FAILING_VERDICTS = frozenset({Verdict.FAILED, Verdict.ERROR})

# What a ConformanceFailure may force, whatever the level says.
_FORCEABLE = {"FAILED": Verdict.FAILED, "NON-STRICT": Verdict.NON_STRICT}


def grade(level: Level | str, outcome: BaseException | None) -> Verdict:
    """Turn how a case ended into its verdict.

    ``outcome`` is None when the case body returned, else the exception it raised.

    ========================  ===========  ============  =============
    outcome                   MUST         SHOULD        INFO
    ========================  ===========  ============  =============
    returned                  OK           OK            INFORMATIONAL
    ConformanceFailure        FAILED       NON-STRICT    ERROR
    ... verdict="FAILED"      FAILED       FAILED        ERROR
    ... verdict="NON-STRICT"  NON-STRICT   NON-STRICT    ERROR
    Late (forces NON-STRICT)  NON-STRICT   NON-STRICT    ERROR
    Unimplemented             UNIMPLEMENTED (any level)
    anything else             ERROR (any level)
    ========================  ===========  ============  =============

    An INFO case records behaviour and has no requirement to violate, so a ConformanceFailure
    there is a bug in the case: ERROR. So is a forced verdict other than FAILED / NON-STRICT, and
    a bare ``AssertionError`` (cases raise structured failures, STYLE.md).
    """
    level = Level(level)
    if outcome is None:
        return Verdict.INFORMATIONAL if level is Level.INFO else Verdict.OK
    if isinstance(outcome, Unimplemented):
        return Verdict.UNIMPLEMENTED
    if not isinstance(outcome, ConformanceFailure) or level is Level.INFO:
        return Verdict.ERROR
    if outcome.verdict is None:
        return Verdict.FAILED if level is Level.MUST else Verdict.NON_STRICT
    return _FORCEABLE.get(outcome.verdict, Verdict.ERROR)


def describe_outcome(outcome: BaseException | None, case_requirement: str = "") -> dict[str, Any]:
    """The ``detail``/``expected``/``actual`` fields a ``CaseResult`` gets from an outcome.

    For a ConformanceFailure the detail holds what ``expected``/``actual`` do not: the violated
    requirement when it is not the case's own (a shared verifier's), the hint, and the history
    excerpt, one event a line.
    """
    if outcome is None:
        return {"detail": "", "expected": None, "actual": None}
    if isinstance(outcome, ConformanceFailure):
        lines = []
        if outcome.verdict not in (None, *_FORCEABLE):
            lines.append(f"harness bug: unknown forced verdict {outcome.verdict!r} (use FAILED or NON-STRICT)")
        if outcome.requirement and outcome.requirement != case_requirement:
            lines.append(f"requirement: {outcome.requirement}")
        if outcome.hint:
            lines.append(f"hint: {outcome.hint}")
        if outcome.excerpt:
            lines.append("history excerpt:")
            lines.extend(f"  {format_event(e)}" for e in outcome.excerpt)
        return {"detail": "\n".join(lines), "expected": outcome.expected, "actual": outcome.actual}
    if isinstance(outcome, Unimplemented):
        return {"detail": str(outcome), "expected": None, "actual": None}
    return {"detail": f"{type(outcome).__name__}: {outcome}", "expected": None, "actual": None}


_DERIVED = ("rate", "varying")

# The worst verdict of several trials (any MUST violation makes the cell FAILED).
WORST_FIRST = (Verdict.ERROR, Verdict.FAILED, Verdict.NON_STRICT, Verdict.UNIMPLEMENTED, Verdict.INFORMATIONAL,
               Verdict.OK)


def worst(verdicts: Iterable[Verdict | str]) -> Verdict:
    seen = {Verdict(v) for v in verdicts}
    return next((v for v in WORST_FIRST if v in seen), Verdict.ERROR)


def run_failed(verdicts: Iterable[Verdict | str]) -> bool:
    """True if the run must exit non-zero: some case FAILED or ERRORed."""
    return any(Verdict(v) in FAILING_VERDICTS for v in verdicts)


@dataclass(kw_only=True)
class CaseResult:
    """One cell of the matrix: a case run against one peer combination.

    ``peer`` is the column label (``"client=ref server=ref"``); ``params`` maps each role to its
    peer name plus any extra parameters. ``history`` and ``log_paths`` are paths relative to the
    report folder. ``to_dict``/``from_dict`` round-trip through JSON (xdist ``user_properties``).
    """

    case_id: str
    level: Level
    requirement: str
    title: str
    area: str
    peer: str
    verdict: Verdict
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    expected: Any = None
    actual: Any = None
    duration_ms: float = 0.0
    history: str | None = None
    log_paths: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    nodeid: str = ""
    # Against the expectations (harness/expectations.py): the verdicts expected here, the entry
    # that says so (None: the default), and whether this verdict is unexpected and why.
    expected_verdicts: list[str] = field(default_factory=list)
    expectation: dict[str, Any] | None = None
    unexpected: bool = False
    unexpected_why: str = ""
    # --trials N: every trial's verdict, in order (the cell's verdict is the worst of them).
    trials: list[str] = field(default_factory=list)
    # Faults the case applied and how many touched a live connection (harness.faults.hits);
    # None when it applied none.
    fault_hits: dict[str, int] | None = None

    @property
    def varying(self) -> bool:
        return len(set(self.trials)) > 1

    @property
    def rate(self) -> str:
        """``FAILED 2/5``: how often the cell's verdict came up over its trials ("" for one run)."""
        if len(self.trials) <= 1:
            return ""
        return f"{self.verdict} {sum(1 for v in self.trials if v == str(self.verdict))}/{len(self.trials)}"

    def __post_init__(self) -> None:
        self.level = Level(self.level)
        self.verdict = Verdict(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; enums as their strings, odd values as their repr."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["level"] = str(self.level)
        data["verdict"] = str(self.verdict)
        data["duration_ms"] = round(float(self.duration_ms), 3)
        data["rate"], data["varying"] = self.rate, self.varying  # derived, for readers of index.json
        return json_safe(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseResult:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in _DERIVED}
        unknown = set(data) - known
        if unknown:
            raise HarnessError(
                f"case result has unknown field(s) {sorted(unknown)}: written by another "
                "connformance version? Known fields: " + ", ".join(sorted(known))
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise HarnessError(f"cannot read case result {dict(data)!r}: {exc}") from exc
