"""The real Java, Go and Rust Nacos clients behind their agents (SPEC §4.3), against the reference
server directly (no Toxiproxy: the server's own gRPC port is main + 1000, where the clients dial).

Per peer (``nacos-client-{java,go,rust}-*.toml``, launched from the manifest with ``render`` so the
commands and knob mappings are exercised): the agent serves ``/state`` and reaches RUNNING on the
listed server, the server registers it with what the agent says the library reports (client IP,
version, appName, and the connection id the agent reports), ``/request`` is a
naming call that succeeds, and ``/shutdown`` makes the process exit 0 and the registration leave.

The agents come from ``connformance setup --only java-nacos-agents --only go-nacos-agents --only
rust-nacos-agent``; a missing build skips with that command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agents.build import rust_nacos_agent_binary
from harness.agents.build_nacos import (
    GO_NACOS_VERSIONS,
    JAVA_NACOS_VERSIONS,
    go_nacos_agent_binary,
    java_nacos_agent_argfile,
)
from harness.control.agent import AgentControl
from harness.control.nacos_admin import NacosAdmin
from harness.paths import PROJECT_ROOT
from harness.peers import PeerRegistry, render
from harness.ports import free_port, server_host
from harness.wait import eventually

pytestmark = pytest.mark.integration

GRPC_OFFSET = 1000
SERVER_READY_MS = 20_000
RUNNING_MS = 45_000   # a JVM start + ServerCheck (3 s timeout) + setup wait, on a loaded 2-core machine
REGISTERED_MS = 5_000
EXIT_S = 20.0
SETUP_HINT = "run `connformance setup --only java-nacos-agents --only go-nacos-agents --only rust-nacos-agent`"

PEERS = [f"java-{v}" for v in JAVA_NACOS_VERSIONS] + [f"go-{v}" for v in GO_NACOS_VERSIONS] + ["rust-0.8.3"]
_REGISTRY = PeerRegistry.default()


def _built(peer: str) -> Path:
    kind, _, version = peer.partition("-")
    if kind == "rust":
        return rust_nacos_agent_binary()
    return java_nacos_agent_argfile(version) if kind == "java" else go_nacos_agent_binary(version)


@pytest.fixture(scope="module")
def ref_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference Nacos server on 127.0.0.11: main port P (admin HTTP), gRPC on P + 1000."""
    host = server_host(0)
    main = free_port(also_free_offset=GRPC_OFFSET, host=host)
    log = tmp_path_factory.mktemp("ref-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.reference.nacos.server", "--host", host, "--main-port", str(main),
             "--grpc-port", str(main + GRPC_OFFSET)],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    admin = NacosAdmin(f"{host}:{main}")
    try:
        eventually(admin.current, timeout_ms=SERVER_READY_MS, what="reference server admin up", accept=lambda c: c == {},
                   swallow=(Exception,), interval_ms=100)
        yield f"{host}:{main}"
    finally:
        admin.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _running_and_announced(state: dict[str, Any]) -> bool:
    """RUNNING and the library's listener has delivered its `connected` event (a Java client sets
    RUNNING just before its event thread dispatches CONNECTED)."""
    return state.get("status") == "RUNNING" and any(e["kind"] == "connected" for e in state.get("events", []))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.mark.parametrize("peer", PEERS)
def test_real_client_runs_requests_and_shuts_down(peer: str, ref_server: str, tmp_path: Path) -> None:
    built = _built(peer)
    if not built.is_file():
        pytest.skip(f"agent for {peer} is not built ({built} missing); {SETUP_HINT}")
    manifest = _REGISTRY.get("nacos-client", peer)
    knobs: dict[str, Any] = {}
    if manifest.supports("client_ip"):
        knobs["client_ip"] = "127.0.0.23"
    if manifest.supports("app_name"):
        knobs["app_name"] = "connformance-real"
    control_port = free_port()
    spec, _ = render(manifest, placeholders={"server_list": ref_server, "control_port": control_port}, knobs=knobs)
    log = tmp_path / f"{peer}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(spec.argv, cwd=spec.cwd, env={**os.environ, **spec.env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    control = AgentControl(control_port)
    admin = NacosAdmin(ref_server)
    try:
        try:
            state = eventually(control.state, timeout_ms=RUNNING_MS, what=f"{peer} RUNNING",
                               accept=_running_and_announced, swallow=(Exception,),
                               interval_ms=100).value
        except Exception as exc:
            pytest.fail(f"{peer} did not reach RUNNING on {ref_server}: {exc}\n--- agent log ---\n{_tail(log)}")
        assert state["server"] == ref_server, state
        meta = state["meta"]
        cid = state.get("connection_id")
        assert cid, f"{peer} reports no connection id: {state}"

        snapshot = eventually(admin.current, timeout_ms=REGISTERED_MS, what=f"{peer} registered",
                              accept=lambda c: list(c) == [cid]).value
        info = next(iter(snapshot.values()))["metaInfo"]
        assert info["clientIp"] == knobs.get("client_ip", meta["client_ip"]), (info, meta)
        assert info["version"] == meta["client_version"], (info, meta)
        # The AppName label the setup carried: from the reported labels, else the reported app
        # name (an agent that cannot read the label map), else none ("-").
        assert info["appName"] == ((meta.get("labels") or {}).get("AppName") or meta.get("app_name") or "-"), (info, meta)
        if "app_name" in knobs and meta.get("app_name") is not None:
            assert meta["app_name"] == knobs["app_name"], meta

        answer = control.request()
        assert answer.get("ok") is True, answer

        control.shutdown()
        try:
            code = proc.wait(timeout=EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{peer} still running {EXIT_S:.0f} s after /shutdown\n--- agent log ---\n{_tail(log)}")
        assert code == 0, f"{peer} exited {code}\n{_tail(log)}"
        eventually(admin.current, timeout_ms=REGISTERED_MS, what=f"{peer} unregistered", accept=lambda c: not c)
    finally:
        control.close()
        admin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
