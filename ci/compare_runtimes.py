"""Compare two conformance reports cell by cell, e.g. the matrix under the process runtime and
under docker: every (case, peer) cell whose verdict differs, or that only one report has, with
both sides' reasons (expected / actual / detail).

    python ci/compare_runtimes.py report/index.json report-docker/index.json

Exits 0 when every cell present in both has the same verdict and no cell is missing, else 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REASON_CHARS = 300


def _cells(path: Path) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"cannot read report {path}: {exc}; expected an index.json written by --report-dir")
    return data.get("meta", {}), {(r["case_id"], r["peer"]): r for r in data.get("results", [])}


def _reason(result: dict[str, Any] | None) -> str:
    if result is None:
        return "(no such cell)"
    parts = [str(result.get(k)) for k in ("expected", "actual") if result.get(k)]
    text = " | ".join(parts) or str(result.get("detail") or "")
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + " …"


def compare(left: Path, right: Path) -> int:
    left_meta, a = _cells(left)
    right_meta, b = _cells(right)
    name_a, name_b = left_meta.get("runtime", str(left)), right_meta.get("runtime", str(right))
    if name_a == name_b:
        name_a, name_b = str(left), str(right)
    differences = []
    for key in sorted(set(a) | set(b)):
        va, vb = (a.get(key) or {}).get("verdict", "(missing)"), (b.get(key) or {}).get("verdict", "(missing)")
        if va != vb:
            differences.append((key, va, vb))
    same = len(set(a) & set(b)) - sum(1 for k, *_ in differences if k in a and k in b)
    print(f"{name_a}: {len(a)} cells ({left}); {name_b}: {len(b)} cells ({right})")
    for (case_id, peer), va, vb in differences:
        print(f"DIFF {case_id:6} {peer}: {name_a} {va} / {name_b} {vb}")
        print(f"       {name_a}: {_reason(a.get((case_id, peer)))}")
        print(f"       {name_b}: {_reason(b.get((case_id, peer)))}")
    print(f"RESULT: {same}/{len(set(a) | set(b))} cells with the same verdict; {len(differences)} differ")
    return 1 if differences else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    return compare(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
