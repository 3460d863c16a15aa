"""Two reports side by side (``connformance report diff OLD NEW``) and shard reports joined into
one (``connformance report merge OUT DIR...``); both work from ``index.json`` alone.

A cell is (case id, matrix column, params). ``diff`` lists the transitions (wpt.fyi's "what
changed between two runs"): cells whose verdict changed, with both details, then cells only in
one of the runs. ``merge`` gives the index a single run of the union of the shards' cells would:
results keyed by node id (a cell run in two shards is a mistake and is refused), meta from the
first shard with the wall times summed and the shards named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.verdicts import CaseResult

__all__ = ["Diff", "diff_reports", "load_index", "merge_reports", "render_diff"]


def load_index(path: Path) -> dict[str, Any]:
    path = Path(path)
    index_path = path / "index.json" if path.is_dir() else path
    try:
        return json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot read a report at {index_path}: {exc}") from None


def _key(result: Mapping[str, Any]) -> tuple[str, str, str]:
    return (result["case_id"], result["peer"], json.dumps(result.get("params") or {}, sort_keys=True))


def _brief(result: Mapping[str, Any]) -> str:
    text = str(result.get("detail") or "").strip().splitlines()
    first = text[0] if text else ""
    if result.get("expected") is not None or result.get("actual") is not None:
        first = f"expected {result.get('expected')!s:.150}, actual {result.get('actual')!s:.150}"
    return " ".join(first.split())[:300]


@dataclass
class Diff:
    changed: list[tuple[dict[str, Any], dict[str, Any]]]
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    same: int

    @property
    def empty(self) -> bool:
        return not (self.changed or self.added or self.removed)

    def to_dict(self) -> dict[str, Any]:
        def cell(r: Mapping[str, Any]) -> dict[str, Any]:
            return {"case_id": r["case_id"], "peer": r["peer"], "verdict": r["verdict"], "detail": _brief(r)}

        return {"changed": [{"old": cell(o), "new": cell(n)} for o, n in self.changed],
                "added": [cell(r) for r in self.added], "removed": [cell(r) for r in self.removed],
                "same": self.same}


def diff_reports(old: Mapping[str, Any], new: Mapping[str, Any]) -> Diff:
    before = {_key(r): r for r in old["results"]}
    after = {_key(r): r for r in new["results"]}
    changed = [(before[k], after[k]) for k in sorted(before.keys() & after.keys())
               if before[k]["verdict"] != after[k]["verdict"]]
    same = len(before.keys() & after.keys()) - len(changed)
    return Diff(changed, [after[k] for k in sorted(after.keys() - before.keys())],
                [before[k] for k in sorted(before.keys() - after.keys())], same)


def render_diff(diff: Diff) -> str:
    lines = []
    for old, new in diff.changed:
        lines.append(f"CHANGED  {new['case_id']:6} {new['peer']}: {old['verdict']} -> {new['verdict']}")
        lines.append(f"           was: {_brief(old) or '-'}")
        lines.append(f"           now: {_brief(new) or '-'}")
    for r in diff.added:
        lines.append(f"NEW      {r['case_id']:6} {r['peer']}: {r['verdict']}  {_brief(r)[:150]}")
    for r in diff.removed:
        lines.append(f"REMOVED  {r['case_id']:6} {r['peer']}: {r['verdict']}")
    lines.append(f"DIFF: {len(diff.changed)} changed, {len(diff.added)} new, {len(diff.removed)} removed, "
                 f"{diff.same} the same")
    return "\n".join(lines)


def merge_reports(indexes: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[list[CaseResult], dict]:
    """The results and meta of one report holding every shard's cells."""
    if not indexes:
        raise HarnessError("report merge: no reports given")
    seen: dict[str, str] = {}
    results: list[CaseResult] = []
    for index, name in zip(indexes, names, strict=True):
        for data in index["results"]:
            node = data.get("nodeid") or "|".join(_key(data))
            if node in seen:
                raise HarnessError(f"report merge: {node} is in both {seen[node]} and {name}; shards must not "
                                   "overlap (same --shard N and the same selection in every job?)")
            seen[node] = name
            results.append(CaseResult.from_dict(data))
    meta = dict(indexes[0].get("meta") or {})
    meta["merged_from"] = list(names)
    meta["shard"] = None
    meta["wall_time_s"] = round(sum(float((i.get("meta") or {}).get("wall_time_s") or 0) for i in indexes), 1)
    return results, meta
