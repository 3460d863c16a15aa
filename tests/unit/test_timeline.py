"""A case's timeline from its history alone: lanes per process, fault windows from apply to heal
(to the end when never healed), ticks and observation marks, each with its record on hover."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.report.timeline import TIMELINE_NAME, render_timeline, write_timeline

SVG = "{http://www.w3.org/2000/svg}"


def _history(tmp_path: Path, events: list[dict]) -> Path:
    path = tmp_path / "case" / "history.jsonl"
    path.parent.mkdir()
    lines = [json.dumps({"seq": i, "wall_ms": 0, **e}) for i, e in enumerate(events)]
    path.write_text("\n".join(lines) + "\n{\"cut short by a kill")
    return path


EVENTS = [
    {"t_ms": 0, "kind": "meta", "case": "TC-99"},
    {"t_ms": 100, "kind": "invoke", "process": "client-ref-0", "f": "wait_running"},
    {"t_ms": 300, "kind": "ok", "process": "client-ref-0", "f": "wait_running"},
    {"t_ms": 1000, "kind": "fault", "fault": "silence", "target": "server-0", "action": "silence"},
    {"t_ms": 1500, "kind": "observe", "what": "move", "value": {"a": "<b>&"}},
    {"t_ms": 3000, "kind": "healed", "fault": "silence", "target": "server-0", "action": "unsilence"},
    {"t_ms": 3500, "kind": "fail", "process": "server-0", "f": "current", "error": "boom"},
    {"t_ms": 3600, "kind": "fault_begin", "fault": "blackhole", "target": "server-1"},
    {"t_ms": 4000, "kind": "note", "text": "FAILED check: expected x, actual y"},
]


def test_lanes_windows_and_marks(tmp_path: Path) -> None:
    root = ET.fromstring(render_timeline(_history(tmp_path, EVENTS)))  # well-formed, escapes included
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels[labels.index("faults"):labels.index("faults") + 4] == \
        ["faults", "client-ref-0", "server-0", "observations"]
    windows = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == "#e76f51"]
    assert len(windows) == 2
    healed, open_ = sorted(windows, key=lambda r: float(r.get("x")))
    assert float(healed.get("width")) == round(900 * 2000 / 4000, 1)  # 1000..3000 ms of 4000 ms
    assert float(open_.get("x")) + float(open_.get("width")) == 170 + 900  # never healed: to the end
    assert "blackhole server-1 (not healed)" in labels
    ticks = [line for line in root.iter(f"{SVG}line") if line.get("stroke-width") == "2"]
    assert [t.get("stroke") for t in ticks] == ["#adb5bd", "#2a9d8f", "#e63946"]  # invoke, ok, fail
    marks = list(root.iter(f"{SVG}path"))
    assert [m.get("fill") for m in marks] == ["#264653", "#e63946"]  # an observation, a failed check
    assert "<b>&" in marks[0].find(f"{SVG}title").text


def test_written_beside_the_history_only_when_there_is_one(tmp_path: Path) -> None:
    history = _history(tmp_path, EVENTS)
    assert write_timeline(history) == history.with_name(TIMELINE_NAME)
    assert history.with_name(TIMELINE_NAME).read_text().startswith("<svg")
    assert write_timeline(tmp_path / "none.jsonl") is None
