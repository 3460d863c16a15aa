"""The process runtime against a real little peer: readiness, stop/kill/pause/restart, and that
nothing of a process group survives (grandchildren included)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness.errors import HarnessError, SetupError
from harness.ports import free_port
from harness.runtime import (
    HttpReady,
    LaunchSpec,
    LogLineReady,
    PortReady,
    ProcessNode,
    ProcessRuntime,
)
from harness.runtimes import get_runtime
from harness.wait import eventually, now_ms

START_TIMEOUT_MS = 10_000
GONE_TIMEOUT_MS = 5_000

# A small peer: prints its pid/pgid, spawns a grandchild in its group, serves HTTP on loopback.
PEER_PROGRAM = textwrap.dedent(
    """
    import argparse, http.server, os, signal, subprocess, sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--no-listen", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--leader-exits", action="store_true")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild too
    print(f"peer starting pid={os.getpid()} pgid={os.getpgrp()}", flush=True)
    if args.exit_code is not None:
        print("peer failing on purpose", flush=True)
        sys.exit(args.exit_code)
    grandchild = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    print(f"grandchild pid={grandchild.pid}", flush=True)
    if args.leader_exits:
        sys.exit(0)
    if args.no_listen:
        signal.pause()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"pid={os.getpid()}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"peer ready on {args.port}", flush=True)
    server.serve_forever()
    """
)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "peer.py"
    path.write_text(PEER_PROGRAM)
    return path


@pytest.fixture
def runtime():
    runtime = ProcessRuntime()
    try:
        yield runtime
    finally:
        runtime.close()
    assert runtime.leaked() == []


@pytest.fixture
def port() -> int:
    return free_port()


def spec_for(
    program: Path, port: int, *extra: str, name: str = "peer", log_path: Path | None = None
) -> LaunchSpec:
    return LaunchSpec(
        name=name,
        argv=[sys.executable, str(program), "--port", str(port), *extra],
        env={"PYTHONUNBUFFERED": "1"},
        log_path=log_path,
    )


def get(port: int, timeout_s: float = 5.0) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=timeout_s) as response:
        return response.read().decode()


def live_pids_in_group(pgid: int) -> list[int]:
    """Independent of the runtime: psutil, zombies excluded (PID 1 may never reap orphans)."""
    pids = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return pids


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def grandchild_pid(node: ProcessNode) -> int:
    found = eventually(
        lambda: re.search(r"grandchild pid=(\d+)", node.log_since_start()),
        timeout_ms=START_TIMEOUT_MS,
        what="the grandchild's pid in the log",
    )
    return int(found.value.group(1))


def start_ready(
    runtime: ProcessRuntime, program: Path, port: int, *extra: str, name: str = "peer"
) -> ProcessNode:
    return runtime.start(
        spec_for(program, port, *extra, name=name), [PortReady("127.0.0.1", port)], START_TIMEOUT_MS
    )


# --- readiness -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_port_log_and_http_readiness_all_hold_after_start(runtime, program, port, tmp_path) -> None:
    log_path = tmp_path / "logs" / "peer.log"
    node = runtime.start(
        spec_for(program, port, log_path=log_path),
        [
            PortReady("127.0.0.1", port),
            LogLineReady(r"^peer ready on \d+$"),
            HttpReady(f"http://127.0.0.1:{port}/"),
        ],
        START_TIMEOUT_MS,
    )
    assert node.alive()
    assert node.exit_code is None
    assert get(port) == f"pid={node.pid}"
    assert node.pgid == node.pid, "the leader heads its own process group"
    assert os.getpgid(grandchild_pid(node)) == node.pgid
    assert "peer ready on" in node.logs(tail_lines=5)
    assert log_path.read_text().startswith("=== connformance: start #1 of peer:")


@pytest.mark.timeout(30)
def test_http_ready_waits_for_the_expected_status(runtime, program, port) -> None:
    with pytest.raises(SetupError, match=f"GET http://127.0.0.1:{port}/ answers 204"):
        runtime.start(
            spec_for(program, port), [HttpReady(f"http://127.0.0.1:{port}/", expect_status=204)], 600
        )


@pytest.mark.timeout(30)
def test_a_readiness_timeout_raises_with_the_log_tail_and_leaves_no_process(runtime, program, port) -> None:
    started_ms = now_ms()
    with pytest.raises(SetupError) as info:
        runtime.start(spec_for(program, port, "--no-listen"), [PortReady("127.0.0.1", port)], timeout_ms=800)
    assert now_ms() - started_ms < START_TIMEOUT_MS
    message = str(info.value)
    assert "peer peer not ready after 800 ms" in message
    assert f"TCP 127.0.0.1:{port} accepts connections" in message
    assert "exit code:    none (still running)" in message
    assert "| peer starting pid=" in message, "the log tail is in the error"
    assert "| grandchild pid=" in message
    pgid = int(re.search(r"pgid=(\d+)", message).group(1))
    grandchild = int(re.search(r"grandchild pid=(\d+)", message).group(1))
    assert live_pids_in_group(pgid) == []
    assert not process_alive(grandchild)
    assert runtime.nodes() == [], "a failed start is dropped from the registry"


@pytest.mark.timeout(30)
def test_someone_elses_listener_on_the_port_does_not_count_as_ready(runtime, program, port) -> None:
    with socket.create_server(("127.0.0.1", port)):  # a foreign listener: connects to it succeed
        with pytest.raises(SetupError, match="not ready after 600 ms"):
            runtime.start(
                spec_for(program, port, "--no-listen"), [PortReady("127.0.0.1", port)], timeout_ms=600
            )


@pytest.mark.timeout(30)
def test_a_process_that_exits_fails_readiness_at_once_with_its_exit_code(runtime, program, port) -> None:
    started_ms = now_ms()
    with pytest.raises(SetupError) as info:
        runtime.start(
            spec_for(program, port, "--exit-code", "3"), [PortReady("127.0.0.1", port)], timeout_ms=20_000
        )
    assert now_ms() - started_ms < 5_000, "an exited process must not wait out the readiness timeout"
    message = str(info.value)
    assert "exited (exit code 3) before it was ready" in message
    assert "| peer failing on purpose" in message


@pytest.mark.timeout(30)
def test_a_missing_program_is_a_setup_error(runtime, tmp_path) -> None:
    with pytest.raises(SetupError, match="(?s)cannot start peer ghost.*connformance setup"):
        runtime.start(LaunchSpec(name="ghost", argv=[str(tmp_path / "no-such-program")]))


@pytest.mark.timeout(30)
def test_without_readiness_a_one_shot_program_is_left_to_its_caller(runtime, program, port) -> None:
    node = runtime.start(spec_for(program, port, "--exit-code", "3"))
    assert node.wait_exit(timeout_ms=GONE_TIMEOUT_MS) == 3
    assert not node.alive()


# --- lifecycle -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stop_terminates_the_group_gracefully(runtime, program, port) -> None:
    node = start_ready(runtime, program, port)
    grandchild = grandchild_pid(node)
    assert node.stop() == -15, "the default SIGTERM action ends the leader"
    assert live_pids_in_group(node.pgid) == []
    assert not process_alive(grandchild)
    assert node.stop() == -15, "stop is idempotent"


@pytest.mark.timeout(30)
def test_stop_escalates_to_sigkill_after_the_timeout(runtime, program, port) -> None:
    node = start_ready(runtime, program, port, "--ignore-term")
    grandchild = grandchild_pid(node)
    started_ms = now_ms()
    assert node.stop(timeout_ms=300) == -9
    assert now_ms() - started_ms >= 300
    assert live_pids_in_group(node.pgid) == []
    assert not process_alive(grandchild)


@pytest.mark.timeout(30)
def test_kill_takes_the_grandchild_with_it(runtime, program, port) -> None:
    node = start_ready(runtime, program, port)
    grandchild = grandchild_pid(node)
    node.kill()
    assert not node.alive()
    assert node.exit_code == -9
    assert not process_alive(grandchild)
    assert live_pids_in_group(node.pgid) == []


@pytest.mark.timeout(30)
def test_a_paused_peer_holds_its_socket_but_answers_nothing_until_resumed(runtime, program, port) -> None:
    node = start_ready(runtime, program, port)
    assert get(port).startswith("pid=")
    node.pause()
    assert set(node.live_members().values()) == {"T"}
    assert node.alive(), "paused is not dead"
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        get(port, timeout_s=0.5)  # bounded: the kernel accepts, the stopped process never answers
    node.resume()
    assert get(port).startswith("pid=")


@pytest.mark.timeout(30)
def test_stop_ends_a_paused_peer_without_waiting_for_sigkill(runtime, program, port) -> None:
    node = start_ready(runtime, program, port)
    node.pause()
    assert node.stop(timeout_ms=GONE_TIMEOUT_MS) == -15, "SIGCONT lets the paused group act on SIGTERM"


@pytest.mark.timeout(30)
def test_restart_reuses_spec_and_readiness(runtime, program, port) -> None:
    node = runtime.start(spec_for(program, port), [LogLineReady(r"^peer ready on")], START_TIMEOUT_MS)
    first_pid = node.pid
    node.restart(timeout_ms=START_TIMEOUT_MS)
    assert node.pid != first_pid
    assert node.alive()
    assert get(port) == f"pid={node.pid}", "same port, new process"
    assert not process_alive(first_pid)
    assert node.log_since_start().count("peer ready on") == 1, "readiness only looks at the latest start"
    assert node.log_text().count("peer ready on") == 2
    assert "=== connformance: start #2 of peer:" in node.logs(tail_lines=10)


@pytest.mark.timeout(30)
def test_starting_a_running_name_again_ends_the_old_one_first(runtime, program, port) -> None:
    """A case whose teardown was cut short left its node running: the next case's node of the
    same name ends it first, instead of failing every later case of the worker."""
    old = start_ready(runtime, program, port)
    old_pid = old.pid
    new = start_ready(runtime, program, free_port())
    assert not process_alive(old_pid) and new.alive() and new is not old


# --- leaks and teardown --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_leaked_reports_a_group_whose_leader_exited_but_a_grandchild_lives(runtime, program, port) -> None:
    node = runtime.start(spec_for(program, port, "--leader-exits"))
    grandchild = grandchild_pid(node)
    assert node.wait_exit(timeout_ms=GONE_TIMEOUT_MS) == 0
    assert runtime.leaked() == [node]
    runtime.close()
    assert not process_alive(grandchild)
    assert runtime.leaked() == []


@pytest.mark.timeout(30)
def test_close_stops_every_group_and_is_idempotent(program) -> None:
    runtime = ProcessRuntime()
    nodes = [start_ready(runtime, program, free_port(), name=f"peer-{i}") for i in range(2)]
    nodes.append(start_ready(runtime, program, free_port(), "--ignore-term", name="stubborn"))
    pgids = [node.pgid for node in nodes]
    grandchildren = [grandchild_pid(node) for node in nodes]
    runtime.close(timeout_ms=500)
    for pgid in pgids:
        assert live_pids_in_group(pgid) == []
    assert not any(process_alive(pid) for pid in grandchildren)
    runtime.close()
    with pytest.raises(HarnessError, match="closed"):
        runtime.start(spec_for(program, free_port()))


@pytest.mark.timeout(30)
def test_a_node_started_from_a_short_lived_thread_survives_the_thread(runtime, program, port) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits; the runtime forks on its own thread.
    started: list[ProcessNode] = []
    worker = threading.Thread(target=lambda: started.append(start_ready(runtime, program, port)))
    worker.start()
    worker.join(timeout=START_TIMEOUT_MS / 1000)
    thread_id = worker.native_id
    eventually(
        lambda: not os.path.exists(f"/proc/self/task/{thread_id}"),
        timeout_ms=GONE_TIMEOUT_MS,
        what="the worker thread to be gone from the kernel",
    )
    [node] = started
    assert node.alive()
    assert get(port) == f"pid={node.pid}"


CRASHING_HARNESS = textwrap.dedent(
    """
    import os, sys
    from harness.runtime import LaunchSpec, LogLineReady, ProcessRuntime
    runtime = ProcessRuntime()
    victim = [sys.executable, "-u", "-c", "print('up', flush=True); import signal; signal.pause()"]
    node = runtime.start(LaunchSpec("victim", victim, log_path=sys.argv[1]), [LogLineReady("^up$")], 10000)
    print(node.pid, flush=True)
    os._exit(0)  # a crash: no atexit, no close()
    """
)


@pytest.mark.timeout(30)
def test_children_die_when_the_harness_dies(tmp_path) -> None:
    script = tmp_path / "harness_that_crashes.py"
    script.write_text(CRASHING_HARNESS)
    command = [sys.executable, str(script), str(tmp_path / "victim.log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    victim = int(result.stdout.strip())
    eventually(
        lambda: not process_alive(victim), timeout_ms=GONE_TIMEOUT_MS, what="PDEATHSIG to kill the orphan"
    )


@pytest.mark.timeout(10)
def test_get_runtime_knows_process_and_names_the_known_ones() -> None:
    runtime = get_runtime("process")
    try:
        assert isinstance(runtime, ProcessRuntime)
        assert runtime.name == "process"
    finally:
        runtime.close()
    with pytest.raises(HarnessError, match=r"unknown runtime 'podman'; known runtimes: docker, process"):
        get_runtime("podman")
