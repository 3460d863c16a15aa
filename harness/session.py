"""Chaos sessions: the TC-08 soak's seeded schedule and exact convergence checks, and
``connformance up`` (a topology kept up behind Toxiproxy, optionally under a seeded schedule).

Nothing here knows pytest: the soak case (``suites/transport_cleanup/test_soak.py``) and the CLI
share it.

- ``soak_schedule(seed, ...)`` draws the faults from ``random.Random(seed)`` (Toxiproxy's
  ``-seed`` is a no-op since v2.9.0, research §A3.6: the harness owns the RNG). Targets are
  positional names, ``server-<i>`` and ``client-<i>`` (``schedule_resolver``), so one seed gives
  one schedule whatever peers run.
- ``observe_cluster`` reads what every server registers and what every live client says;
  ``check_membership``, ``check_ip_counts`` and ``check_event_balance`` are pure functions of
  that view; ``wait_converged`` polls until the membership holds and stays put (bounded).
- ``run_up`` is ``connformance up``.
"""

from __future__ import annotations

import json
import random
import re
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chaos import FaultRun, Schedule, ScheduledFault, run_schedule, topology_resolver
from harness.control.agent import AgentControl
from harness.control.http import ControlError
from harness.errors import HarnessError
from harness.faults import Role
from harness.observe.history import History
from harness.peers import PeerManifest
from harness.topology import NacosClientHandle, NacosServerHandle, Topology
from harness.wait import WaitTimeout, eventually, now_ms

__all__ = [
    "EXIT_FINDINGS", "MAX_DURATION_S", "PROXY_FAULTS", "SOAK_CLIENT_KNOBS", "SOAK_FAULTS", "SOAK_SERVER_KNOBS",
    "CheckResult", "ClientView", "ClusterView", "ServerView", "UpOptions",
    "check_event_balance", "check_ip_counts", "check_membership", "convergence_bound_ms", "observe_cluster",
    "run_up", "scaled_knobs", "schedule_resolver", "soak_schedule", "wait_converged",
]

# -- the soak's schedule -------------------------------------------------------------------------

PROXY_FAULTS = ("proxy_down", "reset_peer", "blackhole")  # on a server's proxy
SOAK_FAULTS = (*PROXY_FAULTS, "kill", "pause")  # kill: clients only, never restarted; pause: any node
MIN_FAULT_MS = 500
MAX_FAULT_MS = 3000

# Scaled-down timers for peers that take them (real libraries keep their defaults).
SOAK_SERVER_KNOBS = {"eject_interval_ms": 500, "idle_threshold_ms": 1500, "probe_timeout_ms": 500}
SOAK_CLIENT_KNOBS = {"health_interval_ms": 1000, "health_timeout_ms": 500, "health_retry": 1,
                     "server_check_timeout_ms": 1000, "backoff_step_ms": 100, "backoff_cap_ms": 1000}
TOLERANCE_MS = 250  # SPEC §5 preamble


def soak_schedule(seed: int, *, servers: int, clients: int, count: int, window_ms: int,
                  min_duration_ms: int = MIN_FAULT_MS, max_duration_ms: int = MAX_FAULT_MS,
                  max_kills: int | None = None) -> Schedule:
    """``count`` faults over ``[0, window_ms]`` drawn from ``random.Random(seed)``; pure.

    Each fault's kind is drawn uniformly from ``SOAK_FAULTS``. Proxy faults go to server proxies
    (one fault per proxy at a time). Kills go to distinct clients (at most ``max_kills``, default a
    third of them; extra kills become pauses) and are never healed by a restart: a killed client
    is no longer live, so it is never targeted again. Pauses go to the other clients and to the
    servers, bounded by the fault's duration. Durations are in ``[min_duration_ms,
    max_duration_ms]``, clipped to the window and shortened when many faults share few targets
    (``_fitting_durations``).
    """
    if servers < 1 or clients < 0 or count < 0 or window_ms < 1:
        raise HarnessError(f"soak_schedule needs servers >= 1, clients >= 0, count >= 0, window_ms >= 1; "
                           f"got {servers}, {clients}, {count}, {window_ms}")
    max_duration_ms = min(max_duration_ms, window_ms)
    min_duration_ms = min(min_duration_ms, max_duration_ms)
    rng = random.Random(seed)
    server_names = [f"server-{i}" for i in range(servers)]
    client_names = [f"client-{i}" for i in range(clients)]
    kinds = [rng.choice(SOAK_FAULTS) for _ in range(count)]
    kill_cap = clients // 3 if max_kills is None else min(max_kills, clients)
    kills = min(kinds.count("kill"), kill_cap)
    proxy = sum(kinds.count(k) for k in PROXY_FAULTS)
    pauses = count - proxy - kills
    victims = rng.sample(client_names, kills)
    events: list[ScheduledFault] = []

    def draw(targets: list[str], kinds: Sequence[str], n: int) -> None:
        lo, hi = _fitting_durations(n, len(targets), min_duration_ms, max_duration_ms, window_ms)
        events.extend(Schedule.generate(rng, targets=targets, kinds=kinds, count=n, window_ms=window_ms,
                                        min_duration_ms=lo, max_duration_ms=hi).events)

    if proxy:
        draw(server_names, PROXY_FAULTS, proxy)
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
    ``harness.chaos.topology_resolver`` (``server-<i>``: proxy or node; a client's full name)."""
    base = topology_resolver(topology)

    def resolve(name: str, role: Role) -> Any:
        match = re.fullmatch(r"client-(\d+)", name)
        if match and int(match.group(1)) < len(topology.clients):
            if role == "proxy":
                raise HarnessError(f"target {name!r} is a client; proxy faults need a server target")
            return topology.clients[int(match.group(1))].node
        return base(name, role)

    return resolve


def killed_targets(runs: Iterable[FaultRun]) -> set[str]:
    """Schedule targets that a kill actually reached."""
    return {r.event.target for r in runs if r.event.fault == "kill" and not r.skipped}


def scaled_knobs(peer: PeerManifest, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``wanted`` that ``peer`` declares."""
    return {k: v for k, v in wanted.items() if peer.supports(k)}


def convergence_bound_ms(server_peer: PeerManifest, server_knobs: Mapping[str, Any],
                         clients: Iterable[tuple[PeerManifest, Mapping[str, Any]]],
                         tolerance_ms: int = TOLERANCE_MS) -> dict[str, int]:
    """How long after healing the cluster may take to settle, from the peers' effective timers.

    eject bound (a dead registration the server must find itself) = ``idle_threshold +
    eject_interval + probe_timeout``; health bound (a dead connection the client must find
    itself) = ``interval + (retry + 1) × timeout``, plus one reconnect = ``backoff_cap +
    server_check_timeout + setup_wait``; the worst client counts. Returns the parts and ``total_ms``.
    """
    def server_timer(name: str, default: int) -> int:
        return server_peer.timer(name, server_knobs, default=default)

    eject_ms = (server_timer("idle_threshold_ms", 20000) + server_timer("eject_interval_ms", 3000)
                + server_timer("probe_timeout_ms", 5000))
    health_ms = reconnect_ms = 0
    for peer, knobs in clients:
        def timer(name: str, default: int, peer: PeerManifest = peer, knobs: Mapping[str, Any] = knobs) -> int:
            return peer.timer(name, knobs, default=default)

        health_ms = max(health_ms, timer("health_interval_ms", 5000)
                        + (timer("health_retry", 0) + 1) * timer("health_timeout_ms", 3000))
        reconnect_ms = max(reconnect_ms, timer("backoff_cap_ms", 5000) + timer("server_check_timeout_ms", 3000)
                           + timer("setup_wait_ms", 100))
    return {"eject_ms": eject_ms, "health_ms": health_ms, "reconnect_ms": reconnect_ms, "tolerance_ms": tolerance_ms,
            "total_ms": eject_ms + health_ms + reconnect_ms + tolerance_ms}


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


# -- connformance up -------------------------------------------------------------------------------

MAX_DURATION_S = 3600
EXIT_FINDINGS = 3  # the session ran, but teardown found leaks or the cluster did not converge
STATUS_INTERVAL_S = 2.0
_STATUS_TIMEOUT_S = 0.5  # a paused peer must not stall the status line
_HEAL_SLACK_MS = 2000  # run_schedule's deadline beyond the window: time for the calls themselves


@dataclass
class UpOptions:
    servers: int = 2
    clients: list[str] = field(default_factory=lambda: ["ref:3"])  # "PEER[:COUNT]"
    server_peer: str = "ref"
    peers_files: list[str] = field(default_factory=list)
    knobs: list[str] = field(default_factory=list)  # "server.K=V" / "client.K=V"
    scaled_timers: bool = False
    duration_s: float | None = None
    seed: int | None = None
    faults: int = 0
    window_ms: int = 10000
    history: str | None = None
    toxiproxy_url: str | None = None
    workdir: str | None = None
    runtime: str = "process"  # or "docker": peers and Toxiproxy as containers


def _parse_clients(specs: Sequence[str]) -> list[tuple[str, int]]:
    parsed = []
    for spec in specs:
        name, _, count = spec.partition(":")
        if not name or (count and not count.isdigit()) or not 1 <= int(count or 1) <= 50:
            raise HarnessError(f"--clients {spec!r}: expected PEER[:COUNT] with 1 <= COUNT <= 50, e.g. ref:3")
        parsed.append((name, int(count or 1)))
    return parsed


def _parse_knobs(specs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    roles: dict[str, dict[str, Any]] = {"server": {}, "client": {}}
    for spec in specs:
        match = re.fullmatch(r"(server|client)\.([A-Za-z_][A-Za-z0-9_]*)=(.*)", spec, re.DOTALL)
        if not match:
            raise HarnessError(f"--knob {spec!r}: expected server.KNOB=VALUE or client.KNOB=VALUE, "
                               "e.g. server.eject_interval_ms=1000")
        try:
            value: Any = json.loads(match.group(3))
        except ValueError:
            value = match.group(3)
        roles[match.group(1)][match.group(2)] = value
    return roles["server"], roles["client"]


class _EchoHistory(History):
    """A history that also prints each vocabulary fault as it is applied and healed."""

    def __init__(self, path: Path, echo: Callable[[str], None]) -> None:
        super().__init__(path)
        self._echo = echo
        self.origin_t_ms = 0.0  # printed times are relative to this (the schedule's start)

    def append(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        event = super().append(kind, **fields)
        if "fault" in fields and kind in ("fault_begin", "fault", "fault_end", "healed"):
            verb = {"fault_begin": "apply", "fault": "apply", "fault_end": "heal ", "healed": "heal "}[kind]
            if fields.get("error"):
                verb = "FAILED"
            target = fields.get("label") or fields.get("target")
            extra = " (not restarted: no longer live)" if fields["fault"] == "kill" else ""
            self._echo(f"[chaos +{event['t_ms'] - self.origin_t_ms:6.0f} ms] {verb} {fields['fault']:<10} {target}{extra}")
        return event


class _StatusPrinter:
    """Prints one compact status line every ``STATUS_INTERVAL_S`` on a daemon thread until stopped."""

    def __init__(self, topology: Topology, echo: Callable[[str], None], started_ms: float) -> None:
        self.echo = echo
        self.started_ms = started_ms
        self.servers = [(f"server-{s.index}", s.main_address, s.new_admin(timeout_s=_STATUS_TIMEOUT_S))
                        for s in topology.servers]
        self.clients = [(f"client-{i}", c, AgentControl(c.control_port, timeout_s=_STATUS_TIMEOUT_S))
                        for i, c in enumerate(topology.clients)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connformance-up-status", daemon=True)

    def line(self) -> str:
        names = {address: name for name, address, _ in self.servers}
        parts = []
        for name, _, admin in self.servers:
            try:
                parts.append(f"{name} {len(admin.current())} reg")
            except (ControlError, OSError, ValueError):
                parts.append(f"{name} ? (no answer)")
        states = []
        for name, client, control in self.clients:
            if not client.node.alive():
                states.append(f"{name} dead")
                continue
            try:
                state = control.state()
                states.append(f"{name} {state.get('status')}@{names.get(state.get('server'), state.get('server') or '-')}")
            except (ControlError, OSError, ValueError):
                states.append(f"{name} ?")
        return f"[status +{(now_ms() - self.started_ms) / 1000:6.1f} s] " + " | ".join(parts) + " || " + " ".join(states)

    def _run(self) -> None:
        while not self._stop.wait(STATUS_INTERVAL_S):  # a timer, bounded by stop()
            self.echo(self.line())

    def start(self) -> _StatusPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for _, _, admin in self.servers:
            admin.close()
        for _, _, control in self.clients:
            control.close()


def _print_topology(topology: Topology, toxiproxy_url: str, own: bool, echo: Callable[[str], None]) -> None:
    echo(f"[up] toxiproxy {toxiproxy_url} ({'started here' if own else 'external'}; "
         "any Toxiproxy client can add toxics to the proxies below)")
    for s in topology.servers:
        echo(f"[up] server-{s.index} {s.peer.name}: main {s.main_address} "
             f"(admin http://{s.admin_address}/nacos/v2/core/loader/current), grpc {s.bind_host}:{s.grpc_port}, "
             f"proxy {s.proxy.name} listen {s.proxy.listen} -> {s.proxy.upstream}")
    for i, c in enumerate(topology.clients):
        echo(f"[up] client-{i} {c.peer.name} ({c.name}): control http://127.0.0.1:{c.control_port}/state, "
             f"servers {','.join(c.servers)}")


def _sigterm_as_interrupt(stack: ExitStack) -> None:
    """SIGTERM ends the session like Ctrl-C (teardown runs) when we own the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    stack.callback(signal.signal, signal.SIGTERM, previous)


def run_up(opts: UpOptions, *, echo: Callable[[str], None] = print) -> int:
    """``connformance up``: start Toxiproxy (or use ``toxiproxy_url``), the runtime (process, or
    docker) and a topology; print the addresses; run the seeded schedule (then check convergence) or keep
    everything up printing status; tear down and print the leak check. Always bounded by
    ``duration_s`` (default 300 s, or the window + 60 s with faults; at most ``MAX_DURATION_S``).
    Returns 0, ``EXIT_FINDINGS`` (leaks or no convergence), or 130 on Ctrl-C/SIGTERM."""
    from harness.peers import PeerRegistry
    from harness.runtime import get_runtime
    from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer

    if not 1 <= opts.servers <= 20:
        raise HarnessError(f"--servers {opts.servers}: expected 1..20")
    if opts.faults < 0 or opts.window_ms < 1:
        raise HarnessError(f"--faults {opts.faults} / --window-ms {opts.window_ms}: expected faults >= 0, window >= 1")
    duration_s = opts.duration_s if opts.duration_s is not None else (
        opts.window_ms / 1000 + 60 if opts.faults else 300)
    if not 0 < duration_s <= MAX_DURATION_S:
        raise HarnessError(f"--duration-s {duration_s}: expected 0 < duration <= {MAX_DURATION_S} (sessions are bounded)")
    registry = PeerRegistry.default(opts.peers_files)
    server_peer = registry.get("nacos-server", opts.server_peer)
    client_peers = [(registry.get("nacos-client", name), n) for name, n in _parse_clients(opts.clients)]
    server_knobs, client_knobs = _parse_knobs(opts.knobs)
    if opts.scaled_timers:
        server_knobs = {**scaled_knobs(server_peer, SOAK_SERVER_KNOBS), **server_knobs}
    unknown = [k for k in server_knobs if not server_peer.supports(k)]
    if unknown:
        raise HarnessError(f"server peer {server_peer.label} has no knob(s) {unknown}; it declares {sorted(server_peer.knobs)}")
    for knob in client_knobs:
        if not any(peer.supports(knob) for peer, _ in client_peers):
            raise HarnessError(f"no client peer declares knob {knob!r}")
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 2**31)
    n_clients = sum(n for _, n in client_peers)
    schedule = (soak_schedule(seed, servers=opts.servers, clients=n_clients, count=opts.faults,
                              window_ms=opts.window_ms) if opts.faults else None)
    workdir = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="connformance-up-"))
    workdir.mkdir(parents=True, exist_ok=True)
    history_path = Path(opts.history) if opts.history else workdir / "history.jsonl"
    started = now_ms()
    findings: list[str] = []
    interrupted = False

    with ExitStack() as stack:
        _sigterm_as_interrupt(stack)
        history = _EchoHistory(history_path, echo)
        stack.callback(history.close)
        history.meta(session="connformance up", seed=seed, servers=opts.servers, clients=opts.clients,
                     server_knobs=server_knobs, client_knobs=client_knobs, duration_s=duration_s,
                     chaos_schedule=schedule.to_data() if schedule else None)
        runtime = get_runtime(opts.runtime)
        stack.callback(runtime.close)
        if opts.toxiproxy_url:
            url, own = opts.toxiproxy_url, False
        elif opts.runtime == "docker":
            from harness.docker.toxiproxy import toxiproxy_container

            url, own = stack.enter_context(toxiproxy_container(runtime)), True
        else:
            url, own = stack.enter_context(ToxiproxyServer()).url, True
        toxiproxy = stack.enter_context(ToxiproxyClient(url))
        topology = Topology(runtime=runtime, toxiproxy=toxiproxy, workdir=workdir, history=history)
        status: _StatusPrinter | None = None
        try:
            echo(f"[up] seed {seed} (replay with --chaos-seed {seed}); session bounded to {duration_s:.0f} s")
            servers = topology.nacos_servers(opts.servers, peer=server_peer, knobs=server_knobs)
            bound_parts: list[tuple[PeerManifest, dict[str, Any]]] = []
            for peer, n in client_peers:
                knobs = {k: v for k, v in client_knobs.items() if peer.supports(k)}
                if opts.scaled_timers:
                    knobs = {**scaled_knobs(peer, SOAK_CLIENT_KNOBS), **knobs}
                bound_parts.append((peer, knobs))
                for _ in range(n):
                    topology.nacos_client(peer=peer, servers=servers, knobs=knobs)
            _print_topology(topology, url, own, echo)
            echo(f"[up] history {history_path}  logs {workdir / 'logs'}")
            status = _StatusPrinter(topology, echo, started).start()
            end_ms = now_ms() + duration_s * 1000  # the session's time counts once everything is up
            if schedule is not None:
                echo(f"[up] schedule: {len(schedule.events)} fault(s) over {opts.window_ms} ms (seed {seed})")
                for e in schedule.events:
                    echo(f"[up]   +{e.at_ms:6d} ms {e.fault:<10} {e.target:<10} for {e.duration_ms} ms")
                deadline_ms = min(opts.window_ms + _HEAL_SLACK_MS, max(0.0, end_ms - now_ms()))
                history.origin_t_ms = history.elapsed_ms()
                runs = run_schedule(schedule, schedule_resolver(topology), history, deadline_ms=deadline_ms)
                skipped = sum(1 for r in runs if r.skipped)
                echo(f"[up] schedule done: {len(runs) - skipped} applied, every one healed (kills are not restarted)"
                     + (f"; {skipped} skipped: due after the session's end" if skipped else ""))
                findings += _converge(topology, runs, server_peer, server_knobs, bound_parts, end_ms, history, echo)
            else:
                echo(f"[up] up; status every {STATUS_INTERVAL_S:.0f} s; Ctrl-C or --duration-s ends the session")
                idle = threading.Event()  # never set: a bounded, interruptible wait for the session's end
                while now_ms() < end_ms:
                    idle.wait(min(1.0, (end_ms - now_ms()) / 1000))
        except KeyboardInterrupt:
            interrupted = True
            echo("[up] interrupted: healing and tearing down")
        finally:
            if status is not None:
                status.stop()
            leaks = topology.close()
            history.info("harness", "teardown", {"leaks": leaks})
            if leaks:
                findings += leaks
                echo("[up] teardown: LEAKS: " + "; ".join(leaks))
            else:
                echo("[up] teardown: no leaks (every process stopped, proxies deleted, no CLOSE_WAIT)")
    echo(f"[up] session ended after {(now_ms() - started) / 1000:.1f} s")
    if interrupted:
        return 130
    return EXIT_FINDINGS if findings else 0


def _converge(topology: Topology, runs: list[FaultRun], server_peer: PeerManifest, server_knobs: dict[str, Any],
              clients: list[tuple[PeerManifest, dict[str, Any]]], end_ms: float, history: History,
              echo: Callable[[str], None]) -> list[str]:
    """After the schedule: wait (bounded) for the exact checks of the soak; print them."""
    killed = killed_targets(runs)
    live = [c for i, c in enumerate(topology.clients) if f"client-{i}" not in killed and c.node.alive()]
    dead = [f"client-{i}" for i, c in enumerate(topology.clients) if f"client-{i}" not in killed and not c.node.alive()]
    bound = convergence_bound_ms(server_peer, server_knobs, clients)
    timeout_ms = min(bound["total_ms"], max(0.0, end_ms - now_ms()))
    has_events = all(s.events is not None and s.events.available for s in topology.servers)
    view, after_ms = wait_converged(lambda: observe_cluster(topology.servers, live), timeout_ms=timeout_ms)
    history.observe("session_view", view.to_data() if view else None)
    findings = [f"{name} died without being killed" for name in dead]
    if view is None:
        findings.append(f"no server or client answered within {timeout_ms:.0f} ms")
    else:
        checks = [check_membership(view), check_ip_counts(view)] + ([check_event_balance(view)] if has_events else [])
        when = f"converged after {after_ms:.0f} ms" if after_ms is not None else f"NOT converged within {timeout_ms:.0f} ms"
        echo(f"[up] after healing ({when}; bound {bound['total_ms']} ms):")
        for check in checks:
            echo(f"[up]   {check.name}: {'OK' if check.ok else 'FAILED'}: {check.summary}")
            if not check.ok:
                findings.append(f"{check.name}: {check.summary}")
    return findings
