"""The TC-08 soak's seeded schedule and its exact convergence checks, shared by the soak case
(``suites/transport_cleanup/test_soak.py``) and ``connformance up`` (``harness.up``); nothing
here knows pytest.

- ``soak_schedule(seed, ...)`` draws the faults from ``random.Random(seed)`` (Toxiproxy's
  ``-seed`` is a no-op since v2.9.0, research §A3.6: the harness owns the RNG). Targets are
  positional names, ``server-<i>`` and ``client-<i>`` (``schedule_resolver``), so one seed gives
  one schedule whatever peers run.
- ``observe_cluster`` reads what every server registers and what every live client says;
  ``check_membership``, ``check_ip_counts`` and ``check_event_balance`` are pure functions of
  that view; ``wait_converged`` polls until the membership holds and stays put (bounded).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.control.http import ControlError
from harness.errors import HarnessError
from harness.faults import FaultRun, Role, Schedule, ScheduledFault, topology_resolver
from harness.peers import PeerManifest
from harness.scenarios.bounds import SCALED_CLIENT_HEALTH, TOLERANCE_MS, EjectBound, HealthBound, reconnect_ms
from harness.topology import NacosClientHandle, NacosServerHandle, Topology
from harness.wait import WaitTimeout, eventually, now_ms

# -- the soak's schedule -------------------------------------------------------------------------

PROXY_FAULTS = ("proxy_down", "reset_peer", "blackhole")  # on a server's proxy
SOAK_FAULTS = (*PROXY_FAULTS, "kill", "pause")  # kill: clients only, never restarted; pause: any node
# In a namespaced server's own network namespace (``up --l3-faults``); never drawn otherwise, so a
# seed's schedule without them is what it always was.
LINK_FAULTS = ("silence", "packet_loss", "syn_drop", "link_down")
MIN_FAULT_MS = 500
MAX_FAULT_MS = 3000

# Scaled-down timers for peers that take them (real libraries keep their defaults): the servers'
# eject timers are SCALED_SERVER_EJECT; the clients' health timers plus a fast reconnect.
SOAK_CLIENT_KNOBS = {**SCALED_CLIENT_HEALTH,
                     "server_check_timeout_ms": 1000, "backoff_step_ms": 100, "backoff_cap_ms": 1000}


def soak_schedule(seed: int, *, servers: int, clients: int, count: int, window_ms: int,
                  min_duration_ms: int = MIN_FAULT_MS, max_duration_ms: int = MAX_FAULT_MS,
                  max_kills: int | None = None, link_faults: bool = False,
                  kinds: Sequence[str] | None = None) -> Schedule:
    """``count`` faults over ``[0, window_ms]`` drawn from ``random.Random(seed)``; pure.

    Each fault's kind is drawn uniformly from ``SOAK_FAULTS`` (and ``LINK_FAULTS`` with
    ``link_faults``: on servers, in their namespaces, one at a time per server). Proxy faults go to server proxies
    (one fault per proxy at a time). Kills go to distinct clients (at most ``max_kills``, default a
    third of them; extra kills become pauses) and are never healed by a restart: a killed client
    is no longer live, so it is never targeted again. Pauses go to the other clients and to the
    servers, bounded by the fault's duration. Durations are in ``[min_duration_ms,
    max_duration_ms]``, clipped to the window and shortened when many faults share few targets
    (``_fitting_durations``). ``kinds`` narrows the pool (e.g. only proxy faults); None keeps
    it whole, so a seed's schedule is what it always was.
    """
    if servers < 1 or clients < 0 or count < 0 or window_ms < 1:
        raise HarnessError(f"soak_schedule needs servers >= 1, clients >= 0, count >= 0, window_ms >= 1; "
                           f"got {servers}, {clients}, {count}, {window_ms}")
    max_duration_ms = min(max_duration_ms, window_ms)
    min_duration_ms = min(min_duration_ms, max_duration_ms)
    rng = random.Random(seed)
    server_names = [f"server-{i}" for i in range(servers)]
    client_names = [f"client-{i}" for i in range(clients)]
    pool = SOAK_FAULTS + (LINK_FAULTS if link_faults else ())
    if kinds is not None:
        unknown = [k for k in kinds if k not in pool]
        if unknown or not kinds:
            raise HarnessError(f"fault kinds {list(kinds)}: expected some of {list(pool)}"
                               + ("" if link_faults else f" ({', '.join(LINK_FAULTS)} need --l3-faults)"))
        pool = tuple(k for k in pool if k in kinds)
    kinds = [rng.choice(pool) for _ in range(count)]
    kill_cap = clients // 3 if max_kills is None else min(max_kills, clients)
    kills = min(kinds.count("kill"), kill_cap)
    proxy = sum(kinds.count(k) for k in PROXY_FAULTS)
    link = sum(kinds.count(k) for k in LINK_FAULTS)
    pauses = count - proxy - kills - link
    victims = rng.sample(client_names, kills)
    events: list[ScheduledFault] = []

    def draw(targets: list[str], kinds: Sequence[str], n: int) -> None:
        lo, hi = _fitting_durations(n, len(targets), min_duration_ms, max_duration_ms, window_ms)
        events.extend(Schedule.generate(rng, targets=targets, kinds=kinds, count=n, window_ms=window_ms,
                                        min_duration_ms=lo, max_duration_ms=hi).events)

    if proxy:
        draw(server_names, PROXY_FAULTS, proxy)
    if link:
        draw(server_names, LINK_FAULTS, link)
    for victim in victims:
        draw([victim], ["kill"], 1)
    if pauses:
        draw([c for c in client_names if c not in victims] + server_names, ["pause"], pauses)
    return Schedule(tuple(sorted(events, key=lambda e: (e.at_ms, e.target, e.fault))), seed)


def _fitting_durations(n: int, targets: int, lo: int, hi: int, window_ms: int) -> tuple[int, int]:
    """Shorten ``[lo, hi]`` so ``n`` faults on ``targets`` targets keep each target busy for at most
    half the window on average (random non-overlapping placement then succeeds); unchanged when
    they already fit. A size that cannot fit even so fails loudly in ``Schedule.generate``."""
    mean_cap = max(1, window_ms * targets // (2 * n))
    if lo + hi <= 2 * mean_cap:
        return lo, hi
    if 2 * mean_cap - lo < lo:
        lo = max(1, mean_cap // 2)
    return lo, max(lo, min(hi, 2 * mean_cap - lo))


def schedule_resolver(topology: Topology) -> Callable[[str, Role], Any]:
    """``client-<i>`` is the i-th client in start order (its node); everything else as
    ``harness.faults.topology_resolver`` (``server-<i>``: proxy or node; a client's full name)."""
    base = topology_resolver(topology)

    def resolve(name: str, role: Role) -> Any:
        match = re.fullmatch(r"client-(\d+)", name)
        if match and int(match.group(1)) < len(topology.clients):
            if role in ("proxy", "link"):
                raise HarnessError(f"target {name!r} is a client; {role} faults need a server target")
            return topology.clients[int(match.group(1))].node
        return base(name, role)

    return resolve


def killed_targets(runs: Iterable[FaultRun]) -> set[str]:
    """Schedule targets that a kill actually reached."""
    return {r.event.target for r in runs if r.event.fault == "kill" and not r.skipped}


def convergence_bound_ms(server_peer: PeerManifest, server_knobs: Mapping[str, Any],
                         clients: Iterable[tuple[PeerManifest, Mapping[str, Any]]],
                         tolerance_ms: int = TOLERANCE_MS) -> dict[str, int]:
    """How long after healing the cluster may take to settle, from the peers' effective timers:
    the server's eject bound (a dead registration it must find itself), the worst client's health
    bound (a dead connection the client must find itself) and one reconnect of that client
    (``harness.scenarios.bounds``). Returns the parts and ``total_ms``."""
    clients = list(clients)
    eject = EjectBound.of(server_peer, server_knobs).eject_ms
    health = max((HealthBound.of(peer, knobs).detect_ms for peer, knobs in clients), default=0)
    reconnect = max((reconnect_ms(peer, knobs) for peer, knobs in clients), default=0)
    return {"eject_ms": eject, "health_ms": health, "reconnect_ms": reconnect, "tolerance_ms": tolerance_ms,
            "total_ms": eject + health + reconnect + tolerance_ms}


# -- observing the cluster -------------------------------------------------------------------------


@dataclass
class ServerView:
    name: str
    address: str
    current: dict[str, dict[str, Any]]
    ip_counts: dict[str, int] | None = None  # the server's own counter (extension), None if not offered
    events: list[dict[str, Any]] | None = None  # connected/disconnected log (extension)

    def tally(self) -> dict[str, int] | None:
        """Per reported client IP, how many connections ``current`` holds; None when the server's
        view has no metadata (ids only: the per-IP truth cannot be read from it)."""
        if any("clientIp" not in (e.get("metaInfo") or {}) for e in self.current.values()):
            return None
        return dict(Counter(str(e["metaInfo"]["clientIp"]) for e in self.current.values()))


@dataclass
class ClientView:
    name: str
    status: str | None
    server: str | None
    connection_id: str | None
    client_ip: str | None  # what the client reports as metadata.clientIp, when it can tell


@dataclass
class ClusterView:
    servers: list[ServerView]
    clients: list[ClientView]  # the live clients only
    t_ms: float = field(default_factory=now_ms)

    def ids(self) -> dict[str, list[str]]:
        """connection id -> the servers that register it."""
        where: dict[str, list[str]] = {}
        for server in self.servers:
            for cid in server.current:
                where.setdefault(cid, []).append(server.name)
        return where

    def to_data(self) -> dict[str, Any]:
        return {
            "servers": {s.name: {"address": s.address, "current": sorted(s.current), "clientIpCounts": s.ip_counts,
                                 "events": None if s.events is None else len(s.events)} for s in self.servers},
            "clients": {c.name: {"status": c.status, "server": c.server, "connection_id": c.connection_id,
                                 "client_ip": c.client_ip} for c in self.clients},
        }


def observe_cluster(servers: Sequence[NacosServerHandle], clients: Sequence[NacosClientHandle]) -> ClusterView:
    """Read every server's ``current`` (and, where it shows them, its per-IP counter and its
    listener notifications: ``ServerEvents``) and every given client's ``/state``. Raises
    ControlError/OSError when one does not answer."""
    names = {s.main_address: f"server-{s.index}" for s in servers}
    server_views = []
    for s in servers:
        view = ServerView(f"server-{s.index}", s.main_address, s.admin.current())
        if s.peer.has_capability("client_ip_counts"):
            view.ip_counts = {str(k): int(v) for k, v in s.admin.client_ip_counts().items()}
        if s.events is not None and s.events.available:
            view.events = s.events.all()
        server_views.append(view)
    client_views = []
    for c in clients:
        state = c.control.state()
        server = state.get("server")
        client_views.append(ClientView(
            c.name, state.get("status"), names.get(server, server), state.get("connection_id"),
            c.knobs.get("client_ip") or (state.get("meta") or {}).get("client_ip")))
    return ClusterView(server_views, client_views)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    expected: Any
    actual: Any
    summary: str


def check_membership(view: ClusterView) -> CheckResult:
    """The union of ``current`` over the servers equals the live clients' connection ids,
    exactly: every live client RUNNING and registered once, on the server it names; nothing else
    registered. A peer that reports no connection id is judged by counts per server."""
    where = view.ids()
    registered = sorted(where)
    live_ids = sorted(c.connection_id for c in view.clients if c.connection_id)
    problems: list[str] = []
    for c in view.clients:
        if c.status != "RUNNING":
            problems.append(f"{c.name} is {c.status}, not RUNNING")
        elif c.connection_id and c.connection_id not in where:
            problems.append(f"{c.name}'s {c.connection_id} (on {c.server}) is registered nowhere")
        elif c.connection_id and where[c.connection_id] != [c.server]:
            problems.append(f"{c.name}'s {c.connection_id} is registered on {where[c.connection_id]}, "
                            f"the client says {c.server}")
    twice = {cid: on for cid, on in where.items() if len(on) > 1}
    if twice:
        problems.append(f"registered on more than one server: {twice}")
    anonymous = [c for c in view.clients if c.status == "RUNNING" and not c.connection_id]
    if anonymous:  # the peer cannot tell its id: counts per server must match
        expected_counts = Counter(c.server for c in view.clients if c.status == "RUNNING")
        actual_counts = {s.name: len(s.current) for s in view.servers}
        if any(actual_counts[s.name] != expected_counts.get(s.name, 0) for s in view.servers):
            problems.append(f"registrations per server {actual_counts} != RUNNING clients per server "
                            f"{dict(expected_counts)} (the peer reports no connection ids)")
    else:
        stale = {cid: where[cid] for cid in sorted(set(registered) - set(live_ids))}
        if stale:
            problems.append(f"registered without a live client (id: servers): {stale}")
    clients = {c.name: f"{c.status} {c.connection_id} @ {c.server}" for c in view.clients}
    return CheckResult(
        "membership", not problems,
        expected={"union of current == live clients' connection ids": live_ids,
                  "each": "RUNNING, registered once, on the server the client names"},
        actual={"problems": problems, "union of current": registered, "live clients": clients},
        summary=f"{len(registered)} registered == {len(view.clients)} live client(s)" if not problems
        else "; ".join(problems))


def check_ip_counts(view: ClusterView) -> CheckResult:
    """Each server's per-client-IP counter equals the tally of its ``current`` and the truth from
    the live clients on it (where every client there can tell its reported IP)."""
    expected: dict[str, Any] = {}
    actual: dict[str, Any] = {}
    problems: list[str] = []
    for s in view.servers:
        tally = s.tally()
        on_it = [c for c in view.clients if c.server == s.name and c.status == "RUNNING"]
        truth = dict(Counter(c.client_ip for c in on_it)) if all(c.client_ip for c in on_it) else None
        expected[s.name] = truth if truth is not None else tally
        actual[s.name] = {"clientIpCounts": s.ip_counts, "tally of current": tally, "live clients' IPs": truth}
        if s.ip_counts is not None and s.ip_counts != tally:
            problems.append(f"{s.name}: clientIpCounts {s.ip_counts} != tally of current {tally}")
        if truth is not None and tally is not None and tally != truth:
            problems.append(f"{s.name}: tally of current {tally} != live clients' IPs {truth}")
    return CheckResult("per-IP counts", not problems, expected={"per server, per client IP": expected},
                       actual={"problems": problems, **actual},
                       summary="per-IP counts == truth on every server" if not problems else "; ".join(problems))


def check_event_balance(view: ClusterView) -> CheckResult:
    """Per server, per connection id: exactly one ``connected``, and one ``disconnected`` iff the
    id is no longer registered (listeners fired once each way). Servers without the events
    extension are skipped (``ok`` then only speaks for the others)."""
    unbalanced: dict[str, dict[str, dict[str, Any]]] = {}
    totals: dict[str, dict[str, int]] = {}
    for s in view.servers:
        if s.events is None:
            continue
        counts: dict[str, list[int]] = {cid: [0, 0] for cid in s.current}
        for e in s.events:
            if e.get("event") in ("connected", "disconnected"):
                counts.setdefault(str(e.get("connectionId")), [0, 0])[e["event"] == "disconnected"] += 1
        totals[s.name] = {"ids": len(counts), "connected": sum(c for c, _ in counts.values()),
                          "disconnected": sum(d for _, d in counts.values())}
        bad = {cid: {"connected": c, "disconnected": d, "registered": cid in s.current}
               for cid, (c, d) in counts.items() if (c, d) != (1, 0 if cid in s.current else 1)}
        if bad:
            unbalanced[s.name] = dict(sorted(bad.items())[:10])
    return CheckResult(
        "events balance", not unbalanced,
        expected="per server, per connection id: connected == 1, disconnected == (0 if still registered else 1)",
        actual={"unbalanced (first 10 per server)": unbalanced, "totals": totals},
        summary=f"events balance on {len(totals)} server(s): {totals}" if not unbalanced
        else f"unbalanced events: {unbalanced}")


def wait_converged(observe: Callable[[], ClusterView], *, timeout_ms: float, stable_ms: float = 500,
                   interval_ms: float = 250) -> tuple[ClusterView | None, float | None]:
    """Poll ``observe`` until ``check_membership`` holds with the same registrations for
    ``stable_ms``; bounded by ``timeout_ms``. Returns the last view and the elapsed ms at which it
    converged (None when it did not; the view is then the last one seen, or None if nothing
    answered)."""
    started = now_ms()
    since: dict[str, Any] = {"ids": None, "t": 0.0}

    def accept(view: ClusterView) -> bool:
        if not check_membership(view).ok:
            since["ids"] = None
            return False
        ids = sorted(view.ids())
        if ids != since["ids"]:
            since["ids"], since["t"] = ids, view.t_ms
            return stable_ms <= 0
        return view.t_ms - since["t"] >= stable_ms

    try:
        waited = eventually(observe, timeout_ms=timeout_ms, what="the cluster to converge", accept=accept,
                            interval_ms=interval_ms, swallow=(OSError, ValueError, ControlError))
    except WaitTimeout as exc:
        return (exc.last if isinstance(exc.last, ClusterView) else None), None
    return waited.value, now_ms() - started
