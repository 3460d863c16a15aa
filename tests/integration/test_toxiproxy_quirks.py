"""Toxiproxy v2.12.0 behaviour the suites rely on, pinned against the REAL server (research §A3).

One server per module (ToxiproxyServer), proxies wiped before and after each test, tiny echo
servers on 127.0.0.1 in threads. Every wait is bounded (``eventually`` or a socket timeout);
a baseline echo through the proxy is proved before each fault.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.errors import HarnessError, SetupError
from harness.toolchain import toxiproxy_binary
from harness.toxiproxy import (
    BandwidthToxic,
    Conflict,
    LatencyToxic,
    NotFound,
    Proxy,
    ResetPeerToxic,
    TimeoutToxic,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyServer,
)
from harness.wait import eventually, now_ms
from tests.support.tcp import (
    CLOSE_WITHIN_MS,
    SOCKET_TIMEOUT_S,
    EchoServer,
    dial,
    echo_ms,
    read_state,
    recv_exact,
    wait_closed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

QUIET_S = 0.3  # "no data arrives" is checked over this window
LATENCY_MS = 300
FAST_MS = LATENCY_MS / 2  # an echo without a latency toxic must come back well under the latency


# --- helpers -------------------------------------------------------------------------------------


def assert_quiet(sock: socket.socket) -> None:
    """Nothing arrives and the connection stays open for QUIET_S."""
    assert read_state(sock, QUIET_S) == "open"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return toxiproxy_binary()
    except SetupError as exc:
        pytest.skip(f"real Toxiproxy binary missing ({exc})")


@pytest.fixture(scope="module")
def toxiproxy_server(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToxiproxyServer]:
    log_path = tmp_path_factory.mktemp("toxiproxy") / "server.log"
    with ToxiproxyServer(binary, log_path=log_path) as server:
        yield server


@pytest.fixture
def tp(toxiproxy_server: ToxiproxyServer) -> Iterator[ToxiproxyClient]:
    with toxiproxy_server.client() as client:
        client.delete_all()
        yield client
        client.delete_all()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def proxy(tp: ToxiproxyClient, echo: EchoServer) -> Proxy:
    proxy = tp.create_proxy("echo", upstream=f"127.0.0.1:{echo.port}")
    # Baseline: traffic flows through the proxy before any fault (a failure here is setup, not a finding).
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
    return proxy


# --- API facts -----------------------------------------------------------------------------------


def test_go_install_build_reports_version_git(tp: ToxiproxyClient) -> None:
    """/version answers "git" for a `go install` build (no goreleaser ldflags)."""
    assert tp.version() == "git"


def test_listen_port_zero_resolves_to_a_real_port(tp: ToxiproxyClient, echo: EchoServer) -> None:
    proxy = tp.create_proxy("zero", upstream=f"127.0.0.1:{echo.port}", listen="127.0.0.1:0")
    assert proxy.listen_port != 0
    assert proxy.listen == f"127.0.0.1:{proxy.listen_port}"
    assert tp.get_proxy("zero").listen == proxy.listen
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)


def test_unreachable_upstream_accepts_then_closes(tp: ToxiproxyClient) -> None:
    """Upstream is not dialled at creation; a client connect succeeds, then sees EOF (not ECONNREFUSED)."""
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    proxy = tp.create_proxy("dead", upstream=f"127.0.0.1:{dead_port}")
    with dial(proxy.listen_port) as sock:
        assert wait_closed(sock, "Toxiproxy closing a client whose upstream refuses") == "eof"


def test_reset_keeps_proxies_reenables_them_and_removes_toxics(
    tp: ToxiproxyClient, echo: EchoServer, proxy: Proxy
) -> None:
    other = tp.create_proxy("other", upstream=f"127.0.0.1:{echo.port}")
    other.disable()
    with dial(proxy.listen_port) as live:
        echo_ms(live)
        proxy.add_toxic(LatencyToxic(latency_ms=LATENCY_MS))
        proxy.add_toxic(BandwidthToxic(rate_kbps=1000, stream="upstream"))
        assert len(proxy.toxics()) == 2

        tp.reset()

        proxies = tp.proxies()
        assert sorted(proxies) == ["echo", "other"]
        assert all(p.enabled for p in proxies.values())
        assert proxy.toxics() == {}
        assert other.toxics() == {}
        # The live connection survived the reset and lost its latency.
        assert echo_ms(live) < FAST_MS
    with dial(other.listen_port) as sock:  # re-enabled on its old port
        echo_ms(sock)


def test_api_errors_name_proxy_toxic_status_and_text(
    tp: ToxiproxyClient, echo: EchoServer, proxy: Proxy
) -> None:
    proxy.add_toxic(LatencyToxic(latency_ms=10))
    with pytest.raises(Conflict) as conflict:
        proxy.add_toxic(LatencyToxic(latency_ms=20, stream="upstream", name="latency_downstream"))
    err = conflict.value
    assert (err.status, err.error_text, err.proxy, err.toxic) == (
        409,
        "toxic already exists",
        "echo",
        "latency_downstream",
    )
    assert "HTTP 409" in str(err)
    assert "'echo'" in str(err)

    with pytest.raises(NotFound) as missing:
        tp.get_proxy("nope")
    assert (missing.value.status, missing.value.error_text) == (404, "proxy not found")
    with pytest.raises(NotFound, match="toxic not found"):
        proxy.remove_toxic("nope")

    # Bind failure is a 500 with Go's error text (body is JSON despite text/plain).
    with pytest.raises(ToxiproxyError) as busy:
        tp.create_proxy("busy", upstream=f"127.0.0.1:{echo.port}", listen=proxy.listen)
    assert busy.value.status == 500
    assert "address already in use" in busy.value.error_text

    with pytest.raises(HarnessError, match="outside 127.0.0.0/8"):
        tp.create_proxy("far", upstream="10.0.0.1:80")


# --- toxics on live connections --------------------------------------------------------------------


def test_latency_added_mid_connection_delays_the_next_echo(proxy: Proxy) -> None:
    with dial(proxy.listen_port) as sock:
        assert echo_ms(sock) < FAST_MS
        with proxy.toxic(LatencyToxic(latency_ms=LATENCY_MS)):
            # Same connection, opened before the toxic: it is delayed too.
            assert echo_ms(sock) >= LATENCY_MS * 0.95
            proxy.update_toxic("latency_downstream", {"latency_ms": 2 * LATENCY_MS})  # PATCH, live
            assert echo_ms(sock) >= 2 * LATENCY_MS * 0.95
        assert proxy.toxics() == {}
        assert echo_ms(sock) < FAST_MS  # removal applies to the live connection as well


def test_reset_peer_rst_only_for_connections_opened_after_it(proxy: Proxy) -> None:
    early = dial(proxy.listen_port)
    with early:
        echo_ms(early)
        with proxy.toxic(ResetPeerToxic(timeout_ms=0)):
            with dial(proxy.listen_port) as late:
                # The toxic fires on the first downstream chunk: the echo of what we send.
                late.sendall(b"x")
                early.sendall(b"x")
                assert wait_closed(late, "reset_peer closing a connection opened after it") == "reset"
                assert wait_closed(early, "reset_peer closing a connection opened before it") == "eof"


def test_disabled_proxy_refuses_new_and_closes_live_connections(proxy: Proxy) -> None:
    live = dial(proxy.listen_port)
    with live:
        echo_ms(live)
        with proxy.down():
            assert wait_closed(live, "disable closing live connections") == "eof"
            with pytest.raises(ConnectionRefusedError):
                dial(proxy.listen_port).close()
        # Re-enabled on the same port.
        with dial(proxy.listen_port) as again:
            echo_ms(again)


def test_removing_timeout_toxic_closes_the_connections_it_held(proxy: Proxy) -> None:
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
        name = proxy.add_toxic(TimeoutToxic(timeout_ms=0))  # blackhole: drop, never close
        sock.sendall(b"lost")
        assert_quiet(sock)
        proxy.remove_toxic(name)
        assert wait_closed(sock, "removal of a timeout toxic closing its connection") == "eof"
    with dial(proxy.listen_port) as fresh:  # new connections flow again
        echo_ms(fresh)


def test_timeout_toxic_closes_an_idle_connection_after_timeout(proxy: Proxy) -> None:
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
        with proxy.toxic(TimeoutToxic(timeout_ms=200)):
            start = now_ms()
            assert wait_closed(sock, "timeout toxic closing an idle connection") == "eof"
            assert now_ms() - start >= 150  # the timer started when the toxic was installed


def test_bandwidth_zero_holds_data_until_removed(proxy: Proxy) -> None:
    """The "connection cut" idiom (testcontainers-java): rate 0 holds, not drops; removal flushes."""
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
        name = proxy.add_toxic(BandwidthToxic(rate_kbps=0))
        sock.sendall(b"held")
        assert_quiet(sock)
        proxy.remove_toxic(name)
        assert recv_exact(sock, 4) == b"held"


def test_fault_events_reach_client_and_proxy_listeners(tp: ToxiproxyClient, proxy: Proxy) -> None:
    seen_client: list[dict] = []
    seen_proxy: list[dict] = []
    tp.on_event(seen_client.append)
    proxy.on_event(seen_proxy.append)
    with proxy.toxic(LatencyToxic(latency_ms=50, jitter_ms=5)) as name:
        assert name == "latency_downstream"
        with proxy.down():
            pass
    tp.reset()
    assert [e["action"] for e in seen_client] == [
        "toxic_added",
        "proxy_down",
        "proxy_up",
        "toxic_removed",
        "reset",
    ]
    assert [e["action"] for e in seen_proxy] == ["toxic_added", "proxy_down", "proxy_up", "toxic_removed"]
    added = seen_client[0]
    assert added["kind"] == "fault"
    assert added["proxy"] == "echo"
    assert added["toxic"] == "latency_downstream"
    assert added["type"] == "latency"
    assert added["attributes"] == {"latency_ms": 50, "jitter_ms": 5}
    assert added["t_start_ms"] <= added["t_ms"]


def test_toxic_context_removes_the_toxic_when_the_block_raises(proxy: Proxy) -> None:
    with pytest.raises(RuntimeError, match="boom"), proxy.toxic(TimeoutToxic(timeout_ms=0)):
        raise RuntimeError("boom")
    assert proxy.toxics() == {}


# --- the server wrapper ----------------------------------------------------------------------------


def test_server_on_a_busy_port_is_refused_up_front(
    binary: Path, toxiproxy_server: ToxiproxyServer, tmp_path: Path
) -> None:
    with pytest.raises(SetupError, match="port is busy"):
        ToxiproxyServer(binary, port=toxiproxy_server.port, log_path=tmp_path / "busy.log").start()


def test_api_bind_failure_keeps_toxiproxy_running_so_we_fail_fast(
    binary: Path, toxiproxy_server: ToxiproxyServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """v2.12.0 logs "Server finished with error" and keeps running without an API; meanwhile the
    *other* server on that port answers /version. Readiness must not be fooled by either."""
    monkeypatch.setattr("harness.toxiproxy.server.is_free", lambda port, host: True)  # lose the race
    server = ToxiproxyServer(
        binary, port=toxiproxy_server.port, start_timeout_ms=5000, log_path=tmp_path / "tp.log"
    )
    start = now_ms()
    with pytest.raises(SetupError) as info:
        server.start()
    assert now_ms() - start < 4000  # failed on the log line, not on the timeout
    assert "address already in use" in str(info.value)
    assert "last log lines" in str(info.value)
    assert not server.alive()  # the half-started server was stopped


def test_server_that_exits_early_reports_code_and_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-toxiproxy"
    fake.write_text("#!/bin/sh\necho 'fake toxiproxy: cannot start'\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(SetupError, match=r"exited with code 3(.|\n)*fake toxiproxy: cannot start"):
        ToxiproxyServer(fake, log_path=tmp_path / "tp.log").start()


def test_stop_ends_the_process_and_frees_the_port(binary: Path, tmp_path: Path) -> None:
    server = ToxiproxyServer(binary, log_path=tmp_path / "tp.log").start()
    pid, port = server.pid, server.port
    assert server.stop() is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(ConnectionRefusedError):
        dial(port).close()


def test_server_dies_with_its_parent(binary: Path, tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL of the harness process takes Toxiproxy with it."""
    code = (
        "import sys\n"
        "from harness.toxiproxy import ToxiproxyServer\n"
        f"s = ToxiproxyServer({str(binary)!r}, log_path={str(tmp_path / 'tp.log')!r}).start()\n"
        "print(s.pid, flush=True)\n"
        "sys.stdin.read()\n"  # block until the test kills us
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        # Bounded by the child's own start timeout: it prints the pid or dies (EOF -> "").
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"child did not report a server pid, said {line!r}"
        server_pid = int(line)
        assert psutil.pid_exists(server_pid)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=SOCKET_TIMEOUT_S)
        parent.stdin.close()
        parent.stdout.close()

    def gone() -> bool:
        try:
            return psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        eventually(
            gone, timeout_ms=CLOSE_WITHIN_MS, what=f"Toxiproxy pid {server_pid} to die with its parent"
        )
    finally:
        if not gone():  # PDEATHSIG failed: don't leak the server we (indirectly) started
            os.kill(server_pid, signal.SIGKILL)
