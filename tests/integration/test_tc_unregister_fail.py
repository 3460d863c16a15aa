"""TC-01..TC-03, TC-07 and TC-10 must each FAIL against a deliberately broken server, for the
intended reason, before their OK is trusted (tests/broken_peers/tc_unregister_servers.py,
tc-unregister-servers.toml).

The unregister cases run with the reference client only (the server's bookkeeping is what is
broken; the client just has to die); TC-07 and TC-10 with both clients, since there the client's
answer to a reset (the reference client answers, nacos-sdk-python never does) changes the path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "tc-unregister-servers.toml"
BOTH_CLIENTS = ("nacos-client=ref", "nacos-client=nacos-sdk-python")

# (case, broken server, words of the expectation it must miss, clients)
CASES = [
    *[(case_id, "broken-tc-never-unregisters", "gone from current", ("nacos-client=ref",))
      for case_id in ("TC-01", "TC-02", "TC-03")],
    *[(case_id, "broken-tc-per-ip-counter-drifts", "per-IP count of", ("nacos-client=ref",))
      for case_id in ("TC-01", "TC-02", "TC-03")],
    *[(case_id, "broken-tc-double-disconnect-event", "exactly one disconnected event", ("nacos-client=ref",))
      for case_id in ("TC-01", "TC-02", "TC-03")],
    ("TC-07", "broken-tc-leaves-rejected-open", "really closed", BOTH_CLIENTS),
    ("TC-10", "broken-tc-pending-push-hangs", "the pending reset is released", BOTH_CLIENTS),
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "server", "missed", "clients"), CASES,
                         ids=[f"{c}-{s.removeprefix('broken-tc-')}" for c, s, _, _ in CASES])
def test_case_fails_against_broken_server(case_id: str, server: str, missed: str, clients: tuple[str, ...],
                                          tmp_path: Path) -> None:
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"nacos-server={server}", *clients])
    assert_all(results, "FAILED", expect_words=missed, columns=len(clients))


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_late_unregister_is_non_strict_with_the_query_that_showed_it(tmp_path: Path) -> None:
    """Right but late (2 s past the fault): NON-STRICT, and the evidence is a query sent after the
    bound that still showed the registration (a slow answer alone is not lateness)."""
    results = run_suite("TC-02", tmp_path / "report", peers_files=[BROKEN],
                        peers=["nacos-server=broken-tc-unregisters-late", "nacos-client=ref"])
    assert_all(results, "NON-STRICT", expect_words="cleaned up within 1000 + 250 ms", columns=1)
    (result,) = results.values()
    assert "still showed it undone" in str(result["actual"]), result["actual"]
