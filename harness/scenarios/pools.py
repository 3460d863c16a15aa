"""Steps the pool-limit cases share (SPEC §5 PL): agent plans (``burst``, ``idle``), views of the
``ledger`` server (what it answered, who closed, a brief of its connections), the pool library a
peer wraps, and the baseline every PL case needs (all requests answered).

A peer is a built-in stack by name, or any manifest that declares the capability
``pool:<built-in name>`` (e.g. ``pool:urllib3`` for an agent over urllib3's pool).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import SetupError
from harness.http_run import AgentRun
from harness.peers import PeerManifest
from harness.scenarios.bounds import TOLERANCE_MS

SLEEP_MS = 300  # each request holds its connection this long (the ledger's /sleep)
SLEEP_PATH = f"/sleep?ms={SLEEP_MS}"
LEDGER_QUIET_KEEPALIVE_MS = 30_000  # a ledger keep-alive timeout that never closes first within a case

BUILTIN_STACKS = ("go-net-http", "jdk-httpurlconnection", "jdk-httpclient", "urllib3", "requests", "httpx", "aiohttp")
POOL_CAPABILITY = "pool:"


def stack_of(peer: PeerManifest) -> str | None:
    """The library whose pool the peer is: a built-in's name, else its ``pool:<name>`` capability."""
    if peer.name in BUILTIN_STACKS:
        return peer.name
    for capability in sorted(peer.capabilities):
        if capability.startswith(POOL_CAPABILITY) and capability[len(POOL_CAPABILITY):] in BUILTIN_STACKS:
            return capability[len(POOL_CAPABILITY):]
    return None


def require_stack(cf, peer: PeerManifest, stacks: Iterable[str], what: str) -> str:
    """The peer's stack if the case applies to it, else UNIMPLEMENTED saying why."""
    stacks = tuple(stacks)
    stack = stack_of(peer)
    if stack not in stacks:
        cf.unimplemented(
            f"{cf.spec.id} is about {what} ({' / '.join(stacks)}); {peer.label} is "
            f"{'the ' + stack + ' stack' if stack else 'none of them'} (a manifest wrapping one of those pools "
            f"declares capability '{POOL_CAPABILITY}<name>')")
    assert stack is not None
    return stack


def burst(n: int, *, path: str = SLEEP_PATH, target: int = 0) -> dict[str, Any]:
    return {"op": "burst", "n": n, "path": path, "method": "GET", "target": target}


def idle(ms: int) -> dict[str, Any]:
    return {"op": "sleep", "ms": ms}


def answered(view: Mapping[str, Any]) -> int:
    """Requests the ledger answered (a status was decided for them)."""
    return sum(1 for c in view["connections"] for entry in c["request_log"] if entry.get("status") is not None)


def closed_by(view: Mapping[str, Any]) -> Counter:
    return Counter(c["closed_by"] for c in view["connections"] if c["closed_by"] is not None)


def brief_connections(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ledger's connections without their request logs (for histories and failures)."""
    keys = ("id", "opened_ms", "closed_ms", "closed_by", "requests")
    return [{k: c[k] for k in keys} for c in view["connections"]]


def observe_ledger(cf, name: str, view: Mapping[str, Any]) -> None:
    cf.history.observe(name, {"max_simultaneous": view["max_simultaneous"], "open": view["open"],
                              "connections": brief_connections(view)})


def max_overlap(intervals: Iterable[tuple[float, float | None]]) -> int:
    """Most intervals (open, close or None = still open) overlapping at one time; a close at the
    same millisecond as an open counts first (the ledgers are separate processes)."""
    events = []
    for opened, closed in intervals:
        events.append((opened, 1))
        if closed is not None:
            events.append((closed, -1))
    current = best = 0
    for _, delta in sorted(events):
        current += delta
        best = max(best, current)
    return best


def records_brief(run: AgentRun, phase: int | None = None) -> list[dict[str, Any]]:
    records = run.records if phase is None else run.phase(phase)
    return [{"phase": r.phase, "i": r.i, "status": r.status, "error": r.error, "ms": round(r.duration_ms)}
            for r in records]


def require_baseline(run: AgentRun, what: str, *, phase: int | None = None) -> None:
    """Every request (of ``phase``, or of the run) succeeded: without that the pool's behaviour
    means nothing (a setup error)."""
    records = run.records if phase is None else run.phase(phase)
    failed = [r for r in records if not r.ok]
    if failed:
        first = failed[0]
        raise SetupError(f"baseline: {len(failed)} of {len(records)} requests of {run.name} ({run.peer}) "
                         f"failed through the proxy ({what}); first: phase {first.phase} #{first.i}: "
                         f"{first.error or first.status}. See {run.log_path}")


def rounds_ms(n: int, limit: int) -> int:
    """Least time n requests of SLEEP_MS take over ``limit`` connections: ⌈n/limit⌉ × SLEEP_MS."""
    return math.ceil(n / limit) * SLEEP_MS


def check_capped_burst(cf, run: AgentRun, view: Mapping[str, Any], *, limit: int, n: int, numbers: Mapping[str, Any],
                       cap: str, all_answered: str) -> None:
    """The two checks of a burst against a connection cap: the ledger never saw more than ``limit``
    simultaneous connections (``cap`` says what was expected), and all ``n`` requests succeeded,
    answered by the server (``all_answered``)."""
    cf.check(view["max_simultaneous"] <= limit, expected=cap,
             actual={**numbers, "connections (ledger)": brief_connections(view)})
    cf.check(not run.failed and answered(view) == n, expected=all_answered,
             actual={**numbers, "records": records_brief(run)})


@dataclass
class KeptAndDiscarded:
    """What a pool without blocking did with a burst wider than its idle cap: the connections it
    closed right after use (within the tolerance of the burst's end), the ones it kept open
    through the idle phase that followed, and any other."""

    connections: list[dict[str, Any]]
    discarded: list[dict[str, Any]]
    kept: list[dict[str, Any]]
    other: list[dict[str, Any]]
    numbers: dict[str, Any]


def kept_and_discarded(run: AgentRun, view: Mapping[str, Any], *, idle_ms: int, warning: str) -> KeptAndDiscarded:
    """Split the ledger's connections of ``run``'s burst (phase 0, then an ``idle_ms`` phase);
    ``warning`` is the library's log line for a discarded connection, counted in the numbers."""
    burst_end = max(r.end_ms for r in run.phase(0))
    conns = view["connections"]
    discarded = [c for c in conns if c["closed_by"] == "client" and c["closed_ms"] is not None
                 and c["closed_ms"] <= burst_end + TOLERANCE_MS]
    # Kept: still open when the idle phase was half over (the agent's exit closes them later).
    kept = [c for c in conns if c["closed_ms"] is None or c["closed_ms"] >= burst_end + idle_ms / 2]
    other = [c for c in conns if c not in discarded and c not in kept]
    numbers = {"opened": len(conns), "max_simultaneous": view["max_simultaneous"],
               "discarded right after use": len(discarded), "kept open while idle": len(kept),
               "closed otherwise": [{k: c[k] for k in ("id", "closed_by")}
                                    | {"after_burst_ms": round(c["closed_ms"] - burst_end)} for c in other],
               f"'{warning}' warnings": sum(1 for line in run.noise if warning in line), "answered": answered(view)}
    return KeptAndDiscarded(conns, discarded, kept, other, numbers)


def serving(view: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    """The ledger's connections that served a request for ``path`` (the full target)."""
    return [c for c in view["connections"] if any(r["path"] == path for r in c["request_log"])]


def connection_paths(conn: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger connection in brief, with the paths it served."""
    return {k: conn[k] for k in ("id", "opened_ms", "closed_ms", "closed_by", "requests")} | {
        "paths": [r["path"] for r in conn["request_log"]]}
