"""`connformance up --ui` in a real browser: a short session serves its live page on 127.0.0.1; a
fault is applied through the page's API; headless Chromium (Debian's, `connformance setup
--browser`) loads the page, and what it shows — per server the registered count, per client its
status and server, the fault's window — matches the session's history for the snapshot the page
names. A screenshot is kept beside the session's history (live-view.png)."""

from __future__ import annotations

import html
import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from harness.agents.build import find_browser
from harness.observe.history import History
from harness.paths import PROJECT_ROOT
from harness.wait import eventually
from tests.support.marked import end_run, processes_with_marker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_BROWSER_TIMEOUT_S = 60


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The session's output, line by line, read on a thread (so a wait on it is bounded)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue, pattern: str, seen: list[str], timeout_s: float) -> re.Match:
    def match() -> re.Match | None:
        try:
            while True:
                seen.append(lines.get_nowait())
                found = re.search(pattern, seen[-1])
                if found:
                    return found
        except queue.Empty:
            return None

    return eventually(match, timeout_ms=timeout_s * 1000, what=f"a line matching {pattern!r}", interval_ms=100).value


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _browser(*args: str) -> str:
    browser = find_browser()
    argv = [str(browser), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=_BROWSER_TIMEOUT_S, check=True).stdout


def _page_numbers(dom: str) -> dict:
    """What the rendered page shows: its snapshot, servers' counts, clients' state, fault windows."""
    seq = re.search(r'<body[^>]*data-snapshot-seq="(\d+)"', dom)
    servers = dict(re.findall(r'<tr data-server="([^"]+)">.*?<td class="registered">([^<]*)</td>', dom))
    clients = {name: (html.unescape(status), html.unescape(server)) for name, status, server in re.findall(
        r'<tr data-client="([^"]+)">.*?<td class="status">([^<]*)</td><td class="server">([^<]*)</td>', dom)}
    faults = re.findall(r'<rect class="fault" data-fault="([^"]+)" data-target="([^"]+)"', dom)
    return {"seq": int(seq.group(1)) if seq else None, "servers": servers, "clients": clients, "faults": faults}


@pytest.mark.skipif(find_browser() is None, reason="no headless Chromium: `connformance setup --browser` (as root) "
                    "installs Debian's chromium-headless-shell")
def test_the_live_page_shows_what_the_history_records(tmp_path: Path) -> None:
    marker = f"ui-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    argv = [sys.executable, "-m", "harness.cli", "up", "--servers", "2", "--clients", "ref:2", "--duration-s", "25",
            "--ui", "--workdir", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        lines = _lines(proc)
        url = _wait_line(lines, r"^\[up\] live view (http://127\.0\.0\.1:\d+/) ", seen, timeout_s=60).group(1)
        eventually(lambda: _get_json(url + "state.json"), timeout_ms=20000, interval_ms=200,
                   what="both clients RUNNING on the page's state",
                   accept=lambda st: [c["status"] for c in st["snapshot"]["clients"]] == ["RUNNING", "RUNNING"])

        # A fault from the page's form (its API): recorded like a scheduled one, shown as a window.
        assert _post_json(url + "fault", {"action": "apply", "fault": "proxy_down", "target": "server-0"})["ok"]
        _wait_line(lines, r"^\[chaos .*apply proxy_down server-0", seen, timeout_s=10)
        eventually(lambda: _get_json(url + "state.json"), timeout_ms=10000, interval_ms=200,
                   what="the fault's window and a snapshot taken after it", accept=lambda st:
                   st["faults"] and st["snapshot"]["t_ms"] > st["faults"][0]["from_ms"])

        dom = _browser("--dump-dom", url)
        _browser("--window-size=1000,800", f"--screenshot={tmp_path / 'live-view.png'}", url)
        page = _page_numbers(dom)
        assert page["seq"] is not None, dom[:2000]
        assert ("proxy_down", "server-0") in page["faults"], dom[:4000]

        assert _post_json(url + "fault", {"action": "heal", "fault": "proxy_down", "target": "server-0"})["ok"]
        with pytest.raises(urllib.error.HTTPError):  # a fault outside the vocabulary is refused, not run
            _post_json(url + "fault", {"action": "apply", "fault": "rm -rf", "target": "server-0"})
        proc.wait(timeout=90)
        assert proc.returncode == 0, "\n".join(seen)
    finally:
        end_run(proc, marker)

    # The page's numbers are the history's, for the snapshot it names.
    history = History.load(tmp_path / "history.jsonl")
    (snapshot,) = [e for e in history.events("observe") if e["seq"] == page["seq"]]
    assert snapshot["what"] == "live_view"
    value = snapshot["value"]
    assert page["servers"] == {s["name"]: str(s["registered"]) for s in value["servers"]}
    assert page["clients"] == {c["name"]: (c["status"], c["server"] or "-") for c in value["clients"]}
    applied = [e for e in history.events("fault_begin") if e.get("label") == "server-0"]
    assert [e["fault"] for e in applied] == ["proxy_down"]
    assert [e["value"] for e in history.events("info") if e.get("process") == "ui"] == [
        {"fault": "proxy_down", "target": "server-0"}, {"fault": "proxy_down", "target": "server-0"}]
    png = (tmp_path / "live-view.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not processes_with_marker(marker)
