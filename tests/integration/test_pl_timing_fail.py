"""PL-04, PL-08, PL-11, PL-14 and PL-15 must FAIL against deliberately broken http-client agents,
each for its intended reason, while the same pool without the bug passes
(tests/broken_peers/pl_timing_agents.py, tests/broken_peers/pl-timing-agents.toml); and PL-16's
headline point holds for the real Go client: its default Transport's 20-wide burst leaves 18
client-side TIME_WAIT sockets (± 1; research/http-pools.md §6.1 G1), with the table and the plot
written beside the case's history.

Each run is the real suite in a subprocess (``run_suite``) with two columns: the broken variant
and ``pl-reference`` (the control). PL-14 is a SHOULD, yet a pool that exceeds its limit gets
FAILED, not NON-STRICT: going past a configured limit violates the limit itself (PL-01's MUST),
it is not a timing miss that a slow link could excuse — the case forces the verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "pl-timing-agents.toml"
CONTROL = "http-client=pl-reference"

# case -> (broken variant, words of the expectation it misses, words of the actual)
RUNS = {
    "PL-04": ("pl-ignores-idle-timeout", "no connection is reused after", "reused_by_next_request"),
    "PL-08": ("pl-ignores-keepalive-header", "Keep-Alive: timeout=1: each idle connection closed by the client",
              "closed_after_idle_ms"),
    "PL-11": ("pl-leaks-slot-on-cancel", "normal requests after", "TimeoutError"),
    "PL-14": ("pl-grows-past-limit", "never more than 3 connections at once", "held_at_once"),
    "PL-15": ("pl-reuses-dead-connections", "GETs after the reset succeed on fresh connections", "errors_surfaced"),
}
GO_DEFAULT_WIDTH = 20
GO_EXPECTED_TIME_WAIT = 18  # DefaultMaxIdleConnsPerHost 2: 20 - 2 closed by the client
GO_TOLERANCE = 1


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case_id", sorted(RUNS))
def test_case_fails_against_broken_agent(case_id: str, tmp_path: Path) -> None:
    variant, missed, actual_words = RUNS[case_id]
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"http-client={variant}", CONTROL])
    broken = f"http-client={variant}"
    assert sorted(results) == sorted([broken, CONTROL]), f"columns {sorted(results)}"
    assert_all({broken: results[broken]}, "FAILED", expect_words=missed)
    assert actual_words in str(results[broken]["actual"]), (
        f"{case_id}/{variant}: FAILED for another reason: actual={results[broken]['actual']!r}")
    assert_all({CONTROL: results[CONTROL]}, "OK")


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_pl16_go_default_burst_leaves_18_time_wait(tmp_path: Path) -> None:
    report = tmp_path / "report"
    results = run_suite("PL-16", report, peers=["http-client=go-net-http"])
    result = results["http-client=go-net-http"]
    assert result["verdict"] == "INFORMATIONAL", f"PL-16 go: {result['verdict']}: {result['detail'][:1500]}"
    outdir = (report / result["history"]).parent
    table = json.loads((outdir / "timewait.json").read_text())
    point = next(p for p in table["points"] if p["width"] == GO_DEFAULT_WIDTH and p["cap_value"] is None)
    assert abs(point["client_time_wait"] - GO_EXPECTED_TIME_WAIT) <= GO_TOLERANCE, (
        f"Go DefaultTransport, {GO_DEFAULT_WIDTH}-wide burst: expected {GO_EXPECTED_TIME_WAIT} ± {GO_TOLERANCE} "
        f"client TIME_WAIT, got {point}")
    png = outdir / "timewait.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no PNG plot at {png}"
    assert "timewait.png" in result["detail"] and "timewait.json" in result["detail"], result["detail"]
