"""Readiness strategies handed to ``Runtime.start`` and the one poll loop that waits on them.

A strategy answers "is the peer ready yet?" with a bool and never blocks longer than a short
probe timeout; the loop owns the deadline (STYLE.md: testcontainers wait strategies). On timeout
the error carries what was awaited, for how long, the exit code and the last log lines, so a
peer that never got ready explains itself.
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from harness.errors import HarnessError, SetupError
from harness.observe.listeners import listeners_of
from harness.ports import check_loopback
from harness.runtime.base import Node, Readiness
from harness.wait import WaitTimeout, eventually

__all__ = ["PortReady", "HttpReady", "LogLineReady", "wait_ready", "LOG_TAIL_LINES"]

LOG_TAIL_LINES = 30
PROBE_TIMEOUT_S = 1.0  # one probe; the deadline belongs to wait_ready
_POLL_INTERVAL_MS = 50.0
# No proxy ever: an http_proxy in the environment must not capture loopback probes.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PortReady:
    """Ready when a TCP connect to ``host:port`` succeeds."""

    def __init__(self, host: str, port: int) -> None:
        self.host = _loopback_or_error(host, f"PortReady({host!r}, {port})")
        self.port = int(port)
        self.description = f"TCP {self.host}:{self.port} accepts connections"

    def is_ready(self, node: Node) -> bool:
        if not _node_listens_on(node, self.port):
            return False
        with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT_S):
            return True  # a refused connect raises OSError, which the poll loop counts as "not yet"

    def __repr__(self) -> str:
        return f"PortReady({self.host!r}, {self.port})"


class HttpReady:
    """Ready when ``GET url`` answers ``expect_status`` (no proxy, no redirects followed)."""

    def __init__(self, url: str, expect_status: int = 200) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise HarnessError(f"HttpReady needs an http:// URL with a host; got {url!r}")
        _loopback_or_error(parsed.hostname, f"HttpReady({url!r})")
        self.url = url
        self.port = parsed.port or 80
        self.expect_status = int(expect_status)
        self.description = f"GET {url} answers {self.expect_status}"

    def is_ready(self, node: Node) -> bool:
        if not _node_listens_on(node, self.port):
            return False
        try:
            with _NO_PROXY_OPENER.open(self.url, timeout=PROBE_TIMEOUT_S) as response:
                return response.status == self.expect_status
        except urllib.error.HTTPError as exc:  # a non-2xx answer is still an answer
            exc.close()
            return exc.code == self.expect_status

    def __repr__(self) -> str:
        return f"HttpReady({self.url!r}, expect_status={self.expect_status})"


class LogLineReady:
    """Ready when a line of the node's log (since its latest start) matches ``pattern``."""

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise HarnessError(f"LogLineReady pattern {pattern!r} is not a valid regex: {exc}") from exc
        self.pattern = pattern
        self.description = f"log line matching /{pattern}/"

    def is_ready(self, node: Node) -> bool:
        return self.regex.search(_current_log(node)) is not None

    def __repr__(self) -> str:
        return f"LogLineReady({self.pattern!r})"


class _Exited(Exception):
    """The node's process ended while we waited for it to get ready."""


def launch_until_ready(node: Any, timeout_ms: float, *, discard: Callable[[], None],
                       forget: Callable[[], None]) -> None:
    """``node._launch()`` and wait for its readiness. On any failure, an interrupt included, the
    node is discarded (killed or removed) and forgotten by its runtime before the error goes on."""
    try:
        node._launch()
        wait_ready(node, node.readiness, timeout_ms)
    except BaseException:
        try:
            discard()
        finally:
            forget()
        raise


def wait_ready(node: Node, strategies: Sequence[Readiness], timeout_ms: float) -> float:
    """Wait until every strategy holds for ``node``; return the elapsed ms.

    Strategies are checked in order and each one, once satisfied, stays satisfied. Raises
    ``SetupError`` at once if the process exits, or when ``timeout_ms`` passes. With no
    strategies it returns at once: a one-shot program (an http-client agent) may already have
    exited, and its exit code is the caller's to read.
    """
    pending = list(strategies)
    if not pending:
        return 0.0

    def all_ready() -> bool:
        if not node.alive():
            raise _Exited()
        while pending:
            if not pending[0].is_ready(node):
                return False
            pending.pop(0)
        return True

    try:
        waited = eventually(
            all_ready,
            timeout_ms=timeout_ms,
            what=f"{node.name} to get ready",
            interval_ms=_POLL_INTERVAL_MS,
        )
    except _Exited:
        raise SetupError(_not_ready_message(node, pending, timeout_ms, exited=True)) from None
    except WaitTimeout as exc:
        raise SetupError(_not_ready_message(node, pending, timeout_ms, last_error=exc.last_error)) from None
    return waited.elapsed_ms


def _not_ready_message(
    node: Node,
    pending: Sequence[Readiness],
    timeout_ms: float,
    *,
    exited: bool = False,
    last_error: BaseException | None = None,
) -> str:
    awaited = "; ".join(s.description for s in pending) or "(nothing pending)"
    exit_code = getattr(node, "exit_code", None)
    if exited:
        headline = f"peer {node.name} exited (exit code {exit_code}) before it was ready"
    else:
        headline = f"peer {node.name} not ready after {timeout_ms:.0f} ms"
    lines = [
        headline,
        f"  waiting for:  {awaited}",
        f"  timeout:      {timeout_ms:.0f} ms",
        f"  exit code:    {exit_code if exit_code is not None else 'none (still running)'}",
    ]
    if last_error is not None:
        lines.append(f"  last probe:   {last_error!r}")
    log_path = getattr(node, "log_path", None)
    lines.append(f"  last {LOG_TAIL_LINES} log lines" + (f" ({log_path}):" if log_path else ":"))
    tail = node.logs(tail_lines=LOG_TAIL_LINES).rstrip("\n")
    if tail:
        lines.extend(f"    | {line}" for line in tail.splitlines())
    else:
        lines.append("    (log empty)")
    lines.append(
        "  what to do: check the command line and the log above; raise the readiness timeout only if the peer is merely slow"
    )
    return "\n".join(lines)


def _node_listens_on(node: Node, port: int) -> bool:
    """True when a process of ``node`` holds a listening TCP socket on ``port`` (in whatever
    network namespace the process is).

    Without this, a connect can succeed against someone else's listener (a concurrent run that
    drew the same port, a leftover of a crashed one) and a dead peer would pass as ready. Nodes
    that cannot list their processes (a container) skip the check.
    """
    if not getattr(node, "cheap_process_list", True):
        return True
    return any(item.proto == "tcp" and item.port == port for item in listeners_of(node.processes()))


def _current_log(node: Node) -> str:
    # Nodes that restart keep one log; match only what the latest start wrote, or an old
    # "ready" line would pass the probe before the new process is up.
    current = getattr(node, "log_since_start", None)
    return current() if callable(current) else node.logs(tail_lines=10_000)


def _loopback_or_error(host: str, what: str) -> str:
    try:
        return check_loopback(host)
    except ValueError as exc:
        raise HarnessError(f"{what}: {exc}") from None
