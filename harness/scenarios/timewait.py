"""The TIME_WAIT surge of a client pool, point by point (PL-16): for a burst width and an idle cap,
the client-side TIME_WAIT a burst leaves and the connections its pool keeps, each point on its
own fresh ledger server (a port without stale TIME_WAIT)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import SetupError
from harness.http_run import AgentRun
from harness.observe.sockets import snapshot, time_wait_by_side
from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS
from harness.wait import WaitTimeout, now_ms, settled

WIDTHS = (4, 16, 64)
SMALL_CAP = 2
DEFAULT_WIDTH = 20  # PL-02's burst; Go's DefaultTransport: 20 -> 18 client TIME_WAIT (research G1)
HOLD_MS = 500  # the server holds each request: all B in flight together
HOLD_PATH = f"/sleep?ms={HOLD_MS}"
IDLE_MS = 3500  # the agent stays alive this long after the burst; counted inside it (under load too)
STABLE_MS = 600  # the counts must not change for this long (the JDK evicts over a few hundred ms)
PARALLEL_POINTS = 8  # points measured at once (each on its own ports): all of them (7 or 4)
SERVER_KEEPALIVE_MS = 60_000
TABLE_NAME = "timewait.json"
PLOT_NAME = "timewait.png"
CAP_KNOBS = ("max_idle_per_host", "max_idle_total")
SPARE_SERVERS = 10  # how many servers may be passed over for stale TIME_WAIT on their proxy port


@dataclass(frozen=True)
class Point:
    width: int
    cap: int | None  # None: the stack's default (or no cap at all)
    label: str  # "2", "B", "default (2)", "none"

    @property
    def key(self) -> str:
        return f"B={self.width} cap={self.label}"


def cap_knob(peer: PeerManifest) -> str | None:
    for knob in CAP_KNOBS:
        if peer.supports(knob):
            return knob
    return None


def default_cap(peer: PeerManifest, knob: str | None) -> int | None:
    """The stack's documented idle cap (manifest ``[timers]``), None if it has none."""
    for name in ([knob] if knob else []) + list(CAP_KNOBS):
        if name in peer.timers:
            return peer.timers[name] or None  # 0 = unbounded (java.net.http's connectionPoolSize)
    return None


def plan_points(peer: PeerManifest) -> tuple[str | None, list[Point]]:
    knob = cap_knob(peer)
    dflt = default_cap(peer, knob)
    default_label = f"default ({dflt})" if dflt is not None else "default (none)"
    points = []
    for width in WIDTHS:
        if knob:
            points += [Point(width, SMALL_CAP, str(SMALL_CAP)), Point(width, width, "B")]
        else:
            points.append(Point(width, None, default_label))
    points.append(Point(DEFAULT_WIDTH, None, default_label))
    return knob, points


def expected_by_cap(point: Point, dflt: int | None) -> int:
    """What an idle cap alone predicts: B − cap closed by the client (never negative)."""
    cap = point.cap if point.cap is not None else dflt
    return 0 if cap is None else max(0, point.width - cap)


def fresh_servers(cf, topology, ledger: PeerManifest, n: int) -> list:
    """``n`` ledgers whose proxy addresses (ip:port) carry no TIME_WAIT socket. The port allocator
    never hands a port out twice in one process, but another process (an earlier run, a
    self-test's inner run) may have used the same address less than 60 s ago, leaving
    client-side TIME_WAIT sockets whose remote address it is: those would count in this point.
    Such a server is left unused."""
    servers: list = []
    passed_over = []
    while len(servers) < n:
        if len(passed_over) > SPARE_SERVERS:
            raise SetupError(f"PL-16: {len(passed_over)} proxy ports in a row still carry TIME_WAIT from earlier "
                             f"runs ({passed_over}); wait 60 s or give this run another port range")
        (srv,) = topology.http_servers(1, peer=ledger, knobs={"keepalive_timeout_ms": SERVER_KEEPALIVE_MS})
        stale = [e for e in snapshot([srv.proxy_port]) if e.state == "TIME_WAIT" and srv.proxy.listen_host
                 in ((e.local_ip if e.local_port == srv.proxy_port else None),
                     (e.remote_ip if e.remote_port == srv.proxy_port else None))]
        if stale:
            passed_over.append(srv.proxy_port)
            cf.history.note(f"proxy port {srv.proxy_port} carries {len(stale)} TIME_WAIT socket(s) from an earlier "
                            "run: not used")
            continue
        servers.append(srv)
    return servers


class _AgentEnded(Exception):
    """The point's agent run is over: stop waiting for its counts."""


@dataclass(frozen=True)
class Counts:
    answered: int
    opened: int
    open: int
    closed_by_client: int
    client_time_wait: int
    proxy_time_wait: int


def time_wait_at(entries, host: str, port: int) -> dict[str, int]:
    """TIME_WAIT per side of the listening address ``host:port``: ``client`` = sockets whose remote
    address it is (the client closed first), ``server`` = sockets on it (the proxy closed first).
    Matched on ip and port: the same port number on another loopback address is someone else's
    (``time_wait_by_side`` matches the port only)."""
    mine = [e for e in entries if e.state == "TIME_WAIT"
            and ((e.remote_ip, e.remote_port) == (host, port) or (e.local_ip, e.local_port) == (host, port))]
    return time_wait_by_side(mine, server_port=port)


def counts(server) -> Counts:
    view = server.ledger.ledger()
    tw = time_wait_at(snapshot([server.proxy_port]), server.proxy.listen_host, server.proxy_port)
    conns = view["connections"]
    return Counts(
        answered=sum(1 for c in conns for r in c["request_log"] if r["status"] is not None),
        opened=len(conns), open=view["open"],
        closed_by_client=sum(1 for c in conns if c["closed_by"] == "client"),
        client_time_wait=tw["client"], proxy_time_wait=tw["server"])


def measure(topology, peer: PeerManifest, server, point: Point, knob: str | None) -> dict[str, Any]:
    """Run one point's agent on a worker thread and count while it idles after its burst."""
    knobs = {knob: point.cap} if knob and point.cap is not None else {}
    plan = {"knobs": knobs, "phases": [{"op": "burst", "n": point.width, "path": HOLD_PATH},
                                       {"op": "sleep", "ms": IDLE_MS}]}
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["run"] = topology.run_http_client(peer=peer, servers=[server], plan=plan,
                                                  timeout_ms=IDLE_MS + HOLD_MS + AGENT_RUN_SLACK_MS)
        except BaseException as exc:  # surfaced below, in the measuring thread
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"pl16-{point.key}", daemon=True)
    worker.start()

    seen: list[tuple[float, Counts]] = []  # each change, for the error message

    def probe() -> Counts:
        if not worker.is_alive():
            raise _AgentEnded  # stop waiting at once: nothing more to count (or the run failed)
        value = counts(server)
        if not seen or seen[-1][1] != value:
            seen.append((round(now_ms()), value))
        return value

    measured: Counts | None = None
    problem = None
    try:
        measured = settled(probe, stable_ms=STABLE_MS, timeout_ms=IDLE_MS + HOLD_MS + AGENT_RUN_SLACK_MS,
                           what=f"{point.key}: the burst answered and the counts steady",
                           accept=lambda c: c.answered >= point.width)
    except WaitTimeout as exc:
        problem = f"did not settle while the agent idled: {exc}"
    except _AgentEnded:
        problem = "the agent ended before the counts settled"
    alive_at_count = worker.is_alive()
    worker.join((IDLE_MS + HOLD_MS + AGENT_RUN_SLACK_MS) / 1000.0)
    if "error" in box:
        raise box["error"]
    if worker.is_alive():
        raise SetupError(f"PL-16 {point.key}: the agent run did not end")
    agent: AgentRun = box["run"]
    if problem or not alive_at_count or measured is None:
        changes = [(t - seen[0][0], asdict(c)) for t, c in seen[-6:]] if seen else []
        raise SetupError(f"PL-16 {point.key}: could not count during the agent's idle phase "
                         f"({problem or 'the agent had already exited'}); the counts' last changes (ms, counts): "
                         f"{changes}; raise IDLE_MS for this machine")
    if agent.failed:
        raise SetupError(f"PL-16 {point.key}: {len(agent.failed)} burst request(s) failed through the proxy: "
                         f"{agent.failed[0].error or agent.failed[0].status}")
    return {"width": point.width, "cap": point.label, "cap_value": point.cap, **asdict(measured),
            "kept_idle": measured.open, "burst_fully_concurrent": measured.opened >= point.width}
