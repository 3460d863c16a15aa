"""The report's data model, ``index.json``: what every other report format renders from.

Shape::

    {"meta":    {run_id, started_at, finished_at, runtime_s, peers, seed,
                 connformance_version, command_line, ...},
     "peers":   ["client=ref server=ref", ...],                  # matrix columns, in order
     "cases":   [{"id", "level", "area", "title", "requirement"}],  # matrix rows, in order
     "results": [CaseResult.to_dict(), ...],                     # ordered by row, then column
     "summary": {"OK": n, "NON-STRICT": n, ..., "ERROR": n}}     # every verdict, zeros included

Everything here is deterministic in its inputs (no clocks, sorted orders), so writing the same
results twice gives the same bytes whatever order xdist delivered them in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import harness
from harness.observe.history import json_safe
from harness.report.verdicts import CaseResult, Verdict

__all__ = [
    "AREA_ORDER",
    "build_index",
    "case_sort_key",
    "cell_variant_labels",
    "dumps_index",
]

# Rows follow the spec's area order (SPEC §1); unknown prefixes come after, alphabetically.
AREA_ORDER = ("SR", "TC", "PL")

_CASE_ID = re.compile(r"^([A-Za-z]+)-(\d+)(.*)$")


def case_sort_key(case_id: str) -> tuple[int, str, int, str]:
    """SR-02 before SR-10 before TC-01 before PL-01; odd ids last, by text."""
    m = _CASE_ID.match(case_id)
    if m is None:
        return (len(AREA_ORDER) + 1, case_id, 0, "")
    prefix, number, rest = m.group(1).upper(), int(m.group(2)), m.group(3)
    rank = AREA_ORDER.index(prefix) if prefix in AREA_ORDER else len(AREA_ORDER)
    return (rank, prefix, number, rest)


def _result_sort_key(result: CaseResult, column_key: Callable[[str], Any]) -> tuple[Any, ...]:
    params = json.dumps(json_safe(result.params), sort_keys=True)
    return (case_sort_key(result.case_id), column_key(result.peer), params, result.nodeid)


def cell_variant_labels(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """A label per result dict, by position: '' for a result alone in its matrix cell; for results
    sharing a cell (same case and column, e.g. PL-16's burst widths) the params that differ.
    """
    cells: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(results):
        cells.setdefault((r["case_id"], r["peer"]), []).append(i)
    labels = [""] * len(results)
    for members in cells.values():
        if len(members) == 1:
            continue
        params = [results[i].get("params") or {} for i in members]
        keys = sorted({k for p in params for k in p})
        differing = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
        for n, (i, p) in enumerate(zip(members, params, strict=True), start=1):
            label = " ".join(f"{k}={p.get(k)}" for k in differing)
            labels[i] = label or results[i].get("nodeid") or f"#{n}"
    return labels


def build_index(
    results: Iterable[CaseResult], meta: Mapping[str, Any], column_order: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``index.json`` document for ``results``; ``meta`` is copied in, version defaulted.

    Columns come in ``column_order`` first (e.g. the order peers were named on the command
    line), any others after it alphabetically; results follow the same order within each row.
    """
    rank = {label: i for i, label in enumerate(dict.fromkeys(column_order))}

    def column_key(label: str) -> tuple[int, str]:
        return (rank.get(label, len(rank)), label)

    ordered = sorted(results, key=lambda r: _result_sort_key(r, column_key))
    meta_out: dict[str, Any] = {"connformance_version": harness.__version__}
    meta_out.update(json_safe(dict(meta)))

    cases: dict[str, dict[str, Any]] = {}
    for r in ordered:
        cases.setdefault(
            r.case_id,
            {
                "id": r.case_id,
                "level": str(r.level),
                "area": r.area,
                "title": r.title,
                "requirement": r.requirement,
            },
        )
    summary = {str(v): 0 for v in Verdict}
    for r in ordered:
        summary[str(r.verdict)] += 1
    return {
        "meta": meta_out,
        "peers": sorted({r.peer for r in ordered}, key=column_key),
        "cases": list(cases.values()),
        "results": [r.to_dict() for r in ordered],
        "summary": summary,
    }


def dumps_index(index: Mapping[str, Any]) -> str:
    return json.dumps(index, indent=2, ensure_ascii=False) + "\n"
