"""Killing a run mid-case leaves nothing behind: SIGINT (Ctrl-C), SIGTERM (a CI cancel) and
SIGHUP (a closed terminal) all tear down at once (peers, agents, Toxiproxy); after SIGKILL, which
nothing can catch, the next run reaps what is left (a detached descendant, the proxies on an
external Toxiproxy, a network namespace with its veth and iptables rules) and says what it
reaped. Every process of the run carries an environment marker inherited from the pytest
process, so the check finds even grandchildren."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.placement.netns import available
from harness.wait import eventually
from tests.support.hanging import write_hanging_case
from tests.support.marked import end_run, links, namespaces, processes_with_marker
from tests.support.signals import default_sigint

pytestmark = pytest.mark.integration

@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_mid_case_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    marker = uuid.uuid4().hex
    test_file, up_file = write_hanging_case(tmp_path, case_id="SR-87")
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
         "--peer", "nacos-client=ref", "--report-dir", str(tmp_path / "report"), "--rootdir", str(tmp_path)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=default_sigint,  # as a terminal starts it, whatever SIGINT disposition we inherited
    )
    try:
        eventually(lambda: up_file.exists() or proc.poll() is not None, timeout_ms=60000, what="peers up")
        assert proc.poll() is None, f"the run ended before the interrupt: {proc.stdout.read().decode()[-2000:]}"
        running = processes_with_marker(marker)
        assert len(running) >= 3, f"expected pytest, Toxiproxy, server and client running, saw {running}"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        left = eventually(lambda: processes_with_marker(marker), timeout_ms=10000,
                          what="no process of the run left", accept=lambda found: not found)
        assert not left.value
    finally:
        end_run(proc, marker)


# A peer of the run that starts a child in its own session: PDEATHSIG ends the peer with the
# killed harness, but not the child; only the reaper can.
_DETACHING_MANIFEST = """
[peer]
name = "detacher"
role = "nacos-client"
capabilities = []
[process]
command = ["{python}", "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True); time.sleep(300)", "{control_port}", "{server_list}"]
"""


@pytest.mark.timeout(180)
def test_sigkill_mid_case_is_reaped_by_the_next_run(tmp_path: Path) -> None:
    from harness.toxiproxy import ToxiproxyServer

    marker = uuid.uuid4().hex
    test_file, up_file = write_hanging_case(tmp_path, case_id="SR-86")
    manifest = tmp_path / "detacher.toml"
    manifest.write_text(_DETACHING_MANIFEST)
    env = {**os.environ, "CONNFORMANCE_RUN_MARK": marker}
    client = None
    with ToxiproxyServer() as external:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
             "--peers-file", str(manifest), "--peer", "nacos-client=detacher", "--toxiproxy-url", external.url,
             "--report-dir", str(tmp_path / "report"), "--rootdir", str(tmp_path)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: up_file.exists() or proc.poll() is not None, timeout_ms=60000, what="peers up")
            assert proc.poll() is None, f"the run ended early: {proc.stdout.read().decode()[-2000:]}"
            eventually(lambda: len(processes_with_marker(marker)) >= 4, timeout_ms=10000,
                       what="pytest, server, peer and its detached child running")
            client = external.client()
            assert any(name.startswith("cf") for name in client.proxies()), "the run made its proxy"
            proc.kill()
            proc.wait(timeout=30)
            left = eventually(lambda: processes_with_marker(marker), timeout_ms=10000,
                              what="the detached child still alive", accept=lambda found: len(found) >= 1)
            assert all("time.sleep(300)" in cmd for _, cmd in left.value), left.value
            assert client.proxies(), "the killed run's proxy is still there"

            # The next run (any connformance pytest run) reaps it, and says so.
            nxt = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                  str(test_file), "--rootdir", str(tmp_path), "--report-dir", str(tmp_path / "r2")],
                                 cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
            assert "reaped what an earlier run left" in nxt.stderr, nxt.stderr[-2000:]
            assert "process(es)" in nxt.stderr and f"proxy(ies) on {external.url}" in nxt.stderr, nxt.stderr
            assert processes_with_marker(marker) == []
            assert client.proxies() == {}
        finally:
            end_run(proc, marker)
            if client is not None:
                client.close()  # its keep-alive socket must not outlive the Toxiproxy (CLOSE_WAIT)


def _start_namespaced_hang(tmp_path: Path, marker: str, case_id: str) -> tuple[subprocess.Popen, dict]:
    test_file, up_file = write_hanging_case(tmp_path, case_id=case_id, namespaced=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q", "--peer", "nacos-client=ref",
         "--peer", "nacos-server=ref", "--report-dir", str(tmp_path / "report"), "--rootdir", str(tmp_path)],
        cwd=PROJECT_ROOT, env={**os.environ, "CONNFORMANCE_RUN_MARK": marker}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    eventually(lambda: up_file.exists() or proc.poll() is not None, timeout_ms=60000, what="peers up")
    assert proc.poll() is None, f"the run ended before the interrupt: {proc.stdout.read().decode()[-2000:]}"
    made = json.loads(up_file.read_text())
    assert made["namespace"] in namespaces() and made["host_if"] in links(), f"the run made {made}"
    return proc, made


def _left_of(made: dict) -> list[str]:
    left = [f"namespace {made['namespace']}"] if made["namespace"] in namespaces() else []
    return left + ([f"veth {made['host_if']}"] if f" {made['host_if']}@" in links() else [])


@pytest.mark.timeout(150)
@pytest.mark.skipif(available() is not None, reason=f"needs network namespaces: {available()}")
def test_sigterm_mid_case_removes_its_namespace_and_rules(tmp_path: Path) -> None:
    """SIGTERM of a run whose server sits in a namespace with an iptables fault applied: no
    process, namespace (and the rules inside it) or veth is left."""
    marker = uuid.uuid4().hex
    proc, made = _start_namespaced_hang(tmp_path, marker, "TC-87")
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        left = eventually(lambda: processes_with_marker(marker) + _left_of(made), timeout_ms=10000,
                          what="nothing of the run left", accept=lambda found: not found)
        assert not left.value
    finally:
        end_run(proc, marker)


@pytest.mark.timeout(150)
@pytest.mark.skipif(available() is not None, reason=f"needs network namespaces: {available()}")
def test_sigkill_mid_case_leaves_a_namespace_the_next_run_reaps(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the namespace (with its veth and rules) outlives the run; the next
    run removes it and says so."""
    marker = uuid.uuid4().hex
    proc, made = _start_namespaced_hang(tmp_path, marker, "TC-86")
    try:
        proc.kill()
        proc.wait(timeout=30)
        assert f"namespace {made['namespace']}" in _left_of(made), "a namespace outlives SIGKILL: nothing to reap"
        nxt = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              str(tmp_path / "test_hang.py"), "--rootdir", str(tmp_path), "--report-dir",
                              str(tmp_path / "r2")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert f"network namespace {made['namespace']}" in nxt.stderr, nxt.stderr[-2000:]
        assert _left_of(made) == []
        eventually(lambda: processes_with_marker(marker), timeout_ms=10000, what="no process of the run left",
                   accept=lambda found: not found)
    finally:
        end_run(proc, marker)
