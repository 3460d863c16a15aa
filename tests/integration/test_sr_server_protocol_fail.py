"""Every case must be shown to FAIL against a deliberately broken peer before its OK is trusted.
SR-04, SR-05, SR-09, SR-11 and SR-20 against broken servers
(tests/broken_peers/sr_server_protocol.py, manifests in sr-server-protocol.toml), for both
client peers: each variant breaks one step, and the case must report FAILED with the
expectation that step guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "sr-server-protocol.toml"

# (case, broken server variant, words of the expectation it must miss)
CASES = [
    ("SR-04", "broken-unknown-type-301", "errorCode 302"),
    ("SR-04", "broken-bad-body-ends-stream", "bi-stream still open"),
    ("SR-05", "broken-register-while-starting", "never registered"),
    ("SR-05", "broken-slow-start-ignores-delay", "ServerCheck while starting"),
    ("SR-09", "broken-reset-all-on-unknown-reload", "no push"),
    ("SR-11", "broken-count-limit-ignored", "stay at countLimit 2"),
    ("SR-11", "broken-cluster-not-exempt", "cluster-source connections are exempt"),
    ("SR-20", "broken-push-without-headers", '"headers": {}'),
    ("SR-20", "broken-push-hex-request-id", "decimal requestId"),
    ("SR-20", "broken-judge-answer-by-success", "Go-style answer (resultCode 200"),  # pushes log or reloadClient time
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "server", "missed"), CASES, ids=[f"{c}-{s}" for c, s, _ in CASES])
def test_case_fails_against_broken_server(case_id: str, server: str, missed: str, tmp_path: Path) -> None:
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"nacos-server={server}", "nacos-client=ref", "nacos-client=nacos-sdk-python"])
    assert_all(results, "FAILED", expect_words=missed, columns=2)
