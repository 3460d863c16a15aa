"""The ``ledger`` http-server (``python -m harness.reference.http.ledger``) started from its
built-in manifest, driven with raw sockets and ``http.client``: every closing rule of SPEC §4.5
shows up in the ledger with the right ``closed_by``, and admin traffic never does.

Waits are bounded: a socket read with a timeout (EOF/RST is the event awaited) or ``eventually``
on the ledger; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.http_run import LedgerAdmin
from harness.observe.sockets import close_wait_on, snapshot
from harness.peers import PeerRegistry, render
from harness.ports import LOOPBACK, free_port
from harness.runtime.process import ProcessRuntime
from harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START_MS = 15_000
EVENT_S = 3.0  # bound on any awaited socket event
LEDGER_MS = 3_000  # bound on the ledger showing a close
T_SCHED_MS = 250  # research §6: timer tolerance under CI load
LATE_MS = 2 * T_SCHED_MS  # the ledger's own timers, on a machine shared with timing-heavy suites
TOMCAT_CLOSES = (400, 408, 411, 413, 414, 500, 501, 503)
TOMCAT_KEEPS = (404, 429, 502, 504)


@contextlib.contextmanager
def ledger_server(tmp_path: Path, **knobs: Any) -> Iterator[tuple[LedgerAdmin, int]]:
    peer = PeerRegistry.default().get("http-server", "ledger")
    port = free_port()
    spec, readiness = render(peer, placeholders={"host": LOOPBACK, "port": port}, knobs=knobs,
                             name=f"ledger-{port}", log_path=tmp_path / f"ledger-{port}.log")
    with ProcessRuntime() as runtime:
        node = runtime.start(spec, readiness, timeout_ms=START_MS)
        try:
            yield LedgerAdmin(f"http://{LOOPBACK}:{port}"), port
        finally:
            assert node.stop() == 0, node.logs()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=EVENT_S)
    sock.settimeout(EVENT_S)
    return sock


def exchange(sock: socket.socket, path: str, headers: str = "") -> bytes:
    """Send one GET and read one whole response (Content-Length framed)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before a response to {path}; got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "EOF inside a response body"
        body += chunk
    return head


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.decode().partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def wait_eof(sock: socket.socket) -> str:
    """Block (bounded) until the server ends the connection: "fin" or "rst"."""
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return "rst"
    assert data == b"", f"expected the server to close, got bytes {data!r}"
    return "fin"


def record_for(admin: LedgerAdmin, sock: socket.socket) -> dict[str, Any]:
    local = f"{LOOPBACK}:{sock.getsockname()[1]}"
    matches = [c for c in admin.connections() if c["peer"] == local]
    assert len(matches) == 1, f"ledger has {len(matches)} records for {local}: {admin.ledger()}"
    return matches[0]


def find_record(admin: LedgerAdmin, local_port: int) -> dict[str, Any] | None:
    found = [c for c in admin.connections() if c["peer"] == f"{LOOPBACK}:{local_port}"]
    return found[0] if found else None


def closed_record(admin: LedgerAdmin, local_port: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        record = find_record(admin, local_port)
        return record if record and record["closed_by"] else None

    return eventually(probe, timeout_ms=LEDGER_MS, what=f"ledger records the close of :{local_port}").value


# --- idle and request limits -------------------------------------------------------------------


def test_keepalive_timeout_closes_with_fin_as_server_idle(tmp_path: Path) -> None:
    with ledger_server(tmp_path, keepalive_timeout_ms=300) as (admin, port), connect(port) as sock:
        head = exchange(sock, "/", "Connection: keep-alive\r\n")
        assert status_of(head) == 200
        assert header(head, "Connection") == "keep-alive"
        assert wait_eof(sock) == "fin"
        record = record_for(admin, sock)
        assert (record["closed_by"], record["close_mode"], record["requests"]) == ("server-idle", "fin", 1)
        idle_ms = record["closed_ms"] - record["request_log"][-1]["t_ms"]
        assert 300 <= idle_ms <= 300 + LATE_MS, record


def test_rst_on_idle_resets_instead(tmp_path: Path) -> None:
    with ledger_server(tmp_path, keepalive_timeout_ms=200, rst_on_idle=True) as (admin, port), connect(port) as sock:
        assert status_of(exchange(sock, "/")) == 200
        assert wait_eof(sock) == "rst"
        record = record_for(admin, sock)
        assert (record["closed_by"], record["close_mode"]) == ("server-idle", "rst")


def test_max_keepalive_requests_closes_with_the_header(tmp_path: Path) -> None:
    with ledger_server(tmp_path, max_keepalive_requests=3) as (admin, port), connect(port) as sock:
        heads = [exchange(sock, "/") for _ in range(3)]
        assert [header(h, "Connection") for h in heads] == [None, None, "close"]
        assert wait_eof(sock) == "fin"
        record = record_for(admin, sock)
        assert (record["closed_by"], record["requests"]) == ("server-close-hdr", 3)


def test_keepalive_header_is_sent_only_while_the_connection_stays(tmp_path: Path) -> None:
    with ledger_server(tmp_path, keepalive_header="timeout=5, max=2", max_keepalive_requests=2) as (admin, port), \
            connect(port) as sock:
        first, second = exchange(sock, "/"), exchange(sock, "/")
        assert header(first, "Keep-Alive") == "timeout=5, max=2"
        assert header(second, "Keep-Alive") is None
        assert header(second, "Connection") == "close"


# --- statuses, drops, client requests ----------------------------------------------------------


def test_close_on_status_follows_tomcats_list(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port):
        for code in TOMCAT_CLOSES:
            with connect(port) as sock:
                head = exchange(sock, f"/status/{code}")
                assert (status_of(head), header(head, "Connection")) == (code, "close")
                assert wait_eof(sock) == "fin", code
                record = record_for(admin, sock)
                assert record["closed_by"] == "server-close-hdr", record
                assert record["closed_ms"] - record["request_log"][0]["t_ms"] <= 100 + LATE_MS, record
        for code in TOMCAT_KEEPS:
            with connect(port) as sock:
                head = exchange(sock, f"/status/{code}")
                assert (status_of(head), header(head, "Connection")) == (code, None)
                assert status_of(exchange(sock, "/")) == 200  # same socket: kept
                record = record_for(admin, sock)
                assert (record["closed_by"], record["requests"]) == (None, 2), record


def test_close_on_status_is_configurable(tmp_path: Path) -> None:
    with ledger_server(tmp_path, close_on_status=[404]) as (admin, port):
        with connect(port) as sock:
            assert status_of(exchange(sock, "/status/500")) == 500
            assert status_of(exchange(sock, "/status/404")) == 404
            assert wait_eof(sock) == "fin"
            assert record_for(admin, sock)["requests"] == 2


def test_drop_nth_closes_without_answering_the_nth_request(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port), connect(port) as sock:
        assert status_of(exchange(sock, "/drop-nth?n=2")) == 200
        sock.sendall(b"POST /drop-nth?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert wait_eof(sock) == "fin"
        record = record_for(admin, sock)
        assert (record["closed_by"], record["requests"]) == ("server-drop", 2)
        assert [e["status"] for e in record["request_log"]] == [200, None]
        assert record["request_log"][1]["method"] == "POST"


def test_a_request_asking_for_close_is_answered_and_closed(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port), connect(port) as sock:
        head = exchange(sock, "/sleep?ms=10", "Connection: close\r\n")
        assert header(head, "Connection") == "close"
        assert wait_eof(sock) == "fin"
        assert record_for(admin, sock)["closed_by"] == "server-close-hdr"


# --- client-side closes ------------------------------------------------------------------------


def test_client_fin_is_recorded_and_the_server_closes_its_side(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port):
        sock = connect(port)
        assert status_of(exchange(sock, "/")) == 200
        local_port = sock.getsockname()[1]
        sock.close()
        record = closed_record(admin, local_port)
        assert (record["closed_by"], record["requests"]) == ("client", 1)
        eventually(lambda: close_wait_on(snapshot([port]), port), accept=lambda left: not left, timeout_ms=1000,
                   what="no server-side CLOSE_WAIT (TC-13)")


def test_client_reset_is_recorded_as_such(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port):
        sock = connect(port)
        assert status_of(exchange(sock, "/")) == 200
        local_port = sock.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert closed_record(admin, local_port)["closed_by"] == "client-reset"


def test_a_client_leaving_mid_sleep_is_recorded_at_once(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port):
        sock = connect(port)
        sock.sendall(b"GET /sleep?ms=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        local_port = sock.getsockname()[1]
        eventually(lambda: (find_record(admin, local_port) or {}).get("requests") == 1, timeout_ms=LEDGER_MS,
                   what="request seen")
        sock.close()
        record = closed_record(admin, local_port)  # within LEDGER_MS, far before the 20 s sleep ends
        assert record["closed_by"] == "client"
        assert record["request_log"][0]["status"] is None


# --- max_connections ---------------------------------------------------------------------------


def test_max_connections_queues_the_second_connection_until_a_slot_frees(tmp_path: Path) -> None:
    with ledger_server(tmp_path, max_connections=1) as (admin, port):
        first = connect(port)
        assert status_of(exchange(first, "/")) == 200  # holds the only slot while kept alive
        second = connect(port)
        second.sendall(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        # The second is accepted, not refused, and waits; the admin API still answers meanwhile.
        eventually(lambda: admin.ledger()["queued"], timeout_ms=LEDGER_MS, accept=lambda q: q == 1,
                   what="second connection queued")
        assert find_record(admin, second.getsockname()[1])["served_ms"] is None
        first.close()
        data = b""
        while b"\r\n\r\n" not in data:  # the queued request is answered once the slot frees
            chunk = second.recv(65536)
            assert chunk, "the queued connection was closed instead of served"
            data += chunk
        assert status_of(data) == 200
        view = admin.ledger()
        a, b = sorted(view["connections"], key=lambda c: c["id"])
        assert b["served_ms"] >= a["closed_ms"], view
        assert (view["max_simultaneous"], view["max_served_simultaneous"], view["queued"]) == (2, 1, 0)
        second.close()


# --- admin -------------------------------------------------------------------------------------


def test_admin_traffic_is_not_counted_and_reset_keeps_open_connections(tmp_path: Path) -> None:
    with ledger_server(tmp_path) as (admin, port):
        for _ in range(3):
            admin.ledger()
        view = admin.ledger()
        assert (view["connections"], view["max_simultaneous"], view["open"]) == ([], 0, 0)
        client = http.client.HTTPConnection(LOOPBACK, port, timeout=EVENT_S)
        client.request("GET", "/bytes?n=5")
        assert client.getresponse().read() == b"xxxxx"
        kept = connect(port)
        assert status_of(exchange(kept, "/")) == 200
        client.close()
        eventually(lambda: admin.ledger()["open"], accept=lambda n: n == 1, timeout_ms=LEDGER_MS,
                   what="one connection left open")
        assert admin.ledger()["max_simultaneous"] == 2
        admin.reset()
        view = admin.ledger()
        assert [c["closed_by"] for c in view["connections"]] == [None]
        assert (view["max_simultaneous"], view["open"]) == (1, 1)
        kept.close()
