"""Trials and shards, through pytester: ``--trials N`` runs a cell N times and reports its worst
verdict with its rate (a cell that varies is named); ``--shard K/N`` splits the cells into N
deterministic parts that together hold every cell once; ``--update-expectations`` writes an
entry for every cell outside the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SUITE = '''
from pathlib import Path

from fixtures.case import case

COUNTER = Path(__file__).with_name("runs.txt")


@case("SR-71", "MUST")
def test_flaky(cf):
    """Violated in every second trial."""
    runs = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1
    COUNTER.write_text(str(runs))
    cf.check(runs % 2 == 1, expected="odd", actual=runs)


@case("SR-72", "SHOULD")
def test_late_once(cf):
    """Late in the first trial only."""
    marker = Path(__file__).with_name("late.txt")
    if not marker.exists():
        marker.write_text("x")
        cf.late(expected="soon", actual="late")


@case("SR-73", "MUST")
def test_fine(cf):
    """Always fine."""
'''


@pytest.mark.timeout(120)
def test_trials_report_the_worst_verdict_and_its_rate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=SUITE)
    report = pytester.path / "report"
    update = pytester.path / "written.toml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report), "--trials", "4",
                                           "--update-expectations", str(update))
    index = {r["case_id"]: r for r in json.loads((report / "index.json").read_text())["results"]}
    assert index["SR-71"]["verdict"] == "FAILED" and index["SR-71"]["rate"] == "FAILED 2/4"
    assert index["SR-71"]["trials"] == ["OK", "FAILED", "OK", "FAILED"] and index["SR-71"]["varying"]
    assert index["SR-72"]["verdict"] == "NON-STRICT" and index["SR-72"]["rate"] == "NON-STRICT 1/4"
    assert index["SR-73"]["trials"] == ["OK"] * 4 and not index["SR-73"]["varying"]
    # The cell speaks for its worst trial, not its last (an OK): SR-72's first trial was late.
    assert index["SR-72"]["detail"].startswith("trial 1 (NON-STRICT) (its history: history-trial-1.jsonl)")
    assert index["SR-72"]["actual"] == "late"
    assert [p.name for p in (report / "cases" / "SR-72").glob("*/history-trial-*.jsonl")] == ["history-trial-1.jsonl"]
    assert not list((report / "cases" / "SR-73").glob("*/history-trial-*.jsonl"))
    result.stdout.fnmatch_lines(["*varying SR-71*FAILED 2/4, OK 2/4*"])
    written = update.read_text()
    assert 'case = "SR-71"' in written and 'rate = "OK 2/4, FAILED 2/4"' in written
    assert 'case = "SR-73"' not in written
    # The written file, with its sources filled in, makes the same run green.
    pytester.path.joinpath("runs.txt").unlink()
    pytester.path.joinpath("late.txt").unlink()
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report), "--trials", "4",
                                          "--expectations", str(update))
    assert again.ret == 0, again.stdout.str()[-2000:]


SHARDED = "\n".join(f'''
@case("SR-{n:02d}", "MUST")
def test_case_{n}(cf):
    """Case {n}."""
''' for n in range(40, 60))


@pytest.mark.timeout(120)
def test_shards_split_every_cell_into_exactly_one_part(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_many="from fixtures.case import case\n" + SHARDED)
    durations = pytester.path / "durations.json"
    durations.write_text(json.dumps({f"test_many.py::test_case_{n}": 100 * n for n in range(40, 60)}))
    seen: list[set[str]] = []
    for k in (1, 2, 3):
        report = pytester.path / f"r{k}"
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report),
                                               "--shard", f"{k}/3", "--shard-durations", str(durations))
        assert result.ret == 0
        seen.append({r["case_id"] for r in json.loads((report / "index.json").read_text())["results"]})
    assert set.union(*seen) == {f"SR-{n:02d}" for n in range(40, 60)}
    assert sum(len(s) for s in seen) == 20
    loads = [sum(int(c[3:]) for c in s) for s in seen]
    assert max(loads) - min(loads) <= 59  # longest-first: within one cell's weight of each other


@pytest.mark.timeout(120)
def test_workers_get_the_longest_cells_first(pytester: pytest.Pytester) -> None:
    """Under -n the collection is longest first by the recorded durations (an unknown cell counts
    as the median); a serial run keeps the file's order."""
    pytester.makepyfile(test_many="from fixtures.case import case\n" + SHARDED)
    durations = pytester.path / "durations.json"
    durations.write_text(json.dumps({f"test_many.py::test_case_{n}": 100 * n for n in range(40, 59)}))
    order = [f"test_many.py::test_case_{n}" for n in (58, 57, 56, 55, 54, 53, 52, 51, 50, 49)]

    def collected(*args: str) -> list[str]:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q",
                                               "--shard-durations", str(durations), *args)
        return [line for line in result.stdout.lines if line.startswith("test_many.py::")]

    assert collected() == [f"test_many.py::test_case_{n}" for n in range(40, 60)]
    # -n 0 keeps xdist loaded but runs in-process: the plugin sees numprocesses as on a worker.
    workers = collected("-p", "xdist", "-n", "0", "-o", "addopts=")
    assert workers == collected(), "-n 0 is a serial run"
    ordered = collected("-p", "xdist", "--dist", "load", "--numprocesses", "2", "-o", "addopts=")
    assert ordered[:10] == order, ordered
    assert ordered.index("test_many.py::test_case_59") == 10, "the unknown cell sits at the median"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0"])
def test_a_bad_shard_is_a_usage_error(pytester: pytest.Pytester, bad: str) -> None:
    pytester.makepyfile(test_many="from fixtures.case import case\n" + SHARDED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--shard", bad)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--shard {bad!r}*"])


def test_durations_file_shape(tmp_path: Path) -> None:
    from fixtures.gating import _durations

    index = tmp_path / "index.json"
    index.write_text(json.dumps({"results": [{"nodeid": "a", "duration_ms": 5}]}))
    assert _durations(index) == {"a": 5.0}
    assert _durations(tmp_path / "missing.json") == {}


SLOW_TRIALS = '''
import time

from fixtures.case import case
from harness.wait import eventually


@case("SR-74", "MUST", timeout_s=2)
def test_takes_a_second(cf):
    """Takes about a second each run: three runs outlast the case's own 2 s guard."""
    start = time.monotonic()
    eventually(lambda: time.monotonic() - start >= 1.0, timeout_ms=1500, what="a second passed")
'''


@pytest.mark.timeout(120)
def test_the_hang_guard_covers_every_trial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_slow=SLOW_TRIALS)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report), "--trials", "3")
    index = {r["case_id"]: r for r in json.loads((report / "index.json").read_text())["results"]}
    assert index["SR-74"]["trials"] == ["OK"] * 3, result.stdout.str()[-2000:]
