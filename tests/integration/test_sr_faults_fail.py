"""SR-10 and SR-16..SR-19 must each FAIL against a deliberately broken peer, for the intended
reason, before their OK is trusted (tests/broken_peers/sr_fault_peers.py, sr-fault-peers.toml).
Broken clients run against the reference server, broken servers against the reference client."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "sr-fault-peers.toml"

# (case, role of the broken peer, broken peer, words of the expectation it must miss)
CASES = [
    ("SR-10", "nacos-server", "broken-per-ip-not-enforced", "the client never registered there"),
    ("SR-10", "nacos-server", "broken-per-ip-counter-drifts", "per-IP count on A"),
    ("SR-16", "nacos-client", "broken-request-before-setup", "ends RUNNING after its first request"),
    ("SR-17", "nacos-client", "broken-gives-up-after-reset", "after the reset toxic is removed"),
    ("SR-17", "nacos-server", "broken-keeps-dead-registration", "no registration while every transport dies"),
    ("SR-18", "nacos-client", "broken-no-backoff", "no hot loop"),
    ("SR-18", "nacos-client", "broken-silent-fast-retry", "≥ 100 ms"),
    # Its gRPC channel still dials once when its health check fails (a first attempt within its
    # detection bound); the client itself never reconnects, so it is not back after the servers are.
    ("SR-18", "nacos-client", "broken-stops-reconnecting", "RUNNING again after the servers return"),
    ("SR-19", "nacos-client", "broken-no-health-check", "never probed with ClientDetectionRequest"),
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "role", "broken", "missed"), CASES, ids=[f"{c}-{b}" for c, _, b, _ in CASES])
def test_case_fails_against_broken_peer(case_id: str, role: str, broken: str, missed: str, tmp_path: Path) -> None:
    other = "nacos-client=ref" if role == "nacos-server" else "nacos-server=ref"
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN], peers=[f"{role}={broken}", other])
    assert_all(results, "FAILED", expect_words=missed, columns=1)
