"""Every case must be shown to FAIL against a deliberately broken peer before its OK is trusted.

Each test runs the real suite (as a user would: pytest + --peers-file + --peer) in a subprocess
against one broken server variant and reads the verdicts from the report's index.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

BROKEN = PROJECT_ROOT / "tests" / "broken_peers" / "broken-servers.toml"

# case -> (the broken server variant that violates it, words of the expectation it must miss)
CASES = {
    "SR-01": ("broken-shared-id", "two different connectionIds"),
    "SR-02": ("broken-register-on-server-check", "errorCode 301"),
    "SR-03": ("broken-tcp-peer-as-client-ip", "'clientIp'"),
}


def run_suite(case_id: str, server: str, report_dir: Path, *clients: str) -> dict[str, dict]:
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "-k", case_id,
           "--peers-file", str(BROKEN), "--peer", f"nacos-server={server}", "--report-dir", str(report_dir)]
    for client in clients:
        cmd += ["--peer", f"nacos-client={client}"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240)
    index = report_dir / "index.json"
    assert index.exists(), f"no report from {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    results = json.loads(index.read_text())["results"]
    return {r["peer"]: r for r in results if r["case_id"] == case_id}


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "server", "missed"), [(c, *v) for c, v in sorted(CASES.items())])
def test_case_fails_against_broken_server(case_id: str, server: str, missed: str, tmp_path: Path) -> None:
    results = run_suite(case_id, server, tmp_path / "report", "ref", "nacos-sdk-python")
    assert len(results) == 2, f"{case_id} did not run for both clients against {server}: {sorted(results)}"
    for peer, result in results.items():
        assert result["verdict"] == "FAILED", f"{case_id} vs {server} ({peer}): expected FAILED, got {result}"
        assert missed in str(result["expected"]), (
            f"{case_id} vs {server} ({peer}) FAILED for another reason than {missed!r}: {result['expected']!r}")
