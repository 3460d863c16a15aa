"""Loopback port allocation. Everything binds to 127.0.0.0/8; nothing hard-codes a port.

Each pytest-xdist worker draws from its own range (gw0, gw1, ...) so workers never race for
the same port; within a range a port is handed out once per process, so TIME_WAIT from an
earlier case (60 s on Linux) cannot collide with a new one.
"""

from __future__ import annotations

import os
import random
import socket
import threading

LOOPBACK = "127.0.0.1"
NACOS_GRPC_OFFSET = 1000  # Constants.SDK_GRPC_PORT_DEFAULT_OFFSET

_BASE = 20000
_SPAN = 3000  # ports per worker; main ports come from the lower half, +1000 must stay in range
_lock = threading.Lock()
_next: dict[int, int] = {}


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits or 0)


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound right now (no SO_REUSEADDR: TIME_WAIT counts as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, also_free_offset: int | None = None, host: str = LOOPBACK) -> int:
    """A port that binds on ``host`` (loopback) now; with ``also_free_offset`` port + offset too.

    Nacos main ports use ``also_free_offset=1000`` because the proxy for the server listens on
    main + 1000 (SPEC 4.1).
    """
    idx = _worker_index()
    lo = _BASE + idx * _SPAN * 2
    hi = lo + _SPAN
    with _lock:
        # A random start per process: two runs on one machine (or a run and the suite it
        # launches as a self-test) rarely walk the same ports; is_free() settles the rest.
        cur = _next.get(idx) or lo + random.randrange(_SPAN)
        for _ in range(_SPAN):
            port = cur
            cur = cur + 1 if cur + 1 < hi else lo
            if not is_free(port, host):
                continue
            if also_free_offset is not None and not is_free(port + also_free_offset, host):
                continue
            _next[idx] = cur
            return port
    raise OSError(f"no free loopback port in {lo}..{hi} (worker {idx}); close leftover peers")


def server_host(index: int) -> str:
    """The loopback address of the index-th server of a topology: 127.0.0.11, .12, ...

    Nacos clients match a redirect's target by IP alone and take the port from their own list
    (RpcClient: "Recommend server is not in server list"), so servers sharing one IP could never
    be told apart by a redirect. One address per server keeps redirects meaningful on loopback.
    """
    if not 0 <= index < 200:
        raise ValueError(f"server index {index} out of range 0..199")
    return f"127.0.0.{11 + index}"


def http_server_host(index: int) -> str:
    """The loopback address of the index-th HTTP server of a topology: 127.0.2.11, .12, ...
    (its own range, so a case may hold Nacos and HTTP servers side by side)."""
    if not 0 <= index < 200:
        raise ValueError(f"http server index {index} out of range 0..199")
    return f"127.0.2.{11 + index}"


def ephemeral_port() -> int:
    """A kernel-chosen free port (for things that don't need the per-worker range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_loopback(host: str) -> str:
    """Refuse any address outside 127.0.0.0/8 (network hygiene is a non-negotiable)."""
    if host == "localhost":
        return host
    parts = host.split(".")
    if len(parts) != 4 or parts[0] != "127":
        raise ValueError(f"address {host!r} is outside 127.0.0.0/8; connformance only binds and dials loopback")
    return host
