"""``harness.faults.hits.summarize_hits``: over a history's fault records, how many faults touched
a live connection; a pass is vacuous only when every fault was measured and none touched one."""

from __future__ import annotations

from harness.faults.hits import summarize_hits, vacuous


def _pair(fault: str, target: str, at_apply: int | None, at_heal: int | None, proxy: bool = True) -> list[dict]:
    kinds = ("fault_begin", "fault_end") if proxy else ("fault", "healed")
    return [{"kind": kinds[0], "fault": fault, "target": target, "live_connections": at_apply},
            {"kind": kinds[1], "fault": fault, "target": target, "live_connections": at_heal}]


def test_a_fault_that_held_a_connection_hit_it() -> None:
    events = _pair("proxy_down", "p0", 2, 0) + _pair("blackhole", "p1", 0, 1) + _pair("pause", "n0", 0, 0, proxy=False)
    assert summarize_hits(events) == {"faults": 3, "hit": 2, "unknown": 0}
    assert not vacuous(summarize_hits(events))


def test_faults_that_found_no_live_connection_make_a_pass_vacuous() -> None:
    events = _pair("proxy_down", "p0", 0, 0) + _pair("pause", "n0", 0, 0, proxy=False)
    assert vacuous(summarize_hits(events))


def test_an_unmeasured_fault_is_unknown_never_zero() -> None:
    events = _pair("reset_peer", "p0", None, None) + _pair("proxy_down", "p0", 0, 0)
    assert summarize_hits(events) == {"faults": 2, "hit": 0, "unknown": 1}
    assert not vacuous(summarize_hits(events))


def test_no_fault_no_summary() -> None:
    assert summarize_hits([{"kind": "note", "text": "x"}]) is None
    assert not vacuous(None)
