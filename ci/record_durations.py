"""Write ``ci/cell-durations.json`` ({node id: ms}) from a run's report: what ``--shard`` balances
on and what pytest-xdist's longest-first order reads. Record it from a main-job run on the CI
machine's kind, after adding cases (a cell without a recorded duration counts as the median).

    python ci/record_durations.py report/index.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cell-durations.json"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit("usage: record_durations.py REPORT/index.json")
    results = json.loads(Path(argv[0]).read_text())["results"]
    durations = {r["nodeid"]: round(float(r.get("duration_ms") or 0)) for r in results if r.get("nodeid")}
    OUT.write_text(json.dumps(dict(sorted(durations.items())), indent=1) + "\n")
    print(f"{len(durations)} cells, {sum(durations.values()) / 1000:.0f} s in all -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
