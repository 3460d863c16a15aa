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
from typing import Any

from harness.errors import SetupError
from harness.http_run import AgentRun
from harness.peers import PeerManifest

SLEEP_MS = 300  # each request holds its connection this long (the ledger's /sleep)
SLEEP_PATH = f"/sleep?ms={SLEEP_MS}"

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


def require_baseline(run: AgentRun, what: str) -> None:
    """Every request succeeded: without that the pool's behaviour means nothing (a setup error)."""
    if run.failed:
        first = run.failed[0]
        raise SetupError(f"baseline: {len(run.failed)} of {len(run.records)} requests of {run.name} ({run.peer}) "
                         f"failed ({what}); first: phase {first.phase} #{first.i}: {first.error or first.status}. "
                         f"See {run.log_path}")


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
