"""Shared by the benchmark and repeat scripts: run a suite selection once as the conformance job
does, and read back its verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(report_dir: Path, pytest_args: list[str]) -> tuple[float, dict[tuple[str, str], dict]]:
    """Run ``pytest <pytest_args> --report-dir report_dir``; return (wall seconds, results by
    (case id, peer column))."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--report-dir", str(report_dir), *pytest_args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall_s = time.monotonic() - start
    index = report_dir / "index.json"
    if not index.exists():
        sys.exit(f"no report written by {' '.join(cmd)} (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    results = json.loads(index.read_text())["results"]
    return wall_s, {(r["case_id"], r["peer"]): r for r in results}
