"""Pool limits under trouble as steps (PL-11, PL-14, PL-15): connections counted "at once" from
the ledger with the relay lag taken off each close (see ``held_at_once``), the peer's limit knob,
and pooled connections reset while the client idles (PL-15's cut, proven to be an RST)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import SetupError
from harness.faults import ResetPeer
from harness.http_run import AgentRun
from harness.observe.sockets import snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS, POLL_MS
from harness.scenarios.steps import Background
from harness.wait import WaitTimeout, eventually, settled

# How late the ledger may see a client's close. The ledger learns of it only when Toxiproxy has
# relayed it and its event loop has read it, a fraction of a millisecond to a few ms after the
# client's next connect: a pool that closes a connection and opens the next at once looks like
# two for a moment (Go's MaxConnsPerHost=1 dialing through canceled waiters showed 5 in the
# ledger while its own dialer never had more than one open).
RELAY_LAG_MS = 50
PL15_CUT_WITHIN_MS = 1500  # disable → the ledger sees every pooled connection gone


def now_wall_ms() -> float:
    """Epoch ms, the clock of the ledger and the agents' records."""
    return time.time() * 1000.0



def held_at_once(connections: Iterable[Mapping[str, Any]], *, now_ms_epoch: float,
                 lag_ms: float = RELAY_LAG_MS) -> tuple[int, float | None]:
    """(most connections held at one time, epoch ms when first reached). A connection is held from
    ``opened_ms`` to ``closed_ms - lag_ms`` (still open: to now); closes sort before opens."""
    events: list[tuple[float, int]] = []
    for conn in connections:
        end = (conn["closed_ms"] if conn["closed_ms"] is not None else now_ms_epoch) - lag_ms
        if end > conn["opened_ms"]:
            events += [(conn["opened_ms"], 1), (end, -1)]
    current = best = 0
    at = None
    for t, delta in sorted(events):
        current += delta
        if current > best:
            best, at = current, t
    return best, at


def error_kind(error: str | None) -> str:
    """An error's kind for a histogram: its exception name (``canceled`` for the agent's cancel)."""
    text = error or ""
    if text.startswith("canceled"):
        return "canceled"
    head = text.split(":", 1)[0]
    if " " in head:  # Go: 'Get "http://...": context deadline exceeded' -> the cause
        head = text.rsplit(": ", 1)[-1]
    return (head or "?")[:60]


def limit_knob(cf, peer: PeerManifest) -> str:
    """The peer's connection limit for one host: ``max_conns_per_host``, else the pool-wide
    ``max_conns_total`` (httpx has only that; with one host in the run it is the per-host limit)."""
    for knob in ("max_conns_per_host", "max_conns_total"):
        if peer.supports(knob):
            return knob
    cf.unimplemented(f"{peer.label} has no connection limit (neither max_conns_per_host nor max_conns_total "
                     f"in its manifest's [knobs]); the JDK clients have none (research §0)")
    raise AssertionError("unreachable")


def connection_brief(conn: Mapping[str, Any]) -> dict[str, Any]:
    return {k: conn[k] for k in ("id", "opened_ms", "closed_ms", "closed_by", "requests")}


def answered_on(view: Mapping[str, Any], path: str) -> int:
    return sum(1 for c in view["connections"] for r in c["request_log"] if r["path"] == path and r["status"] is not None)


@dataclass
class IdleCut:
    run: AgentRun
    pooled: int  # connections the pool kept idle when the cut came
    pooled_ids: list[str]
    cut_wall_ms: float


def reset_idle_pool(cf, topology, client_peer: PeerManifest, server, plan: dict[str, Any], linger0: ResetPeer, *,
                    idle_ms: int, burst_n: int, burst_path: str) -> IdleCut:
    """Run the agent's plan (a burst, an idle phase, then the requests under test) on a thread;
    once the burst is answered and the pool settled, disable the proxy — Toxiproxy closes every
    live connection, with linger 0 an RST each — then enable it and remove the toxic, all before
    the client's next request. SetupError when the premise fails (nothing pooled, the cut not an
    RST, the heal too late for the idle phase)."""
    proxy = server.proxy
    bound_ms = idle_ms + AGENT_RUN_SLACK_MS
    background = Background("pl-agent-run", lambda: topology.run_http_client(
        peer=client_peer, servers=[server], plan=plan, timeout_ms=bound_ms))
    background.start()
    try:
        def pooled_now() -> tuple[int, int]:
            view = server.ledger.ledger()
            return answered_on(view, burst_path), view["open"]

        try:
            _, pooled = settled(pooled_now, stable_ms=300, timeout_ms=bound_ms,
                                what=f"the {burst_n}-wide burst answered and the pool settled",
                                accept=lambda v: v[0] == burst_n)
        except WaitTimeout as exc:
            raise SetupError(f"PL-15 baseline: the burst did not complete and settle ({exc})") from None
        if not background.alive:
            raise SetupError("PL-15: the agent ended before the cut (its idle phase is too short for this machine)")
        if pooled == 0:
            raise SetupError(f"PL-15 baseline: {client_peer.label} kept no idle connection after the burst: "
                             "nothing pooled to reset")
        before = server.ledger.ledger()
        pooled_ids = [c["id"] for c in before["connections"] if c["closed_by"] is None]
        cut_wall_ms = now_wall_ms()
        proxy.disable()  # Toxiproxy closes every live connection: with linger 0, an RST each
        try:
            eventually(lambda: server.ledger.ledger()["open"], accept=lambda n: n == 0, timeout_ms=PL15_CUT_WITHIN_MS,
                       what="the ledger sees every pooled connection closed by the cut", interval_ms=POLL_MS)
        finally:
            proxy.enable()
            linger0.heal()
        healed_wall_ms = now_wall_ms()
        # The proxy's own address (ip and port: the same port number on another loopback address
        # belongs to someone else): after an RST neither the proxy's side lingers (FIN_WAIT /
        # TIME_WAIT) nor the client's (CLOSE_WAIT).
        here = (proxy.listen_host, proxy.listen_port)
        entries = snapshot([proxy.listen_port])
        leftovers = [vars(e) for e in entries if ((e.local_ip, e.local_port) == here and e.state != "LISTEN")
                     or ((e.remote_ip, e.remote_port) == here and e.state == "CLOSE_WAIT")]
        cf.history.observe("cut", {"pooled": pooled, "pooled_ids": pooled_ids, "leftovers": leftovers,
                                   "took_ms": round(healed_wall_ms - cut_wall_ms)})
        if leftovers:
            raise SetupError(f"PL-15: the cut was not an RST on every pooled connection (linger 0 missing?): "
                             f"sockets left {leftovers}")
    except BaseException:
        background.join_quietly(bound_ms + 5000)  # the agent is not left running; the first error wins
        raise
    run = background.result(bound_ms + 5000)
    if not run.phase(0) or any(not r.ok for r in run.phase(0)):
        raise SetupError(f"PL-15 baseline: the burst failed: {[r.error for r in run.phase(0)]}")
    first_seq_ms = min(r.start_ms for r in run.phase(2))
    if healed_wall_ms > first_seq_ms:
        raise SetupError(f"PL-15: the proxy was healed {healed_wall_ms - first_seq_ms:.0f} ms after the client's next "
                         "request began; the idle phase is too short for this machine")
    return IdleCut(run, pooled, pooled_ids, cut_wall_ms)
