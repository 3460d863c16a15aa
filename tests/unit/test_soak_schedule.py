"""Unit tests for the TC-08 soak's pure parts (harness.scenarios.soak, and the option parsing of harness.up): the seeded schedule (pinned for
one seed, so a change to the drawing order — which would silently change what every recorded
seed replays — fails here), its placement rules, the convergence bound, and the exact checks on
hand-built cluster views. No processes, no Toxiproxy."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.faults import FaultRun, Schedule, ScheduledFault
from harness.peers import PeerRegistry
from harness.scenarios.soak import (
    LINK_FAULTS,
    PROXY_FAULTS,
    ClientView,
    ClusterView,
    ServerView,
    check_event_balance,
    check_ip_counts,
    check_membership,
    convergence_bound_ms,
    killed_targets,
    soak_schedule,
    wait_converged,
)
from harness.up import _parse_clients, _parse_knobs

DEFAULT = {"servers": 2, "clients": 6, "count": 8, "window_ms": 10_000}

# soak_schedule(1234, **DEFAULT): the TC-08 default size with the seed the CI repeat uses.
PINNED_1234 = [
    (259, "proxy_down", "server-0", 626),
    (1033, "blackhole", "server-0", 1604),
    (1216, "reset_peer", "server-1", 2398),
    (3163, "reset_peer", "server-0", 2806),
    (4774, "reset_peer", "server-1", 1899),
    (6674, "pause", "client-4", 2626),
    (6964, "blackhole", "server-1", 2470),
    (7714, "kill", "client-2", 685),
]


def _tuples(schedule: Schedule) -> list[tuple[int, str, str, int]]:
    return [(e.at_ms, e.fault, e.target, e.duration_ms) for e in schedule.events]


def test_fixed_seed_gives_the_pinned_schedule() -> None:
    schedule = soak_schedule(1234, **DEFAULT)
    assert _tuples(schedule) == PINNED_1234
    assert schedule.seed == 1234
    assert all(e.params == {} for e in schedule.events)


def test_same_seed_same_schedule_and_json_round_trip() -> None:
    for seed in (1, 7, 1234, 2**31 - 1):
        first, again = soak_schedule(seed, **DEFAULT), soak_schedule(seed, **DEFAULT)
        assert first == again
        assert Schedule.from_json(first.to_json()) == first
    assert soak_schedule(1, **DEFAULT) != soak_schedule(2, **DEFAULT)


@pytest.mark.parametrize("seed", range(40))
def test_placement_rules_hold_for_many_seeds(seed: int) -> None:
    schedule = soak_schedule(seed, servers=2, clients=6, count=12, window_ms=10_000)
    events = schedule.events
    assert len(events) == 12
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    kills = [e for e in events if e.fault == "kill"]
    assert len(kills) <= 6 // 3
    victims = {e.target for e in kills}
    assert len(victims) == len(kills), "a client is killed at most once"
    for e in events:
        assert 0 <= e.at_ms
        assert e.at_ms + e.duration_ms <= 10_000
        assert 500 <= e.duration_ms <= 3000
        if e.fault in PROXY_FAULTS:
            assert e.target.startswith("server-")
        elif e.fault == "kill":
            assert e.target.startswith("client-")
        else:
            assert e.fault == "pause"
            assert e.target not in victims, "a killed client is never targeted again"
    by_target: dict[tuple[str, str], list[ScheduledFault]] = {}
    for e in events:  # proxy faults share a proxy, node faults a node: never two at once on one
        role = "proxy" if e.fault in PROXY_FAULTS else "node"
        by_target.setdefault((role, e.target), []).append(e)
    for faults in by_target.values():
        for a, b in zip(faults, faults[1:], strict=False):
            assert a.at_ms + a.duration_ms <= b.at_ms


def test_one_client_is_never_killed_and_small_windows_clip_durations() -> None:
    for seed in range(20):
        schedule = soak_schedule(seed, servers=1, clients=1, count=6, window_ms=2000)
        assert len(schedule.events) == 6
        assert not [e for e in schedule.events if e.fault == "kill"]
        assert all(e.at_ms + e.duration_ms <= 2000 for e in schedule.events)


def test_bad_sizes_fail_loudly() -> None:
    with pytest.raises(HarnessError, match="servers >= 1"):
        soak_schedule(1, servers=0, clients=1, count=1, window_ms=1000)
    with pytest.raises(HarnessError, match="placed only"):
        soak_schedule(1, servers=1, clients=0, count=3000, window_ms=1000)


def test_killed_targets_counts_only_applied_kills() -> None:
    kill = ScheduledFault(10, "kill", "client-1", 600)
    late_kill = ScheduledFault(20, "kill", "client-2", 600)
    pause = ScheduledFault(30, "pause", "client-3", 600)
    runs = [FaultRun(kill, applied_at_ms=10.0), FaultRun(late_kill), FaultRun(pause, applied_at_ms=30.0)]
    assert killed_targets(runs) == {"client-1"}


def test_convergence_bound_from_effective_timers() -> None:
    registry = PeerRegistry.default()
    server = registry.get("nacos-server", "ref")
    ref = registry.get("nacos-client", "ref")
    sdk = registry.get("nacos-client", "nacos-sdk-python")
    knobs = {"eject_interval_ms": 500, "idle_threshold_ms": 1500, "probe_timeout_ms": 500}
    scaled = {"health_interval_ms": 1000, "health_timeout_ms": 500, "health_retry": 1,
              "server_check_timeout_ms": 1000, "backoff_cap_ms": 1000}
    assert convergence_bound_ms(server, knobs, [(ref, scaled)]) == {
        "eject_ms": 2500, "health_ms": 2000, "reconnect_ms": 2100, "tolerance_ms": 250, "total_ms": 6850}
    # nacos-sdk-python keeps its defaults: 5000 + 1 x 3000, backoff cap 5000 + ServerCheck 3000 + 100
    assert convergence_bound_ms(server, knobs, [(sdk, {})])["total_ms"] == 2500 + 8000 + 8100 + 250


# -- the exact checks ------------------------------------------------------------------------------

def _entry(ip: str) -> dict:
    return {"metaInfo": {"clientIp": ip}}


def _view(*, current0: dict, current1: dict, clients: list[ClientView], counts0=None, counts1=None,
          events0=None, events1=None) -> ClusterView:
    return ClusterView([ServerView("server-0", "127.0.0.11:1", current0, counts0, events0),
                        ServerView("server-1", "127.0.0.12:2", current1, counts1, events1)], clients)


def _client(name: str, cid: str | None, server: str | None, ip: str = "127.0.0.101", status: str = "RUNNING"):
    return ClientView(name, status, server, cid, ip)


def test_membership_ok_when_registrations_equal_live_ids() -> None:
    view = _view(current0={"a": _entry("127.0.0.101")}, current1={"b": _entry("127.0.0.102")},
                 clients=[_client("c0", "a", "server-0"), _client("c1", "b", "server-1", "127.0.0.102")])
    result = check_membership(view)
    assert result.ok, result.actual


@pytest.mark.parametrize(("current0", "current1", "clients", "problem"), [
    ({"a": {}, "stale": {}}, {}, [_client("c0", "a", "server-0")], "registered without a live client"),
    ({}, {}, [_client("c0", "a", "server-0")], "registered nowhere"),
    ({"a": {}}, {}, [_client("c0", "a", "server-1")], "the client says server-1"),
    ({"a": {}}, {"a": {}}, [_client("c0", "a", "server-0")], "more than one server"),
    ({"a": {}}, {}, [_client("c0", "a", "server-0", status="UNHEALTHY")], "not RUNNING"),
    ({"x": {}, "y": {}}, {}, [_client("c0", None, "server-0")], "reports no connection ids"),
])
def test_membership_names_each_violation(current0, current1, clients, problem) -> None:
    result = check_membership(_view(current0=current0, current1=current1, clients=clients))
    assert not result.ok
    assert problem in " ".join(result.actual["problems"])


def test_ip_counts_against_tally_and_truth() -> None:
    current0 = {"a": _entry("127.0.0.101"), "b": _entry("127.0.0.102"), "c": _entry("127.0.0.101")}
    clients = [_client("c0", "a", "server-0"), _client("c1", "b", "server-0", "127.0.0.102"),
               _client("c2", "c", "server-0")]
    good = _view(current0=current0, current1={}, clients=clients,
                 counts0={"127.0.0.101": 2, "127.0.0.102": 1}, counts1={})
    assert check_ip_counts(good).ok
    drifted = _view(current0=current0, current1={}, clients=clients,
                    counts0={"127.0.0.101": 3, "127.0.0.102": 1}, counts1={})
    result = check_ip_counts(drifted)
    assert not result.ok
    assert "clientIpCounts" in result.actual["problems"][0]
    wrong_ip = _view(current0=current0, current1={}, counts0=None, counts1=None,
                     clients=[*clients[:2], _client("c2", "c", "server-0", "127.0.0.102")])
    assert "live clients' IPs" in check_ip_counts(wrong_ip).actual["problems"][0]


def test_event_balance() -> None:
    def ev(event: str, cid: str) -> dict:
        return {"event": event, "connectionId": cid}

    balanced = [ev("connected", "a"), ev("connected", "b"), ev("disconnected", "b")]
    view = _view(current0={"a": {}}, current1={}, clients=[], events0=balanced, events1=[])
    assert check_event_balance(view).ok
    for events, current in (
        ([*balanced, ev("disconnected", "b")], {"a": {}}),  # twice
        ([ev("connected", "a"), ev("connected", "b")], {"a": {}}),  # b gone, never disconnected
        ([ev("connected", "b"), ev("disconnected", "b")], {"a": {}}),  # a registered, never connected
        ([*balanced, ev("disconnected", "a")], {"a": {}}),  # a disconnected but still registered
    ):
        result = check_event_balance(_view(current0=current, current1={}, clients=[], events0=events, events1=None))
        assert not result.ok, events
        assert "server-0" in result.actual["unbalanced (first 10 per server)"]


def test_wait_converged_needs_a_stable_membership() -> None:
    calls = []

    def observe() -> ClusterView:  # a stale registration, then the exact one (stamped when observed)
        calls.append(1)
        current0 = {"a": {}, "old": {}} if len(calls) == 1 else {"a": {}}
        return _view(current0=current0, current1={}, clients=[_client("c0", "a", "server-0")])

    view, after_ms = wait_converged(observe, timeout_ms=5000, stable_ms=30, interval_ms=5)
    assert after_ms is not None
    assert sorted(view.ids()) == ["a"]
    assert len(calls) >= 3, "accepted only after the membership held for stable_ms"
    never = _view(current0={"old": {}}, current1={}, clients=[_client("c0", "a", "server-0")])
    view, after_ms = wait_converged(lambda: never, timeout_ms=50, interval_ms=5)
    assert after_ms is None
    assert view is never


def test_up_option_parsing() -> None:
    assert _parse_clients(["ref:3", "nacos-sdk-python"]) == [("ref", 3), ("nacos-sdk-python", 1)]
    for bad in ("ref:0", "ref:x", ":2", "ref:51"):
        with pytest.raises(HarnessError, match="PEER"):
            _parse_clients([bad])
    server, client = _parse_knobs(["server.eject_interval_ms=1000", 'server.count_limit_per_client_ip={"127.0.0.5": 2}',
                                   "client.app_name=demo"])
    assert server == {"eject_interval_ms": 1000, "count_limit_per_client_ip": {"127.0.0.5": 2}}
    assert client == {"app_name": "demo"}
    with pytest.raises(HarnessError, match="server.KNOB=VALUE"):
        _parse_knobs(["eject_interval_ms=1000"])


def test_link_faults_go_to_servers_only_and_leave_default_schedules_alone() -> None:
    assert soak_schedule(1234, **DEFAULT, link_faults=False) == soak_schedule(1234, **DEFAULT)
    drawn: set[str] = set()
    for seed in range(30):
        schedule = soak_schedule(seed, servers=2, clients=6, count=12, window_ms=10_000, link_faults=True)
        assert len(schedule.events) == 12
        link = [e for e in schedule.events if e.fault in LINK_FAULTS]
        drawn |= {e.fault for e in link}
        assert all(e.target.startswith("server-") for e in link)
        by_server: dict[str, list[ScheduledFault]] = {}
        for e in link:  # one packet-level fault at a time per server: each heal restores a known state
            by_server.setdefault(e.target, []).append(e)
        for faults in by_server.values():
            for a, b in zip(faults, faults[1:], strict=False):
                assert a.at_ms + a.duration_ms <= b.at_ms
    assert drawn == set(LINK_FAULTS)
