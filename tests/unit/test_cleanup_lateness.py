"""``Cleanup.held_past``: a part of the cleanup is late only when a query *sent* after the bound
still showed it undone. A slow answer (the query that showed it done took a second) delays when
the harness sees the cleanup, not when the server did it (TC-02 × nacos-2.2.4 under the full
matrix: the server logged the unregister 13 ms after the fault, its `current` answer arrived at
1277 ms)."""

from __future__ import annotations

from harness.scenarios.cleanup import Cleanup

BOUND_MS = 1250


def _seen(**kw: float | None) -> Cleanup:
    return Cleanup("proxy disable", "id-1", "127.0.0.1", **kw)


def test_held_by_a_query_sent_after_the_bound_is_late() -> None:
    late = _seen(gone_ms=2010.0, still_registered_sent_ms=1980.0).held_past(BOUND_MS)
    assert late == ["left current 2010 ms after the proxy disable (a query sent at 1980 ms still showed it undone)"]


def test_seen_late_only_because_the_answer_was_slow_is_not_late() -> None:
    assert _seen(gone_ms=1277.0, still_registered_sent_ms=20.0).held_past(BOUND_MS) == []


def test_each_part_is_judged_on_its_own_queries() -> None:
    seen = _seen(gone_ms=30.0, still_registered_sent_ms=10.0, event_ms=1600.0, no_event_sent_ms=1500.0,
                 counted_ms=1400.0, still_counted_sent_ms=100.0)
    assert [line.split(" ms")[0] for line in seen.held_past(BOUND_MS)] == ["disconnected event 1600"]
