"""Run the real suites as a user would (pytest + --peers-file + --peer) in a subprocess and read
the verdicts from the report's index.json. Used by the self-tests that show each case FAILS
against a deliberately broken peer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.paths import PROJECT_ROOT

BROKEN_DIR = PROJECT_ROOT / "tests" / "broken_peers"


def run_suite(case_id: str, report_dir: Path, *, peers: Iterable[str], peers_files: Iterable[Path] = (),
              extra_args: Iterable[str] = (), timeout_s: float = 280) -> dict[str, dict[str, Any]]:
    """Run one case; return its results keyed by matrix column (``peer`` label).

    ``peers`` are ``role=name`` strings. Raises AssertionError with the run's output tail when
    no report was written.
    """
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "-k", case_id,
           "--report-dir", str(report_dir)]
    for path in peers_files:
        cmd += ["--peers-file", str(path)]
    for peer in peers:
        cmd += ["--peer", peer]
    cmd += list(extra_args)
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s)
    index = report_dir / "index.json"
    assert index.exists(), f"no report from {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    results = json.loads(index.read_text())["results"]
    return {r["peer"]: r for r in results if r["case_id"] == case_id}


def run_cases(case_ids: Iterable[str], report_dir: Path, *, peers: Iterable[str], peers_files: Iterable[Path] = (),
              timeout_s: float = 280) -> dict[tuple[str, str], dict[str, Any]]:
    """Run several cases in one pytest run; their results keyed by (case id, matrix column)."""
    ids = list(case_ids)
    run_suite(" or ".join(ids), report_dir, peers=peers, peers_files=peers_files, timeout_s=timeout_s)
    results = json.loads((report_dir / "index.json").read_text())["results"]
    return {(r["case_id"], r["peer"]): r for r in results if r["case_id"] in ids}


def assert_all(results: dict[str, dict[str, Any]], verdict: str, *, expect_words: str = "", columns: int = 1) -> None:
    """Every column got ``verdict``; with ``expect_words``, for the intended reason (the words
    appear in the expectation the case reported)."""
    assert len(results) >= columns, f"expected {columns} column(s), got {sorted(results)}"
    for peer, result in results.items():
        assert result["verdict"] == verdict, f"{peer}: expected {verdict}, got {result['verdict']}: {result['detail'][:1500]}"
        if expect_words:
            assert expect_words in str(result["expected"]), (
                f"{peer}: {verdict} for another reason than {expect_words!r}: expected={result['expected']!r}")
