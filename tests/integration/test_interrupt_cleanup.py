"""Killing a run mid-case (SIGINT, as Ctrl-C does) leaves no process of the run behind: peers,
agents and Toxiproxy all go. Every process of the run carries an environment marker inherited
from the pytest process, so the check finds even grandchildren."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.wait import eventually
from tests.support.hanging import write_hanging_case
from tests.support.signals import default_sigint

pytestmark = pytest.mark.integration

def processes_with_marker(marker: str) -> list[tuple[int, str]]:
    found = []
    needle = f"CONNFORMANCE_RUN_MARK={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" in status:
                    continue  # a zombie holds nothing; its parent reaps it
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:150]))
        except OSError:
            continue
    return found


@pytest.mark.timeout(120)
def test_sigint_mid_case_leaves_nothing_behind(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    test_file, up_file = write_hanging_case(tmp_path, case_id="SR-87")
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
         "--peer", "nacos-client=ref", "--report-dir", str(tmp_path / "report"), "--rootdir", str(tmp_path)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=default_sigint,  # as a terminal starts it, whatever SIGINT disposition we inherited
    )
    try:
        eventually(lambda: up_file.exists() or proc.poll() is not None, timeout_ms=60000, what="peers up")
        assert proc.poll() is None, f"the run ended before the interrupt: {proc.stdout.read().decode()[-2000:]}"
        running = processes_with_marker(marker)
        assert len(running) >= 3, f"expected pytest, Toxiproxy, server and client running, saw {running}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        left = eventually(lambda: processes_with_marker(marker), timeout_ms=10000,
                          what="no process of the run left", accept=lambda found: not found)
        assert not left.value
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid, _ in processes_with_marker(marker):  # only ever the run's own processes
            os.kill(pid, signal.SIGKILL)
