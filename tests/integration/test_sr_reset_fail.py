"""The reset and rebalancing cases (SR-06, SR-07, SR-08, SR-12, SR-13, SR-14, SR-15) must each be
shown to FAIL against a deliberately broken peer before their OK is trusted; SR-08 (INFO) must
report what a redirect-following client did differently from the reference client.

Broken clients: tests/broken_peers/sr_reset_clients.py (+ sr-reset-clients.toml); broken
servers: tests/broken_peers/sr_reset_servers.py (+ sr-reset-servers.toml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

pytestmark = pytest.mark.integration

CLIENTS = BROKEN_DIR / "sr-reset-clients.toml"
SERVERS = BROKEN_DIR / "sr-reset-servers.toml"

# case -> [(broken client, words of the expectation it must miss)], against the reference server
CLIENT_CASES = {
    "SR-06": [("broken-answers-wrong-request-id", "ConnectResetResponse with requestId"),
              ("broken-ignores-reset", "after answering the reset, a switch to")],
    "SR-07": [("broken-ignores-redirect", "reconnects to exactly")],
    "SR-12": [("broken-ignores-reset", "SDK connection(s) within")],
    "SR-14": [("broken-switches-twice", "at most one connection attempt in flight")],
    "SR-15": [("broken-no-retry-after-reset", "at most 1 failed request")],
}

# case -> (broken server, words of the expectation it must miss), with the reference client
SERVER_CASES = {
    "SR-12": ("broken-load-count-noop", "SDK connection(s) within"),
    "SR-13": ("broken-load-count-noop", "smartReloadCluster calls"),
}


def _column(results: dict, client: str) -> dict:
    (found,) = [r for peer, r in results.items() if f"nacos-client={client} " in f"{peer} "]
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case_id", sorted(CLIENT_CASES))
def test_case_fails_against_broken_client(case_id: str, tmp_path: Path) -> None:
    broken = CLIENT_CASES[case_id]
    results = run_suite(case_id, tmp_path / "report", peers_files=[CLIENTS],
                        peers=["nacos-server=ref", *(f"nacos-client={name}" for name, _ in broken)])
    for name, missed in broken:
        assert_all({name: _column(results, name)}, "FAILED", expect_words=missed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case_id", sorted(SERVER_CASES))
def test_case_fails_against_broken_server(case_id: str, tmp_path: Path) -> None:
    server, missed = SERVER_CASES[case_id]
    results = run_suite(case_id, tmp_path / "report", peers_files=[SERVERS],
                        peers=[f"nacos-server={server}", "nacos-client=ref"])
    assert_all(results, "FAILED", expect_words=missed)


@pytest.mark.timeout(300)
def test_sr08_reports_what_the_client_did(tmp_path: Path) -> None:
    """INFO: the reference client ignores an out-of-list redirect and rotates; a client that
    follows it is reported as having followed it."""
    results = run_suite("SR-08", tmp_path / "report", peers_files=[CLIENTS],
                        peers=["nacos-server=ref", "nacos-client=ref", "nacos-client=broken-follows-any-redirect",
                               "nacos-client=broken-ignores-reset"])
    ref = _column(results, "ref")
    follows = _column(results, "broken-follows-any-redirect")
    stays = _column(results, "broken-ignores-reset")
    for result in (ref, follows, stays):
        assert result["verdict"] == "INFORMATIONAL", f"{result['peer']}: {result['verdict']}: {result['detail'][:500]}"
    assert "ignored the redirect and rotated to" in ref["detail"], ref["detail"]
    assert "followed the redirect to" in follows["detail"], follows["detail"]
    assert "which is not in its list" in follows["detail"], follows["detail"]
    assert "(no switch)" in stays["detail"], stays["detail"]
