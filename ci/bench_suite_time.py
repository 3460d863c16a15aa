"""Benchmark: wall time of a suite, the sum of its cells' durations and their ratio (the speed-up
the workers bought, measured in one run: the machine is shared, so only the ratio compares).

    python ci/bench_suite_time.py                      # the SR suite, every peer
    python ci/bench_suite_time.py suites/setup_reset -n 3
    python ci/bench_suite_time.py suites -n 3          # the whole matrix
    python ci/bench_suite_time.py --report report      # the figures of a run already made (the main job's)
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_matrix import run_once  # noqa: E402


def _from_report(report_dir: Path) -> tuple[float, dict]:
    """Wall time (the run's started..finished) and results of a report already written."""
    from datetime import datetime

    data = json.loads((report_dir / "index.json").read_text())
    meta = data.get("meta", {})
    started, finished = (datetime.fromisoformat(meta[k]) for k in ("started", "finished"))
    return (finished - started).total_seconds(), {(r["case_id"], r["peer"]): r for r in data["results"]}


def main(argv: list[str]) -> int:
    args = argv or ["suites/setup_reset"]
    if args[0] == "--report":
        if len(args) != 2:
            sys.exit("usage: bench_suite_time.py --report REPORT_DIR")
        wall_s, results = _from_report(Path(args[1]))
        args = [f"(report {args[1]})"]
    else:
        with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
            wall_s, results = run_once(Path(tmp) / "report", args)
    verdicts = Counter(r["verdict"] for r in results.values())
    slowest = sorted(results.values(), key=lambda r: -r["duration_ms"])[:8]
    print(f"suite: {' '.join(args)}")
    print(f"cells: {len(results)}  verdicts: {dict(sorted(verdicts.items()))}")
    print("slowest cells:")
    for r in slowest:
        print(f"  {r['case_id']:6} {r['peer']:45} {r['verdict']:13} {r['duration_ms'] / 1000:6.1f} s")
    cells_s = sum(r["duration_ms"] for r in results.values()) / 1000
    print(f"WALL TIME: {wall_s:.1f} s")
    print(f"SUM OF CELLS: {cells_s:.1f} s")
    print(f"SPEED-UP (sum / wall): {cells_s / wall_s:.2f}" if wall_s else "SPEED-UP: n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
