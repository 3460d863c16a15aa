"""Chaos sessions as data: ``Schedule.generate`` draws a schedule of faults (``harness.faults``)
from a seeded ``random.Random``, ``to_json``/``from_json`` store and replay it, and
``run_schedule`` executes it against resolved targets, bounded in time, healing every applied
fault in a ``finally``. The same seed gives the same schedule (SPEC TC-08: replay with
``--chaos-seed``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.faults.base import Fault, Role
from harness.faults.registry import check_fault_params, fault_class, fault_from_spec
from harness.observe.history import History
from harness.wait import eventually, now_ms

__all__ = ["FaultRun", "Schedule", "ScheduledFault", "run_schedule", "topology_resolver"]

_MAX_PLACEMENT_TRIES = 200  # per scheduled fault; a window too small for `count` fails loudly
_SCHEDULER_POLL_MS = 10.0


# -- schedules ---------------------------------------------------------------------------------

_EVENT_KEYS = ("at_ms", "fault", "target", "duration_ms")


@dataclass(frozen=True)
class ScheduledFault:
    """Fault ``fault`` on ``target`` from ``at_ms`` for ``duration_ms`` (ms since the run started)."""

    at_ms: int
    fault: str
    target: str
    duration_ms: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        return {"at_ms": self.at_ms, "fault": self.fault, "target": self.target,
                "duration_ms": self.duration_ms, **self.params}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ScheduledFault:
        missing = [k for k in _EVENT_KEYS if k not in data]
        if missing:
            raise HarnessError(f"scheduled fault {dict(data)!r} lacks {missing}; each needs {list(_EVENT_KEYS)}")
        at_ms, duration_ms = data["at_ms"], data["duration_ms"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (at_ms, duration_ms)):
            raise HarnessError(f"scheduled fault {dict(data)!r}: at_ms and duration_ms must be ints >= 0")
        params = {k: v for k, v in data.items() if k not in _EVENT_KEYS}
        check_fault_params(str(data["fault"]), params)
        return cls(at_ms, str(data["fault"]), str(data["target"]), duration_ms, params)


@dataclass(frozen=True)
class Schedule:
    """A chaos session as data: faults in start order, and the seed that drew them (if any)."""

    events: tuple[ScheduledFault, ...]
    seed: int | None = None

    @classmethod
    def generate(cls, rng: random.Random, *, targets: Sequence[str], kinds: Sequence[str] | Mapping[str, Mapping[str, Any]],
                 count: int, window_ms: int, min_duration_ms: int, max_duration_ms: int) -> Schedule:
        """Draw ``count`` faults inside ``[0, window_ms]``; pure and deterministic for ``rng``'s state.

        ``kinds`` is a list of fault names or ``{name: params}`` (e.g. ``{"latency": {"latency_ms": 200}}``).
        Faults on one target never overlap (a paused node is not also killed; one proxy carries
        one fault at a time), so each heal restores a known state.
        """
        kind_params = {k: {} for k in kinds} if not isinstance(kinds, Mapping) else {k: dict(v) for k, v in kinds.items()}
        targets = list(targets)
        if not targets or not kind_params or count < 0:
            raise HarnessError(f"Schedule.generate needs targets, kinds and count >= 0; got {targets}, {list(kind_params)}, {count}")
        if not 0 < min_duration_ms <= max_duration_ms <= window_ms:
            raise HarnessError(
                f"Schedule.generate needs 0 < min_duration_ms <= max_duration_ms <= window_ms; "
                f"got {min_duration_ms}, {max_duration_ms}, {window_ms}"
            )
        for kind, params in kind_params.items():
            check_fault_params(kind, params)
        names = list(kind_params)
        busy: dict[str, list[tuple[int, int]]] = {t: [] for t in targets}
        events: list[ScheduledFault] = []
        for n in range(count):
            for _ in range(_MAX_PLACEMENT_TRIES):
                kind, target = rng.choice(names), rng.choice(targets)
                duration_ms = rng.randint(min_duration_ms, max_duration_ms)
                at_ms = rng.randint(0, window_ms - duration_ms)
                # A kill that does not restart ends its target for the rest of the window.
                gone = kind == "kill" and not kind_params[kind].get("restart_on_heal")
                end_ms = window_ms if gone else at_ms + duration_ms
                if all(end_ms <= s or e <= at_ms for s, e in busy[target]):
                    busy[target].append((at_ms, end_ms))
                    events.append(ScheduledFault(at_ms, kind, target, duration_ms, dict(kind_params[kind])))
                    break
            else:
                raise HarnessError(
                    f"Schedule.generate placed only {n} of {count} non-overlapping faults on {len(targets)} "
                    f"target(s) in {window_ms} ms; widen window_ms, add targets or shorten durations"
                )
        return cls(tuple(sorted(events, key=lambda e: (e.at_ms, e.target, e.fault))))

    @classmethod
    def from_seed(cls, seed: int, **kwargs: Any) -> Schedule:
        """``generate(random.Random(seed), ...)`` with the seed kept, so the schedule names its origin."""
        schedule = cls.generate(random.Random(seed), **kwargs)
        return cls(schedule.events, seed)

    @property
    def end_ms(self) -> int:
        return max((e.at_ms + e.duration_ms for e in self.events), default=0)

    def to_data(self) -> dict[str, Any]:
        return {"seed": self.seed, "events": [e.to_data() for e in self.events]}

    def to_json(self) -> str:
        return json.dumps(self.to_data(), sort_keys=True)

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Schedule:
        """From ``to_data()`` output, or from a bare list of scheduled faults."""
        if isinstance(data, Mapping):
            seed, items = data.get("seed"), data.get("events", [])
        else:
            seed, items = None, data
        events = [ScheduledFault.from_data(item) for item in items]
        return cls(tuple(sorted(events, key=lambda e: (e.at_ms, e.target, e.fault))), seed)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise HarnessError(f"not a JSON fault schedule: {exc}") from None
        return cls.from_data(data)


# -- execution ---------------------------------------------------------------------------------


@dataclass
class FaultRun:
    """What happened to one scheduled fault (ms since the run started); never applied = skipped."""

    event: ScheduledFault
    applied_at_ms: float | None = None
    healed_at_ms: float | None = None

    @property
    def skipped(self) -> bool:
        return self.applied_at_ms is None


def _wait_until(t_mono_ms: float) -> None:
    # A scheduler's clock, not a test synchronisation: wake when the event is due.
    remaining_ms = t_mono_ms - now_ms()
    if remaining_ms > 0:
        eventually(lambda: now_ms() >= t_mono_ms, timeout_ms=remaining_ms + 1000,
                   what="the next scheduled fault to be due", interval_ms=_SCHEDULER_POLL_MS)


def run_schedule(schedule: Schedule, resolve_target: Callable[[str, Role], Any], history: History, *,
                 deadline_ms: float) -> list[FaultRun]:
    """Apply and heal ``schedule``'s faults at their times; return what ran.

    ``resolve_target(target, role)`` gives the Proxy (role "proxy") or Node (role "node") for a
    schedule target name (see ``topology_resolver``). Nothing is applied at or after
    ``deadline_ms`` (since the start) and heals due later happen at the deadline, so the run ends
    then plus the time the calls take. Every applied fault is healed in a ``finally``; a heal
    that fails there is raised (or added as a note to the error already propagating).
    """
    start = now_ms()
    history.meta(chaos_schedule=schedule.to_data(), chaos_deadline_ms=deadline_ms)
    runs = [FaultRun(e) for e in schedule.events]
    # Heals (0) sort before applies (1) at one instant, so a target is free before its next fault.
    steps = sorted([(e.at_ms, 1, i) for i, e in enumerate(schedule.events)]
                   + [(e.at_ms + e.duration_ms, 0, i) for i, e in enumerate(schedule.events)])
    active: dict[int, Fault] = {}
    primary: BaseException | None = None
    try:
        for t_ms, op, i in steps:
            event = schedule.events[i]
            if op == 1:
                if t_ms >= deadline_ms or now_ms() - start >= deadline_ms:
                    continue
                _wait_until(start + t_ms)
                target = resolve_target(event.target, fault_class(event.fault).ROLE)
                fault = fault_from_spec(event.fault, target, history=history, label=event.target, **event.params)
                active[i] = fault
                fault.apply()
                runs[i].applied_at_ms = round(now_ms() - start, 1)
            elif i in active:
                _wait_until(start + min(t_ms, deadline_ms))
                active[i].heal()  # stays active if this fails: the finally tries once more
                del active[i]
                runs[i].healed_at_ms = round(now_ms() - start, 1)
    except BaseException as exc:
        primary = exc
        raise
    finally:
        failures = []
        for i, fault in reversed(list(active.items())):
            try:
                fault.heal()
                if runs[i].applied_at_ms is not None:
                    runs[i].healed_at_ms = round(now_ms() - start, 1)
            except Exception as exc:  # noqa: BLE001 - heal the rest, then report every failure
                failures.append(f"{fault!r}: {exc!r}")
        if failures:
            message = "healing after the chaos schedule failed for: " + "; ".join(failures)
            if primary is not None:
                primary.add_note(message)
            else:
                raise HarnessError(message + "; the topology may still be faulty, tear it down")
    return runs


def topology_resolver(topology: Any) -> Callable[[str, Role], Any]:
    """Resolve schedule targets against a ``harness.topology.Topology``: ``server-<i>`` gives that
    server's proxy, node or (packet-level faults) the server itself, whose namespace they act in;
    a client's name its node (clients have no proxy and no namespace)."""

    def resolve(name: str, role: Role) -> Any:
        for server in topology.servers:
            if f"server-{server.index}" == name:
                return {"proxy": server.proxy, "link": server}.get(role, server.node)
        for client in topology.clients:
            if client.name == name:
                if role in ("proxy", "link"):
                    raise HarnessError(f"target {name!r} is a client; {role} faults need a server target")
                return client.node
        known = [f"server-{s.index}" for s in topology.servers] + [c.name for c in topology.clients]
        raise HarnessError(f"unknown fault target {name!r}; known: {known}")

    return resolve
