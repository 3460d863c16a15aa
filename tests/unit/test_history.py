"""Unit tests for the per-case history (harness.observe.history) and the pure checkers over it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.observe import checks
from harness.observe import history as history_module
from harness.observe.history import History, json_safe


class FakeClock:
    """Monotonic ms under the test's control."""

    def __init__(self, start_ms: float = 50_000.0) -> None:
        self.ms = start_ms

    def __call__(self) -> float:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(history_module, "now_ms", fake)
    return fake


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_append_stamps_seq_kind_and_both_clocks(clock: FakeClock) -> None:
    """Each event gets seq in append order, t_ms relative to the history start, and wall_ms."""
    h = History(None)
    clock.ms += 12.5
    first = h.append("note", text="a")
    clock.ms += 100
    second = h.append("custom", x=1)
    assert (first["seq"], first["t_ms"], first["kind"]) == (0, 12.5, "note")
    assert (second["seq"], second["t_ms"], second["kind"], second["x"]) == (1, 112.5, "custom", 1)
    assert second["wall_ms"] >= first["wall_ms"] > 1.6e12
    assert list(first)[:4] == ["seq", "t_ms", "wall_ms", "kind"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda h: h.invoke("client:ref-0", "request", 1), {"kind": "invoke", "process": "client:ref-0", "f": "request", "value": 1}),
        (lambda h: h.ok("client:ref-0", "request"), {"kind": "ok", "process": "client:ref-0", "f": "request", "value": None}),
        (
            lambda h: h.fail("client:ref-0", "request", error=ConnectionResetError(104, "reset")),
            {"kind": "fail", "f": "request", "value": None, "error": "ConnectionResetError(104, 'reset')"},
        ),
        (lambda h: h.info("harness", "reload", {"id": "c1"}), {"kind": "info", "process": "harness", "value": {"id": "c1"}}),
        (lambda h: h.fault("proxy_down", proxy="nacos-0"), {"kind": "fault", "action": "proxy_down", "proxy": "nacos-0"}),
        (lambda h: h.healed("proxy_up", proxy="nacos-0"), {"kind": "healed", "action": "proxy_up", "proxy": "nacos-0"}),
        (lambda h: h.observe("current", [{"connectionId": "c1"}]), {"kind": "observe", "what": "current", "value": [{"connectionId": "c1"}]}),
        (lambda h: h.note("baseline ok"), {"kind": "note", "text": "baseline ok"}),
        (lambda h: h.meta(seed=7, peers={"nacos-server": "ref"}), {"kind": "meta", "seed": 7, "peers": {"nacos-server": "ref"}}),
    ],
)
def test_helpers_record_their_kind_and_fields(call, expected: dict) -> None:
    """The Jepsen op helpers and the fault/observe/note/meta helpers write the documented fields."""
    event = call(History(None))
    assert {k: event[k] for k in expected} == expected


def test_reserved_fields_are_refused() -> None:
    """A caller cannot overwrite seq/t_ms/wall_ms/kind: that would corrupt the order."""
    h = History(None)
    with pytest.raises(HarnessError, match="reserved"):
        h.append("note", t_ms=3)
    with pytest.raises(HarnessError, match="reserved"):
        h.fault("kill", seq=1)
    assert len(h) == 0


def test_jsonl_is_written_and_flushed_per_line(tmp_path: Path) -> None:
    """Lines are on disk before close: a killed case still leaves its history."""
    path = tmp_path / "histories" / "SR-01.jsonl"
    h = History(path)
    h.invoke("client:ref-0", "setup")
    h.ok("client:ref-0", "setup", "c1")
    on_disk = read_jsonl(path)
    assert [e["kind"] for e in on_disk] == ["invoke", "ok"]
    assert on_disk == h.events()
    h.close()
    h.close()  # idempotent


def test_non_json_values_become_repr_in_memory_and_on_disk(tmp_path: Path) -> None:
    """What the checkers see is exactly what the file holds."""
    path = tmp_path / "h.jsonl"
    with History(path) as h:
        event = h.observe("odd", {"path": Path("/x"), "set": {2, 1}, "tuple": (1, "a"), "nan": float("nan"), 3: b"\x00"})
    assert event["value"] == {"path": "PosixPath('/x')", "set": [1, 2], "tuple": [1, "a"], "nan": "nan", "3": "b'\\x00'"}
    assert read_jsonl(path) == h.events() == History.load(path).events()


def test_json_safe_keeps_plain_data() -> None:
    data = {"a": [1, 2.5, None, True, "s"], "b": {"c": []}}
    assert json_safe(data) == data


def test_returned_events_are_copies() -> None:
    """Mutating what the history hands out does not change the history."""
    h = History(None)
    h.append("note", text="a")["text"] = "changed"
    h.events()[0]["text"] = "changed"
    assert h.events()[0]["text"] == "a"


def test_events_filter_by_kind_and_time(clock: FakeClock) -> None:
    h = History(None)
    for t, kind in [(0, "invoke"), (100, "ok"), (200, "fault"), (300, "observe"), (400, "healed")]:
        clock.ms = h.start_mono_ms + t
        h.append(kind)
    assert [e["kind"] for e in h.events("fault")] == ["fault"]
    assert [e["kind"] for e in h.events(["fault", "healed"])] == ["fault", "healed"]
    assert [e["t_ms"] for e in h.events(since_ms=100, until_ms=300)] == [100, 200, 300]
    assert [e["t_ms"] for e in h.events("ok", since_ms=150)] == []
    assert [e["seq"] for e in h] == [0, 1, 2, 3, 4]


def test_around_keeps_the_events_nearest_the_moment(clock: FakeClock) -> None:
    """The excerpt is a window around t_ms; over the limit, the nearest events win, in order."""
    h = History(None)
    for t in range(0, 5000, 100):
        clock.ms = h.start_mono_ms + t
        h.note(f"t={t}")
    window = h.around(2000, before_ms=500, after_ms=300)
    assert [e["t_ms"] for e in window] == [1500, 1600, 1700, 1800, 1900, 2000, 2100, 2200, 2300]
    nearest = h.around(2000, before_ms=1000, after_ms=1000, limit=3)
    assert [e["t_ms"] for e in nearest] == [1900, 2000, 2100]


def test_first_returns_the_earliest_match_or_none() -> None:
    h = History(None)
    h.fault("kill", node="client-0")
    h.observe("current", [])
    h.observe("current", ["c1"])
    found = h.first(lambda e: e["kind"] == "observe" and e["value"])
    assert found is not None and found["seq"] == 2
    assert h.first(lambda e: e["kind"] == "healed") is None


def test_concurrent_appends_keep_a_total_order(tmp_path: Path) -> None:
    """Many threads appending: seq is gapless, t_ms never goes back, every line is whole."""
    path = tmp_path / "h.jsonl"
    h = History(path)
    per_thread, threads = 200, 8

    def worker(n: int) -> None:
        for i in range(per_thread):
            h.invoke(f"client:{n}", "request", i)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    h.close()
    events = read_jsonl(path)
    assert [e["seq"] for e in events] == list(range(per_thread * threads))
    assert all(a["t_ms"] <= b["t_ms"] for a, b in zip(events, events[1:], strict=False))
    assert events == h.events()


def test_append_after_close_still_reaches_the_file(tmp_path: Path) -> None:
    """A stray background thread appending after teardown must not lose its event."""
    path = tmp_path / "h.jsonl"
    h = History(path)
    h.note("before")
    h.close()
    h.note("after")
    assert [e["text"] for e in read_jsonl(path)] == ["before", "after"]


def test_load_drops_a_torn_last_line_but_rejects_a_bad_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with History(path) as h:
        h.note("one")
        h.note("two")
    with path.open("a", encoding="utf-8") as f:
        f.write('{"seq": 2, "t_ms": 1')  # the writer died mid-line
    loaded = History.load(path)
    assert [e["text"] for e in loaded.events()] == ["one", "two"]
    # The wall and monotonic clocks are read a few microseconds apart for each event (more on a
    # loaded machine), so a later event converts back to its t_ms only to within that skew.
    assert loaded.relative_ms_from_wall(h.events()[0]["wall_ms"]) == pytest.approx(h.events()[0]["t_ms"], abs=0.01)
    assert loaded.relative_ms_from_wall(h.events()[1]["wall_ms"]) == pytest.approx(h.events()[1]["t_ms"], abs=5.0)

    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(HarnessError, match=r"h\.jsonl:2"):
        History.load(path)


def test_new_history_truncates_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"old": true}\n', encoding="utf-8")
    with History(path) as h:
        h.note("new")
    assert [e["kind"] for e in read_jsonl(path)] == ["note"]


def test_relative_ms_converts_monotonic_timestamps(clock: FakeClock) -> None:
    h = History(None)
    assert h.relative_ms(h.start_mono_ms + 250) == 250
    clock.ms += 40
    assert h.elapsed_ms() == 40


# -- checks ----------------------------------------------------------------------------------


def sample_events() -> list[dict]:
    h = History(None)
    h.fault("kill", node="client-0")
    h.observe("agent_event", {"event": "disconnected"})
    h.append("listener", event="disconnected", connectionId="c1")
    h.append("listener", event="connected", connectionId="c2")
    h.append("listener", event="disconnected", connectionId="c3")
    return h.events()


def test_excerpt_for_keeps_the_events_nearest_the_moment() -> None:
    events = sample_events()
    found = events[3]
    excerpt = checks.excerpt_for(events, found["t_ms"], limit=2)
    assert len(excerpt) == 2 and found in excerpt
