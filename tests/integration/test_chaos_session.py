"""``connformance up`` as a user runs it: a subprocess that prints the addresses, runs its
schedule (or stays up), ends by itself within its bound, exits 0 and leaves no process behind.
Every process of the session carries an environment marker inherited from it, so the check finds
even grandchildren (as tests/integration/test_interrupt_cleanup.py)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.placement.netns import available
from harness.scenarios.soak import LINK_FAULTS, soak_schedule
from harness.wait import eventually
from tests.support.marked import end_run, namespaces, processes_with_marker, run_cli
from tests.support.signals import default_sigint

pytestmark = pytest.mark.integration

_ADDRESS = re.compile(r"(127\.\d+\.\d+\.\d+):(\d+)")


def _up(args: list[str], marker: str, workdir: Path, *, timeout_s: float) -> tuple[int, str]:
    """``connformance up`` with its history and logs under the test's own tmp dir (a session keeps
    them for its user: left in /tmp they would outlive the test run)."""
    return run_cli(["up", "--workdir", str(workdir), *args], marker, timeout_s=timeout_s)


def _assert_nothing_left(marker: str) -> None:
    left = eventually(lambda: processes_with_marker(marker), timeout_ms=10000,
                      what="no process of the session left", accept=lambda found: not found)
    assert not left.value


def _assert_addresses_printed(out: str, servers: int, clients: int) -> None:
    assert re.search(r"^\[up\] toxiproxy http://127\.\d+\.\d+\.\d+:\d+ ", out, re.M), out
    server_lines = re.findall(r"^\[up\] server-\d+ .*main (\S+) .*proxy \S+ listen (\S+) -> (\S+)$", out, re.M)
    assert len(server_lines) == servers, out
    for main, listen, upstream in server_lines:
        main_host, main_port = main.rsplit(":", 1)
        listen_host, listen_port = listen.rsplit(":", 1)
        assert listen_host == main_host
        assert int(listen_port) == int(main_port) + 1000
        assert upstream.rsplit(":", 1)[0] == main_host
    client_lines = re.findall(r"^\[up\] client-\d+ .*control http://127\.0\.0\.1:\d+/state", out, re.M)
    assert len(client_lines) == clients, out
    for host, _ in _ADDRESS.findall(out):  # everything on loopback
        assert ipaddress.IPv4Address(host) in ipaddress.IPv4Network("127.0.0.0/8")


@pytest.mark.timeout(120)
def test_up_stays_up_for_its_duration_and_cleans_up(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    try:
        code, out = _up(["--servers", "1", "--clients", "ref:1", "--duration-s", "3"], marker, tmp_path, timeout_s=90)
        assert code == 0, out
        _assert_addresses_printed(out, servers=1, clients=1)
        assert re.search(r"^\[status \+\s*[\d.]+ s\] server-0 1 reg \|\| client-0 RUNNING@server-0$", out, re.M), out
        assert "[up] teardown: no leaks" in out, out
        _assert_nothing_left(marker)
    finally:
        end_run(None, marker)


@pytest.mark.timeout(150)
def test_up_runs_the_seeded_schedule_then_checks_and_ends(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    expected = soak_schedule(7, servers=1, clients=1, count=2, window_ms=2000)
    try:
        code, out = _up(["--servers", "1", "--clients", "ref:1", "--faults", "2", "--chaos-seed", "7",
                         "--window-ms", "2000", "--duration-s", "60"], marker, tmp_path, timeout_s=120)
        assert code == 0, out
        _assert_addresses_printed(out, servers=1, clients=1)
        assert "[up] seed 7 " in out
        printed = re.findall(r"^\[up\]\s+\+\s*(\d+) ms (\S+)\s+(\S+)\s+for (\d+) ms$", out, re.M)
        assert [(int(a), f, t, int(d)) for a, f, t, d in printed] == \
            [(e.at_ms, e.fault, e.target, e.duration_ms) for e in expected.events], out
        for e in expected.events:
            assert re.search(rf"^\[chaos \+\s*\d+ ms\] apply {e.fault}\s+{e.target}$", out, re.M), out
            assert re.search(rf"^\[chaos \+\s*\d+ ms\] heal  {e.fault}\s+{e.target}$", out, re.M), out
        assert "membership: OK" in out, out
        assert "events balance: OK" in out, out
        assert "[up] teardown: no leaks" in out, out
        _assert_nothing_left(marker)
    finally:
        end_run(None, marker)


@pytest.mark.timeout(120)
def test_up_ends_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "up", "--workdir", str(tmp_path),
                             "--servers", "2", "--clients", "ref:2",
                             "--duration-s", "90"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_sigint)  # as a terminal starts it
    try:
        lines: list[str] = []
        for line in proc.stdout:  # bounded by the test's timeout; the session prints status every 2 s
            lines.append(line)
            if line.startswith("[status"):
                break
        assert len(processes_with_marker(marker)) >= 5, "".join(lines)  # up, Toxiproxy, 2 servers, 2 clients
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        out = "".join(lines) + rest
        assert proc.returncode == 130, out
        assert "[up] interrupted" in out, out
        assert "[up] teardown: no leaks" in out, out
        _assert_nothing_left(marker)
    finally:
        end_run(proc, marker)


@pytest.mark.timeout(150)
@pytest.mark.skipif(available() is not None, reason=f"needs network namespaces: {available()}")
def test_up_applies_packet_level_faults_in_the_servers_namespaces(tmp_path: Path) -> None:
    """``--l3-faults``: the servers sit each in its own namespace, the schedule draws silence,
    link_down and packet_loss (seed 3), each applied and healed in the history like a proxy fault,
    and the cluster converges afterwards; no namespace outlives the session."""
    marker = uuid.uuid4().hex
    expected = soak_schedule(3, servers=2, clients=3, count=6, window_ms=8000, link_faults=True)
    link = [e for e in expected.events if e.fault in LINK_FAULTS]
    assert {e.fault for e in link} == {"silence", "link_down", "packet_loss"}, "seed 3 no longer draws them"
    namespaces_before = namespaces()
    try:
        code, out = _up(["--servers", "2", "--clients", "ref:3", "--faults", "6", "--chaos-seed", "3", "--l3-faults",
                         "--scaled-timers", "--window-ms", "8000", "--duration-s", "90"], marker, tmp_path,
                        timeout_s=140)
        assert code == 0, out
        assert len(re.findall(r"^\[up\] server-\d+ .*grpc 198\.18\.\d+\.\d+:\d+", out, re.M)) == 2, out
        for e in link:
            assert re.search(rf"^\[chaos \+\s*\d+ ms\] apply {e.fault}\s+{e.target}$", out, re.M), out
            assert re.search(rf"^\[chaos \+\s*\d+ ms\] heal  {e.fault}\s+{e.target}$", out, re.M), out
        history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
        applied = [h for h in history if h.get("kind") == "fault" and h.get("fault") in LINK_FAULTS]
        healed = [h for h in history if h.get("kind") == "healed" and h.get("fault") in LINK_FAULTS]
        assert len(applied) == len(healed) == len(link), (applied, healed)
        assert all(h.get("namespace") for h in applied + healed)
        assert "membership: OK" in out and "[up] teardown: no leaks" in out, out
        _assert_nothing_left(marker)
        assert namespaces() == namespaces_before
    finally:
        end_run(None, marker)
