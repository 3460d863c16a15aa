"""Ctrl-C in the middle of a ``--runtime docker`` run leaves no container; a run killed outright
(SIGKILL: no teardown at all) leaves its containers to the next run's reaper, which removes them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.docker.runtime import LABEL_OWNER, DockerRuntime, owner_label
from harness.paths import PROJECT_ROOT
from harness.wait import eventually
from tests.support.hanging import write_hanging_case
from tests.support.signals import default_sigint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

def _start_hanging_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    test_file, up_file = write_hanging_case(tmp_path, case_id="SR-86", hang_ms=120_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
         "--runtime", "docker", "--peer", "nacos-client=ref", "--report-dir", str(tmp_path / "report"),
         "--rootdir", str(tmp_path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=default_sigint,  # as a terminal starts it, whatever SIGINT disposition we inherited
    )
    eventually(lambda: up_file.exists() or proc.poll() is not None, timeout_ms=90000, what="peers up")
    assert proc.poll() is None, f"the run ended before the interrupt: {proc.stdout.read().decode()[-2000:]}"
    return proc, up_file


def _containers_of(client, pid: int) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner_label(pid)}"})


def test_sigint_mid_run_leaves_no_container(docker_engine, tmp_path: Path) -> None:
    from harness.docker.engine import engine_client

    client = engine_client(docker_engine)
    proc, _ = _start_hanging_run(tmp_path)
    try:
        owner = owner_label(proc.pid)
        names = sorted(c.name for c in _containers_of(client, proc.pid))
        assert len(names) >= 3, f"expected Toxiproxy, server and client containers of {owner}, saw {names}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
        left = client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        assert not left, f"containers left after Ctrl-C: {[c.name for c in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        client.close()


def test_sigkill_leftovers_are_reaped_by_the_next_run(docker_engine, tmp_path: Path) -> None:
    from harness.docker.engine import engine_client

    client = engine_client(docker_engine)
    proc, _ = _start_hanging_run(tmp_path)
    try:
        owner = owner_label(proc.pid)
        proc.kill()  # no teardown runs: its containers stay
        proc.wait(timeout=30)
        left = client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        assert left, "a SIGKILLed run leaves its containers (nothing could remove them)"
        runtime = DockerRuntime()  # what the next run does first
        runtime.close()
        assert sorted(c.name for c in left) == sorted(n for n in runtime.reaped if n in {c.name for c in left})
        assert not client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    finally:
        client.close()
