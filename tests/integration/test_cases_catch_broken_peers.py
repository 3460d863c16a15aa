"""Every case must be shown to FAIL against a deliberately broken peer before its OK is trusted.
SR-01..SR-03 against broken servers (tests/broken_peers/broken_nacos_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "broken-servers.toml"

# case -> (the broken server variant that violates it, words of the expectation it must miss)
CASES = {
    "SR-01": ("broken-shared-id", "two different connectionIds"),
    "SR-02": ("broken-register-on-server-check", "errorCode 301"),
    "SR-03": ("broken-tcp-peer-as-client-ip", "'clientIp'"),
}


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "server", "missed"), [(c, *v) for c, v in sorted(CASES.items())])
def test_case_fails_against_broken_server(case_id: str, server: str, missed: str, tmp_path: Path) -> None:
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"nacos-server={server}", "nacos-client=ref", "nacos-client=nacos-sdk-python"])
    assert_all(results, "FAILED", expect_words=missed, columns=2)
