"""``index.html``: the verdict matrices a user reads first (SPEC §6), and ``findings.html``, the
deviations of the implementations under test; both rendered from ``index.json`` alone.

Layout, for a 1366×768 screen: a one-line header (verdict counts, how many cells are unexpected
or varying, filter buttons), then one matrix per area (SR, TC, PL) with only the columns that have
a cell in that area, each column a peer combination in two short lines. A cell is a chip: the
verdict's colour and short name, ``!`` when unexpected, ``~`` when it varied over trials.
Clicking a chip opens the cell in a side panel without leaving the page: requirement,
expected / actual, detail, the expectation that explains it, links to its history and logs. Every
cell also has a ``<details>`` section below (for search, and for pages read without scripts).

Self-contained: inline CSS and JS, no external asset. Every string that came from a case or a
peer is escaped (``html.escape`` in markup, a JSON ``<script type="application/json">`` island
whose ``<`` are escaped for the panel).

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

__all__ = ["format_duration", "render_findings", "render_html", "result_anchors"]

AREA_TITLES = {"SR": "SR — setup and reset", "TC": "TC — transport termination cleanup",
               "PL": "PL — per-host pool limits"}
SHORT = {"OK": "OK", "NON-STRICT": "NS", "FAILED": "FAIL", "UNIMPLEMENTED": "n/a", "INFORMATIONAL": "INFO",
         "ERROR": "ERR"}
_ROLE_SHORT = {"nacos-client": "c", "http-client": "c", "nacos-server": "s", "http-server": "s"}

_CSS = """
:root { font: 13px/1.35 system-ui, sans-serif; color: #1b1b1b; }
body { margin: .6em .8em; }
header { display: flex; flex-wrap: wrap; gap: .3em .8em; align-items: center; }
h1 { font-size: 1.15em; margin: 0; } h2 { font-size: 1.02em; margin: .8em 0 .3em; }
.count { font-weight: 600; padding: .05em .45em; border-radius: 3px; }
button.filter { font: inherit; padding: .05em .6em; border: 1px solid #999; background: #fff; border-radius: 3px; cursor: pointer; }
button.filter.on { background: #1b1b1b; color: #fff; }
details.meta { color: #555; } details.meta summary { cursor: pointer; }
code, pre { font: 12px/1.35 ui-monospace, monospace; }
pre { background: #f6f6f6; padding: .4em; margin: .2em 0; white-space: pre-wrap; word-break: break-word; }
.v-OK { background: #2e7d32; color: #fff; } .v-NON-STRICT { background: #f9a825; color: #1b1b1b; }
.v-FAILED { background: #c62828; color: #fff; } .v-UNIMPLEMENTED { background: #bdbdbd; color: #222; }
.v-INFORMATIONAL { background: #1565c0; color: #fff; } .v-ERROR { background: #4a0000; color: #fff; }
table.matrix { border-collapse: collapse; margin-bottom: .4em; }
table.matrix th, table.matrix td { border: 1px solid #d8d8d8; padding: 1px 3px; }
table.matrix thead th { background: #f3f3f3; font-weight: 500; font-size: .82em; line-height: 1.15;
  white-space: nowrap; vertical-align: bottom; }
td.id { font-weight: 600; white-space: nowrap; } td.title { white-space: nowrap; max-width: 17em; overflow: hidden;
  text-overflow: ellipsis; font-size: .9em; }
td.lv { font-size: .75em; color: #555; } td.cell { padding: 1px; text-align: center; } td.none { background: #fafafa; }
a.chip { display: inline-block; min-width: 3.2em; text-decoration: none; padding: 0 .25em; border-radius: 3px;
  font-weight: 600; font-size: .85em; margin: 1px 0; cursor: pointer; }
a.chip.unexpected { outline: 2px solid #000; outline-offset: 1px; }
body.only-unexpected a.chip:not(.unexpected), body.only-failed a.chip:not(.v-FAILED),
body.only-varying a.chip:not(.varying) { opacity: .12; }
#panel { position: fixed; top: 0; right: 0; width: min(44em, 60vw); height: 100vh; overflow: auto; background: #fff;
  border-left: 2px solid #444; padding: .6em 1em; box-shadow: -4px 0 12px rgba(0,0,0,.2); display: none; }
#panel.open { display: block; } #panel .close { float: right; cursor: pointer; font-size: 1.3em; }
section.result { border-top: 1px solid #e0e0e0; padding: .2em 0; }
section.result > summary { cursor: pointer; }
dl { margin: .2em 0; } dt { font-weight: 600; margin-top: .35em; } dd { margin-left: 1em; }
table.findings td { vertical-align: top; border-bottom: 1px solid #ddd; padding: .3em .5em; }
"""

_JS = """
const cells = JSON.parse(document.getElementById('cells').textContent);
const panel = document.getElementById('panel');
function esc(s) { return String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c])); }
function show(id) {
  const c = cells[id]; if (!c) return;
  let h = `<span class="close" onclick="panel.classList.remove('open')">×</span>`;
  h += `<h2>${esc(c.case_id)} <span class="count v-${esc(c.verdict)}">${esc(c.verdict)}${c.rate ? ' ' + esc(c.rate) : ''}</span></h2>`;
  h += `<div>${esc(c.peer)}</div><dl>`;
  h += `<dt>requirement (${esc(c.level)})</dt><dd>${esc(c.requirement)}</dd>`;
  if (c.unexpected) h += `<dt>UNEXPECTED</dt><dd>${esc(c.unexpected_why)}</dd>`;
  if (c.expectation) h += `<dt>expected ${esc(c.expectation.verdicts.join('/'))}</dt><dd>${esc(c.expectation.reason)}<br><i>source:</i> ${esc(c.expectation.source)}${c.expectation.rate ? '<br><i>rate:</i> ' + esc(c.expectation.rate) : ''}</dd>`;
  if (c.expected !== null) h += `<dt>expected</dt><dd><pre>${esc(typeof c.expected === 'string' ? c.expected : JSON.stringify(c.expected, null, 1))}</pre></dd>`;
  if (c.actual !== null) h += `<dt>actual</dt><dd><pre>${esc(typeof c.actual === 'string' ? c.actual : JSON.stringify(c.actual, null, 1))}</pre></dd>`;
  if (c.detail) h += `<dt>detail</dt><dd><pre>${esc(c.detail)}</pre></dd>`;
  if (c.trials && c.trials.length) h += `<dt>trials</dt><dd>${esc(c.trials.join(', '))}</dd>`;
  h += `<dt>files</dt><dd>`;
  if (c.history) h += `<a href="${esc(c.history_href)}">history</a> `;
  for (const [name, href] of c.logs) h += `<a href="${esc(href)}">${esc(name)}</a> `;
  h += `</dd><dt>run it again</dt><dd><code>${esc(c.repro)}</code></dd></dl>`;
  panel.innerHTML = h; panel.classList.add('open');
}
document.querySelectorAll('a.chip').forEach(a => a.addEventListener('click', e => { e.preventDefault(); show(a.dataset.cell); }));
document.querySelectorAll('button.filter').forEach(b => b.addEventListener('click', () => {
  const on = !b.classList.contains('on');
  document.querySelectorAll('button.filter').forEach(x => { x.classList.remove('on'); document.body.classList.remove(x.dataset.f); });
  if (on) { b.classList.add('on'); document.body.classList.add(b.dataset.f); }
}));
"""


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def format_duration(ms: Any) -> str:
    """``120 ms``, ``1.5 s``, ``2 min 05 s``."""
    value = float(ms or 0)
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    minutes, seconds = divmod(round(value / 1000), 60)
    return f"{minutes} min {seconds:02d} s"


def _href(path: str) -> str:
    return quote(path, safe="/._-~")


def result_anchors(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """A unique, stable HTML id per result: ``r-SR-01-<column slug>[-<variant>]``."""
    variants = cell_variant_labels(results)
    anchors: list[str] = []
    seen: set[str] = set()
    for result, variant in zip(results, variants, strict=True):
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{result['case_id']} {result['peer']} {variant}").strip("-")
        anchor, n = f"r-{slug}", 2
        while anchor in seen:
            anchor, n = f"r-{slug}-{n}", n + 1
        seen.add(anchor)
        anchors.append(anchor)
    return anchors


def column_head(peer: str) -> str:
    """``nacos-client=go-v2.3.5 nacos-server=ref`` as two short lines: ``c go-v2.3.5`` / ``s ref``."""
    parts = []
    for item in peer.split():
        role, _, name = item.partition("=")
        parts.append(f"{_ROLE_SHORT.get(role, role)} {name}" if name else item)
    return "<br>".join(_e(p) for p in parts) or "(no peer)"


def repro_command(result: Mapping[str, Any]) -> str:
    peers = " ".join(f"--peer {item}" for item in result["peer"].split())
    return f"python3 -m tox run -e conformance -- -k {result['case_id']} {peers}".strip()


def _cell_data(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "case_id": result["case_id"], "peer": result["peer"], "verdict": result["verdict"],
        "level": result["level"], "requirement": result["requirement"], "detail": result.get("detail") or "",
        "expected": result.get("expected"), "actual": result.get("actual"), "rate": result.get("rate") or "",
        "trials": result.get("trials") or [], "unexpected": bool(result.get("unexpected")),
        "unexpected_why": result.get("unexpected_why") or "", "expectation": result.get("expectation"),
        "history": result.get("history"), "history_href": _href(result["history"]) if result.get("history") else "",
        "logs": [[name, _href(path)] for name, path in sorted((result.get("log_paths") or {}).items())],
        "repro": repro_command(result),
    }


def _chip(result: Mapping[str, Any], anchor: str, variant: str) -> str:
    verdict = result["verdict"]
    marks = ("!" if result.get("unexpected") else "") + ("~" if result.get("varying") else "")
    classes = ["chip", f"v-{verdict}"] + ["unexpected"] * bool(result.get("unexpected")) \
        + ["varying"] * bool(result.get("varying"))
    tip = f"{verdict} {result.get('rate') or ''} {format_duration(result.get('duration_ms'))} {variant}".strip()
    return (f'<a class="{" ".join(classes)}" href="#{anchor}" data-cell="{anchor}" title="{_e(tip)}">'
            f"{_e(SHORT.get(verdict, verdict))}{marks}</a>")


def _matrices(index: Mapping[str, Any], anchors: list[str], variants: list[str]) -> str:
    results = index["results"]
    cases = {c["id"]: c for c in index.get("cases", [])}
    order = {peer: i for i, peer in enumerate(index.get("peers", []))}
    out = []
    areas = []
    for r in results:
        if r["area"] not in areas:
            areas.append(r["area"])
    for area in areas:
        members = [(r, a, v) for r, a, v in zip(results, anchors, variants, strict=True) if r["area"] == area]
        columns = sorted({r["peer"] for r, _, _ in members}, key=lambda p: (order.get(p, len(order)), p))
        rows: dict[str, dict[str, list[str]]] = {}
        for r, a, v in members:
            rows.setdefault(r["case_id"], {}).setdefault(r["peer"], []).append(_chip(r, a, v))
        head = "".join(f"<th>{column_head(c)}</th>" for c in columns)
        body = []
        for case_id, by_column in rows.items():
            case = cases.get(case_id, {})
            cells = "".join(f'<td class="cell">{"".join(by_column[c])}</td>' if c in by_column else '<td class="none"></td>'
                            for c in columns)
            body.append(f'<tr><td class="id">{_e(case_id)}</td><td class="lv">{_e(case.get("level", ""))}</td>'
                        f'<td class="title" title="{_e(case.get("requirement", ""))}">{_e(case.get("title", ""))}</td>'
                        f"{cells}</tr>")
        out.append(f"<h2>{_e(AREA_TITLES.get(area, area))}</h2>"
                   f'<table class="matrix"><thead><tr><th>case</th><th></th><th></th>{head}</tr></thead>'
                   f"<tbody>{''.join(body)}</tbody></table>")
    return "".join(out)


def _sections(results: Sequence[Mapping[str, Any]], anchors: list[str]) -> str:
    out = []
    for r, anchor in zip(results, anchors, strict=True):
        links = " ".join(f'<a href="{_e(_href(p))}">{_e(n)}</a>' for n, p in sorted((r.get("log_paths") or {}).items()))
        if r.get("history"):
            links = f'<a href="{_e(_href(r["history"]))}">history</a> ' + links
        parts = [f"<dt>requirement</dt><dd>{_e(r['requirement'])}</dd>"]
        for key in ("expected", "actual"):
            if r.get(key) is not None:
                value = r[key] if isinstance(r[key], str) else json.dumps(r[key], ensure_ascii=False)
                parts.append(f"<dt>{key}</dt><dd><pre>{_e(value)}</pre></dd>")
        if r.get("detail"):
            parts.append(f"<dt>detail</dt><dd><pre>{_e(r['detail'])}</pre></dd>")
        if r.get("expectation"):
            parts.append(f"<dt>expectation</dt><dd>{_e(r['expectation'].get('reason', ''))} "
                         f"({_e(r['expectation'].get('source', ''))})</dd>")
        out.append(f'<details class="result v-{_e(r["verdict"])}-row" id="{anchor}"><summary>{_e(r["case_id"])} {_e(r["peer"])}: '
                   f'<span class="count v-{_e(r["verdict"])}">{_e(r["verdict"])}</span> {_e(r.get("rate") or "")}'
                   f'{" UNEXPECTED" if r.get("unexpected") else ""}</summary><dl>{"".join(parts)}</dl>{links}</details>')
    return "".join(out)


def _island(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="cells">{text}</script>'


def render_html(index: Mapping[str, Any]) -> str:
    results = index["results"]
    anchors = result_anchors(results)
    variants = cell_variant_labels(results)
    summary = index.get("summary") or {}
    counts = " ".join(f'<span class="count v-{_e(v)}" title="{_e(v)}: {n}">{_e(SHORT.get(v, v))} {n}</span>'
                      for v, n in summary.items() if n)
    unexpected = sum(1 for r in results if r.get("unexpected"))
    varying = sum(1 for r in results if r.get("varying"))
    meta = index.get("meta") or {}
    meta_rows = "".join(f"<div>{_e(k)}: {_e(v)}</div>" for k, v in sorted(meta.items()) if v not in (None, "", []))
    filters = "".join(f'<button class="filter" data-f="{f}">{label}</button>'
                      for f, label in (("only-unexpected", f"unexpected ({unexpected})"), ("only-failed", "FAILED"),
                                       ("only-varying", f"varying ({varying})")))
    cells = {a: _cell_data(r) for r, a in zip(results, anchors, strict=True)}
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>connformance report</title><style>{_CSS}</style></head><body>"
            f"<header><h1>connformance</h1>{counts}<span>{len(results)} cells, "
            f"<b>{unexpected} unexpected</b></span>{filters}"
            '<a href="findings.html">findings</a></header>'
            f'<details class="meta"><summary>run</summary>{meta_rows}</details>'
            f"{_matrices(index, anchors, variants)}"
            f"<h2>every cell</h2>{_sections(results, anchors)}"
            f'<div id="panel"></div>{_island(cells)}<script>{_JS}</script></body></html>\n')


def render_findings(index: Mapping[str, Any]) -> str:
    """Every cell where an implementation deviates (FAILED or NON-STRICT) with the expectation
    that documents it, its evidence and the command that reproduces it."""
    rows = []
    for r in index["results"]:
        if r["verdict"] not in (Verdict.FAILED, Verdict.NON_STRICT, "FAILED", "NON-STRICT"):
            continue
        entry = r.get("expectation") or {}
        source = entry.get("source") or "(no expectation: unexpected)"
        linked = re.sub(r"([\w.-]+/[\w.-]+)#(\d+)",
                        lambda m: f'<a href="https://github.com/{m.group(1)}/issues/{m.group(2)}">{m.group(0)}</a>',
                        _e(source))
        rows.append(f'<tr><td>{_e(r["case_id"])}</td><td>{_e(r["peer"])}</td>'
                    f'<td><span class="count v-{_e(r["verdict"])}">{_e(r["verdict"])}</span> {_e(r.get("rate") or "")}'
                    f'</td><td>{_e(entry.get("reason") or r.get("unexpected_why") or "")}</td><td>{linked}</td>'
                    f"<td><code>{_e(repro_command(r))}</code></td></tr>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>connformance findings</title>"
            f"<style>{_CSS}</style></head><body><h1>Findings: where an implementation deviates</h1>"
            '<p><a href="index.html">the matrix</a></p><table class="findings"><thead><tr><th>case</th><th>peers</th>'
            "<th>verdict</th><th>what</th><th>evidence</th><th>reproduce</th></tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table></body></html>\n")
