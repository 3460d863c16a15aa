"""Raw TCP helpers for tests against the real Toxiproxy: dial, exact reads, echo round trips,
and a bounded look at whether the peer closed (FIN) or reset (RST)."""

from __future__ import annotations

import socket
import threading

from harness.wait import eventually, now_ms

SOCKET_TIMEOUT_S = 2.0
CLOSE_WITHIN_MS = 3000  # a close/RST through loopback + Toxiproxy takes a few ms; 3 s is a hang


def dial(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def echo_ms(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Round trip of ``payload`` through the proxy and the echo server, in ms."""
    start = now_ms()
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    return now_ms() - start


def read_state(sock: socket.socket, wait_s: float = 0.05) -> str:
    """One bounded read: 'open' (nothing within wait_s), 'data', 'eof' (FIN) or 'reset' (RST)."""
    sock.settimeout(wait_s)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        return "reset"
    finally:
        sock.settimeout(SOCKET_TIMEOUT_S)
    return "data" if data else "eof"


def wait_closed(sock: socket.socket, what: str) -> str:
    """Wait until the peer closed ``sock``; returns 'eof' or 'reset'."""
    return eventually(
        lambda: read_state(sock),
        accept=lambda s: s in ("eof", "reset"),
        timeout_ms=CLOSE_WITHIN_MS,
        what=what,
    ).value


class EchoServer:
    """Threaded TCP echo server on 127.0.0.1:<ephemeral>. Close() unblocks and joins every thread."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = False
        self._start(self._accept_loop)

    def _start(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=f"echo-{self.port}")
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # listener shut down
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self._conns.append(conn)
            self._start(self._echo, conn)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass  # RST from reset_peer, or closed by close()
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        for sock in [self._listener, *conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes accept()/recv() in the threads
            except OSError:
                pass
        self._listener.close()
        for t in self._threads:
            t.join(timeout=SOCKET_TIMEOUT_S)

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
