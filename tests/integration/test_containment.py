"""Containment that cannot be escaped (hardening): a peer's descendant that leaves the process
group (``setsid``) is still found, ended and reported at the node's stop; without cgroups the
environment marker finds it; a crash (``kill``) takes it along."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from harness.runtime import LaunchSpec, ProcessRuntime
from harness.wait import eventually

pytestmark = pytest.mark.integration

# A peer that starts a detached child (its own session, so not in the node's process group),
# then waits; the child outlives it unless the harness finds it.
DETACHING_PEER = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
    "time.sleep(300)\n"
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def _start_detaching(runtime: ProcessRuntime, tmp_path: Path):
    node = runtime.start(LaunchSpec(name="detacher", argv=[sys.executable, "-c", DETACHING_PEER],
                                    log_path=tmp_path / "detacher.log"))
    eventually(lambda: len(node.processes()) >= 2, timeout_ms=10_000, what="the detached child running")
    escaped = [pid for pid in node.processes() if pid not in node.live_members()]
    assert escaped, f"the child should have left the group: {node.processes()} vs {node.live_members()}"
    return node, escaped


@pytest.mark.timeout(60)
def test_a_child_that_left_the_group_is_found_ended_and_reported(tmp_path: Path) -> None:
    with ProcessRuntime() as runtime:
        node, escaped = _start_detaching(runtime, tmp_path)
        node.stop()
        assert not any(_alive(pid) for pid in escaped), f"{escaped} outlived the stop"
        left = node.leftovers()
        assert len(left) == 1 and str(escaped[0]) in left[0], left
        assert not node.group_alive()


@pytest.mark.timeout(60)
def test_a_crash_takes_the_detached_child_along(tmp_path: Path) -> None:
    with ProcessRuntime() as runtime:
        node, escaped = _start_detaching(runtime, tmp_path)
        node.kill()
        assert not any(_alive(pid) for pid in escaped)
        assert node.leftovers() == []  # an intended crash is not a leak


_WITHOUT_CGROUPS = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from harness.runtime import LaunchSpec, ProcessRuntime
from harness.runtime.containment import cgroup_root
from harness.wait import eventually
with ProcessRuntime() as runtime:
    node = runtime.start(LaunchSpec(name="detacher", argv=[sys.executable, "-c", {peer!r}],
                                    log_path=Path({log!r})))
    eventually(lambda: len(node.processes()) >= 2, timeout_ms=10_000, what="the detached child")
    pids = node.processes()
    node.stop()
    print(json.dumps({{"cgroup": str(cgroup_root()), "pids": pids, "leftovers": node.leftovers()}}))
"""


@pytest.mark.timeout(60)
def test_without_cgroups_the_environment_marker_finds_the_child(tmp_path: Path) -> None:
    script = _WITHOUT_CGROUPS.format(root=str(PROJECT_ROOT), peer=DETACHING_PEER, log=str(tmp_path / "d.log"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50,
                          env={**os.environ, "CONNFORMANCE_NO_CGROUP": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cgroup"] == "None"
    assert len(result["leftovers"]) == 1, result
    assert not any(_alive(pid) for pid in result["pids"])
