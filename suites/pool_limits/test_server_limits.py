"""PL — the server's own limits (SPEC §5 PL-12, PL-13; research/http-pools.md §3.1 and §6.3 T5,
research/nacos-protocol.md §2.4–§2.5).

PL-12 is the seed's Tomcat story: an HTTP server with ``max_connections=1`` and two clients.
Tomcat's acceptor (``LimitLatch``) and the ledger's slots do not refuse the connection over the
limit: it waits in the accept queue (or accepted, unserved) until the slot frees. The clients are
one fixed stack (Go ``net/http``: it reports the connection each request used and has no default
response timeout, so a waiting request simply waits); the server is the peer under test.

PL-13 churns raw Nacos transports that all report one client IP against a server whose per-IP
limit for that IP is n (the 2.1.x ``countLimitPerClientIp`` rule): setups admitted up to n,
rejected beyond, transports closed at random — some before their setup is even processed — for
50 cycles, while a sampler reads ``current`` and the per-IP counter (``clientIpCounts``). A
counter read is trusted only when ``current`` and the ``events`` log did not move around it, so a
mismatch is drift, not a race of the two reads. Afterwards every registration and count must be
gone, and the limit must still admit exactly n: a counter that drifted up admits fewer, one that
drifted down admits more — visible even on a server without the counter extension.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fixtures.case import case
from harness.control.nacos_admin import NacosAdmin
from harness.observe.sockets import SocketSampler, established_between, snapshot
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.steps import Background
from harness.wait import WaitTimeout, eventually, now_ms

# -- PL-12 ---------------------------------------------------------------------------------------
FIXED_CLIENT = "go-net-http"
SLEEP_MS = 300  # each request holds its connection busy this long
REQUESTS = 2  # per client, sequential: one connection each
HOLD_MS = 800  # client A stays alive this long after its requests: its idle kept-alive connection holds the slot
CLIENT_RUN_MS = 10_000  # bound on one client run (A's plan takes ~1.4 s, B's waits for A)
FIRST_CONNECTION_MS = 5000  # client A's connection reaches the server (process start + dial)
# Servers whose manifest maps no max_connections, and why no knob could (shown in UNIMPLEMENTED).
NO_QUEUEING_LIMIT = {
    "nginx": "nginx has no limit that queues: worker_connections counts every connection of a worker "
             "(the listening socket and upstreams too), and at the limit ngx_event_accept() closes the "
             "socket it just accepted once ngx_get_connection() fails (after ngx_drain_connections() "
             "reclaimed idle keep-alive ones; src/event/ngx_event_accept.c, src/core/ngx_connection.c) — "
             "it refuses the second client instead of making it wait",
}


def _server_connections(srv) -> int:
    """Connections the server holds now (server-side ESTABLISHED sockets on its real port)."""
    return sum(1 for pair in established_between(snapshot([srv.port]), srv.port) if pair.server is not None)


def _first_connection_seen(srv) -> Callable[[], bool]:
    if srv.ledger is not None:
        return lambda: any(c["served_ms"] is not None for c in srv.ledger.connections())
    return lambda: _server_connections(srv) >= 1


def _fmt_records(records) -> list[dict[str, Any]]:
    return [{"i": r.i, "start_ms": r.start_ms, "end_ms": r.end_ms, "status": r.status, "error": r.error,
             "local_port": r.local_port} for r in records]


@case("PL-12", "MUST", timeout_s=60)
def test_server_max_connections_serves_one_connection_at_a_time(cf, topology, peer_registry, http_server_peer):
    """Server `max_connections=1` (the seed's Tomcat story): two clients → requests are served strictly one connection at a time; the second waits, is not refused, and completes.

    Client A (two sequential 300 ms requests, then 800 ms alive with its connection idle in the
    pool) starts first; once the server holds A's connection, client B (two sequential 300 ms
    requests) starts. B's first response may only end after A's connection is released (the
    ledger's close time; for servers without a ledger A's exit, which is at least 800 ms after A's
    last response) plus one request's 300 ms, minus the tolerance; every request of both clients
    must succeed. The ledger also reports how many connections held a serving slot at once (≤ 1).
    Tomcat accepts one connection beyond the limit without serving it (research §6.3 T5): the
    server-side socket count is recorded, not judged.
    """
    if not http_server_peer.supports("max_connections"):
        why = NO_QUEUEING_LIMIT.get(http_server_peer.name, "the implementation's setting is not mapped")
        cf.unimplemented(f"{http_server_peer.label} maps no knob max_connections: {why}")
    client_peer = peer_registry.get("http-client", FIXED_CLIENT)
    (srv,) = topology.http_servers(1, peer=http_server_peer, knobs={"max_connections": 1})
    path = f"/sleep?ms={SLEEP_MS}"
    plan_a = {"knobs": {}, "phases": [{"op": "sequential", "n": REQUESTS, "path": path},
                                      {"op": "sleep", "ms": HOLD_MS}]}
    plan_b = {"knobs": {}, "phases": [{"op": "sequential", "n": REQUESTS, "path": path}]}

    def run(plan: dict[str, Any]) -> Callable[[], Any]:
        return lambda: topology.run_http_client(peer=client_peer, servers=[srv], plan=plan, timeout_ms=CLIENT_RUN_MS)

    with SocketSampler(cf.history, [srv.port], interval_ms=20, name="server_port") as sampler:
        job_a = Background("pl12-client-A", run(plan_a)).start()
        job_b = None
        try:
            try:
                eventually(_first_connection_seen(srv), timeout_ms=FIRST_CONNECTION_MS,
                           what="client A's connection held by the server", interval_ms=20)
            except WaitTimeout:
                pass  # judged below from A's records (the baseline)
            cf.history.observe("client_b_started", {"after": "A's connection seen on the server"})
            job_b = Background("pl12-client-B", run(plan_b)).start()
        finally:
            run_a = job_a.result(CLIENT_RUN_MS + 2000)
            run_b = job_b.result(CLIENT_RUN_MS + 2000) if job_b is not None else None
    assert run_b is not None

    a_records, b_records = run_a.phase(0), run_b.phase(0)
    cf.check(all(r.ok and r.status == 200 for r in a_records),
             expected=f"baseline: client A alone gets {REQUESTS} × 200 from the server (limit 1, the slot is free)",
             actual=_fmt_records(a_records), hint="the server does not serve even one connection at max_connections=1")
    cf.check(all(r.ok and r.status == 200 for r in b_records),
             expected=f"client B (the second) waits, is not refused, and completes: {REQUESTS} × 200",
             actual=_fmt_records(b_records))

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
        "max server-side ESTABLISHED on the server port": sampler.max_count(srv.port, "ESTABLISHED", "server"),
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
    cf.ok(f"B waited {timings['B first request waited ms']} ms for A's slot, then {REQUESTS} × 200; "
          f"server-side connections at once ≤ {timings['max server-side ESTABLISHED on the server port']}",
          expected="one connection served at a time; the second waits and completes", actual=timings)


# -- PL-13 ---------------------------------------------------------------------------------------
LIMIT = 3  # n
CYCLES = 50
CHURN_IP = "10.0.13.13"
MAX_OPEN = LIMIT + 2  # open probes kept: admitted ones at n plus setups the limit must refuse
ADMISSION_MS = 2000  # a setup is registered, or reset, within this
SETTLE_MS = 2000 + TOLERANCE_MS  # closed transports leave current and the counter within this
CHURN_BOUND_MS = 30_000  # the whole churn, time-bounded
SAMPLE_INTERVAL_MS = 15
PROBE_IO_S = 3.0


@dataclass
class _Probe:
    conn: RawNacosConnection
    id: str
    outcome: str = "pending"  # registered | reset | pending | unknown


@dataclass
class _CountWatch:
    """Reads current (the IP's registrations) and clientIpCounts (its counter); thread-safe."""

    ip: str
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
            if tally > LIMIT or (counter is not None and counter > LIMIT):
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


class _Sampler:
    """Samples a ``_CountWatch`` on a thread with its own admin client; errors surface in ``stop``."""

    def __init__(self, cf, server, watch: _CountWatch) -> None:
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

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.admin.close()
        if self._error is not None and exc[0] is None:
            raise self._error


def _reset_pushed(probe: _Probe) -> bool:
    """Drain the probe's pushes without blocking; True once a ConnectResetRequest (or the stream's end) came."""
    while True:
        try:
            msg = probe.conn.next_push(timeout_s=0)
        except queue.Empty:
            return False
        if msg is None or msg.type == codec.CONNECT_RESET_REQUEST:
            return True


def _admission(cf, admin: NacosAdmin, probe: _Probe) -> str:
    """Wait (bounded) until the server registered the probe or reset it."""
    def decided() -> str | None:
        if _reset_pushed(probe):
            return "reset"
        return "registered" if probe.id in admin.current() else None

    try:
        return eventually(decided, timeout_ms=ADMISSION_MS, what=f"{probe.id} registered or reset", interval_ms=10,
                          accept=lambda v: v is not None).value
    except WaitTimeout:
        cf.history.observe("admission_undecided", {"id": probe.id})
        return "unknown"


def _open(cf, server, ip: str) -> _Probe:
    conn = RawNacosConnection(server.host, server.proxied_grpc_port, client_ip=ip, timeout_s=PROBE_IO_S)
    try:
        check = conn.server_check()
        conn.setup()
    except BaseException:
        conn.close()
        raise
    return _Probe(conn, str(check.body.get("connectionId")))


@case("PL-13", "MUST", timeout_s=90)
def test_per_client_ip_limit_holds_under_churn(cf, topology, nacos_server_peer):
    """Server per-client-IP limit (Nacos rule) holds under churn: 50 connect/disconnect cycles never leave the count above n or the counter drifting from `current`.

    n = 3 for one reported IP (knob ``count_limit_per_client_ip``). Each cycle opens a raw
    transport reporting that IP and sends ServerCheck + ConnectionSetup; then, by the run's seed,
    closes it at once (racing its setup), or waits for its admission and keeps it, closing a
    random older one when more than n + 2 are open. A sampler reads ``current`` and
    ``clientIpCounts`` every 15 ms: never above n; a counter read bracketed by two equal
    ``current`` reads and an unchanged ``events`` log must equal the IP's tally. Then all close:
    within 2 s + tolerance the IP is gone from both. Last, n + 1 fresh setups: exactly n admitted.
    """
    nacos_server_peer.require_knobs(["count_limit_per_client_ip"])
    nacos_server_peer.require_capabilities(["limits"])
    has_counts = nacos_server_peer.has_capability("client_ip_counts")
    has_events = nacos_server_peer.has_capability("events")
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"count_limit_per_client_ip": {CHURN_IP: LIMIT}})
    rng = random.Random(cf.seed)
    admin = server.admin
    watch = _CountWatch(CHURN_IP, has_counts, has_events)

    open_probes: list[_Probe] = []
    tally = {"registered": 1, "reset": 0, "unknown": 0, "closed at once": 0, "closed old": 0}
    cycles = 0
    try:
        # Baseline: a transport reporting the IP registers through the proxy.
        first = _open(cf, server, CHURN_IP)
        open_probes.append(first)
        first.outcome = _admission(cf, admin, first)
        cf.check(first.outcome == "registered",
                 expected=f"baseline: a setup reporting {CHURN_IP} registers (under the limit {LIMIT})",
                 actual={"outcome": first.outcome, "current": sorted(admin.current())},
                 hint="the server does not register a setup through the proxy")
        started = now_ms()
        with _Sampler(cf, server, watch):
            for cycle in range(CYCLES):
                if now_ms() - started > CHURN_BOUND_MS:
                    break
                cycles = cycle + 1
                probe = _open(cf, server, CHURN_IP)
                if rng.random() < 0.25:  # disconnect racing the setup
                    probe.conn.close()
                    tally["closed at once"] += 1
                    continue
                probe.outcome = _admission(cf, admin, probe)
                tally[probe.outcome] += 1
                if probe.outcome != "registered":  # rejected (reset): the client leaves
                    probe.conn.close()
                else:
                    open_probes.append(probe)
                if len(open_probes) > MAX_OPEN - 1 or (open_probes and rng.random() < 0.4):
                    victim = open_probes.pop(rng.randrange(len(open_probes)))
                    victim.conn.close()
                    tally["closed old"] += 1
            churn_ms = now_ms() - started
            for probe in open_probes:
                probe.conn.close()
            open_probes.clear()

            def settled() -> dict[str, Any]:
                return watch.sample(admin, cf.history.elapsed_ms())

            try:
                eventually(settled, timeout_ms=SETTLE_MS, what=f"{CHURN_IP} gone from current and the counter",
                           accept=lambda s: not s["ids"] and not s["counter"], interval_ms=50)
                left = None
            except WaitTimeout as exc:
                left = exc.last
    finally:
        for probe in open_probes:
            probe.conn.close()

    summary = {**watch.summary(), "cycles": cycles, "churn ms": round(churn_ms), "setups": tally}
    cf.history.observe("churn_summary", summary)
    cf.check(not watch.drift,
             expected="the per-IP counter equals the IP's registrations in current at every trusted read "
                      "(nothing moved around it)",
             actual={**summary, "first drifting samples": watch.drift[:5]})
    cf.check(not watch.over,
             expected=f"{CHURN_IP} never above n={LIMIT} in current or in the per-IP counter",
             actual={**summary, "first samples above n": watch.over[:5]})
    if left is not None:
        drifted = isinstance(left, dict) and not left.get("ids") and left.get("counter")
        cf.fail(expected=(f"the per-IP counter equals the IP's registrations in current once all its transports "
                          f"closed: 0 within {SETTLE_MS} ms") if drifted else
                (f"every registration of {CHURN_IP} gone from current (and the counter at 0) within "
                 f"{SETTLE_MS} ms of its transports closing"),
                actual={**summary, "left": left})
    if tally["registered"] <= LIMIT or tally["reset"] == 0:
        cf.history.note(f"churn admitted {tally['registered']} and reset {tally['reset']}: the limit was barely pressed")

    # The limit still admits exactly n: a drifted counter admits fewer (up) or more (down).
    fresh: list[_Probe] = []
    try:
        for _ in range(LIMIT + 1):
            probe = _open(cf, server, CHURN_IP)
            fresh.append(probe)
            probe.outcome = _admission(cf, admin, probe)
        outcomes = [p.outcome for p in fresh]
        final = watch.sample(admin, cf.history.elapsed_ms())
    finally:
        for probe in fresh:
            probe.conn.close()
    cf.check(outcomes == ["registered"] * LIMIT + ["reset"],
             expected=f"after the churn the limit still admits exactly n={LIMIT} of {LIMIT + 1} fresh setups "
                      "(the per-IP counter did not drift from current)",
             actual={"outcomes in order": outcomes, "sample": final, **summary})
    cf.ok(f"{cycles} cycles in {churn_ms:.0f} ms ({tally}); {CHURN_IP} ≤ {LIMIT} over {watch.samples} samples, "
          f"counter == current at {watch.trusted} trusted reads; afterwards {LIMIT} of {LIMIT + 1} admitted",
          expected=f"never above {LIMIT}; no drift; clean after close; exactly {LIMIT} admitted again",
          actual={**summary, "fresh outcomes": outcomes})
