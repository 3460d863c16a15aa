"""What a run under test left behind, found by the environment marker every process of the run
inherits (``CONNFORMANCE_RUN_MARK``), and the network namespaces and links on the machine; and
the one way a test ends a run it started: by its pid and the marker, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


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
