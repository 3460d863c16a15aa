"""``connformance shrink HISTORY``: from a chaos session whose schedule ended in a failed check (an
``up --faults`` session, or a TC-08 soak case), search for a smaller schedule that still fails
the same way, and print it as a one-line ``connformance up ... --schedule '...'`` that replays it.

The search is delta debugging (Zeller's ddmin) over the schedule's faults, then shorter windows
(the schedule shifted to start at once, each fault's duration halved while it still fails). A
trial is a whole ``connformance up`` session, replaying the candidate with the original's peers,
knobs and size; it "fails the same way" when one of the checks that failed originally fails
again (membership, per-IP counts, events balance, a leak...). Trials are bounded in count and
time; the smallest failing schedule found so far is kept, so an interrupted search still says
something. Nothing here knows pytest.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.faults import Schedule, ScheduledFault
from harness.observe.history import History
from harness.paths import PROJECT_ROOT
from harness.wait import now_ms

MIN_DURATION_MS = 200  # shorter faults rarely hit anything: a window is halved down to this, no further
DEFAULT_BUDGET_S = 900
DEFAULT_MAX_TRIALS = 40
DEFAULT_CONFIRMATIONS = 3  # extra replays the smallest must fail too: a schedule that fails by luck is no replay
_BUILTIN_MANIFESTS = PROJECT_ROOT / "harness" / "peers" / "builtin"


@dataclass
class Session:
    """What a replay needs, read back from a history: ``harness.up.UpOptions`` fields, the schedule
    that ran and the checks that failed."""

    options: dict[str, Any]
    schedule: Schedule
    failed_checks: list[str]
    source: str  # "up" or "TC-08"


@dataclass
class Trial:
    number: int
    faults: int
    fails: bool
    failed_checks: list[str]
    took_s: float
    workdir: Path


@dataclass
class ShrinkResult:
    original: Schedule
    smallest: Schedule
    command: str
    trials: list[Trial] = field(default_factory=list)
    stopped: str = ""  # why the search ended early ("" when it finished)
    confirmed: int = 0  # replays of ``smallest`` after the search, every one failing alike


# -- reading the session back ----------------------------------------------------------------------


def load_session(history_path: Path) -> Session:
    """The options, schedule and failed checks of the session that wrote ``history_path``; a
    clear error when it is not a chaos session, or one that did not fail."""
    if not Path(history_path).is_file():
        raise HarnessError(f"{history_path}: no such history; give the history.jsonl of an `up --faults` "
                           "session or of a TC-08 case (report/cases/TC-08/<cell>/history.jsonl)")
    meta: dict[str, Any] = {}
    for event in History.load(Path(history_path)).events("meta"):
        meta.update({k: v for k, v in event.items() if k not in ("seq", "t_ms", "wall_ms", "kind")})
    if not meta.get("chaos_schedule"):
        raise HarnessError(f"{history_path}: no fault schedule in this history (expected an `up --faults` "
                           "session or a TC-08 case); nothing to shrink")
    schedule = Schedule.from_data(meta["chaos_schedule"])
    if "up_options" in meta:
        options, source = dict(meta["up_options"]), "up"
        failed = list(meta.get("failed_checks") or [])
    elif meta.get("case") == "TC-08" and "soak" in meta:
        options, source = _soak_as_up(meta, history_path), "TC-08"
        failed = list(meta.get("failed_checks") or [])
    else:
        raise HarnessError(f"{history_path}: a schedule, but neither an `up` session nor the TC-08 soak; "
                           "only those can be replayed")
    if meta.get("interrupted"):
        raise HarnessError(f"{history_path}: the session was interrupted; there is no verdict to reproduce")
    if not failed:
        raise HarnessError(f"{history_path}: the session ended with no failed check; nothing to shrink")
    return Session(options, schedule, failed, source)


def _soak_as_up(meta: dict[str, Any], history_path: Path) -> dict[str, Any]:
    """A TC-08 cell as an ``up`` session: its two servers, its N clients of the peer under test, the
    soak's scaled timers (``up --scaled-timers`` sets the same knobs), the manifests it loaded."""
    soak, peers = meta["soak"], meta.get("peers") or {}
    if "nacos-server" not in peers or "nacos-client" not in peers:
        raise HarnessError(f"{history_path}: the TC-08 history names no peers ({peers}); cannot replay it")
    return {"servers": soak["servers"], "clients": [f"{peers['nacos-client']}:{soak['clients']}"],
            "server_peer": peers["nacos-server"], "peers_files": list(meta.get("peers_files") or []),
            "knobs": [], "scaled_timers": True, "seed": None, "faults": 0, "window_ms": soak["window_ms"],
            "runtime": "process", "l3_faults": False, "schedule": None}


def user_manifests(*peers: Any) -> list[str]:
    """The manifest files (absolute) of peers not built in: what a replay must load again."""
    files = {str(Path(p.source).resolve()) for p in peers if getattr(p, "source", None)}
    return sorted(f for f in files if not Path(f).is_relative_to(_BUILTIN_MANIFESTS))


# -- the replay command ------------------------------------------------------------------------------


def schedule_json(schedule: Schedule) -> str:
    return json.dumps({"events": [e.to_data() for e in schedule.events]}, separators=(",", ":"), sort_keys=True)


def replay_command(options: dict[str, Any], schedule: Schedule) -> str:
    """One shell line: ``connformance up`` with the session's peers and knobs and this schedule."""
    args = ["connformance", "up", "--servers", str(options["servers"])]
    for spec in options["clients"]:
        args += ["--clients", spec]
    args += ["--server-peer", options["server_peer"]]
    for path in options["peers_files"]:
        args += ["--peers-file", path]
    for knob in options["knobs"]:
        args += ["--knob", knob]
    if options.get("scaled_timers"):
        args.append("--scaled-timers")
    if options.get("l3_faults"):
        args.append("--l3-faults")
    if options.get("runtime", "process") != "process":
        args += ["--runtime", options["runtime"]]
    args += ["--schedule", schedule_json(schedule)]
    return shlex.join(args)


# -- candidates --------------------------------------------------------------------------------------


def _with(events: Sequence[ScheduledFault]) -> Schedule:
    return Schedule(tuple(sorted(events, key=lambda e: (e.at_ms, e.target, e.fault))))


def ddmin(events: list[ScheduledFault], fails: Callable[[list[ScheduledFault]], bool],
          out_of_budget: Callable[[], bool]) -> list[ScheduledFault]:
    """Zeller's ddmin: a 1-minimal failing subset of ``events`` (given ``fails(events)``), or the
    smallest found when the budget runs out. Subsets keep their original times."""
    n = 2
    while len(events) >= 2 and not out_of_budget():
        size = -(-len(events) // n)
        chunks = [events[i:i + size] for i in range(0, len(events), size)]
        for chunk in chunks:
            if out_of_budget():
                return events
            if fails(chunk):
                events, n = chunk, 2
                break
        else:
            for i in range(len(chunks) if n > 2 else 0):
                if out_of_budget():
                    return events
                complement = [e for j, c in enumerate(chunks) if j != i for e in c]
                if fails(complement):
                    events, n = complement, max(n - 1, 2)
                    break
            else:
                if n >= len(events):
                    return events
                n = min(len(events), 2 * n)
    return events


def shortened(events: list[ScheduledFault], fails: Callable[[list[ScheduledFault]], bool],
              out_of_budget: Callable[[], bool]) -> list[ScheduledFault]:
    """Shorter windows: the schedule shifted to start at 0, then each fault's duration halved
    (down to ``MIN_DURATION_MS``) while it still fails. Kills keep theirs (they never heal)."""
    start = min(e.at_ms for e in events)
    if start > 0 and not out_of_budget():
        moved = [replace(e, at_ms=e.at_ms - start) for e in events]
        if fails(moved):
            events = moved
    for i in range(len(events)):
        while events[i].fault != "kill" and events[i].duration_ms // 2 >= MIN_DURATION_MS and not out_of_budget():
            candidate = list(events)
            candidate[i] = replace(events[i], duration_ms=events[i].duration_ms // 2)
            if not fails(candidate):
                break
            events = candidate
    return events


# -- the search --------------------------------------------------------------------------------------


def shrink(history_path: Path, *, budget_s: float = DEFAULT_BUDGET_S, max_trials: int = DEFAULT_MAX_TRIALS,
           confirmations: int = DEFAULT_CONFIRMATIONS, echo: Callable[[str], None] = print,
           run_trial: Callable[..., tuple[int, list[str]]] | None = None) -> ShrinkResult:
    """Shrink the failing schedule of ``history_path``; bounded by ``budget_s`` and ``max_trials``.

    The smallest failing schedule is then replayed ``confirmations`` more times; if one of them
    passes, the failure depended on timing luck and the next larger failing schedule found is
    confirmed instead (the original last). Writes ``shrink/replay.txt`` and
    ``shrink/schedule.json`` beside the history and returns the result; ``run_trial(options,
    schedule, workdir)`` (default: an in-process ``up`` session) returns the session's exit status
    and failed checks."""
    if budget_s <= 0 or max_trials < 1 or confirmations < 0:
        raise HarnessError(f"--budget-s {budget_s} / --max-trials {max_trials} / --confirm {confirmations}: "
                           "expected > 0, >= 1 and >= 0")
    history_path = Path(history_path)
    session = load_session(history_path)
    out = history_path.parent / "shrink"
    out.mkdir(parents=True, exist_ok=True)
    trial_fn = run_trial or _up_trial
    deadline = now_ms() + budget_s * 1000
    trials: list[Trial] = []
    stopped = ""
    wanted = set(session.failed_checks)
    echo(f"[shrink] {session.source} session: {len(session.schedule.events)} fault(s), failed: "
         f"{', '.join(session.failed_checks)}; budget {budget_s:.0f} s / {max_trials} trials")

    def out_of_budget() -> bool:
        nonlocal stopped
        if len(trials) >= max_trials:
            stopped = stopped or f"trial limit ({max_trials}) reached"
        elif now_ms() >= deadline:
            stopped = stopped or f"time budget ({budget_s:.0f} s) spent"
        return bool(stopped)

    accepted: list[list[ScheduledFault]] = []  # every failing candidate, in the order found (smaller later)

    def fails(events: list[ScheduledFault]) -> bool:
        t0 = now_ms()
        workdir = out / f"trial-{len(trials) + 1:02d}"
        rc, checks = trial_fn(session.options, _with(events), workdir)
        if rc == 130:
            raise KeyboardInterrupt("a shrink trial was interrupted")
        same = bool(wanted & set(checks))
        trial = Trial(len(trials) + 1, len(events), same, checks, round((now_ms() - t0) / 1000, 1), workdir)
        trials.append(trial)
        verdict = f"FAILS alike ({', '.join(sorted(wanted & set(checks)))})" if same else (
            f"fails otherwise ({', '.join(checks)})" if checks else "passes")
        echo(f"[shrink] trial {trial.number}: {trial.faults} fault(s), "
             f"{sum(e.duration_ms for e in events)} ms of faults -> {verdict} in {trial.took_s} s")
        if same:
            accepted.append(list(events))
        return same

    events = list(session.schedule.events)
    confirmed = 0
    try:
        ddmin(events, fails, out_of_budget)
        if accepted:
            shortened(accepted[-1], fails, out_of_budget)
        events, confirmed = _confirmed(accepted, events, confirmations, fails, echo)
    except KeyboardInterrupt:
        stopped = "interrupted"
        events = accepted[-1] if accepted else events
    smallest = _with(events)
    command = replay_command(session.options, smallest)
    (out / "schedule.json").write_text(schedule_json(smallest) + "\n", encoding="utf-8")
    (out / "replay.txt").write_text(command + "\n", encoding="utf-8")
    echo(f"[shrink] {len(session.schedule.events)} -> {len(smallest.events)} fault(s) in {len(trials)} trial(s)"
         + (f", failed alike in {confirmed} more replay(s)" if confirmed else "")
         + (f"; stopped early: {stopped}" if stopped else "") + f"; written to {out}/replay.txt")
    for e in smallest.events:
        echo(f"[shrink]   +{e.at_ms:6d} ms {e.fault:<10} {e.target:<10} for {e.duration_ms} ms")
    echo(f"[shrink] replay: {command}")
    return ShrinkResult(session.schedule, smallest, command, trials, stopped, confirmed)


def _confirmed(accepted: list[list[ScheduledFault]], original: list[ScheduledFault], confirmations: int,
               fails: Callable[[list[ScheduledFault]], bool], echo: Callable[[str], None]
               ) -> tuple[list[ScheduledFault], int]:
    """The smallest failing candidate that fails ``confirmations`` more times in a row, trying the
    larger ones (and finally the original, unconfirmed) when a smaller one fails only by luck."""
    if confirmations == 0:
        return (accepted[-1] if accepted else original), 0
    for events in reversed(list(accepted)):  # confirming appends to accepted
        echo(f"[shrink] confirming {len(events)} fault(s) with {confirmations} more replay(s)")
        for _ in range(confirmations):
            if not fails(events):
                echo("[shrink]   it passed once: its failure depends on timing; trying the next larger one")
                break
        else:
            return events, confirmations
    return original, 0


def _up_trial(options: dict[str, Any], schedule: Schedule, workdir: Path) -> tuple[int, list[str]]:
    """One replay as an in-process ``up`` session, its output in ``workdir/up.log``."""
    from harness.up import UpOptions, run_up

    workdir.mkdir(parents=True, exist_ok=True)
    opts = UpOptions(**{**options, "schedule": schedule_json(schedule), "faults": 0, "seed": None,
                        "workdir": str(workdir), "history": str(workdir / "history.jsonl")})
    with (workdir / "up.log").open("w", encoding="utf-8") as log:
        rc = run_up(opts, echo=lambda line: print(line, file=log, flush=True))
    failed: list[str] = []
    for event in History.load(workdir / "history.jsonl").events("meta"):
        failed = list(event.get("failed_checks", failed))
    return rc, failed
