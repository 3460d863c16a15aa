"""Benchmark: wall time of a suite for every client peer (the issue's "≤ 5 minutes" target for
SR is measured here, not in a timed test).

    python ci/bench_suite_time.py                      # the SR suite, every nacos-client peer
    python ci/bench_suite_time.py suites/setup_reset -n 2
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_matrix import run_once  # noqa: E402


def main(argv: list[str]) -> int:
    args = argv or ["suites/setup_reset"]
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        wall_s, results = run_once(Path(tmp) / "report", args)
    verdicts = Counter(r["verdict"] for r in results.values())
    slowest = sorted(results.values(), key=lambda r: -r["duration_ms"])[:8]
    print(f"suite: {' '.join(args)}")
    print(f"cells: {len(results)}  verdicts: {dict(sorted(verdicts.items()))}")
    print("slowest cells:")
    for r in slowest:
        print(f"  {r['case_id']:6} {r['peer']:45} {r['verdict']:13} {r['duration_ms'] / 1000:6.1f} s")
    print(f"WALL TIME: {wall_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
