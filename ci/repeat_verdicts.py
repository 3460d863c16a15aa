"""Run a suite N times in a row and compare the verdicts cell by cell (determinism check).

    python ci/repeat_verdicts.py 5 suites/setup_reset
Exits 1 and lists the cells whose verdict changed between runs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_matrix import run_once  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print(__doc__)
        return 2
    runs, args = int(argv[0]), argv[1:] or ["suites/setup_reset"]
    history: dict[tuple[str, str], list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="cf-repeat-") as tmp:
        for i in range(runs):
            wall_s, results = run_once(Path(tmp) / f"run-{i}", args)
            for key, r in results.items():
                history.setdefault(key, []).append(r["verdict"])
            print(f"run {i + 1}/{runs}: {len(results)} cells in {wall_s:.1f} s", flush=True)
    changed = {k: v for k, v in history.items() if len(set(v)) > 1 or len(v) != runs}
    for (case_id, peer), verdicts in sorted(history.items()):
        mark = "CHANGED" if (case_id, peer) in changed else "same"
        print(f"  {case_id:6} {peer:45} {mark:8} {' '.join(verdicts)}")
    print(f"RESULT: {len(history) - len(changed)}/{len(history)} cells identical over {runs} runs")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
