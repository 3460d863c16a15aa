"""Check: N shards, merged, give the cells and verdicts of one unsharded run.

    python ci/check_shards.py                                   # the reference peers, not slow
    python ci/check_shards.py --shards 3 -- -k "SR-0" --peer nacos-client=ref

Runs the selection once without ``--shard`` and once per shard (``--shard K/N``), merges the
shards with ``connformance report merge`` and compares the merged index with the unsharded one
cell by cell (``connformance report diff``). Pick a selection whose verdicts do not vary between
runs (the default: the reference peers, ``-m "not slow"``); a varying cell would differ for its
own reasons. Prints the comparison last; exits 1 when a cell is missing, extra or different.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.report.compare import diff_reports, load_index, render_diff  # noqa: E402

DEFAULT_SELECTION = ["-m", "not slow", "--peer", "nacos-client=ref", "--peer", "nacos-server=ref",
                     "--peer", "http-client=urllib3", "--peer", "http-server=ledger"]


def pytest_run(report: Path, extra: list[str]) -> int:
    argv = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "-q", "--report-dir", str(report),
            *extra]
    print("+", " ".join(argv[2:]), flush=True)
    return subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=False).returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("selection", nargs="*", help="pytest arguments (after --); default: " + " ".join(DEFAULT_SELECTION))
    args = parser.parse_args(argv)
    selection = args.selection or DEFAULT_SELECTION
    with tempfile.TemporaryDirectory(prefix="connformance-shards-") as tmp:
        work = Path(tmp)
        pytest_run(work / "whole", selection)
        parts = []
        for k in range(1, args.shards + 1):
            part = work / f"shard-{k}"
            pytest_run(part, [*selection, "--shard", f"{k}/{args.shards}"])
            parts.append(part)
        merged = work / "merged"
        subprocess.run([sys.executable, "-m", "harness.cli", "report", "merge", str(merged), *map(str, parts)],
                       cwd=ROOT, check=True)
        whole, joined = load_index(work / "whole"), load_index(merged)
        sizes = [len(load_index(p)["results"]) for p in parts]
        diff = diff_reports(whole, joined)
        print(render_diff(diff))
        print(f"shard sizes: {sizes} (sum {sum(sizes)})")
        print(f"RESULT: unsharded {len(whole['results'])} cells, {args.shards} shards merged {len(joined['results'])} "
              f"cells; {diff.same} identical, {len(diff.changed)} different, {len(diff.added)} only merged, "
              f"{len(diff.removed)} only unsharded")
        return 0 if diff.empty else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
