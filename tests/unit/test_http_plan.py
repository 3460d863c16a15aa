"""The pure pieces of the HTTP half, no sockets: the http-client plan and output contract
(``harness.http_plan``), ``run_http_agent`` over a fake runtime, each Python stack's knob mapping,
and the ledger's bookkeeping (``harness.reference.http.book``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.agents.python.http_agent import STACKS, Driver, load_driver
from harness.errors import HarnessError, SetupError, Unimplemented
from harness.http_plan import (
    KNOB_FLAGS,
    KNOBS,
    PlanError,
    knob_from_text,
    parse_agent_output,
    parse_plan,
    split_urls,
)
from harness.http_run import AgentUnsupported, run_http_agent
from harness.peers import PeerRegistry, UnsupportedKnob
from harness.reference.http.book import Ledger, Slots

pytestmark = pytest.mark.timeout(20)

BURST = {"op": "burst", "n": 3, "path": "/sleep?ms=300"}
T0 = 1_796_000_000_000.0  # epoch ms, as the contract says


def record(phase: int = 0, i: int = 0, **over: Any) -> dict[str, Any]:
    base = {"phase": phase, "i": i, "start_ms": T0 + 1000.0, "end_ms": T0 + 1300.5, "status": 200, "error": None,
            "reused": False, "local_port": 40000}
    return {**base, **over}


# --- plans -------------------------------------------------------------------------------------


def test_a_minimal_plan_gets_the_contract_defaults() -> None:
    plan = parse_plan({"phases": [{"op": "burst", "n": 2}, {"op": "sleep", "ms": 10}]})
    burst, sleep = plan.phases
    assert (burst.path, burst.method, burst.target, burst.body, burst.timeout_ms) == ("/", "GET", 0, None, None)
    assert (sleep.op, sleep.ms, sleep.is_request) == ("sleep", 10, False)
    assert plan.knobs == {}
    assert plan.request_count == 2
    assert plan.targets == 1


def test_a_plan_round_trips_through_json() -> None:
    raw = {
        "knobs": {"max_conns_per_host": 3, "keepalive": False},
        "phases": [
            {"op": "burst", "n": 20, "path": "/sleep?ms=300", "method": "GET", "target": 1},
            {"op": "sequential", "n": 2, "path": "/drop-nth?n=2", "method": "POST", "target": 0, "body": "x",
             "timeout_ms": 500},
            {"op": "cancel_burst", "n": 4, "path": "/", "method": "GET", "target": 0, "cancel_after_ms": 50},
            {"op": "sleep", "ms": 1500},
        ],
    }
    plan = parse_plan(raw, url_count=2)
    assert plan.to_json() == raw
    assert plan.request_count == 26
    assert plan.targets == 2
    assert plan.ops == {"burst", "sequential", "cancel_burst", "sleep"}


def test_a_spread_burst_names_each_requests_host() -> None:
    raw = {"knobs": {}, "phases": [{"op": "spread_burst", "n": 5, "path": "/", "method": "GET", "targets": [2, 0]}]}
    plan = parse_plan(raw, url_count=3)
    assert plan.to_json() == raw
    assert plan.targets == 3
    (phase,) = plan.phases
    assert [phase.target_of(i) for i in range(5)] == [2, 0, 2, 0, 2]
    assert [Driver.for_request(phase, i).target for i in range(3)] == [2, 0, 2]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], r"a plan is a JSON object"),
        ({"urls": ["http://127.0.0.1:1"], "phases": [BURST]}, r"unexpected key\(s\) urls.*--url"),
        ({"knobs": {}}, r"plan\.phases: expected a non-empty list"),
        ({"phases": []}, r"plan\.phases"),
        ({"phases": [{"op": "storm", "n": 1}]}, r"phases\[0\]\.op: expected one of"),
        ({"phases": [{**BURST, "gap_ms": 5}]}, r"phases\[0\]: unexpected key\(s\) gap_ms"),
        ({"phases": [{"op": "burst"}]}, r"phases\[0\]\.n: missing"),
        ({"phases": [{"op": "burst", "n": 0}]}, r"phases\[0\]\.n: 0 is outside 1\.\.1000"),
        ({"phases": [{"op": "burst", "n": 1001}]}, r"outside 1\.\.1000"),
        ({"phases": [{"op": "burst", "n": True}]}, r"expected an integer"),
        ({"phases": [{"op": "burst", "n": 1, "path": "sleep"}]}, r"path: expected an absolute path"),
        ({"phases": [{"op": "burst", "n": 1, "method": "get"}]}, r"method: expected an upper-case method"),
        ({"phases": [{"op": "burst", "n": 1, "target": 1}]}, r"target: 1 but the run has 1 URL"),
        ({"phases": [{"op": "cancel_burst", "n": 1}]}, r"cancel_after_ms: missing"),
        ({"phases": [{"op": "spread_burst", "n": 2}]}, r"targets: expected a non-empty list"),
        ({"phases": [{"op": "spread_burst", "n": 2, "targets": [0, 1]}]}, r"target: 1 but the run has 1 URL"),
        ({"phases": [{"op": "spread_burst", "n": 2, "targets": [0], "target": 0}]}, r"unexpected key\(s\) target"),
        ({"phases": [{"op": "sleep"}]}, r"phases\[0\]\.ms: missing"),
        ({"phases": [{"op": "sleep", "ms": -1}]}, r"outside"),
        ({"phases": [BURST], "knobs": {"max_conns": 3}}, r"knobs\.max_conns: unknown knob"),
        ({"phases": [BURST], "knobs": {"max_conns_per_host": 0}}, r"max_conns_per_host: 0 is outside >= 1"),
        ({"phases": [BURST], "knobs": {"idle_timeout_ms": "1000"}}, r"idle_timeout_ms: expected an integer"),
        ({"phases": [BURST], "knobs": {"keepalive": "false"}}, r"keepalive: expected true or false"),
    ],
)
def test_bad_plans_say_what_is_wrong(raw: Any, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(raw, url_count=1)


def test_plan_errors_are_harness_errors_and_unknown_knobs_pass_for_the_agent() -> None:
    assert issubclass(PlanError, HarnessError)
    plan = parse_plan({"phases": [BURST], "knobs": {"max_conns": 3, "keepalive": None}}, strict_knobs=False)
    assert plan.knobs == {"max_conns": 3}  # the agent reports it as unsupported; None means "not set"


def test_knob_flags_and_their_text_values() -> None:
    assert KNOB_FLAGS["--max-conns-per-host"] == "max_conns_per_host"
    assert set(KNOB_FLAGS.values()) == set(KNOBS)
    assert knob_from_text("max_idle_per_host", "3") == 3
    assert knob_from_text("keepalive", "FALSE") is False
    with pytest.raises(PlanError, match="--keepalive: expected true or false"):
        knob_from_text("keepalive", "0")
    with pytest.raises(PlanError, match="--idle-timeout-ms: expected an integer"):
        knob_from_text("idle_timeout_ms", "1s")


def test_urls_come_repeated_or_comma_separated() -> None:
    assert split_urls(["http://127.0.0.1:1,http://127.0.0.2:2/", "http://127.0.0.3:3"]) == [
        "http://127.0.0.1:1", "http://127.0.0.2:2/", "http://127.0.0.3:3"]
    with pytest.raises(PlanError, match="no URL"):
        split_urls([" , "])
    with pytest.raises(PlanError, match="expected an http:// base URL"):
        split_urls(["https://127.0.0.1:1"])


# --- agent output ------------------------------------------------------------------------------


def test_output_lines_split_into_records_done_and_noise() -> None:
    text = "\n".join([
        "=== connformance: start #1 of http-client-x: python -m ...",
        json.dumps(record(0, 1)),
        "WARNING urllib3.connectionpool: Connection pool is full, discarding connection: 127.0.0.1",
        json.dumps(record(0, 0, status=None, error="canceled", reused=None, local_port=None)),
        "[1, 2]",
        "{not json",
        '{"something": "else"}',
        '{"done": true}',
    ])
    out = parse_agent_output(text)
    assert out.done
    assert out.unsupported is None
    assert [(r.phase, r.i) for r in out.records] == [(0, 1), (0, 0)]
    ok, canceled = out.records
    assert ok.ok
    assert not ok.canceled
    assert ok.duration_ms == 300.5
    assert ok.to_json() == record(0, 1)
    assert not canceled.ok
    assert canceled.canceled
    assert len(out.noise) == 5


def test_an_unsupported_report_keeps_its_detail() -> None:
    out = parse_agent_output('{"unsupported": ["max_conns_per_host"], "detail": {"max_conns_per_host": "pool-wide"}}\n')
    assert out.unsupported == ["max_conns_per_host"]
    assert out.detail == {"max_conns_per_host": "pool-wide"}
    assert not out.done
    assert not out.records
    assert parse_agent_output('{"unsupported": ["x"]}').detail == {}  # the Go/Java agents send no detail


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({k: v for k, v in record().items() if k != "local_port"}, "lacks local_port"),
        (record(status="200"), "status must be null or int"),
        (record(reused="yes"), "reused must be null or bool"),
        (record(phase=True), "phase must be"),
        (record(start_ms=None), "start_ms must be"),
        ({"unsupported": "max_conns_per_host"}, "unsupported must be a list"),
    ],
)
def test_records_that_break_the_contract_are_rejected(line: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_agent_output(json.dumps(line))


# --- run_http_agent over a fake runtime --------------------------------------------------------


class FakeNode:
    def __init__(self, spec: Any, exit_code: int) -> None:
        self.name, self.spec, self.code = spec.name, spec, exit_code

    def alive(self) -> bool:
        return False

    def stop(self, timeout_ms: int = 5000) -> int:
        return self.code

    def logs(self, tail_lines: int = 50) -> str:
        return Path(self.spec.log_path).read_text()[-2000:]


class FakeRuntime:
    """Writes a canned agent output into the log and 'exits' with a given code."""

    name = "process"

    def __init__(self, lines: Sequence[Any], exit_code: int = 0) -> None:
        self.lines, self.exit_code = lines, exit_code
        self.specs: list[Any] = []

    def start(self, spec: Any, readiness: Sequence[Any] = (), timeout_ms: int = 15000) -> FakeNode:
        assert not readiness, "http-client agents are one-shot: no readiness"
        self.specs.append(spec)
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in self.lines)
        Path(spec.log_path).write_text(f"=== connformance: start #1 of {spec.name}\n{text}")
        return FakeNode(spec, self.exit_code)

    def close(self) -> None:
        pass


@pytest.fixture
def registry() -> PeerRegistry:
    return PeerRegistry.default()


def run(registry: PeerRegistry, runtime: FakeRuntime, tmp_path: Path, stack: str = "urllib3", **kw: Any):
    kw.setdefault("urls", ["http://127.0.0.1:2001", "http://127.0.0.2:2002"])
    kw.setdefault("plan", {"knobs": {"max_conns_per_host": 3}, "phases": [{**BURST, "target": 1}, {"op": "sleep", "ms": 5}]})
    return run_http_agent(runtime, registry.get("http-client", stack), workdir=tmp_path, timeout_ms=2000, **kw)


def test_a_run_renders_urls_plan_and_knob_flags(registry: PeerRegistry, tmp_path: Path) -> None:
    runtime = FakeRuntime([record(0, i, local_port=40000 + i) for i in range(3)] + [{"done": True}])
    result = run(registry, runtime, tmp_path)
    argv = runtime.specs[0].argv
    assert argv[argv.index("--url") + 1] == "http://127.0.0.1:2001,http://127.0.0.2:2002"
    assert argv[-2:] == ["--max-conns-per-host", "3"]
    plan_file = Path(argv[argv.index("--plan") + 1])
    assert json.loads(plan_file.read_text()) == {
        "knobs": {"max_conns_per_host": 3},
        "phases": [{"op": "burst", "n": 3, "path": "/sleep?ms=300", "method": "GET", "target": 1},
                   {"op": "sleep", "ms": 5}]}
    assert len(result.records) == 3
    assert result.local_ports == {40000, 40001, 40002}
    assert [r.i for r in result.phase(0)] == [0, 1, 2]
    assert result.span_ms(0) == 300.5
    assert not result.failed


def test_exit_3_is_unimplemented_with_the_agents_reasons(registry: PeerRegistry, tmp_path: Path) -> None:
    runtime = FakeRuntime([{"unsupported": ["max_idle_per_host"], "detail": {"max_idle_per_host": "one maxsize"}}], 3)
    with pytest.raises(AgentUnsupported, match="max_idle_per_host: one maxsize") as info:
        run(registry, runtime, tmp_path, plan={"knobs": {"max_conns_per_host": 2, "max_idle_per_host": 3},
                                               "phases": [BURST]})
    assert isinstance(info.value, Unimplemented)
    assert info.value.names == ["max_idle_per_host"]


def test_a_knob_the_manifest_lacks_is_unimplemented_before_starting(registry: PeerRegistry, tmp_path: Path) -> None:
    runtime = FakeRuntime([])
    with pytest.raises(UnsupportedKnob, match="max_conns_per_host"):
        run(registry, runtime, tmp_path, stack="httpx")
    assert runtime.specs == []


@pytest.mark.parametrize(
    ("lines", "code", "message"),
    [
        (["Traceback (most recent call last):", "ImportError: no module"], 1, r"(?s)exited with code 1.*ImportError"),
        ([record(0, i) for i in range(3)], 0, r'without printing \{"done": true\}'),
        ([record(0, 0), {"done": True}], 0, "printed 1 request records; the plan has 3"),
        ([{"phase": 0, "i": 0}, {"done": True}], 0, "broke the output contract"),
    ],
)
def test_other_failures_are_setup_errors_with_the_log(registry: PeerRegistry, tmp_path: Path, lines: list[Any],
                                                      code: int, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        run(registry, FakeRuntime(lines, code), tmp_path)


def test_bad_inputs_are_harness_errors(registry: PeerRegistry, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="outside 127.0.0.0/8"):
        run(registry, FakeRuntime([]), tmp_path, urls=["http://10.0.0.1:80"])
    with pytest.raises(HarnessError, match="target: 1 but the run has 1 URL"):
        run(registry, FakeRuntime([]), tmp_path, urls=["http://127.0.0.1:1"])
    with pytest.raises(HarnessError, match="runs http-client peers"):
        run_http_agent(FakeRuntime([]), registry.get("http-server", "ledger"), urls=["http://127.0.0.1:1"],
                       plan={"phases": [BURST]}, workdir=tmp_path, timeout_ms=100)


# --- the Python stacks' knob mapping -----------------------------------------------------------


def driver(stack: str, knobs: dict[str, Any], ops: Sequence[dict[str, Any]] = (BURST,)):
    cls = load_driver(stack)
    plan = parse_plan({"knobs": knobs, "phases": list(ops)})
    missing = cls.unsupported(plan.knobs, plan.ops)
    return missing, (None if missing else cls(plan, ["http://127.0.0.1:1"], lambda obj: None))


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_no_knobs_keeps_every_library_default(stack: str) -> None:
    missing, d = driver(stack, {})
    assert not missing
    config = {"urllib3": "pool_kwargs", "requests": "adapter_kwargs", "httpx": "limits", "aiohttp": "connector_kwargs"}
    assert not getattr(d, config[stack])


def test_urllib3_and_requests_have_one_queue_for_limit_and_idle_cap() -> None:
    assert driver("urllib3", {"max_conns_per_host": 3})[1].pool_kwargs == {"maxsize": 3, "block": True}
    assert driver("urllib3", {"max_idle_per_host": 3, "block_when_full": False})[1].pool_kwargs == {
        "maxsize": 3, "block": False}
    assert driver("requests", {"max_conns_per_host": 2, "max_idle_per_host": 2})[1].adapter_kwargs == {
        "pool_maxsize": 2, "pool_block": True}
    for stack in ("urllib3", "requests"):
        assert set(driver(stack, {"max_conns_per_host": 2, "max_idle_per_host": 3})[0]) == {"max_idle_per_host"}
        assert set(driver(stack, {"max_conns_per_host": 2, "block_when_full": False})[0]) == {"max_conns_per_host"}
        assert set(driver(stack, {"idle_timeout_ms": 1, "max_idle_total": 1, "max_conns_total": 1})[0]) == {
            "idle_timeout_ms", "max_idle_total", "max_conns_total"}
    cancel = {"op": "cancel_burst", "n": 2, "cancel_after_ms": 5}
    assert set(driver("requests", {}, [cancel])[0]) == {"cancel_burst"}
    assert not driver("urllib3", {}, [cancel])[0]


def test_httpx_limits_are_pool_wide_and_keep_the_other_defaults() -> None:
    d = driver("httpx", {"max_conns_total": 3, "idle_timeout_ms": 1000})[1]
    assert d.limits == {"max_connections": 3, "max_keepalive_connections": 20, "keepalive_expiry": 1.0}
    assert driver("httpx", {"keepalive": False})[1].limits["max_keepalive_connections"] == 0
    assert set(driver("httpx", {"max_conns_per_host": 3, "max_idle_per_host": 1})[0]) == {
        "max_conns_per_host", "max_idle_per_host"}
    assert set(driver("httpx", {"block_when_full": False})[0]) == {"block_when_full"}
    assert not driver("httpx", {"block_when_full": True})[0]


def test_aiohttp_maps_onto_its_connector() -> None:
    d = driver("aiohttp", {"max_conns_per_host": 3, "max_conns_total": 5, "idle_timeout_ms": 1500})[1]
    assert d.connector_kwargs == {"limit_per_host": 3, "limit": 5, "keepalive_timeout": 1.5}
    assert driver("aiohttp", {"keepalive": False})[1].connector_kwargs == {"force_close": True}
    assert set(driver("aiohttp", {"keepalive": False, "idle_timeout_ms": 1})[0]) == {"idle_timeout_ms"}
    assert set(driver("aiohttp", {"max_idle_per_host": 1, "max_idle_total": 1})[0]) == {"max_idle_per_host", "max_idle_total"}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_manifest_knobs_match_what_the_agent_supports(registry: PeerRegistry, stack: str) -> None:
    """A knob the manifest declares must not be refused alone by the agent, and vice versa."""
    manifest = registry.get("http-client", stack)
    sample = {k: (True if k in ("keepalive", "block_when_full", "read_error_body") else 2) for k in KNOBS}
    for knob in KNOBS:
        refused = knob in driver(stack, {knob: sample[knob]})[0]
        assert refused != manifest.supports(knob), f"{stack}: manifest declares {knob}={manifest.supports(knob)}"


# --- the ledger's bookkeeping ------------------------------------------------------------------


def test_max_simultaneous_leaves_admin_connections_out_and_restarts_at_reset() -> None:
    ledger = Ledger()
    a, b = ledger.opened("127.0.0.1:1"), ledger.opened("127.0.0.1:2")
    admin = ledger.opened("127.0.0.1:3")
    ledger.mark_admin(admin)
    assert ledger.max_simultaneous() == 2
    ledger.closed(a, "client", "EOF")
    assert not ledger.closed(a, "server-idle", "late")  # the first decision wins
    c = ledger.opened("127.0.0.1:4")
    assert ledger.max_simultaneous() == 2
    assert [r.id for r in ledger.data_records()] == [a.id, b.id, c.id]
    ledger.reset()
    assert [r.id for r in ledger.data_records()] == [b.id, c.id]
    assert ledger.max_simultaneous() == 2
    ledger.closed(b, "server-close-hdr", "status 500", "fin")
    view = ledger.view({}, queued=0)
    assert (view["open"], view["max_simultaneous"], view["max_served_simultaneous"]) == (1, 2, 0)
    with pytest.raises(ValueError, match="closed_by"):
        ledger.closed(c, "timeout", "?")


def test_slots_are_handed_on_in_order_and_give_up_is_idempotent() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        first, second, third = slots.request(), slots.request(), slots.request()
        assert first.done()
        assert not second.done()
        assert slots.queued == 2
        slots.give_up(second)  # withdrawn while queued
        slots.give_up(first)
        slots.give_up(first)
        assert third.done()
        assert slots.in_use == 1
        assert slots.queued == 0
        slots.give_up(third)
        assert slots.in_use == 0
        unlimited = Slots(-1)
        assert all(unlimited.request().done() for _ in range(5))

    asyncio.run(scenario())
