"""Unit tests for verdict grading (SPEC §2), the pytest mapping, and CaseResult round trips."""

from __future__ import annotations

import json

import pytest

from harness.errors import ConformanceFailure, HarnessError, Late, SetupError, Unimplemented
from harness.report.verdicts import (
    FAILING_VERDICTS,
    PYTEST_OUTCOME,
    CaseResult,
    Level,
    PytestOutcome,
    Verdict,
    describe_outcome,
    grade,
    run_failed,
)

OK, NS, FAILED, UNIMPL, INFO, ERROR = (
    Verdict.OK,
    Verdict.NON_STRICT,
    Verdict.FAILED,
    Verdict.UNIMPLEMENTED,
    Verdict.INFORMATIONAL,
    Verdict.ERROR,
)

# outcome factory -> (MUST, SHOULD, INFO). Every row of SPEC §2 plus the harness-error rows.
GRADE_TABLE = {
    "returned": (lambda: None, (OK, OK, INFO)),
    "failure": (lambda: ConformanceFailure("r", 1, 2), (FAILED, NS, ERROR)),
    "failure forced FAILED": (lambda: ConformanceFailure("r", 1, 2, verdict="FAILED"), (FAILED, FAILED, ERROR)),
    "failure forced NON-STRICT": (
        lambda: ConformanceFailure("r", 1, 2, verdict="NON-STRICT"),
        (NS, NS, ERROR),
    ),
    "failure forced unknown": (lambda: ConformanceFailure("r", 1, 2, verdict="FAIL"), (ERROR, ERROR, ERROR)),
    "late": (lambda: Late("r", "<= 1250 ms", "1900 ms"), (NS, NS, ERROR)),
    "late forced FAILED": (lambda: Late("r", 1, 2, verdict="FAILED"), (FAILED, FAILED, ERROR)),
    "unimplemented": (lambda: Unimplemented("no knob idle_timeout_ms"), (UNIMPL, UNIMPL, UNIMPL)),
    "harness error": (lambda: HarnessError("bad manifest"), (ERROR, ERROR, ERROR)),
    "setup error": (lambda: SetupError("port busy"), (ERROR, ERROR, ERROR)),
    "bare assert": (lambda: AssertionError("x"), (ERROR, ERROR, ERROR)),
    "other exception": (lambda: RuntimeError("boom"), (ERROR, ERROR, ERROR)),
    "base exception": (lambda: KeyboardInterrupt(), (ERROR, ERROR, ERROR)),
}


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("row", list(GRADE_TABLE))
def test_grade_table(row: str, level: Level) -> None:
    """The whole table: every outcome at every level."""
    make_outcome, expected_by_level = GRADE_TABLE[row]
    expected = dict(zip(Level, expected_by_level, strict=True))[level]
    assert grade(level, make_outcome()) is expected


def test_grade_accepts_level_strings() -> None:
    assert grade("SHOULD", ConformanceFailure("r", 1, 2)) is Verdict.NON_STRICT
    with pytest.raises(ValueError, match="MAY"):
        grade("MAY", None)


def test_every_verdict_maps_to_a_pytest_outcome() -> None:
    """SPEC §2: FAILED fails, UNIMPLEMENTED skips, the rest pass; ERROR fails too."""
    assert set(PYTEST_OUTCOME) == set(Verdict)
    failing = {v for v, o in PYTEST_OUTCOME.items() if o is PytestOutcome.FAILED}
    assert failing == FAILING_VERDICTS == {Verdict.FAILED, Verdict.ERROR}
    assert PYTEST_OUTCOME[Verdict.UNIMPLEMENTED] is PytestOutcome.SKIPPED
    assert {v for v, o in PYTEST_OUTCOME.items() if o is PytestOutcome.PASSED} == {OK, NS, INFO}


def test_verdict_strings_are_the_spec_spelling() -> None:
    assert [str(v) for v in Verdict] == ["OK", "NON-STRICT", "FAILED", "UNIMPLEMENTED", "INFORMATIONAL", "ERROR"]
    assert Verdict("NON-STRICT") is Verdict.NON_STRICT
    assert json.dumps({"v": Verdict.NON_STRICT}) == '{"v": "NON-STRICT"}'


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [([], False), ([OK, NS, UNIMPL, INFO], False), ([OK, FAILED], True), (["OK", "ERROR"], True)],
)
def test_run_failed(verdicts: list, expected: bool) -> None:
    assert run_failed(verdicts) is expected


def test_describe_outcome_keeps_expected_actual_apart_from_the_detail() -> None:
    """The detail adds what expected/actual lack: a verifier's own requirement, hint, excerpt."""
    excerpt = [{"seq": 3, "t_ms": 1.5, "wall_ms": 1.0, "kind": "fault", "action": "kill"}]
    failure = ConformanceFailure("gone within 1 s", "absent", "present after 3 s", excerpt=excerpt, hint="check the reaper")
    fields = describe_outcome(failure, case_requirement="gone within 1 s")
    assert fields["expected"] == "absent" and fields["actual"] == "present after 3 s"
    assert fields["detail"].splitlines() == [
        "hint: check the reaper",
        "history excerpt:",
        '        1.5 ms  fault    {"action": "kill"}',
    ]
    shared = describe_outcome(ConformanceFailure("exactly one disconnected event", 1, 2), case_requirement="TC-01 ...")
    assert shared["detail"] == "requirement: exactly one disconnected event"
    assert describe_outcome(None) == {"detail": "", "expected": None, "actual": None}
    assert describe_outcome(Unimplemented("no knob"))["detail"] == "no knob"
    assert describe_outcome(SetupError("port 8848 busy"))["detail"] == "SetupError: port 8848 busy"
    bogus = describe_outcome(ConformanceFailure("r", 1, 2, verdict="FAIL"), case_requirement="r")
    assert "unknown forced verdict 'FAIL'" in bogus["detail"]


def make_result(**overrides) -> CaseResult:
    fields = {
        "case_id": "TC-01",
        "level": Level.MUST,
        "requirement": "client SIGKILL -> unregistered within 1 s",
        "title": "client kill cleanup",
        "area": "transport_cleanup",
        "peer": "client=ref server=ref",
        "params": {"nacos-client": "ref", "nacos-server": "ref"},
        "verdict": Verdict.FAILED,
        "detail": "still registered",
        "expected": {"current": []},
        "actual": {"current": ["c1"], "since": (1, 2)},
        "duration_ms": 1234.56789,
        "history": "histories/TC-01.jsonl",
        "log_paths": {"server": "logs/server.log"},
        "seed": 42,
        "nodeid": "suites/transport_cleanup/test_kill.py::test_tc01[ref-ref]",
    }
    fields.update(overrides)
    return CaseResult(**fields)


def test_case_result_round_trips_through_json() -> None:
    """to_dict is plain JSON (xdist user_properties); from_dict gives the same result back."""
    result = make_result()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["level"] == "MUST" and data["verdict"] == "FAILED"
    assert data["actual"] == {"current": ["c1"], "since": [1, 2]}
    assert data["duration_ms"] == 1234.568
    back = CaseResult.from_dict(data)
    assert back.level is Level.MUST and back.verdict is Verdict.FAILED
    assert back.to_dict() == data


def test_case_result_coerces_strings_and_rejects_unknown_values() -> None:
    result = make_result(level="SHOULD", verdict="NON-STRICT")
    assert result.level is Level.SHOULD and result.verdict is Verdict.NON_STRICT
    with pytest.raises(ValueError, match="MAYBE"):
        make_result(verdict="MAYBE")


def test_from_dict_names_unknown_and_bad_fields() -> None:
    data = make_result().to_dict()
    with pytest.raises(HarnessError, match="colour"):
        CaseResult.from_dict({**data, "colour": "red"})
    with pytest.raises(HarnessError, match="cannot read case result"):
        CaseResult.from_dict({**data, "verdict": "MAYBE"})
    del data["peer"]
    with pytest.raises(HarnessError, match="peer"):
        CaseResult.from_dict(data)
