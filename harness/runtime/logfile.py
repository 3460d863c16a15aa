"""Reading a peer's log file, which both runtimes write: the whole of it from an offset (what
the latest start wrote), or its last lines (failure messages)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.runtime.readiness import LOG_TAIL_LINES

__all__ = ["LogFileReader", "read_from", "read_tail"]


def read_from(path: Path, offset: int) -> str:
    """What the log holds from ``offset`` on ("" before the file exists)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def read_tail(path: Path, tail_lines: int = LOG_TAIL_LINES, block_bytes: int = 8192) -> str:
    """The last ``tail_lines`` lines, read backwards in blocks (logs can be large)."""
    if tail_lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start, data = end, b""
            # Read backwards until the window holds more line breaks than asked for.
            while start > 0 and data.count(b"\n") <= tail_lines:
                start = max(0, start - block_bytes)
                f.seek(start)
                data = f.read(end - start)
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    return "".join(lines[-tail_lines:])


class LogFileReader:
    """The log methods of a node whose runtime writes its output to ``log_path``, with a start
    marker before each start (``_log_start_offset``: where the latest start's output begins)."""

    log_path: Path
    _log_start_offset: int = 0

    def logs(self, tail_lines: int = 50) -> str:
        """The last ``tail_lines`` lines of the log (all starts, with the harness's start markers)."""
        return read_tail(self.log_path, tail_lines)

    def log_text(self) -> str:
        """The whole log, every start included."""
        return read_from(self.log_path, 0)

    def log_since_start(self) -> str:
        """What the latest start wrote (what ``LogLineReady`` matches)."""
        return read_from(self.log_path, self._log_start_offset)
