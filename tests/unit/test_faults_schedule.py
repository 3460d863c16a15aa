"""Unit tests for the fault vocabulary (harness.faults): registry, heal idempotence and history
records on fake targets, schedule determinism and JSON round trip, and the scheduler's
always-heal guarantee. No processes, no Toxiproxy."""

from __future__ import annotations

import json
import random

import pytest

from harness.errors import HarnessError
from harness.faults import (
    FAULTS,
    Blackhole,
    Kill,
    Latency,
    LinkDown,
    PacketLoss,
    Pause,
    ProxyDown,
    ResetPeer,
    Restart,
    Schedule,
    ScheduledFault,
    Silence,
    SynDrop,
    fault_from_spec,
    run_schedule,
)
from harness.faults import schedule as chaos
from harness.observe.history import History

GEN = {
    "targets": ["server-0", "server-1", "server-2"],
    "kinds": {"pause": {}, "kill": {"restart_on_heal": True}, "blackhole": {}, "latency": {"latency_ms": 200}},
    "count": 8,
    "window_ms": 20_000,
    "min_duration_ms": 300,
    "max_duration_ms": 2_000,
}


class FakeProxy:
    def __init__(self, name: str = "nacos-0", fail_on: str | None = None) -> None:
        self.name = name
        self.enabled = True
        self.toxics: dict[str, object] = {}
        self.calls: list[str] = []
        self.fail_on = fail_on

    def add_toxic(self, toxic) -> str:
        if toxic.toxic_name == self.fail_on:
            raise RuntimeError(f"cannot add {toxic.toxic_name}")
        self.calls.append(f"add {toxic.toxic_name}")
        self.toxics[toxic.toxic_name] = toxic
        return toxic.toxic_name

    def remove_toxic(self, name: str, *, missing_ok: bool = False) -> None:
        self.calls.append(f"remove {name}")
        self.toxics.pop(name, None)

    def disable(self) -> None:
        self.calls.append("disable")
        self.enabled = False

    def enable(self) -> None:
        self.calls.append("enable")
        self.enabled = True


class FakeNode:
    MECHANISMS = {"kill": "fake kill", "pause": "fake pause", "restart": "fake restart"}

    def __init__(self, name: str = "server-0") -> None:
        self.name = name
        self.pid: int | None = 100
        self.running = True
        self.paused = False
        self.calls: list[str] = []

    def alive(self) -> bool:
        return self.running

    def kill(self) -> None:
        self.calls.append("kill")
        self.running = False

    def pause(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused = False

    def restart(self, readiness=(), timeout_ms: int = 15000) -> None:
        self.calls.append("restart")
        self.running, self.paused = True, False
        self.pid = (self.pid or 0) + 1


# -- registry and specs ------------------------------------------------------------------------


def test_registry_names_every_fault_by_its_name() -> None:
    assert FAULTS == {
        "proxy_down": ProxyDown, "reset_peer": ResetPeer, "blackhole": Blackhole, "latency": Latency,
        "kill": Kill, "pause": Pause, "restart": Restart,
        "syn_drop": SynDrop, "silence": Silence, "packet_loss": PacketLoss, "link_down": LinkDown,
    }
    assert {cls.ROLE for cls in (ProxyDown, ResetPeer, Blackhole, Latency)} == {"proxy"}
    assert {cls.ROLE for cls in (Kill, Pause, Restart)} == {"node"}


def test_fault_from_spec_builds_with_params_and_rejects_bad_ones() -> None:
    fault = fault_from_spec("latency", FakeProxy(), latency_ms=150, stream="upstream")
    assert isinstance(fault, Latency)
    assert fault.params() == {"latency_ms": 150, "jitter_ms": 0, "stream": "upstream"}
    with pytest.raises(HarnessError, match="unknown fault 'nope'; known faults: blackhole, kill"):
        fault_from_spec("nope", FakeProxy())
    with pytest.raises(HarnessError, match=r"unknown \['latency_ms'\]"):
        fault_from_spec("pause", FakeNode(), latency_ms=1)
    with pytest.raises(HarnessError, match=r"lacks required \['latency_ms'\]"):
        fault_from_spec("latency", FakeProxy())
    with pytest.raises(HarnessError, match="stream must be one of"):
        fault_from_spec("reset_peer", FakeProxy(), stream="sideways")


# -- apply / heal ------------------------------------------------------------------------------


def test_heal_is_idempotent_and_a_noop_before_apply() -> None:
    proxy, node = FakeProxy(), FakeNode()
    for fault in (ProxyDown(proxy), Blackhole(proxy), Pause(node), Kill(node, restart_on_heal=True)):
        fault.heal()  # never applied: nothing happens
    assert proxy.calls == []
    assert node.calls == []

    with Blackhole(proxy) as blackhole:
        assert sorted(proxy.toxics) == ["fault_blackhole_downstream", "fault_blackhole_upstream"]
        with pytest.raises(HarnessError, match="already applied"):
            blackhole.apply()
    blackhole.heal()
    assert proxy.toxics == {}
    assert proxy.calls.count("remove fault_blackhole_upstream") == 1

    pause = Pause(node)
    pause.apply()
    pause.heal()
    pause.heal()
    assert node.calls == ["pause", "resume"]


def test_proxy_faults_write_begin_and_end_only() -> None:
    """Toxics are recorded by the topology's proxy hook; the vocabulary adds its own window."""
    history, proxy = History(None), FakeProxy()
    with ResetPeer(proxy, history=history, label="server-0"):
        assert list(proxy.toxics) == ["fault_reset_peer_upstream"]
    kinds = [(e["kind"], e["fault"], e["target"], e["label"]) for e in history]
    assert kinds == [("fault_begin", "reset_peer", "nacos-0", "server-0"), ("fault_end", "reset_peer", "nacos-0", "server-0")]
    assert history.events()[0]["params"] == {"timeout_ms": 0, "stream": "upstream"}
    assert ResetPeer.installed_before_connect is True


def test_half_applied_proxy_fault_is_rolled_back() -> None:
    history, proxy = History(None), FakeProxy(fail_on="fault_blackhole_upstream")
    fault = Blackhole(proxy, history=history)
    with pytest.raises(RuntimeError, match="cannot add"):
        fault.apply()
    assert proxy.toxics == {}
    assert not fault.applied
    assert [e["kind"] for e in history] == ["fault_begin", "fault_end"]
    assert "cannot add" in history.events()[-1]["error"]


def test_node_faults_record_actions_and_pids() -> None:
    history, node = History(None), FakeNode()
    with Pause(node, history=history):
        pass
    with Kill(node, history=history, restart_on_heal=True):
        assert not node.alive()
    assert node.alive()
    assert node.pid == 101
    Kill(node, history=history).apply()  # no restart: heal records nothing
    Restart(FakeNode("client-0"), history=history).apply()
    got = [(e["kind"], e["action"], e.get("pid")) for e in history]
    assert got == [
        ("fault", "pause", 100), ("healed", "resume", 100),
        ("fault", "kill", 100), ("healed", "restart", 101),
        ("fault", "kill", 101), ("fault", "restart", 101),
    ]
    assert history.events()[-1]["pid_before"] == 100


def test_pause_heal_skips_a_node_that_died_meanwhile() -> None:
    history, node = History(None), FakeNode()
    pause = Pause(node, history=history)
    pause.apply()
    node.kill()
    pause.heal()
    assert "resume" not in node.calls
    assert history.events()[-1]["skipped"] == "node not running"


# -- schedules ---------------------------------------------------------------------------------


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a = Schedule.generate(random.Random(42), **GEN)
    b = Schedule.generate(random.Random(42), **GEN)
    c = Schedule.generate(random.Random(43), **GEN)
    assert a == b
    assert a != c
    assert len(a.events) == GEN["count"]
    assert [e.at_ms for e in a.events] == sorted(e.at_ms for e in a.events)
    for e in a.events:
        assert 300 <= e.duration_ms <= 2000
        assert e.at_ms + e.duration_ms <= 20_000
        assert e.params == GEN["kinds"][e.fault]


def test_faults_on_one_target_never_overlap() -> None:
    schedule = Schedule.from_seed(7, **{**GEN, "count": 20, "window_ms": 30_000})
    assert schedule.seed == 7
    for target in GEN["targets"]:
        spans = sorted((e.at_ms, e.at_ms + e.duration_ms) for e in schedule.events if e.target == target)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_generate_fails_loudly_when_faults_cannot_fit() -> None:
    with pytest.raises(HarnessError, match="placed only 1 of 3"):
        Schedule.generate(random.Random(1), targets=["server-0"], kinds=["pause"], count=3,
                          window_ms=1000, min_duration_ms=800, max_duration_ms=1000)
    with pytest.raises(HarnessError, match="min_duration_ms"):
        Schedule.generate(random.Random(1), targets=["a"], kinds=["pause"], count=1,
                          window_ms=100, min_duration_ms=0, max_duration_ms=10)


def test_json_round_trip_and_bare_list_form() -> None:
    schedule = Schedule.from_seed(3, **GEN)
    assert Schedule.from_json(schedule.to_json()) == schedule
    bare = json.dumps([{"at_ms": 1200, "fault": "pause", "target": "server-0", "duration_ms": 800},
                       {"at_ms": 100, "fault": "latency", "target": "server-1", "duration_ms": 50, "latency_ms": 200}])
    loaded = Schedule.from_json(bare)
    assert loaded.seed is None
    assert loaded.events == (ScheduledFault(100, "latency", "server-1", 50, {"latency_ms": 200}),
                             ScheduledFault(1200, "pause", "server-0", 800))
    with pytest.raises(HarnessError, match="lacks"):
        Schedule.from_json('[{"at_ms": 1, "fault": "pause"}]')
    with pytest.raises(HarnessError, match="unknown fault"):
        Schedule.from_json('[{"at_ms": 1, "fault": "meteor", "target": "x", "duration_ms": 1}]')


# -- execution ---------------------------------------------------------------------------------


@pytest.fixture
def fast_clock(monkeypatch: pytest.MonkeyPatch):
    """The scheduler's waits jump the clock instead of sleeping."""
    clock = {"ms": 1_000.0}
    monkeypatch.setattr(chaos, "now_ms", lambda: clock["ms"])
    monkeypatch.setattr(chaos, "_wait_until", lambda t: clock.__setitem__("ms", max(clock["ms"], t)))
    return clock


def test_run_schedule_applies_and_heals_in_time_order(fast_clock) -> None:
    proxy, node = FakeProxy(), FakeNode()
    schedule = Schedule.from_data([
        {"at_ms": 0, "fault": "blackhole", "target": "server-0", "duration_ms": 100},
        {"at_ms": 100, "fault": "pause", "target": "server-0", "duration_ms": 100},
        {"at_ms": 500, "fault": "kill", "target": "server-0", "duration_ms": 10},  # after the deadline
    ])
    history = History(None)
    runs = run_schedule(schedule, lambda name, role: proxy if role == "proxy" else node, history, deadline_ms=400)
    assert [(r.applied_at_ms, r.healed_at_ms) for r in runs] == [(0, 100), (100, 200), (None, None)]
    assert runs[2].skipped
    assert proxy.toxics == {}
    assert node.calls == ["pause", "resume"]
    assert history.events("meta")[0]["chaos_schedule"]["events"][0]["fault"] == "blackhole"


def test_run_schedule_heals_everything_when_an_apply_fails(fast_clock) -> None:
    proxy, node = FakeProxy(), FakeNode()
    node.pause = lambda: (_ for _ in ()).throw(HarnessError("cannot send SIGSTOP"))  # type: ignore[method-assign]
    schedule = Schedule.from_data([
        {"at_ms": 0, "fault": "proxy_down", "target": "server-0", "duration_ms": 1000},
        {"at_ms": 10, "fault": "pause", "target": "server-1", "duration_ms": 100},
    ])
    with pytest.raises(HarnessError, match="SIGSTOP"):
        run_schedule(schedule, lambda name, role: proxy if role == "proxy" else node, History(None), deadline_ms=5000)
    assert proxy.enabled
    assert proxy.calls == ["disable", "enable"]


def test_run_schedule_reports_a_failing_heal(fast_clock) -> None:
    proxy = FakeProxy()

    def broken_enable() -> None:
        raise RuntimeError("toxiproxy gone")

    proxy.enable = broken_enable  # type: ignore[method-assign]
    schedule = Schedule.from_data([{"at_ms": 0, "fault": "proxy_down", "target": "server-0", "duration_ms": 10_000}])
    with pytest.raises(RuntimeError, match="toxiproxy gone") as raised:
        run_schedule(schedule, lambda name, role: proxy, History(None), deadline_ms=50)
    # Retried once in the finally; that failure is attached to the error, not lost.
    assert any("healing after the chaos schedule failed" in n for n in raised.value.__notes__)


def test_nothing_is_scheduled_on_a_target_after_its_final_kill() -> None:
    """Regression: seed 1 once put a pause on client-0 after a kill that never restarts it."""
    import random

    killed_then_more = 0
    for seed in range(40):
        schedule = Schedule.generate(random.Random(seed), targets=["client-0", "client-1"], kinds=["kill", "pause"],
                                     count=3, window_ms=20_000, min_duration_ms=500, max_duration_ms=1500)
        for target in ("client-0", "client-1"):
            events = [e for e in schedule.events if e.target == target]
            kills = [e.at_ms for e in events if e.fault == "kill"]
            if kills:
                assert len(kills) == 1 and all(e.at_ms < kills[0] for e in events if e.fault != "kill"), (
                    seed, schedule.to_json())
                killed_then_more += len(events) > 1
    assert killed_then_more, "no seed put another fault on a killed target's timeline: the test proves nothing"
