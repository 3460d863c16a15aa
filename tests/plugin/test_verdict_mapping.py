"""The plugin's grading and report, through pytester: a tiny suite of fabricated cases (no peers,
no sockets) run in a subprocess, then its index.json / junit.xml / exit status checked."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

SUITE = '''
from fixtures.case import case
from harness.errors import ConformanceFailure, Late, Unimplemented


@case("SR-91", "MUST")
def test_must_holds(cf):
    """A MUST that holds."""
    cf.history.note("fine")
    cf.ok("all good")


@case("SR-92", "MUST")
def test_must_violated(cf):
    """A MUST that is violated."""
    cf.check(1 == 2, expected="one", actual="two")


@case("SR-93", "SHOULD")
def test_should_missed(cf):
    """A SHOULD that is missed."""
    cf.check(False, expected="soon", actual="never")


@case("SR-94", "MUST")
def test_late(cf):
    """Right but late."""
    cf.late(expected="within 1 s", actual="after 3 s")


@case("SR-95", "INFO")
def test_info(cf):
    """Record what happens."""
    cf.informational("the client rotated")


@case("SR-96", "MUST")
def test_unimplemented(cf):
    """Needs a knob the peer lacks."""
    raise Unimplemented("peer has no knob max_conns_per_host")


@case("SR-97", "SHOULD")
def test_should_forced_failed(cf):
    """A SHOULD whose failure is forced to FAILED (never ejected at all)."""
    cf.fail(expected="ejected within 30 s", actual="held for 60 s", verdict="FAILED")


@case("SR-98", "MUST")
def test_harness_bug(cf):
    """A bare exception is a broken run, not a verdict."""
    raise RuntimeError("boom")
'''

EXPECTED = {
    "SR-91": "OK", "SR-92": "FAILED", "SR-93": "NON-STRICT", "SR-94": "NON-STRICT",
    "SR-95": "INFORMATIONAL", "SR-96": "UNIMPLEMENTED", "SR-97": "FAILED", "SR-98": "ERROR",
}


EXPECTATIONS = """
[[expect]]
case = "SR-9[27]"
peer = "*"
verdicts = ["FAILED"]
reason = "a fabricated MUST violation"
source = "tests/plugin/test_verdict_mapping.py"

[[expect]]
case = "SR-9[34]"
peer = "*"
verdicts = ["NON-STRICT"]
reason = "a fabricated SHOULD miss / lateness"
source = "tests/plugin/test_verdict_mapping.py"
"""


@pytest.mark.timeout(120)
def test_verdicts_pytest_outcomes_and_report(pytester: pytest.Pytester) -> None:
    """SPEC §2's grading, with every verdict expected (an expected FAILED is xfailed, ERROR is
    never expected)."""
    pytester.makepyfile(test_cases=SUITE)
    expectations = pytester.path / "expect.toml"
    expectations.write_text(EXPECTATIONS)
    report_dir = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report_dir),
                                           "--expectations", str(expectations))
    # expected FAILED -> xfailed; NON-STRICT / INFORMATIONAL pass; UNIMPLEMENTED skips; ERROR fails.
    result.assert_outcomes(passed=4, failed=1, skipped=1, xfailed=2)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*connformance: *1 ERROR*2 FAILED*1 INFORMATIONAL*2 NON-STRICT*1 OK*1 UNIMPLEMENTED*"
                                 "1 unexpected*", "UNEXPECTED SR-98*ERROR*"])

    index = json.loads((report_dir / "index.json").read_text())
    verdicts = {r["case_id"]: r["verdict"] for r in index["results"]}
    assert verdicts == EXPECTED
    assert {r["case_id"] for r in index["results"] if r["unexpected"]} == {"SR-98"}
    failed = next(r for r in index["results"] if r["case_id"] == "SR-92")
    assert (failed["expected"], failed["actual"]) == ("one", "two")
    assert failed["expectation"]["reason"] == "a fabricated MUST violation"
    assert "history excerpt" in failed["detail"]
    assert failed["history"] and (report_dir / failed["history"]).exists()

    junit = ET.parse(report_dir / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == 8
    assert [f.get("type") for f in junit.findall(".//testcase/failure")] == ["ERROR"]
    expected_failed = [s for s in junit.findall(".//testcase/skipped") if s.get("type") == "connformance.expected-FAILED"]
    assert len(expected_failed) == 2 and "a fabricated MUST violation" in expected_failed[0].get("message")
    assert len(junit.findall(".//testcase/skipped")) == 3
    assert "SR-92" in (report_dir / "index.html").read_text()

    # Without the ERROR the run is green; without the expectations every non-default verdict is red.
    green = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report_dir),
                                          "--expectations", str(expectations), "-k", "not SR-98")
    assert green.ret == 0
    red = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report_dir), "-k", "not SR-98")
    red.assert_outcomes(passed=2, failed=4, skipped=1)
    red.stdout.fnmatch_lines(["*UNEXPECTED SR-93*regression: NON-STRICT where no expectation says so*"])


@pytest.mark.timeout(120)
def test_a_stale_expectation_is_unexpected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=SUITE)
    stale = pytester.path / "stale.toml"
    stale.write_text('[[expect]]\ncase = "SR-91"\npeer = "*"\nverdicts = ["FAILED"]\nreason = "known bug"\n'
                     'source = "upstream#1"\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "r"),
                                           "--expectations", str(stale), "-k", "SR-91")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*stale expectation: OK*fixed? update it*"])


@pytest.mark.timeout(60)
def test_duplicate_case_id_fails_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_dup='''
from fixtures.case import case

@case("SR-90", "MUST")
def test_one(cf):
    """One."""

@case("SR-90", "MUST")
def test_two(cf):
    """Two."""
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(pytester.path / "r"))
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*duplicate case id SR-90*"])


@pytest.mark.timeout(60)
def test_case_needs_a_docstring(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nodoc='''
from fixtures.case import case

@case("SR-89", "MUST")
def test_nodoc(cf):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*needs a docstring*"])


@pytest.mark.timeout(60)
def test_unknown_peer_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_peer='''
from fixtures.case import case

@case("SR-88", "MUST")
def test_peer(cf, nacos_client_peer):
    """Needs a client peer."""
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--peer", "nacos-client=nope")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*nope*"])


@pytest.mark.timeout(60)
def test_must_case_with_no_requirement_for_the_peer_is_informational(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_noreq='''
from fixtures.case import case

@case("PL-89", "MUST")
def test_no_cap(cf):
    """Each stack's default idle cap holds."""
    cf.informational("this stack has no idle cap; kept 20 of 20", no_requirement=True)
''')
    report_dir = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report_dir))
    result.assert_outcomes(passed=1)
    index = json.loads((report_dir / "index.json").read_text())
    assert [r["verdict"] for r in index["results"]] == ["INFORMATIONAL"]
    assert "no idle cap" in index["results"][0]["detail"]
