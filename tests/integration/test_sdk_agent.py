"""The nacos-sdk-python agent (``python -m harness.agents.python.nacos_sdk_agent``) against the
in-test fake server of ``test_ref_client.py``: it starts the real library, reports its state and
events, forwards one request, shuts down cleanly — and records the library's known
ConnectResetRequest bug (research/nacos-protocol.md §5.1) as the current observed behaviour.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.wait import eventually, holds_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _load_fake():
    # Shared helpers live in the sibling test module; load it by path so any import mode works.
    name = "_connformance_ref_client_fake"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_ref_client.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_fake = _load_fake()
fake_servers = _fake.fake_servers
agent_process = _fake.agent_process
ref_servers = _fake.ref_servers
pushes_to = _fake.pushes_to

SDK_AGENT = "harness.agents.python.nacos_sdk_agent"
STARTUP_MS = 20_000
BARRIER_MS = 10_000
NO_SWITCH_WINDOW_MS = 1_500  # > the library's 100 ms post-setup sleep plus a reconnect round
EXIT_TIMEOUT_S = 20.0


def sdk_agent(servers, tmp_path: Path, *extra: str):
    work_dir = tmp_path / "sdk-work"
    args = ["--servers", ",".join(s.address for s in servers), "--work-dir", str(work_dir), *extra]
    return agent_process(SDK_AGENT, args, tmp_path / "sdk-agent.log")


def kinds(state: dict[str, Any]) -> list[str]:
    """Connection events only: the library also logs unrelated errors (e.g. its empty cache dir)."""
    return [e["kind"] for e in state["events"] if e["kind"] != "error"]


def test_sdk_agent_runs_registers_and_requests(tmp_path: Path) -> None:
    with fake_servers(1) as servers, sdk_agent(servers, tmp_path) as agent:
        state = agent.wait_running(STARTUP_MS)
        server = servers[0]
        assert state["server"] == server.address
        registered = server.current()
        assert list(registered) == [state["connection_id"]]
        entry = registered[state["connection_id"]]
        # meta is what the library itself reports; the server saw the same
        assert entry["client_ip"] == state["meta"]["client_ip"]
        assert entry["version"] == state["meta"]["client_version"] == "Nacos-Python-Client:v3.2.0"
        assert entry["labels"] == state["meta"]["labels"] == {"source": "sdk", "module": "naming"}
        assert kinds(state) == ["connected"]
        connected = [e for e in state["events"] if e["kind"] == "connected"]
        assert connected[0]["detail"]["connection_id"] == state["connection_id"]

        result = agent.request(timeout_ms=3000)
        assert result["ok"] is True, result
        assert result["error_code"] is None
        assert server.current()[state["connection_id"]]["health_checks"] >= 1

        # logs went to the work dir, not $HOME
        assert (tmp_path / "sdk-work" / "logs" / "naming.log").exists()


def test_sdk_agent_maps_an_unknown_request_type_to_the_library_error(tmp_path: Path) -> None:
    # ServiceQueryRequest has no handler on the fake: ErrorResponse 302, which the library
    # surfaces as NacosException(500, message) after its own three attempts.
    with fake_servers(1) as servers, sdk_agent(servers, tmp_path) as agent:
        agent.wait_running(STARTUP_MS)
        result = agent.request(type="ServiceQueryRequest", timeout_ms=3000)
        assert result["ok"] is False
        assert result["error_code"] == 500
        assert "RequestHandler Not Found" in result["error"]


def test_finding_sdk_python_3_2_0_drops_connect_reset_unanswered_and_never_switches(tmp_path: Path) -> None:
    """RECORDED FINDING (not desired behaviour): nacos-sdk-python 3.2.0 cannot parse
    ConnectResetRequest (no entry in ``GrpcUtils.remote_type``), so a reset is neither answered
    nor acted on — SR-06 fails for this library. If this test starts failing, the library
    changed: update the finding, don't "fix" the adapter."""
    with fake_servers(2) as servers, sdk_agent(servers, tmp_path) as agent:
        before = agent.wait_running(STARTUP_MS)
        server = next(s for s in servers if s.address == before["server"])
        cid = before["connection_id"]

        reset_id = server.push_reset(cid)
        # Barrier: the library handles bi-stream pushes one after another, so once the detection
        # probe behind the reset is answered, the reset has been fully handled.
        probe_id = server.push_detection(cid)
        eventually(lambda: server.answers_to(probe_id), timeout_ms=BARRIER_MS,
                   what="ClientDetectionResponse behind the reset")

        assert server.answers_to(reset_id) == []  # never answered
        held, bad, _ = holds_for(agent.state, duration_ms=NO_SWITCH_WINDOW_MS, what="no switch after reset",
                                 accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] == cid)
        assert held, f"the library switched after all: {bad}"
        assert list(server.current()) == [cid]
        assert all(not other.current() for other in servers if other is not server)

        after = agent.state()
        assert kinds(after) == ["connected"]
        errors = [e["detail"]["message"] for e in after["events"] if e["kind"] == "error"]
        assert any("unknown payload type:ConnectResetRequest" in m for m in errors), errors


def test_finding_sdk_python_3_2_0_ignores_reload_client_on_the_reference_server(tmp_path: Path) -> None:
    """RECORDED FINDING, end to end (SR-06): ``reloadClient`` on the reference server gets no
    ConnectResetResponse (the server gives up after its 3 s wait) and the client stays put."""
    with ref_servers(2, tmp_path) as servers, sdk_agent(servers, tmp_path) as agent:
        before = agent.wait_running(STARTUP_MS)
        server = next(s for s in servers if s.address == before["server"])
        cid = before["connection_id"]

        r = server.loader("reloadClient", connectionId=cid)  # returns after the reset's 3 s timeout
        assert (r.status_code, r.text) == (200, "success")

        pushes = pushes_to(server, cid)
        if pushes is not None:
            assert [(p["type"], p["answered"]) for p in pushes] == [("ConnectResetRequest", False)]
        held, bad, _ = holds_for(agent.state, duration_ms=NO_SWITCH_WINDOW_MS, what="no switch after reloadClient",
                                 accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] == cid)
        assert held, f"the library switched after all: {bad}"
        assert cid in server.current()


def test_finding_sdk_python_3_2_0_reports_connected_again_after_a_failed_request(tmp_path: Path) -> None:
    """RECORDED FINDING: after a request fails three times with a non-connection error (302),
    ``RpcClient.request`` marks the client UNHEALTHY and queues a reconnect "on request fail";
    the health check passes, so it stays on the same connection, yet it fires CONNECTED again
    with no DISCONNECTED in between (connected/disconnected stop balancing, cf. TC-08)."""
    with fake_servers(1) as servers, sdk_agent(servers, tmp_path) as agent:
        before = agent.wait_running(STARTUP_MS)
        result = agent.request(type="ServiceQueryRequest", timeout_ms=3000)
        assert result["ok"] is False
        after = eventually(agent.state, timeout_ms=BARRIER_MS, what="a second connected event",
                           accept=lambda s: kinds(s).count("connected") == 2).value
        assert kinds(after) == ["connected", "connected"]
        assert after["connection_id"] == before["connection_id"]
        assert list(servers[0].current()) == [before["connection_id"]]


def test_sdk_agent_shutdown_endpoint_exits_zero(tmp_path: Path) -> None:
    with fake_servers(1) as servers, sdk_agent(servers, tmp_path) as agent:
        state = agent.wait_running(STARTUP_MS)
        assert agent.shutdown() == {"ok": True}
        assert agent.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        eventually(servers[0].current, timeout_ms=BARRIER_MS, what="registration gone after /shutdown",
                   accept=lambda c: state["connection_id"] not in c)
        assert "last 60 lines of the library log" in agent.output()


def test_sdk_agent_sigterm_exits_zero(tmp_path: Path) -> None:
    with fake_servers(1) as servers, sdk_agent(servers, tmp_path) as agent:
        agent.wait_running(STARTUP_MS)
        os.kill(agent.proc.pid, signal.SIGTERM)
        assert agent.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
