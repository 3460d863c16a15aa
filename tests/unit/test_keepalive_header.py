"""PL-17's reading of two runs (with and without ``Keep-Alive: timeout=N``): only a difference
the header made counts as honouring it (harness/scenarios/keepalive_header.py)."""

from __future__ import annotations

from harness.scenarios.keepalive_header import effect


def run(*, reused: bool, closed_by: str | None = None, after_ms: int | None = None, before_next: bool = False) -> dict:
    return {"reused by the next GET": reused, "closed by": closed_by, "closed after its response ms": after_ms,
            "closed before the next GET": before_next}


def test_reused_both_ways_is_ignoring_it() -> None:
    assert effect(run(reused=True), run(reused=True)).startswith("ignores it")


def test_closed_with_the_header_and_reused_without_is_honouring_it() -> None:
    said = effect(run(reused=False, closed_by="client", after_ms=1001, before_next=True), run(reused=True))
    assert said.startswith("honours it") and "1001 ms" in said


def test_a_close_at_the_next_use_is_honouring_it_lazily() -> None:
    said = effect(run(reused=False, closed_by="client", after_ms=8040), run(reused=True))
    assert said.startswith("honours it") and "lazily" in said


def test_an_earlier_close_than_without_the_header_is_honouring_it() -> None:
    said = effect(run(reused=False, closed_by="client", after_ms=1001, before_next=True),
                  run(reused=False, closed_by="client", after_ms=5001, before_next=True))
    assert said.startswith("honours it") and "5001 ms without" in said


def test_the_same_close_either_way_cannot_be_told_apart() -> None:
    said = effect(run(reused=False, closed_by="client", after_ms=8009), run(reused=False, closed_by="client", after_ms=8009))
    assert said.startswith("cannot tell")


def test_reused_with_the_header_but_not_without_is_not_honouring_it() -> None:
    said = effect(run(reused=True), run(reused=False, closed_by="client", after_ms=5001, before_next=True))
    assert said.startswith("ignores it")
