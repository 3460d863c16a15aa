"""Connection attempts seen on the wire: while a server's proxy is down, the harness listens on
the proxy's own address, accepts every connection a client makes there, records when, and closes
it at once. A client's reconnect attempts are then counted and timed from the outside, whatever
its library logs (SR-18): the wire is the witness, not the peer's wording.

A connect that is accepted and closed fails the attempt the same way a refused one does (the
ServerCheck gets UNAVAILABLE); the listener only adds the record.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.ports import check_loopback
from harness.wait import now_ms

__all__ = ["AttemptCounter", "Attempt"]

_SELECT_TIMEOUT_S = 0.05
_STOP_JOIN_S = 2.0


@dataclass(frozen=True)
class Attempt:
    t_ms: float  # harness.wait.now_ms() at accept
    target: str  # host:port the client dialled
    source_port: int


@dataclass
class AttemptCounter:
    """Accept-and-close listeners on ``endpoints`` for the life of the ``with`` block."""

    endpoints: Iterable[tuple[str, int]]
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.endpoints = [(check_loopback(host), int(port)) for host, port in self.endpoints]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="attempt-counter", daemon=True)

    def __enter__(self) -> AttemptCounter:
        try:
            for host, port in self.endpoints:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._listeners.append(sock)
                sock.bind((host, port))
                sock.listen(64)
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, f"{host}:{port}")
        except OSError:
            self._close_all()
            raise
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_STOP_JOIN_S)
        self._close_all()

    def times_ms(self) -> list[float]:
        with self._lock:
            return [a.t_ms for a in self.attempts]

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(_SELECT_TIMEOUT_S):
                try:
                    conn, (_, port) = key.fileobj.accept()
                except (BlockingIOError, OSError):
                    continue
                at = now_ms()
                conn.close()
                with self._lock:
                    self.attempts.append(Attempt(at, key.data, port))

    def _close_all(self) -> None:
        for sock in self._listeners:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._listeners.clear()
        self._selector.close()
