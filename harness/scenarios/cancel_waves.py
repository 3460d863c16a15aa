"""Waves of canceled requests against a pool limit of 1, then normal requests: does a canceled
request leak the slot? The steps of PL-11 (waiters that give up by their own deadline, well
inside their wait) and PL-18 (a storm: every request canceled at the instant the holder's answer
hands the slot on, the race of encode/httpcore#1093), judged alike:

- never more than 1 connection held at once (``held_at_once``, which allows for the ledger's
  relay lag: see suites/pool_limits/test_faults_and_waiters.py);
- the agent finished its plan (a leaked slot can wedge the pool: every later request waits);
- every normal request after the waves succeeded (each with a timeout, so a leak shows as
  timeouts, not a hang).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.errors import SetupError
from harness.http_run import AgentRun
from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS
from harness.scenarios.pool_faults import (
    RELAY_LAG_MS,
    answered_on,
    connection_brief,
    error_kind,
    held_at_once,
)


@dataclass(frozen=True)
class Waves:
    """``waves`` × ``wave_n`` requests to ``hold_path``, each canceled ``cancel_after_ms`` after it
    was issued (and given up by its own ``give_up_ms`` deadline first, when set); then
    ``normal_n`` requests to ``normal_path`` at once, each with ``normal_timeout_ms``."""

    waves: int
    wave_n: int
    hold_path: str
    cancel_after_ms: int
    give_up_ms: int | None
    normal_n: int
    normal_path: str
    normal_timeout_ms: int

    def plan(self, knob: str) -> dict[str, Any]:
        wave: dict[str, Any] = {"op": "cancel_burst", "n": self.wave_n, "path": self.hold_path,
                                "cancel_after_ms": self.cancel_after_ms}
        if self.give_up_ms is not None:
            wave["timeout_ms"] = self.give_up_ms
        return {"knobs": {knob: 1},
                "phases": [*[dict(wave) for _ in range(self.waves)],
                           {"op": "burst", "n": self.normal_n, "path": self.normal_path,
                            "timeout_ms": self.normal_timeout_ms},
                           {"op": "sleep", "ms": 200}]}

    @property
    def bound_ms(self) -> int:
        return self.waves * self.cancel_after_ms + self.normal_timeout_ms + AGENT_RUN_SLACK_MS


@dataclass
class WavesOutcome:
    run: AgentRun | None
    hang: str | None  # the agent never finished its plan (why)
    held: int
    held_at_ms: float | None  # epoch ms
    numbers: dict[str, Any]
    connections: list[dict[str, Any]]


def run_canceled_waves(cf, topology, client_peer: PeerManifest, server, waves: Waves, knob: str) -> WavesOutcome:
    """Run the waves and the normal requests; read the ledger; record the numbers."""
    run: AgentRun | None = None
    hang: str | None = None
    try:
        run = topology.run_http_client(peer=client_peer, servers=[server], plan=waves.plan(knob),
                                       timeout_ms=waves.bound_ms)
    except SetupError as exc:
        if answered_on(server.ledger.ledger(), waves.normal_path) >= waves.normal_n:
            raise  # the normal requests were served: the trouble is elsewhere
        hang = str(exc).splitlines()[0]
    view = server.ledger.ledger()
    cf.history.observe("ledger", [connection_brief(c) for c in view["connections"]])
    held, held_at = held_at_once(view["connections"], now_ms_epoch=view["now_ms"])
    numbers: dict[str, Any] = {
        "limit": f"{knob}=1", "held_at_once": held, "ledger_max_simultaneous_raw": view["max_simultaneous"],
        "connections_opened": len(view["connections"]),
        "normal_answered_by_server": answered_on(view, waves.normal_path),
    }
    if run is not None:
        wave_records = [r for i in range(waves.waves) for r in run.phase(i)]
        normal = run.phase(waves.waves)
        numbers.update({
            "gave_up": sum(not r.ok for r in wave_records),
            "how_they_ended": dict(Counter(error_kind(r.error) for r in wave_records if not r.ok)),
            "wave_requests_reaching_server": sum(len([x for x in c["request_log"] if x["path"] == waves.hold_path])
                                                 for c in view["connections"]),
            "wave_requests_answered": [{"phase": r.phase, "i": r.i, "status": r.status}
                                       for r in wave_records if r.ok][:5],
            "normal_ok": sum(r.ok for r in normal),
            "normal_errors": sorted({r.error or str(r.status) for r in normal if not r.ok}),
        })
    cf.history.observe("canceled_waves", numbers)
    return WavesOutcome(run, hang, held, held_at, numbers, [connection_brief(c) for c in view["connections"]])


def expect_no_leaked_slot(cf, waves: Waves, knob: str, outcome: WavesOutcome) -> None:
    """≤ 1 held at once; the plan finished; every normal request succeeded."""
    numbers = outcome.numbers
    cf.check(outcome.held <= 1,
             at_ms=cf.history.relative_ms_from_wall(outcome.held_at_ms) if outcome.held_at_ms else None,
             expected=f"{knob}=1: never more than 1 connection at once (counting each until {RELAY_LAG_MS} ms "
                      f"before the ledger saw it close)",
             actual={**numbers, "connections": outcome.connections})
    cf.check(outcome.hang is None, expected=f"the {waves.normal_n} normal requests after the canceled waves complete",
             actual={**numbers, "agent": outcome.hang},
             hint="the agent never finished its plan: the canceled requests leaked the only slot")
    run = outcome.run
    assert run is not None
    cf.check(numbers["normal_ok"] == waves.normal_n,
             expected=f"the {waves.normal_n} normal requests after {waves.waves}×{waves.wave_n} canceled requests "
                      f"all succeed (no leaked slot)",
             actual=numbers, at_ms=cf.history.relative_ms_from_wall(min(r.start_ms for r in run.phase(waves.waves))),
             hint="a slot given to a canceled request was never returned")
