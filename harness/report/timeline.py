"""A case's history as a timeline (SVG), from its JSONL alone: one lane per process, every fault
a shaded window across all lanes (from apply to heal; to the end when never healed), operations
as ticks (ok green, failed red), observations and failed checks marked on their own lane. Hover
shows each mark's record. Written beside the history as ``timeline.svg`` and linked from the
report cell with the other files (``harness.report.artifacts.case_artifacts``)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["TIMELINE_NAME", "render_timeline", "write_timeline"]

TIMELINE_NAME = "timeline.svg"
LABEL_W, PLOT_W, LANE_H, AXIS_H = 170, 900, 20, 26
_APPLY = ("fault", "fault_begin")
_HEAL = ("healed", "fault_end")
_TICK_COLOUR = {"ok": "#2a9d8f", "fail": "#e63946", "invoke": "#adb5bd", "info": "#457b9d"}
_TITLE_CHARS = 300
_STEPS_MS = (100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000)


def _read(history: Path) -> list[dict[str, Any]]:
    events = []
    for line in history.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: the rest still draws
        if isinstance(event, dict) and isinstance(event.get("t_ms"), int | float):
            events.append(event)
    return events


def _title(event: dict[str, Any]) -> str:
    shown = {k: v for k, v in event.items() if k not in ("seq", "wall_ms")}
    return escape(json.dumps(shown, ensure_ascii=False, default=str)[:_TITLE_CHARS])


def _windows(events: list[dict[str, Any]], end_ms: float) -> list[tuple[float, float, str, dict]]:
    """(from, to, label, apply record) per fault: applies paired with heals by (fault, target)."""
    open_: dict[tuple[str, str], list[dict[str, Any]]] = {}
    windows = []
    for e in events:
        key = (str(e.get("fault")), str(e.get("target")))
        if e.get("kind") in _APPLY and "fault" in e:
            open_.setdefault(key, []).append(e)
        elif e.get("kind") in _HEAL and open_.get(key):
            start = open_[key].pop(0)
            windows.append((start["t_ms"], e["t_ms"], f"{key[0]} {key[1]}", start))
    for key, starts in open_.items():
        windows += [(s["t_ms"], end_ms, f"{key[0]} {key[1]} (not healed)", s) for s in starts]
    return sorted(windows, key=lambda w: w[0])


def render_timeline(history: Path) -> str:
    """The SVG text for ``history`` (a JSONL file of ``harness.observe.history``)."""
    events = _read(history)
    end_ms = max((e["t_ms"] for e in events), default=0.0) or 1.0
    processes = list(dict.fromkeys(str(e["process"]) for e in events if e.get("process") and e.get("kind") != "meta"))
    lanes = ["faults", *processes, "observations"]
    height = AXIS_H + LANE_H * len(lanes) + 6
    lane_y = {name: AXIS_H + LANE_H * i for i, name in enumerate(lanes)}

    def x(t_ms: float) -> float:
        return round(LABEL_W + PLOT_W * t_ms / end_ms, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 10}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f"<title>{escape(history.parent.name)}: {len(events)} records over {end_ms / 1000:.1f} s</title>"]
    step = next((s for s in _STEPS_MS if end_ms / s <= 10), _STEPS_MS[-1])
    for t in range(0, int(end_ms) + 1, step):
        out.append(f'<line x1="{x(t)}" y1="{AXIS_H - 4}" x2="{x(t)}" y2="{height}" stroke="#eee"/>'
                   f'<text x="{x(t)}" y="{AXIS_H - 8}" text-anchor="middle" fill="#555">{t / 1000:g} s</text>')
    for name, y in lane_y.items():
        out.append(f'<text x="4" y="{y + 14}" fill="#222">{escape(name[:26])}</text>'
                   f'<line x1="{LABEL_W}" y1="{y + LANE_H}" x2="{LABEL_W + PLOT_W}" y2="{y + LANE_H}" stroke="#ddd"/>')
    for start, stop, label, record in _windows(events, end_ms):
        width = max(1.0, x(stop) - x(start))
        out.append(f'<rect x="{x(start)}" y="{AXIS_H}" width="{width:.1f}" height="{LANE_H * len(lanes)}" '
                   f'fill="#f4a261" fill-opacity="0.22"><title>{_title(record)}</title></rect>'
                   f'<rect x="{x(start)}" y="{lane_y["faults"] + 3}" width="{width:.1f}" height="{LANE_H - 6}" '
                   f'fill="#e76f51"><title>{_title(record)}</title></rect>'
                   f'<text x="{x(start) + 2}" y="{lane_y["faults"] + 14}" fill="#000">{escape(label[:40])}</text>')
    for e in events:
        kind, t = e.get("kind"), x(e["t_ms"])
        if e.get("process") in lane_y and kind != "meta":
            y = lane_y[str(e["process"])]  # a peer's own events (connected, switching, ...) in purple
            out.append(f'<line x1="{t}" y1="{y + 4}" x2="{t}" y2="{y + LANE_H - 4}" '
                       f'stroke="{_TICK_COLOUR.get(kind, "#6d597a")}" stroke-width="2"><title>{_title(e)}</title></line>')
        elif kind in ("observe", "note"):
            y = lane_y["observations"] + LANE_H / 2
            failed = kind == "note" and "FAILED" in str(e.get("value", e.get("text", "")))
            colour = "#e63946" if failed else "#264653"
            out.append(f'<path d="M{t} {y - 5} L{t + 5} {y} L{t} {y + 5} L{t - 5} {y} Z" fill="{colour}">'
                       f"<title>{_title(e)}</title></path>")
    out.append("</svg>")
    return "\n".join(out)


def write_timeline(history: Path) -> Path | None:
    """Write ``timeline.svg`` beside ``history``; None when there is no history to draw."""
    history = Path(history)
    if not history.is_file():
        return None
    target = history.with_name(TIMELINE_NAME)
    target.write_text(render_timeline(history), encoding="utf-8")
    return target
