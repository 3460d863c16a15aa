"""The README's manifest examples run as written. Each ```toml block of its "Peers and manifests"
section is saved as the user would save it; ``bin/my-server`` and ``bin/my-sdk-agent`` beside it
are stand-ins that start the independent implementations (tests/independent/, written from the
docs alone) with the flags the examples pass. ``check-peer`` finds no problem in either, and SR-01
runs OK on the worked example's pair."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from tests.support.run_suite import run_suite

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_SERVER = """#!/bin/sh
# The README's bin/my-server: its flags, the independent server behind them.
while [ $# -gt 0 ]; do
  case "$1" in
    --bind) host=$2; shift 2;; --http-port) main=$2; shift 2;; --grpc-port) grpc=$2; shift 2;; *) shift;;
  esac
done
cd {root} && exec {python} -m tests.independent.nacos_server --host "$host" --main-port "$main" --grpc-port "$grpc"
"""
_AGENT = """#!/bin/sh
# The README's bin/my-sdk-agent: the independent client agent, its app name from the knob's env var.
cd {root} && exec {python} -m tests.independent.nacos_client "$@" --app-name "${{MY_SDK_APP_NAME:-unknown}}"
"""


def _toml_blocks() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Peers and manifests", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, flags=re.S)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("my-server", _SERVER), ("my-sdk-agent", _AGENT)):
        path = bin_dir / name
        path.write_text(text.format(root=PROJECT_ROOT, python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    single, worked = _toml_blocks()
    (tmp_path / "mine.toml").write_text(single)
    (tmp_path / "my-peers.toml").write_text(worked)
    return tmp_path


def _check_peer(manifest: Path, *peers: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "harness.cli", "check-peer", "--peers-file", str(manifest)]
    for peer in peers:
        argv += ["--peer", peer]
    return subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, env=os.environ)


def test_the_readme_has_the_two_manifest_examples() -> None:
    blocks = _toml_blocks()
    assert len(blocks) == 2, f"expected the single-peer example and the worked example, got {len(blocks)} block(s)"


def test_the_single_peer_example_keeps_the_contract(user_dir: Path) -> None:
    done = _check_peer(user_dir / "mine.toml", "nacos-server=mine")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check-peer: 0 problem(s)" in done.stdout


def test_the_worked_example_keeps_the_contract_and_runs_sr01(user_dir: Path) -> None:
    done = _check_peer(user_dir / "my-peers.toml", "nacos-server=mine", "nacos-client=my-sdk")
    assert done.returncode == 0, done.stdout + done.stderr
    results = run_suite("SR-01", user_dir / "report", peers_files=[user_dir / "my-peers.toml"],
                        peers=["nacos-server=mine", "nacos-client=my-sdk"])
    assert [r["verdict"] for r in results.values()] == ["OK"], results
