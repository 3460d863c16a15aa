"""PL-19's steps: one client, two hosts, and one of them stops answering SYNs (a dead host, a
firewall that drops instead of rejecting). The client's pool for the other host must not notice,
and the application's requests to the dead one must end at their own timeout.

Both ledgers run in their own network namespaces and the client dials their 198.18.0.0/15
addresses directly: through Toxiproxy every connect would be accepted by the proxy's kernel and
no SYN would ever go unanswered. Host 0 (``dead``) drops every SYN to its port from before the
agent starts (iptables in its namespace); host 1 (``alive``) answers as usual.

The plan: one GET to the live host (the client's own start, and its first connection there),
then ``SPREAD_N`` requests released together and spread over both hosts (``spread_burst``: even
``i`` to the dead one, odd to the live one), each with a per-request timeout of
``REQUEST_TIMEOUT_MS``; then ``AFTER_N`` GETs to the live host together, then an idle
``LINGER_MS`` in which a connect the client left behind would still show in the kernel's table
(SYN_SENT, ``ConnectWatch``). The drop is lifted when the run ends, or at the latest
``SYN_DROP_MAX_MS`` after it began: a client waiting on the kernel's SYN retries alone then ends
late, with the time to show for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import SetupError
from harness.faults import SynDrop
from harness.http_plan import RequestRecord
from harness.http_run import AgentRun
from harness.peers import PeerManifest
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.packet import ConnectWatch
from harness.scenarios.pool_faults import now_wall_ms
from harness.scenarios.pools import SLEEP_MS, SLEEP_PATH
from harness.scenarios.steps import Background, hold_while_running

DEAD, ALIVE = 0, 1  # --url indexes
REQUEST_TIMEOUT_MS = 2000
SPREAD_N = 8  # 4 to each host
AFTER_N = 4
LINGER_MS = 3000
SYN_DROP_MAX_MS = 15_000
# How late a live-host request of the spread may end: its own /sleep, plus what the client's
# first request there took (its own start and a fresh connection), capped well below the dead
# host's timeout, which is what a request stuck behind the dead host's connects takes at least.
LIVE_EXTRA_CAP_MS = REQUEST_TIMEOUT_MS // 2
WARM_PATH, AFTER_PATH = "/?pl19=warm", "/?pl19=after"
RUN_BOUND_MS = 20_000 + SYN_DROP_MAX_MS + 2 * REQUEST_TIMEOUT_MS + LINGER_MS  # agent start included

PLAN: dict[str, Any] = {"knobs": {}, "phases": [
    {"op": "sequential", "n": 1, "path": WARM_PATH, "target": ALIVE},
    {"op": "spread_burst", "n": SPREAD_N, "targets": [DEAD, ALIVE], "path": SLEEP_PATH,
     "timeout_ms": REQUEST_TIMEOUT_MS},
    {"op": "burst", "n": AFTER_N, "path": AFTER_PATH, "target": ALIVE, "timeout_ms": REQUEST_TIMEOUT_MS},
    {"op": "sleep", "ms": LINGER_MS},
]}


def _brief(r: RequestRecord, t0: float) -> dict[str, Any]:
    return {"i": r.i, "status": r.status, "error": (r.error or "")[:160] or None,
            "start_ms": round(r.start_ms - t0), "ms": round(r.duration_ms)}


@dataclass
class DeadHost:
    run: AgentRun
    connects: ConnectWatch
    dropped_syns: int | None  # what the drop dropped (iptables' counters): the client did dial it
    lifted_wall_ms: float  # when the drop was lifted (epoch ms, the records' clock)

    @property
    def warm_ms(self) -> float:
        return self.run.phase(0)[0].duration_ms

    def spread(self, target: int) -> list[RequestRecord]:
        return [r for r in self.run.phase(1) if r.i % 2 == target]

    @property
    def live_bound_ms(self) -> float:
        return SLEEP_MS + min(self.warm_ms, LIVE_EXTRA_CAP_MS) + TOLERANCE_MS

    def observed(self) -> dict[str, Any]:
        t0 = min((r.start_ms for r in self.run.phase(1)), default=0.0)
        return {"live host during the stuck connects": [_brief(r, t0) for r in self.spread(ALIVE)],
                "dead host": [_brief(r, t0) for r in self.spread(DEAD)],
                "live host after": [_brief(r, t0) for r in self.run.phase(2)],
                "first request to the live host ms": round(self.warm_ms), "dropped SYNs": self.dropped_syns,
                **self.connects.observed()}


def spread_over_a_dead_host(cf, topology, client_peer: PeerManifest, dead, alive) -> DeadHost:
    """Run ``PLAN`` with ``dead`` dropping SYNs; SetupError when the premise fails (the live host
    not answered before the spread, or the client never dialled the dead one)."""
    fault = SynDrop(dead, port=dead.port, history=cf.history, label=dead.node.name)
    with ConnectWatch(dead.bind_host, dead.port) as connects:
        fault.apply()
        applied_ms = now_wall_ms()
        background = Background("pl19-agent-run", lambda: topology.run_http_client(
            peer=client_peer, servers=[dead.direct_url, alive.direct_url], plan=PLAN, timeout_ms=RUN_BOUND_MS))
        background.start()
        try:
            dropped = hold_while_running(cf, background, fault, max_ms=SYN_DROP_MAX_MS, what="the dead host drops SYNs")
        finally:
            fault.heal()
            healed_ms = now_wall_ms()
            background.join_quietly(RUN_BOUND_MS + 5000)
        run = background.result(RUN_BOUND_MS + 5000)
    warm = run.phase(0)
    if not warm or not warm[0].ok:
        raise SetupError(f"PL-19 baseline: the first GET to the live host failed: {warm}")
    if len(run.phase(1)) != SPREAD_N:
        raise SetupError(f"PL-19: {len(run.phase(1))} of the spread's {SPREAD_N} requests reported: {run.records}")
    host = DeadHost(run, connects, dropped, healed_ms)
    cf.history.note(f"the SYN drop was on for {healed_ms - applied_ms:.0f} ms")
    cf.history.observe("dead_host", host.observed())
    return host
