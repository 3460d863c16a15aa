"""What a run under test left behind, found by the environment marker every process of the run
inherits (``CONNFORMANCE_RUN_MARK``), and the network namespaces and links on the machine; and
the one way a test ends a run it started: by its pid and the marker, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from harness.paths import PROJECT_ROOT


def processes_with_marker(marker: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose environment carries ``CONNFORMANCE_RUN_MARK=marker``."""
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


def end_run(proc: subprocess.Popen | None, marker: str) -> None:
    """After a test: kill the run if it is still up, then every process of its own that is left."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for pid, _ in processes_with_marker(marker):  # only ever the run's own processes
        os.kill(pid, signal.SIGKILL)


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout


def run_cli(args: list[str], marker: str, *, timeout_s: float) -> tuple[int, str]:
    """``connformance ARGS`` as a user runs it (a subprocess of this interpreter), every process of
    it carrying ``marker``; returns its exit status and its output (stderr merged)."""
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=PROJECT_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    return proc.returncode, proc.stdout
