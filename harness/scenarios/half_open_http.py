"""TC-21's steps: a pooled HTTP connection whose link goes half-open (every packet of it dropped,
both ways, no FIN, no RST: a pulled cable, a dead NAT entry) while it sits idle, then the
application's next idempotent requests.

The ledger runs in its own network namespace and the client dials it there directly (its
198.18.0.0/15 address): through Toxiproxy the client would only ever meet the proxy's kernel,
which ACKs everything. The plan: one GET (the connection the pool keeps), an idle phase, then
``ROUNDS`` GETs one after another, each with a per-request timeout of ``REQUEST_TIMEOUT_MS``
(the application's bound). Inside the idle phase, once the first GET is answered and the pool
settled, iptables in the namespace drops every packet of that one connection (the ledger saw its
client port); new connections go through. The silence is healed when the run ends, or at the
latest ``SILENCE_MAX_MS`` after it began: a client that waits on TCP alone then finishes late,
with the time to show for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import SetupError
from harness.faults import Silence
from harness.http_run import AgentRun
from harness.peers import PeerManifest
from harness.scenarios.pool_faults import answered_on, now_wall_ms
from harness.scenarios.steps import Background, hold_while_running
from harness.wait import WaitTimeout, settled

REQUEST_TIMEOUT_MS = 2000
IDLE_MS = 2000  # the idle phase: the pool settles and the silence goes on inside it
ROUNDS = 3
SILENCE_MAX_MS = 10_000
SETTLE_MS = 300
BEFORE_PATH = "/?tc21=before"
AFTER_PATH = "/?tc21=after"
RUN_BOUND_MS = 20_000 + IDLE_MS + SILENCE_MAX_MS + ROUNDS * REQUEST_TIMEOUT_MS  # agent start included

PLAN: dict[str, Any] = {"knobs": {}, "phases": [
    {"op": "sequential", "n": 1, "path": BEFORE_PATH},
    {"op": "sleep", "ms": IDLE_MS},
    {"op": "sequential", "n": ROUNDS, "path": AFTER_PATH, "timeout_ms": REQUEST_TIMEOUT_MS},
]}


@dataclass
class HalfOpen:
    run: AgentRun
    client_port: int  # the client's end of the pooled connection that went silent
    silenced_wall_ms: float
    healed_wall_ms: float
    dropped_packets: int | None  # what the silence dropped (iptables' counters): the client used it

    def rounds(self) -> list[dict[str, Any]]:
        """Each GET after the silence: outcome and times relative to the first one's start."""
        after = self.run.phase(2)
        t0 = after[0].start_ms if after else 0.0
        return [{"i": r.i, "status": r.status, "error": r.error, "reused": r.reused, "local_port": r.local_port,
                 "start_ms": round(r.start_ms - t0), "end_ms": round(r.end_ms - t0)} for r in after]

    def recovery_ms(self) -> float | None:
        """From the first GET after the silence to the end of the first one answered 200."""
        after = self.run.phase(2)
        first_ok = next((r for r in after if r.status == 200 and r.error is None), None)
        return None if first_ok is None else first_ok.end_ms - after[0].start_ms


def silence_pooled_connection(cf, topology, client_peer: PeerManifest, server) -> HalfOpen:
    """Run ``PLAN`` on a thread against ``server.direct_url``; silence the pooled connection in the
    idle phase; heal when the run ends (or after ``SILENCE_MAX_MS``). SetupError when the premise
    fails: the first GET not answered, no pooled connection, the silence too late."""
    background = Background("tc21-agent-run", lambda: topology.run_http_client(
        peer=client_peer, servers=[server.direct_url], plan=PLAN, timeout_ms=RUN_BOUND_MS))
    background.start()
    fault: Silence | None = None
    try:
        def pooled() -> tuple[int, tuple[str, ...]]:
            view = server.ledger.ledger()
            return answered_on(view, BEFORE_PATH), tuple(c["peer"] for c in view["connections"] if c["closed_by"] is None)

        try:
            _, open_conns = settled(pooled, stable_ms=SETTLE_MS, timeout_ms=RUN_BOUND_MS, interval_ms=50,
                                    what="the first GET answered and its connection pooled",
                                    accept=lambda v: v[0] == 1 and len(v[1]) == 1)
        except WaitTimeout as exc:
            raise SetupError(f"TC-21 baseline: the first GET was not answered on one pooled connection ({exc})") from None
        client_ip, _, client_port = open_conns[0].rpartition(":")
        fault = Silence(server, port=server.port, peer=(client_ip, int(client_port)), history=cf.history,
                        label=server.node.name)
        fault.apply()
        silenced_wall_ms = now_wall_ms()
        dropped = hold_while_running(cf, background, fault, max_ms=SILENCE_MAX_MS,
                                     what="the pooled connection is silent")
        fault.heal()
        healed_wall_ms = now_wall_ms()
    except BaseException:
        if fault is not None:
            fault.heal()
        background.join_quietly(RUN_BOUND_MS + 5000)
        raise
    run = background.result(RUN_BOUND_MS + 5000)
    if not run.phase(2):
        raise SetupError(f"TC-21: the client sent no request after the idle phase: {run.records}")
    if run.phase(2)[0].start_ms < silenced_wall_ms:
        raise SetupError(f"TC-21: the silence came {silenced_wall_ms - run.phase(2)[0].start_ms:.0f} ms after the "
                         "client's next request began; the idle phase is too short for this machine")
    cf.history.observe("half_open", {"client_port": int(client_port), "dropped_packets": dropped,
                                     "silenced_for_ms": round(healed_wall_ms - silenced_wall_ms)})
    return HalfOpen(run, int(client_port), silenced_wall_ms, healed_wall_ms, dropped)
