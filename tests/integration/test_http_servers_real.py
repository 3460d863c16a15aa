"""The real HTTP servers as peers (SPEC §3): embedded Tomcat 10.1 and Debian's nginx, started
from their built-in manifests through the process runtime, probed over raw sockets so the
server's own FIN is what we observe (TC-11, TC-12, TC-13 in miniature).

The installs and builds come from ``connformance setup`` (steps tomcat-launcher and nginx); a
missing one skips with the command to run.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.agents.build import find_nginx, tomcat_argfile
from harness.observe.sockets import close_wait_on, snapshot
from harness.peers import PeerManifest, PeerRegistry, render
from harness.ports import free_port
from harness.runtime.process import ProcessNode, ProcessRuntime
from harness.wait import eventually

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
IO_TIMEOUT_S = 5.0          # one request/response on loopback; a bound, not an expectation
FIN_AFTER_CLOSE_S = 1.0     # TC-11: FIN within 100 ms + tolerance; generous on a loaded 2-core box
TOLERANCE_S = 1.0           # on top of the stack's own reaper granularity
SERVERS = ("tomcat", "nginx")
# TC-11: Tomcat's statusDropsConnection list vs nginx's special-response list (both verified).
CLOSES = {"tomcat": (400, 408, 411, 413, 414, 500, 501, 503), "nginx": (400, 413, 414, 500, 501)}
KEEPS = {"tomcat": (200, 404, 429, 502, 504), "nginx": (200, 404, 411, 429, 502, 503, 504)}

_REGISTRY = PeerRegistry.default()


def _manifest(name: str) -> PeerManifest:
    return _REGISTRY.get("http-server", name)


def _require_installed(name: str) -> None:
    if name == "tomcat":
        if shutil.which("java") is None:
            pytest.skip("no `java` on PATH: the Tomcat launcher needs a JDK 17+")
        if not tomcat_argfile().is_file():
            pytest.skip(f"Tomcat launcher not built ({tomcat_argfile()} missing); "
                        "run `connformance setup --only tomcat-launcher`")
    elif find_nginx() is None:
        pytest.skip("nginx not installed; run `connformance setup --only nginx` (as root) or "
                    "`apt-get install nginx-light`")


@dataclass
class Running:
    name: str
    manifest: PeerManifest
    node: ProcessNode
    port: int

    def connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture(scope="module")
def runtime() -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime()
    try:
        yield rt
    finally:
        rt.close()
        assert not rt.leaked(), f"runtime leaked: {rt.leaked()}"


def _start(runtime: ProcessRuntime, name: str, knobs: dict[str, Any] | None = None) -> Running:
    _require_installed(name)
    manifest = _manifest(name)
    port = free_port(host=HOST)
    spec, readiness = render(manifest, placeholders={"host": HOST, "port": port}, knobs=knobs,
                             name=f"{name}-{port}")
    node = runtime.start(spec, readiness, timeout_ms=manifest.readiness_timeout_ms)
    return Running(name, manifest, node, port)


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, runtime: ProcessRuntime) -> Iterator[Running]:
    """One server per kind for the module, default knobs."""
    running = _start(runtime, request.param)
    try:
        yield running
    finally:
        running.node.stop()


# --- raw HTTP/1.1 ------------------------------------------------------------------------------


def _exchange(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    """One keep-alive GET on ``sock``; the status, lower-cased headers and body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n".encode())
    response = http.client.HTTPResponse(sock, method="GET")
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def _seconds_until_closed(sock: socket.socket, bound_s: float) -> float | None:
    """Seconds until the server closes ``sock`` (EOF or RST), or None if it stays open ``bound_s``."""
    start = time.monotonic()
    sock.settimeout(bound_s)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - start
    assert data == b"", f"unsolicited bytes on an idle connection: {data!r}"
    return time.monotonic() - start


# --- cases ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_server_answers_the_ledger_paths(server: Running) -> None:
    with server.connect() as sock:
        assert _exchange(sock, "/")[0] == 200
        status, _, body = _exchange(sock, "/status/201")
        assert status == 201
        assert body.startswith(b"status 201")
        status, _, body = _exchange(sock, "/bytes?n=1000")
        assert (status, body) == (200, b"x" * 1000)
        start = time.monotonic()
        status, _, _ = _exchange(sock, "/sleep?ms=200")
        assert status == 200
        assert time.monotonic() - start >= 0.2


@pytest.mark.timeout(120)
def test_server_closes_after_its_error_statuses_and_keeps_others(server: Running) -> None:
    """TC-11 as each server implements it: `Connection: close` and a prompt FIN after the
    statuses on its list; the connection stays usable after the others."""
    for code in CLOSES[server.name]:
        with server.connect() as sock:
            _exchange(sock, "/")  # a used keep-alive connection, as a pool would hand out
            if code == 408 and server.name == "nginx":
                continue  # nginx answers `return 408` by closing without a response
            status, headers, _ = _exchange(sock, f"/status/{code}")
            assert status == code
            assert headers.get("connection", "").lower() == "close", (code, headers)
            closed_after = _seconds_until_closed(sock, FIN_AFTER_CLOSE_S)
            assert closed_after is not None, f"{server.name} kept the connection open after {code}"
    for code in KEEPS[server.name]:
        with server.connect() as sock:
            status, headers, _ = _exchange(sock, f"/status/{code}")
            assert status == code
            assert headers.get("connection", "").lower() != "close", (code, headers)
            assert _exchange(sock, "/")[0] == 200, f"the connection is not reusable after {code}"


@pytest.mark.timeout(120)
def test_server_closes_its_side_after_the_client_closes(server: Running) -> None:
    """TC-13: no server-side CLOSE_WAIT once the client has closed."""
    socks = [server.connect() for _ in range(3)]
    for sock in socks:
        _exchange(sock, "/")
    for sock in socks:
        sock.close()
    eventually(lambda: close_wait_on(snapshot([server.port]), server.port), timeout_ms=1000,
               what=f"{server.name}: no CLOSE_WAIT on :{server.port}", accept=lambda found: not found)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", SERVERS)
def test_keepalive_timeout_knob_closes_idle_connections(name: str, runtime: ProcessRuntime) -> None:
    """TC-12: with keepalive_timeout_ms=1000 the server closes an idle connection at
    1 s + its own reaper granularity (Tomcat's poller: 1 s; nginx: its timer)."""
    running = _start(runtime, name, {"keepalive_timeout_ms": 1000})
    try:
        granularity_s = running.manifest.timer("idle_sweep_interval_ms") / 1000.0
        with running.connect() as sock:
            assert _exchange(sock, "/")[0] == 200
            closed_after = _seconds_until_closed(sock, 1.0 + granularity_s + TOLERANCE_S)
        assert closed_after is not None, f"{name} kept an idle connection past its 1 s keep-alive timeout"
        assert closed_after >= 0.9, f"{name} closed an idle connection after {closed_after:.2f} s, before 1 s"
    finally:
        running.node.stop()


@pytest.mark.timeout(120)
def test_tomcat_announces_its_keepalive_timeout(runtime: ProcessRuntime) -> None:
    """Tomcat answers `Connection: keep-alive` with `Keep-Alive: timeout=<s>` (research T1)."""
    running = _start(runtime, "tomcat", {"keepalive_timeout_ms": 3000})
    try:
        with running.connect() as sock:
            _, headers, _ = _exchange(sock, "/")
        assert headers.get("keep-alive") == "timeout=3"
    finally:
        running.node.stop()
