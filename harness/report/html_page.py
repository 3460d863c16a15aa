"""``index.html``: the verdict matrix a user reads first (SPEC §6), rendered from ``index.json``.

One self-contained page: inline CSS, a few lines of vanilla JS, no external assets. A summary bar
of verdict counts; the matrix (rows = cases grouped by area, columns = peer combinations, each
cell the verdict colour and duration, linking to the result's section and its history); then one
``<details>`` section per result with expected / actual / detail and links to history and logs.
Every string that came from a case or a peer is HTML-escaped.

(Named ``html_page`` rather than ``html`` so that it never shadows the standard ``html`` module.)
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from harness.report.index_json import cell_variant_labels
from harness.report.verdicts import Verdict

__all__ = ["format_duration", "render_html", "result_anchors"]

_META_LABELS = (
    ("run_id", "run"),
    ("started_at", "started"),
    ("finished_at", "finished"),
    ("runtime_s", "runtime (s)"),
    ("seed", "seed"),
    ("peers", "peers"),
    ("connformance_version", "connformance"),
    ("command_line", "command line"),
)

_CSS = """
:root { font: 14px/1.4 system-ui, sans-serif; color: #1b1b1b; }
body { margin: 1.5em; }
h1 { font-size: 1.4em; margin: 0 0 .4em; } h2 { font-size: 1.15em; margin: 1.6em 0 .5em; }
table.meta td { padding: 0 1em 0 0; vertical-align: top; } table.meta td:first-child { color: #666; }
code, pre { font: 12px/1.35 ui-monospace, monospace; }
pre { background: #f6f6f6; padding: .5em; margin: .2em 0; white-space: pre-wrap; word-break: break-word; }
.bar { display: flex; height: 1.9em; border-radius: 4px; overflow: hidden; margin: 1em 0 .3em; max-width: 70em; }
.bar span { display: flex; align-items: center; justify-content: center; min-width: 5.5em;
  white-space: nowrap; font-weight: 600; padding: 0 .4em; }
.counts { color: #555; margin-bottom: 1em; }
.v-OK { background: #2e7d32; color: #fff; } .v-NON-STRICT { background: #f9a825; color: #1b1b1b; }
.v-FAILED { background: #c62828; color: #fff; } .v-UNIMPLEMENTED { background: #9e9e9e; color: #fff; }
.v-INFORMATIONAL { background: #1565c0; color: #fff; } .v-ERROR { background: #4a0000; color: #fff; }
table.matrix { border-collapse: collapse; }
table.matrix th, table.matrix td { border: 1px solid #d4d4d4; padding: .25em .45em; vertical-align: middle; }
table.matrix thead th { background: #f0f0f0; position: sticky; top: 0; font-weight: 600; }
table.matrix th.area { background: #e6e6e6; text-align: left; font-size: 1.05em; }
td.id { font-weight: 600; white-space: nowrap; } td.level { font-size: .85em; color: #444; }
td.title { max-width: 32em; } td.title span { border-bottom: 1px dotted #888; cursor: help; }
td.cell { padding: 2px; min-width: 9em; } td.none { color: #aaa; text-align: center; }
a.chip { display: block; text-decoration: none; padding: .2em .4em; border-radius: 3px; margin: 1px 0;
  text-align: center; font-weight: 600; font-size: .85em; }
a.chip small { display: block; font-weight: 400; opacity: .9; }
a.chip:hover { outline: 2px solid #000; }
a.hist { display: block; text-align: center; font-size: .75em; color: #555; }
.filter { margin: .6em 0; color: #333; } tr.all-ok.hidden { display: none; }
details.result { border: 1px solid #ddd; border-left-width: 6px; margin: .4em 0; padding: .3em .6em; }
details.result[open] { background: #fcfcfc; } details.result:target { box-shadow: 0 0 0 3px #555; }
details.result summary { cursor: pointer; }
.chip-inline { padding: 0 .4em; border-radius: 3px; font-weight: 600; font-size: .85em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .5em 0; }
dt { color: #666; } dd { margin: 0; min-width: 0; }
.bl-OK { border-left-color: #2e7d32; } .bl-NON-STRICT { border-left-color: #f9a825; }
.bl-FAILED { border-left-color: #c62828; } .bl-UNIMPLEMENTED { border-left-color: #9e9e9e; }
.bl-INFORMATIONAL { border-left-color: #1565c0; } .bl-ERROR { border-left-color: #4a0000; }
"""

# Open the result section a cell links to; hide all-OK rows on demand.
_JS = """
function openTarget() {
  var id = decodeURIComponent(location.hash.slice(1));
  var el = id && document.getElementById(id);
  if (el && el.tagName === "DETAILS") { el.open = true; }
}
window.addEventListener("hashchange", openTarget);
openTarget();
document.getElementById("only-problems").addEventListener("change", function (e) {
  document.querySelectorAll("tr.all-ok").forEach(function (row) {
    row.classList.toggle("hidden", e.target.checked);
  });
});
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _href(relative_path: str) -> str:
    # Percent-encode: a path cannot turn into a "javascript:" URL or break out of the attribute.
    return _e(quote(str(relative_path).replace("\\", "/"), safe="/"))


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def format_duration(duration_ms: float | None) -> str:
    """``350 ms``, ``1.2 s``, ``2 min 03 s``."""
    ms = float(duration_ms or 0)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes} min {seconds:02d} s"


def result_anchors(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """A stable, unique HTML id per result (by position), readable in a URL."""
    variants = cell_variant_labels(results)
    seen: dict[str, int] = {}
    anchors = []
    for result, variant in zip(results, variants, strict=True):
        raw = "--".join(p for p in (result["case_id"], result["peer"], variant) if p)
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_") or "result"
        seen[base] = seen.get(base, 0) + 1
        anchors.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return anchors


def _meta_table(meta: Mapping[str, Any]) -> str:
    labelled = dict(_META_LABELS)
    keys = [k for k, _ in _META_LABELS if k in meta] + sorted(k for k in meta if k not in labelled)
    rows = []
    for key in keys:
        value = meta[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(f"<tr><td>{_e(labelled.get(key, key))}</td><td><code>{_e(text)}</code></td></tr>")
    return f'<table class="meta">{"".join(rows)}</table>'


def _summary(summary: Mapping[str, int]) -> str:
    total = sum(summary.values())
    segments = "".join(
        f'<span class="v-{_e(v)}" style="flex-grow:{n}" title="{_e(v)}: {n}">{_e(v)} {n}</span>'
        for v, n in summary.items()
        if n
    )
    counts = " · ".join(f"{_e(v)} {n}" for v, n in summary.items())
    return f'<div class="bar">{segments}</div><div class="counts">{total} results: {counts}</div>'


def _chip(result: Mapping[str, Any], anchor: str, variant: str) -> str:
    verdict = _e(result["verdict"])
    label = f"{_e(variant)}: " if variant else ""
    tip = f"{result['case_id']} · {result['peer']} {variant}".strip() + f" · {result['verdict']}"
    chip = (
        f'<a class="chip v-{verdict}" href="#{anchor}" title="{_e(tip)}">{label}{verdict}'
        f"<small>{_e(format_duration(result.get('duration_ms')))}</small></a>"
    )
    if result.get("history"):
        chip += f'<a class="hist" href="{_href(result["history"])}">history</a>'
    return chip


def _matrix(index: Mapping[str, Any], anchors: list[str], variants: list[str]) -> str:
    peers: list[str] = list(index["peers"])
    cells: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(index["results"]):
        cells.setdefault((r["case_id"], r["peer"]), []).append(i)

    head = "".join(f"<th>{_e(p)}</th>" for p in peers)
    rows = [f"<thead><tr><th>case</th><th>level</th><th>title</th>{head}</tr></thead><tbody>"]
    area = None
    for case in index["cases"]:
        if case["area"] != area:
            area = case["area"]
            rows.append(f'<tr><th class="area" colspan="{3 + len(peers)}">{_e(area)}</th></tr>')
        tds, all_ok = [], True
        for peer in peers:
            members = cells.get((case["id"], peer), [])
            if not members:
                tds.append('<td class="cell none">–</td>')
                continue
            results = [index["results"][i] for i in members]
            all_ok = all_ok and all(r["verdict"] == Verdict.OK for r in results)
            chips = "".join(_chip(index["results"][i], anchors[i], variants[i]) for i in members)
            tds.append(f'<td class="cell">{chips}</td>')
        row_class = ' class="all-ok"' if all_ok else ""
        rows.append(
            f'<tr{row_class}><td class="id">{_e(case["id"])}</td><td class="level">{_e(case["level"])}</td>'
            f'<td class="title"><span title="{_e(case["requirement"])}">{_e(case["title"])}</span></td>'
            f"{''.join(tds)}</tr>"
        )
    rows.append("</tbody>")
    return f'<table class="matrix">{"".join(rows)}</table>'


def _result_section(result: Mapping[str, Any], anchor: str, variant: str) -> str:
    verdict = _e(result["verdict"])
    fields: list[tuple[str, str]] = [
        ("requirement", _e(result["requirement"])),
        ("level", _e(result["level"])),
        ("verdict", verdict),
        ("duration", _e(format_duration(result.get("duration_ms")))),
    ]
    for name in ("expected", "actual"):
        if result.get(name) is not None:
            fields.append((name, f"<pre>{_e(_pretty(result[name]))}</pre>"))
    if result.get("detail"):
        fields.append(("detail", f"<pre>{_e(result['detail'])}</pre>"))
    if result.get("history"):
        fields.append(("history", f'<a href="{_href(result["history"])}">{_e(result["history"])}</a>'))
    logs = result.get("log_paths") or {}
    if logs:
        links = " · ".join(f'<a href="{_href(p)}">{_e(name)}</a>' for name, p in sorted(logs.items()))
        fields.append(("logs", links))
    if result.get("params"):
        fields.append(("params", f"<code>{_e(json.dumps(result['params'], ensure_ascii=False))}</code>"))
    if result.get("seed") is not None:
        fields.append(("seed", f"<code>{_e(result['seed'])}</code>"))
    if result.get("nodeid"):
        fields.append(("pytest id", f"<code>{_e(result['nodeid'])}</code>"))
    body = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in fields)
    column = f"{result['peer']} {variant}".strip()
    return (
        f'<details class="result bl-{verdict}" id="{anchor}"><summary>'
        f'<span class="chip-inline v-{verdict}">{verdict}</span> <b>{_e(result["case_id"])}</b> '
        f"{_e(result['title'])} — <code>{_e(column)}</code> · "
        f"{_e(format_duration(result.get('duration_ms')))}</summary><dl>{body}</dl></details>"
    )


def render_html(index: Mapping[str, Any]) -> str:
    """The whole ``index.html`` page for an ``index.json`` document."""
    results = index["results"]
    anchors = result_anchors(results)
    variants = cell_variant_labels(results)
    meta = index.get("meta", {})
    title = f"connformance report {meta.get('run_id', '')}".strip()
    sections = "".join(
        _result_section(r, a, v) for r, a, v in zip(results, anchors, variants, strict=True)
    )
    legend = " ".join(f'<span class="chip-inline v-{_e(v)}">{_e(v)}</span>' for v in Verdict)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{_e(title)}</h1>{_meta_table(meta)}\n"
        f"{_summary(index['summary'])}\n"
        f'<div class="filter"><label><input type="checkbox" id="only-problems"> hide rows where every '
        f"cell is OK</label> &nbsp; {legend}</div>\n"
        f"{_matrix(index, anchors, variants)}\n"
        f"<h2>Results</h2>\n{sections}\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )
