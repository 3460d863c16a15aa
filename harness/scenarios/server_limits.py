"""The servers' own limits as steps (SPEC §5 PL-12, PL-13): two HTTP clients sharing a server's
one connection slot, and raw Nacos transports churned against a per-client-IP limit while a
sampler reads ``current`` and the per-IP counter."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.control.nacos_admin import NacosAdmin
from harness.http_run import AgentRun
from harness.observe.sockets import SocketSampler, established_between, local_sockets
from harness.peers import PeerManifest
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.pools import SLEEP_MS
from harness.scenarios.steps import Background
from harness.topology import NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

# ---- PL-12: one slot, two clients --------------------------------------------------------------
REQUESTS = 2  # per client, sequential: one connection each
HOLD_MS = 800  # client A stays alive this long after its requests: its idle kept-alive connection holds the slot
CLIENT_RUN_MS = 10_000  # bound on one client run (A's plan takes ~1.4 s, B's waits for A)
FIRST_CONNECTION_MS = 5000  # client A's connection reaches the server (process start + dial)


def server_connections(srv) -> int:
    """Connections the server holds now (server-side ESTABLISHED sockets on its real port)."""
    return sum(1 for pair in established_between(local_sockets(srv.host, srv.port), srv.port) if pair.server is not None)


def first_connection_seen(srv) -> Callable[[], bool]:
    if srv.ledger is not None:
        return lambda: any(c["served_ms"] is not None for c in srv.ledger.connections())
    return lambda: server_connections(srv) >= 1


def records_of(records) -> list[dict[str, Any]]:
    return [{"i": r.i, "start_ms": r.start_ms, "end_ms": r.end_ms, "status": r.status, "error": r.error,
             "local_port": r.local_port} for r in records]


@dataclass
class TwoRuns:
    a: AgentRun
    b: AgentRun
    max_server_side: int  # server-side ESTABLISHED sockets on the server's port at once (sampled)


def two_clients_one_slot(cf, topology, client_peer: PeerManifest, srv) -> TwoRuns:
    """Client A (two sequential slow requests, then alive with its connection idle in its pool)
    starts first; once the server holds A's connection, client B (two sequential slow requests)."""
    path = f"/sleep?ms={SLEEP_MS}"
    plan_a = {"knobs": {}, "phases": [{"op": "sequential", "n": REQUESTS, "path": path},
                                      {"op": "sleep", "ms": HOLD_MS}]}
    plan_b = {"knobs": {}, "phases": [{"op": "sequential", "n": REQUESTS, "path": path}]}

    def run(plan: dict[str, Any]) -> Callable[[], Any]:
        return lambda: topology.run_http_client(peer=client_peer, servers=[srv], plan=plan, timeout_ms=CLIENT_RUN_MS)

    with SocketSampler(cf.history, [srv.port], interval_ms=20, name="server_port", hosts=[srv.host]) as sampler:
        job_a = Background("pl12-client-A", run(plan_a)).start()
        job_b = None
        try:
            try:
                eventually(first_connection_seen(srv), timeout_ms=FIRST_CONNECTION_MS,
                           what="client A's connection held by the server", interval_ms=20)
            except WaitTimeout:
                pass  # judged below from A's records (the baseline)
            cf.history.observe("client_b_started", {"after": "A's connection seen on the server"})
            job_b = Background("pl12-client-B", run(plan_b)).start()
        finally:
            run_a = job_a.result(CLIENT_RUN_MS + 2000)
            run_b = job_b.result(CLIENT_RUN_MS + 2000) if job_b is not None else None
    assert run_b is not None
    return TwoRuns(run_a, run_b, sampler.max_count(srv.port, "ESTABLISHED", "server"))



def judge_one_at_a_time(cf, srv, runs: TwoRuns) -> dict[str, Any]:
    """Both clients get every answer (A alone: the baseline); B's first response ends no earlier
    than A's release of the slot + one request; the ledger, where the server has one, saw at most
    one connection served at once. Returns the timings for the OK message."""
    a_records, b_records = runs.a.phase(0), runs.b.phase(0)
    cf.check(all(r.ok and r.status == 200 for r in a_records),
             expected=f"baseline: client A alone gets {REQUESTS} × 200 from the server (limit 1, the slot is free)",
             actual=records_of(a_records), hint="the server does not serve even one connection at max_connections=1")
    cf.check(all(r.ok and r.status == 200 for r in b_records),
             expected=f"client B (the second) waits, is not refused, and completes: {REQUESTS} × 200",
             actual=records_of(b_records))

    a_last_end = max(r.end_ms for r in a_records)
    ledger = srv.ledger.ledger() if srv.ledger is not None else None
    a_conn = b_conn = None
    if ledger is not None:
        conns = sorted(ledger["connections"], key=lambda c: c["opened_ms"])
        cf.history.observe("ledger", {k: ledger[k] for k in ("max_simultaneous", "max_served_simultaneous", "queued")}
                           | {"connections": [{k: c[k] for k in ("id", "opened_ms", "served_ms", "closed_ms",
                                                                  "closed_by", "requests")} for c in conns]})
        a_conn = conns[0] if conns else None
        b_conn = conns[1] if len(conns) > 1 else None
    if a_conn is not None and a_conn.get("closed_ms") is not None:
        a_release_ms, release_from = a_conn["closed_ms"], "A's connection closed (ledger)"
    else:  # A's connection lives until A exits, HOLD_MS after its last response at the earliest
        a_release_ms, release_from = a_last_end + HOLD_MS, f"A's last response + its {HOLD_MS} ms idle hold"
    b_first_end = min(r.end_ms for r in b_records)
    earliest_ms = a_release_ms + SLEEP_MS - TOLERANCE_MS
    timings = {
        "A requests (end, epoch ms)": [r.end_ms for r in a_records],
        "A released the slot at": a_release_ms, "release from": release_from,
        "B started": min(r.start_ms for r in b_records), "B first response": b_first_end,
        "B first request waited ms": round(b_first_end - min(r.start_ms for r in b_records)),
        "max server-side ESTABLISHED on the server port": runs.max_server_side,
    }
    cf.check(b_first_end >= earliest_ms,
             expected=f"served strictly one connection at a time: B's first response ends ≥ {earliest_ms:.0f} "
                      f"({release_from} + {SLEEP_MS} ms − {TOLERANCE_MS} ms)",
             actual={**timings, "B ended early by ms": round(earliest_ms - b_first_end)})
    if ledger is not None:
        cf.check(ledger["max_served_simultaneous"] <= 1
                 and (b_conn is None or a_conn is None or a_conn["closed_ms"] is None
                      or b_conn["served_ms"] is None or b_conn["served_ms"] >= a_conn["closed_ms"]),
                 expected="served strictly one connection at a time: the ledger's max_served_simultaneous ≤ 1, "
                          "B's connection served only after A's closed",
                 actual={"max_served_simultaneous": ledger["max_served_simultaneous"],
                         "max_simultaneous (accepted)": ledger["max_simultaneous"],
                         "A closed_ms": a_conn and a_conn["closed_ms"], "B served_ms": b_conn and b_conn["served_ms"]})
    return timings


# ---- PL-13: churn against a per-client-IP limit ------------------------------------------------
CYCLES = 50
MAX_OPEN_OVER_LIMIT = 2  # open probes kept: admitted ones at n plus setups the limit must refuse
ADMISSION_MS = 2000  # a setup is registered, or reset, within this
SETTLE_MS = 2000 + TOLERANCE_MS  # closed transports leave current and the counter within this
CHURN_BOUND_MS = 30_000  # the whole churn, time-bounded
SAMPLE_INTERVAL_MS = 15
PROBE_IO_S = 3.0


@dataclass
class ChurnProbe:
    conn: RawNacosConnection
    id: str
    outcome: str = "pending"  # registered | reset | pending | unknown


@dataclass
class CountWatch:
    """Reads current (the IP's registrations) and clientIpCounts (its counter); thread-safe."""

    ip: str
    limit: int
    has_counts: bool
    has_events: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: int = 0
    trusted: int = 0  # samples where nothing moved around the counter read
    max_tally: int = 0
    max_counter: int = 0
    over: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)

    def sample(self, admin: NacosAdmin, t_ms: float) -> dict[str, Any]:
        seq_before = self._last_seq(admin)
        ids_before = self._ids(admin)
        counter = admin.client_ip_counts().get(self.ip, 0) if self.has_counts else None
        ids_after = self._ids(admin)
        seq_after = self._last_seq(admin)
        stable = ids_before == ids_after and seq_before == seq_after
        seen = {"t_ms": round(t_ms, 1), "ids": sorted(ids_after), "counter": counter, "stable": stable}
        with self.lock:
            self.samples += 1
            tally = max(len(ids_before), len(ids_after))
            self.max_tally = max(self.max_tally, tally)
            if counter is not None:
                self.max_counter = max(self.max_counter, counter)
            if tally > self.limit or (counter is not None and counter > self.limit):
                self.over.append(seen)
            if stable and counter is not None:
                self.trusted += 1
                if counter != len(ids_after):
                    self.drift.append(seen)
        return seen

    def _ids(self, admin: NacosAdmin) -> frozenset[str]:
        return frozenset(cid for cid, e in admin.current().items() if e.get("metaInfo", {}).get("clientIp") == self.ip)

    def _last_seq(self, admin: NacosAdmin) -> int | None:
        if not self.has_events:
            return None
        events = admin.events(0)
        return max((e["seq"] for e in events), default=0)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"samples": self.samples, "trusted counter reads": self.trusted, "max in current": self.max_tally,
                    "max per-IP counter": self.max_counter if self.has_counts else "n/a (no clientIpCounts)",
                    "samples above n": len(self.over), "drifting samples": len(self.drift)}


class CountSampler:
    """Samples a ``CountWatch`` on a thread with its own admin client; errors surface in ``stop``."""

    def __init__(self, cf, server, watch: CountWatch) -> None:
        self.cf, self.watch = cf, watch
        self.admin = server.new_admin()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pl13-sampler", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.watch.sample(self.admin, self.cf.history.elapsed_ms())
                self._stop.wait(SAMPLE_INTERVAL_MS / 1000.0)  # a pace, not synchronisation
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def __enter__(self) -> CountSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.admin.close()
        if self._error is not None and exc[0] is None:
            raise self._error


def reset_pushed(probe: ChurnProbe) -> bool:
    """Drain the probe's pushes without blocking; True once a ConnectResetRequest (or the stream's end) came."""
    while True:
        try:
            msg = probe.conn.next_push(timeout_s=0)
        except queue.Empty:
            return False
        if msg is None or msg.type == codec.CONNECT_RESET_REQUEST:
            return True


def admission(cf, admin: NacosAdmin, probe: ChurnProbe) -> str:
    """Wait (bounded) until the server registered the probe or reset it."""
    def decided() -> str | None:
        if reset_pushed(probe):
            return "reset"
        return "registered" if probe.id in admin.current() else None

    try:
        return eventually(decided, timeout_ms=ADMISSION_MS, what=f"{probe.id} registered or reset", interval_ms=10,
                          accept=lambda v: v is not None).value
    except WaitTimeout:
        cf.history.observe("admission_undecided", {"id": probe.id})
        return "unknown"


def open_churn_probe(cf, server, ip: str) -> ChurnProbe:
    conn = RawNacosConnection(server.host, server.proxied_grpc_port, client_ip=ip, timeout_s=PROBE_IO_S)
    try:
        check = conn.server_check()
        conn.setup()
    except BaseException:
        conn.close()
        raise
    return ChurnProbe(conn, str(check.body.get("connectionId")))


@dataclass
class Churned:
    cycles: int
    churn_ms: float
    tally: dict[str, int]
    left: Any  # what was still there SETTLE_MS after every transport closed (None: all gone)


def churn(cf, server: NacosServerHandle, watch: CountWatch, rng: random.Random) -> Churned:
    """The baseline (a transport reporting the IP registers through the proxy), then CYCLES
    connect/disconnect cycles by ``rng`` under a sampler, then every transport closed and the IP
    watched until gone from ``current`` and the counter (bounded)."""
    max_open = watch.limit + MAX_OPEN_OVER_LIMIT
    open_probes: list[ChurnProbe] = []
    tally = {"registered": 1, "reset": 0, "unknown": 0, "closed at once": 0, "closed old": 0}
    cycles = 0
    try:
        # Baseline: a transport reporting the IP registers through the proxy.
        first = open_churn_probe(cf, server, watch.ip)
        open_probes.append(first)
        first.outcome = admission(cf, server.admin, first)
        cf.baseline(first.outcome == "registered",
                    expected=f"a setup reporting {watch.ip} registers (under the limit {watch.limit})",
                    actual={"outcome": first.outcome, "current": sorted(server.admin.current())},
                    hint="the server does not register a setup through the proxy")
        started = now_ms()
        with CountSampler(cf, server, watch):
            for cycle in range(CYCLES):
                if now_ms() - started > CHURN_BOUND_MS:
                    break
                cycles = cycle + 1
                probe = open_churn_probe(cf, server, watch.ip)
                if rng.random() < 0.25:  # disconnect racing the setup
                    probe.conn.close()
                    tally["closed at once"] += 1
                    continue
                probe.outcome = admission(cf, server.admin, probe)
                tally[probe.outcome] += 1
                if probe.outcome != "registered":  # rejected (reset): the client leaves
                    probe.conn.close()
                else:
                    open_probes.append(probe)
                if len(open_probes) > max_open - 1 or (open_probes and rng.random() < 0.4):
                    victim = open_probes.pop(rng.randrange(len(open_probes)))
                    victim.conn.close()
                    tally["closed old"] += 1
            churn_ms = now_ms() - started
            for probe in open_probes:
                probe.conn.close()
            open_probes.clear()

            def settled() -> dict[str, Any]:
                return watch.sample(server.admin, cf.history.elapsed_ms())

            try:
                eventually(settled, timeout_ms=SETTLE_MS, what=f"{watch.ip} gone from current and the counter",
                           accept=lambda s: not s["ids"] and not s["counter"], interval_ms=50)
                left = None
            except WaitTimeout as exc:
                left = exc.last
    finally:
        for probe in open_probes:
            probe.conn.close()

    return Churned(cycles, churn_ms, tally, left)


def fresh_admissions(cf, server: NacosServerHandle, watch: CountWatch, n: int) -> tuple[list[str], dict[str, Any]]:
    """``n`` fresh setups reporting the IP, each waited for until admitted or reset: their
    outcomes in order, and a sample of the watch afterwards."""
    fresh: list[ChurnProbe] = []
    try:
        for _ in range(n):
            probe = open_churn_probe(cf, server, watch.ip)
            fresh.append(probe)
            probe.outcome = admission(cf, server.admin, probe)
        outcomes = [p.outcome for p in fresh]
        final = watch.sample(server.admin, cf.history.elapsed_ms())
    finally:
        for probe in fresh:
            probe.conn.close()
    return outcomes, final
