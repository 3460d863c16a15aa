"""The fault vocabulary (harness.faults) against the REAL Toxiproxy and real processes.

Proxy faults run on a tiny threaded echo server behind a proxy (baseline echo proved first);
node faults on a small echo subprocess started through ``ProcessRuntime``. Every wait is
bounded (``eventually`` or a socket timeout); "nothing arrives" is one bounded read.
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.faults import (
    Blackhole,
    Kill,
    Latency,
    Pause,
    ProxyDown,
    ResetPeer,
    Restart,
    Schedule,
    run_schedule,
)
from harness.faults.hits import summarize_hits, vacuous
from harness.observe.history import History
from harness.observe.sockets import owners, snapshot
from harness.ports import free_port
from harness.runtime import LaunchSpec, PortReady, ProcessNode, ProcessRuntime
from harness.toxiproxy import Proxy, ToxiproxyClient, ToxiproxyServer
from harness.wait import eventually
from tests.support.tcp import (
    CLOSE_WITHIN_MS,
    EchoServer,
    dial,
    echo_ms,
    read_state,
    recv_exact,
    wait_closed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUIET_S = 0.3  # "no answer" is checked over this window
LATENCY_MS = 200
START_TIMEOUT_MS = 10_000
_names = itertools.count()


# --- helpers -------------------------------------------------------------------------------------


# The node-fault target: an echo server as its own process group.
ECHO_PROGRAM = textwrap.dedent(
    """
    import socket, sys, threading

    def echo(conn):
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))  # SO_REUSEADDR: restarts rebind
    print("echo ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
    """
)




# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def tp(toxiproxy_server: ToxiproxyServer) -> Iterator[ToxiproxyClient]:
    """``toxiproxy_server`` (conftest) skips with the reason when the binary is missing."""
    with toxiproxy_server.client() as client:
        yield client


@pytest.fixture
def history() -> History:
    return History(None)


@pytest.fixture
def proxy(tp: ToxiproxyClient, history: History) -> Iterator[Proxy]:
    echo = EchoServer()
    proxy = tp.create_proxy(f"faults-{os.getpid()}-{next(_names)}", upstream=f"127.0.0.1:{echo.port}")
    # Like the topology's hook: Toxiproxy faults reach the history through proxy events.
    proxy.on_event(lambda ev: history.append("proxy_event", action=ev["action"], toxic=ev["toxic"]))
    try:
        with dial(proxy.listen_port) as sock:  # baseline before any fault
            echo_ms(sock)
        yield proxy
    finally:
        proxy.delete(missing_ok=True)
        echo.close()


@pytest.fixture
def runtime() -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime()
    try:
        yield runtime
    finally:
        runtime.close()
    assert runtime.leaked() == []


@pytest.fixture
def echo_node(runtime: ProcessRuntime, tmp_path: Path) -> tuple[ProcessNode, int]:
    program = tmp_path / "echo.py"
    program.write_text(ECHO_PROGRAM)
    port = free_port()
    spec = LaunchSpec(name="echo", argv=[sys.executable, str(program), str(port)], env={"PYTHONUNBUFFERED": "1"})
    node = runtime.start(spec, [PortReady("127.0.0.1", port)], timeout_ms=START_TIMEOUT_MS)
    return node, port


def kinds(history: History) -> list[tuple[str, str]]:
    return [(e["kind"], e.get("action") or e.get("fault")) for e in history]


# --- proxy faults --------------------------------------------------------------------------------


def test_proxy_down_closes_live_refuses_new_and_heals(proxy: Proxy, history: History) -> None:
    with dial(proxy.listen_port) as live:
        echo_ms(live)
        with ProxyDown(proxy, history=history):
            assert wait_closed(live, "the live connection to close on proxy down") == "eof"
            with pytest.raises(ConnectionRefusedError):
                dial(proxy.listen_port)
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
    assert kinds(history) == [("fault_begin", "proxy_down"), ("proxy_event", "proxy_down"),
                              ("proxy_event", "proxy_up"), ("fault_end", "proxy_down")]
    # The fault touched the one live connection; none was left to count at heal (harness.faults.hits).
    assert [e["live_connections"] for e in history.events(("fault_begin", "fault_end"))] == [1, 0]


def test_a_fault_on_an_idle_proxy_records_that_it_hit_nothing(proxy: Proxy, history: History) -> None:
    with ProxyDown(proxy, history=history):
        pass
    assert [e["live_connections"] for e in history.events(("fault_begin", "fault_end"))] == [0, 0]
    assert history.events("fault_end")[0]["accepted_during"] == 0
    assert vacuous(summarize_hits(history.events()))


def test_blackhole_drops_data_and_healing_closes_the_connection(proxy: Proxy, history: History) -> None:
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
        with Blackhole(proxy, history=history):
            sock.sendall(b"lost")
            assert read_state(sock, QUIET_S) == "open"  # no echo, no close
        assert wait_closed(sock, "the blackholed connection to close when healed") in ("eof", "reset")
    with dial(proxy.listen_port) as fresh:
        echo_ms(fresh)
    # Toxics are recorded once (by the proxy hook), inside the vocabulary fault's window.
    assert kinds(history) == [("fault_begin", "blackhole"), *[("proxy_event", "toxic_added")] * 2,
                              *[("proxy_event", "toxic_removed")] * 2, ("fault_end", "blackhole")]


def test_reset_peer_resets_connections_opened_after_apply(proxy: Proxy, history: History) -> None:
    with ResetPeer(proxy, history=history):
        with dial(proxy.listen_port) as sock:
            sock.sendall(b"first chunk")
            assert wait_closed(sock, "reset_peer to reset a new connection") == "reset"
    with dial(proxy.listen_port) as sock:
        echo_ms(sock)
    # It acts on connections opened while it is on: none live at apply or heal, one accepted meanwhile
    # (Toxiproxy's own log), so it hit something.
    (end,) = history.events("fault_end")
    assert (end["live_connections"], end["accepted_during"]) == (None, 1)
    assert not vacuous(summarize_hits(history.events()))


def test_latency_delays_the_echo(proxy: Proxy, history: History) -> None:
    with dial(proxy.listen_port) as sock, Latency(proxy, latency_ms=LATENCY_MS, history=history):
        assert echo_ms(sock) >= LATENCY_MS  # a lower bound: a loaded machine only adds time


# --- node faults ---------------------------------------------------------------------------------


def test_pause_stops_answers_and_heal_resumes(echo_node, history: History) -> None:
    node, port = echo_node
    with dial(port) as sock:
        echo_ms(sock)
        with Pause(node, history=history):
            assert set(node.live_members().values()) <= {"T", "t"}
            sock.sendall(b"held")
            assert read_state(sock, QUIET_S) == "open"  # the kernel took the bytes; nobody answers
        assert recv_exact(sock, 4) == b"held"  # answered once continued
    assert kinds(history) == [("fault", "pause"), ("healed", "resume")]
    assert [e["live_connections"] for e in history.events(("fault", "healed"))] == [1, 1]  # the echo's own socket
    assert history.events()[0]["pid"] == node.pid


def test_kill_leaves_client_close_wait_and_restart_on_heal(echo_node, history: History) -> None:
    node, port = echo_node
    pid = node.pid
    with dial(port) as sock:
        echo_ms(sock)
        kill = Kill(node, restart_on_heal=True, history=history)
        kill.apply()
        assert not node.alive()
        assert node.exit_code == -9
        # The kernel closed the dead server's socket: our end waits in CLOSE_WAIT until we close
        # it (the client-side leak TC-06 looks for), and it is ours. Only our own 4-tuple counts:
        # another test's socket may share the port number on another address.
        ours = sock.getsockname()

        def mine() -> list:
            return [e for e in snapshot([port]) if e.state == "CLOSE_WAIT" and e.remote_port == port
                    and (e.local_ip, e.local_port) == ours]

        found = eventually(mine, accept=lambda m: len(m) == 1, timeout_ms=CLOSE_WITHIN_MS,
                           what="our socket in CLOSE_WAIT").value
        assert owners(found, pids=[os.getpid()]) == {found[0].inode: os.getpid()}
    eventually(mine, accept=lambda m: not m, timeout_ms=CLOSE_WITHIN_MS, what="our CLOSE_WAIT gone once closed")
    kill.heal()
    kill.heal()  # idempotent: one restart
    assert node.alive()
    assert node.pid != pid
    assert node.starts == 2
    with dial(port) as sock:
        echo_ms(sock)
    assert kinds(history) == [("fault", "kill"), ("healed", "restart")]


def test_restart_replaces_the_process_on_the_same_port(echo_node, history: History) -> None:
    node, port = echo_node
    pid = node.pid
    with Restart(node, history=history):
        assert node.alive()
        assert node.pid != pid
    with dial(port) as sock:
        echo_ms(sock)
    assert history.events()[0]["pid_before"] == pid


# --- a schedule, end to end ----------------------------------------------------------------------


def test_run_schedule_applies_and_heals_real_faults(proxy: Proxy, echo_node, history: History) -> None:
    node, port = echo_node
    schedule = Schedule.from_data([
        {"at_ms": 0, "fault": "proxy_down", "target": "link", "duration_ms": 200},
        {"at_ms": 100, "fault": "pause", "target": "echo", "duration_ms": 200},
    ])
    targets = {("link", "proxy"): proxy, ("echo", "node"): node}
    runs = run_schedule(schedule, lambda name, role: targets[(name, role)], history, deadline_ms=2000)
    assert [r.skipped for r in runs] == [False, False]
    assert all(r.healed_at_ms is not None and r.healed_at_ms >= r.event.at_ms + r.event.duration_ms for r in runs)
    with dial(proxy.listen_port) as via_proxy, dial(port) as direct:  # both healed
        echo_ms(via_proxy)
        echo_ms(direct)
    assert [k for k in kinds(history) if k[0] != "proxy_event"] == [
        ("meta", None), ("fault_begin", "proxy_down"), ("fault", "pause"), ("fault_end", "proxy_down"),
        ("healed", "resume"),
    ]
