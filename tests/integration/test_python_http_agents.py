"""The Python http-client agents (urllib3, requests, httpx, aiohttp) run through
``run_http_agent`` from their built-in manifests against the ledger, directly (no Toxiproxy: this
pins the agents and the ledger, not the proxy path). The ledger is the judge: what the agents
report (``reused``, ``local_port``) must agree with what the server saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.http_plan import EXIT_UNSUPPORTED
from harness.http_run import AgentRun, AgentUnsupported, LedgerAdmin, run_http_agent
from harness.paths import PROJECT_ROOT
from harness.peers import PeerRegistry, render
from harness.ports import LOOPBACK, free_port
from harness.runtime.process import ProcessRuntime
from harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

STACKS = ("urllib3", "requests", "httpx", "aiohttp")
CANCELABLE = ("urllib3", "httpx", "aiohttp")  # requests: cancel_burst -> exit 3
RUN_MS = 30_000
SETTLE_MS = 5_000
SLEEP_MS = 300
TOLERANCE_MS = 100
# The connection limit as each stack has it: per host where it exists, httpx's is pool-wide.
LIMIT_KNOB = {"urllib3": "max_conns_per_host", "requests": "max_conns_per_host", "httpx": "max_conns_total",
              "aiohttp": "max_conns_per_host"}


@pytest.fixture(scope="module")
def registry() -> PeerRegistry:
    return PeerRegistry.default()


@pytest.fixture(scope="module")
def stack_env(registry: PeerRegistry, tmp_path_factory: pytest.TempPathFactory):
    """One runtime and one ledger for the module (the expensive part)."""
    workdir = tmp_path_factory.mktemp("py-http-agents")
    port = free_port()
    spec, readiness = render(registry.get("http-server", "ledger"), placeholders={"host": LOOPBACK, "port": port},
                             name="ledger", log_path=workdir / "ledger.log")
    with ProcessRuntime() as runtime:
        runtime.start(spec, readiness, timeout_ms=15_000)
        yield runtime, LedgerAdmin(f"http://{LOOPBACK}:{port}"), f"http://{LOOPBACK}:{port}"


@pytest.fixture
def env(stack_env):
    """Per test: the previous agent's connections are gone (the ledger saw them close), then reset."""
    runtime, admin, url = stack_env
    eventually(lambda: admin.ledger()["open"], accept=lambda n: n == 0, timeout_ms=SETTLE_MS,
               what="no connection left open from the previous test")
    admin.reset()
    return runtime, admin, url


def agent(env, registry: PeerRegistry, tmp_path: Path, stack: str, plan: dict[str, Any]) -> AgentRun:
    runtime, _, url = env
    return run_http_agent(runtime, registry.get("http-client", stack), urls=[url], plan=plan,
                          workdir=tmp_path, timeout_ms=RUN_MS)


def settled(admin: LedgerAdmin) -> dict[str, Any]:
    """The ledger once every connection of a finished agent is recorded as closed."""
    return eventually(admin.ledger, accept=lambda v: v["open"] == 0, timeout_ms=SETTLE_MS,
                      what="every connection of the finished agent closed").value


@pytest.mark.parametrize("stack", STACKS)
def test_a_burst_completes_and_the_agent_stays_through_its_sleep(env, registry, tmp_path: Path, stack: str) -> None:
    plan = {"knobs": {}, "phases": [{"op": "burst", "n": 5, "path": "/sleep?ms=100"}, {"op": "sleep", "ms": SLEEP_MS}]}
    run = agent(env, registry, tmp_path, stack, plan)
    view = settled(env[1])
    assert [(r.phase, r.status, r.error) for r in run.phase(0)] == [(0, 200, None)] * 5
    # Five at once: normally five fresh connections; whatever the scheduling did, the agent's
    # reuse and port reports must agree with the server's ledger.
    fresh = [r for r in run.records if r.reused is False]
    assert len(fresh) == len(view["connections"]) == len(run.local_ports)
    assert run.local_ports == {int(c["peer"].rsplit(":", 1)[1]) for c in view["connections"]}
    assert {c["closed_by"] for c in view["connections"]} == {"client"}
    burst_end = max(r.end_ms for r in run.records)
    last_close = max(c["closed_ms"] for c in view["connections"])
    assert last_close - burst_end >= SLEEP_MS - TOLERANCE_MS, "the agent left before its sleep phase ended"


@pytest.mark.parametrize("stack", STACKS)
def test_a_connection_limit_holds_at_the_server(env, registry, tmp_path: Path, stack: str) -> None:
    plan = {"knobs": {LIMIT_KNOB[stack]: 2}, "phases": [{"op": "burst", "n": 6, "path": "/sleep?ms=100"}]}
    run = agent(env, registry, tmp_path, stack, plan)
    view = settled(env[1])
    assert not run.failed, run.failed
    assert view["max_simultaneous"] <= 2, view
    assert len(view["connections"]) <= 2, view  # 2 unless the scheduler starved the second request
    assert sum(r.reused is False for r in run.records) == len(view["connections"])
    assert sum(c["requests"] for c in view["connections"]) == 6


@pytest.mark.parametrize("stack", STACKS)
def test_reused_and_local_port_agree_with_the_ledger(env, registry, tmp_path: Path, stack: str) -> None:
    sequential = {"op": "sequential", "n": 3, "path": "/"}
    kept = agent(env, registry, tmp_path, stack, {"knobs": {}, "phases": [sequential]})
    view = settled(env[1])
    (conn,) = view["connections"]
    assert [r.reused for r in kept.records] == [False, True, True]
    assert kept.local_ports == {int(conn["peer"].rsplit(":", 1)[1])}
    assert conn["requests"] == 3

    env[1].reset()
    fresh = agent(env, registry, tmp_path, stack, {"knobs": {"keepalive": False}, "phases": [sequential]})
    view = settled(env[1])
    assert [r.reused for r in fresh.records] == [False, False, False]
    assert len(fresh.local_ports) == 3
    assert [c["requests"] for c in view["connections"]] == [1, 1, 1]


@pytest.mark.parametrize("stack", CANCELABLE)
def test_canceled_waiters_leak_no_slot(env, registry, tmp_path: Path, stack: str) -> None:
    plan = {"knobs": {LIMIT_KNOB[stack]: 1}, "phases": [
        {"op": "cancel_burst", "n": 4, "path": "/sleep?ms=1000", "cancel_after_ms": 150},
        {"op": "sleep", "ms": 200},  # the server sees the canceled connection close before the next burst
        {"op": "burst", "n": 3, "path": "/sleep?ms=20", "timeout_ms": 2000},
    ]}
    run = agent(env, registry, tmp_path, stack, plan)
    view = settled(env[1])
    # The agent's part: every request of the cancel_burst is reported canceled, every later one reported.
    assert all(r.canceled for r in run.phase(0)), [r.error for r in run.phase(0)]
    assert [r.i for r in run.phase(2)] == [0, 1, 2]
    later = [(r.status, r.error) for r in run.phase(2)]
    if stack == "httpx" and any((error or "").startswith("PoolTimeout") for _, error in later):
        # Seen under load: a queued request canceled just after the pool handed it a new, not yet
        # connected connection leaves that connection CONNECTING for ever (httpcore 1.0.9).
        pytest.xfail(f"httpcore leaked the canceled request's slot (encode/httpcore#1093, open): {later}")
    # The library's part (PL-11): no slot leaked, the limit still held.
    assert later == [(200, None)] * 3
    assert view["max_simultaneous"] <= 1, view


@pytest.mark.parametrize(
    ("stack", "plan", "refused"),
    [
        ("urllib3", {"knobs": {"max_conns_per_host": 2, "max_idle_per_host": 3}}, ["max_idle_per_host"]),
        ("requests", {"phases": [{"op": "cancel_burst", "n": 2, "cancel_after_ms": 10}]}, ["cancel_burst"]),
        ("httpx", {"knobs": {"block_when_full": False}}, ["block_when_full"]),
        ("aiohttp", {"knobs": {"keepalive": False, "idle_timeout_ms": 1000}}, ["idle_timeout_ms"]),
    ],
)
def test_what_a_library_cannot_do_is_exit_3(env, registry, tmp_path: Path, stack: str, plan: dict[str, Any],
                                             refused: list[str]) -> None:
    plan = {"knobs": {}, "phases": [{"op": "burst", "n": 2}], **plan}
    with pytest.raises(AgentUnsupported) as info:
        agent(env, registry, tmp_path, stack, plan)
    assert info.value.names == refused
    assert all(info.value.detail.values())
    assert env[1].ledger()["connections"] == []  # refused before any request


def test_the_agent_itself_refuses_a_knob_its_manifest_would_not_pass(env, tmp_path: Path) -> None:
    """Without the manifest's early check (a hand-written plan), the agent says exit 3 itself."""
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"knobs": {"max_conns_per_host": 2}, "phases": [{"op": "burst", "n": 1}]}))
    done = subprocess.run(
        [sys.executable, "-m", "harness.agents.python.http_agent", "--stack", "httpx", "--url", env[2],
         "--plan", str(plan_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=RUN_MS / 1000, check=False,
    )
    assert done.returncode == EXIT_UNSUPPORTED, done.stderr
    (line,) = done.stdout.splitlines()
    report = json.loads(line)
    assert report["unsupported"] == ["max_conns_per_host"]
    assert "pool-wide" in report["detail"]["max_conns_per_host"]
