"""Shared integration fixtures: a real Toxiproxy per module, a process runtime and a topology
built directly on the library (no plugin), so these tests pin the harness's own data path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.observe.history import History
from harness.peers import PeerRegistry
from harness.runtime.process import ProcessRuntime
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyServer


@pytest.fixture(scope="module")
def toxiproxy_server():
    try:
        from harness.toolchain import toxiproxy_binary

        toxiproxy_binary()
    except Exception as exc:  # noqa: BLE001 - the reason is shown in the skip
        pytest.skip(f"real Toxiproxy not installed ({exc}); run `connformance setup`")
    with ToxiproxyServer() as server:
        yield server


@pytest.fixture
def registry() -> PeerRegistry:
    reg = PeerRegistry()
    reg.load_builtin()
    return reg


@pytest.fixture
def lib_topology(toxiproxy_server, tmp_path: Path):
    runtime = ProcessRuntime()
    client = toxiproxy_server.client()
    history = History(tmp_path / "history.jsonl")
    topo = Topology(runtime=runtime, toxiproxy=client, workdir=tmp_path, history=history)
    try:
        yield topo
    finally:
        leaks = topo.close()
        runtime.close()
        client.reset()
        history.close()
        assert not leaks, f"topology leaked: {leaks}"
        assert not runtime.leaked(), f"runtime leaked: {runtime.leaked()}"
