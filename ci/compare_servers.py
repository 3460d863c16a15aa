"""The differential: where the reference server and a real server disagree (real-server issue).

    python ci/compare_servers.py report/index.json                 # every real server vs ref
    python ci/compare_servers.py report/index.json --server nacos-2.2.4

For every case x client that ran on the reference server and on a real one, prints the cells
whose verdicts differ, with both details, and how each difference is resolved: an expectation
entry (harness/expectations.toml) documents a deviation of the real server (its reason and
source); a difference without one is unexplained (a fidelity bug of the reference server, or a
finding not yet recorded) and makes the script exit 1. UNIMPLEMENTED on the real server (it lacks
a surface the case needs) is listed apart: nothing was compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def _cells(index: dict) -> dict[tuple[str, str], dict[str, dict]]:
    """(case, client) -> server -> result, for the cells with both Nacos roles."""
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in index["results"]:
        params = r.get("params") or {}
        if "nacos-client" in params and "nacos-server" in params:
            out[(r["case_id"], params["nacos-client"])][params["nacos-server"]] = r
    return out


def _brief(r: dict) -> str:
    if r.get("expected") is not None or r.get("actual") is not None:
        text = f"expected {r.get('expected')!s:.160}; actual {r.get('actual')!s:.200}"
    else:
        text = (str(r.get("detail") or "").strip().splitlines() or [""])[0]
    return " ".join(text.split())[:400]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--server", action="append", default=[], help="only this real server (repeatable)")
    args = parser.parse_args(argv)
    index = json.loads(args.index.read_text())
    unexplained = explained = agree = 0
    unobserved: list[str] = []
    for (case_id, client), by_server in sorted(_cells(index).items()):
        ref = by_server.get("ref")
        if ref is None:
            continue
        for server, other in sorted(by_server.items()):
            if server == "ref" or (args.server and server not in args.server):
                continue
            if other["verdict"] == "UNIMPLEMENTED":
                unobserved.append(f"{case_id} client={client} server={server}: {_brief(other)[:160]}")
                continue
            if other["verdict"] == ref["verdict"]:
                agree += 1
                continue
            entry = other.get("expectation")
            if entry:
                explained += 1
                how = f"DEVIATION of {server} (documented): {entry['reason']} [{entry['source']}]"
            else:
                unexplained += 1
                how = "UNEXPLAINED: a fidelity bug of the reference server, or a finding to record"
            print(f"{case_id} client={client}: ref {ref['verdict']} / {server} {other['verdict']}")
            print(f"    ref:     {_brief(ref)}")
            print(f"    {server}: {_brief(other)}")
            print(f"    -> {how}")
    if unobserved:
        print("\nnot compared (the real server lacks a surface the case needs):")
        for line in unobserved:
            print(f"    {line}")
    print(f"\nDIFFERENTIAL: {agree} agree, {explained} differ as documented, {unexplained} differ unexplained, "
          f"{len(unobserved)} not comparable")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
