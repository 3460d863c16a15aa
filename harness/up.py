"""``connformance up``: a topology kept up behind Toxiproxy, its addresses printed, optionally
under the soak's seeded fault schedule (``harness.scenarios.soak``), a status line every 2 s, and
the soak's convergence checks when the schedule has healed. Nothing here knows pytest.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.faults import FaultRun, Schedule, run_schedule
from harness.faults.hits import summarize_hits
from harness.live_view import LiveView, Sampler
from harness.observe.history import History
from harness.peers import PeerManifest
from harness.report.timeline import write_timeline
from harness.scenarios.bounds import SCALED_SERVER_EJECT, supported
from harness.scenarios.soak import (
    LINK_FAULTS,
    SOAK_CLIENT_KNOBS,
    SOAK_FAULTS,
    CheckResult,
    check_event_balance,
    check_ip_counts,
    check_membership,
    convergence_bound_ms,
    killed_targets,
    observe_cluster,
    schedule_resolver,
    soak_schedule,
    wait_converged,
)
from harness.topology import Topology
from harness.wait import now_ms

# -- connformance up -------------------------------------------------------------------------------

MAX_DURATION_S = 3600
EXIT_FINDINGS = 3  # the session ran, but teardown found leaks or the cluster did not converge
STATUS_INTERVAL_S = 2.0
_HEAL_SLACK_MS = 2000  # run_schedule's deadline beyond the window: time for the calls themselves
# The schedule's clock starts once every client is registered (as TC-08's baseline): a fault at
# +0 ms then hits live connections, not clients still connecting, so a replay does what it did.
_BASELINE_TIMEOUT_MS = 30_000


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
    l3_faults: bool = False  # servers in namespaces; the schedule draws packet-level faults too
    schedule: str | None = None  # an explicit schedule (Schedule JSON) instead of a seeded one: a replay
    fault_kinds: list[str] | None = None  # the seeded schedule draws only these (default: all)
    ui: bool = False  # serve the live view (harness.live_view) on 127.0.0.1

    def replay_data(self) -> dict[str, Any]:
        """What a replay of this session needs (``harness.shrink``): everything but where it writes;
        manifest paths made absolute so the replay works from any directory."""
        data = asdict(self)
        for key in ("history", "workdir", "toxiproxy_url", "duration_s", "ui"):
            data.pop(key)
        data["peers_files"] = [str(Path(f).resolve()) for f in self.peers_files]
        return data


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
    """Prints one compact status line every ``STATUS_INTERVAL_S`` on a daemon thread until stopped
    (the terminal's view of the session; ``--ui`` adds the page)."""

    def __init__(self, topology: Topology, echo: Callable[[str], None], started_ms: float) -> None:
        self.echo = echo
        self.started_ms = started_ms
        self.sampler = Sampler(topology)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connformance-up-status", daemon=True)

    def line(self) -> str:
        sample = self.sampler.sample()
        parts = [f"{s['name']} {s['registered']} reg" if s["registered"] is not None else f"{s['name']} ? (no answer)"
                 for s in sample["servers"]]
        states = [f"{c['name']} {c['status']}@{c['server'] or '-'}" if c["status"] not in (None, "dead")
                  else f"{c['name']} {c['status'] or '?'}" for c in sample["clients"]]
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
        self.sampler.close()


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


def _session_schedule(opts: UpOptions, seed: int, n_clients: int) -> tuple[Schedule | None, int]:
    """The schedule to run and its window: the given one (a replay; its window ends with its last
    heal), a seeded draw of ``opts.faults``, or none."""
    if opts.schedule:
        if opts.faults:
            raise HarnessError("--schedule and --faults: give one (a schedule already says its faults)")
        text = opts.schedule
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise HarnessError(f"--schedule {opts.schedule}: cannot read it: {exc}") from None
        schedule = Schedule.from_json(text)
        if not schedule.events:
            raise HarnessError(f"--schedule {opts.schedule}: no faults in it; expected {{\"events\": [...]}} "
                               "as `connformance shrink` prints it")
        return schedule, max(1, schedule.end_ms)
    if not opts.faults:
        return None, opts.window_ms
    return soak_schedule(seed, servers=opts.servers, clients=n_clients, count=opts.faults, window_ms=opts.window_ms,
                         link_faults=opts.l3_faults, kinds=opts.fault_kinds), opts.window_ms


def _require_l3(opts: UpOptions) -> None:
    """Packet-level faults need namespaces (root), iptables, and the process runtime."""
    from harness.placement.netns import available

    why = available() or (None if shutil.which("iptables") else
                          "iptables is not installed (Debian package iptables; `connformance setup` as root)")
    if opts.runtime != "process":
        why = f"--l3-faults runs servers in network namespaces of the process runtime, not --runtime {opts.runtime}"
    if why:
        raise HarnessError(f"--l3-faults: {why}")


def run_up(opts: UpOptions, *, echo: Callable[[str], None] = print) -> int:
    """``connformance up``: start Toxiproxy (or use ``toxiproxy_url``), the runtime (process, or
    docker) and a topology; print the addresses; run the seeded schedule (then check convergence) or keep
    everything up printing status; tear down and print the leak check. Always bounded by
    ``duration_s`` (default 300 s, or the window + 60 s with faults; at most ``MAX_DURATION_S``).
    Returns 0, ``EXIT_FINDINGS`` (leaks or no convergence), or 130 on Ctrl-C/SIGTERM."""
    from harness.peers import PeerRegistry
    from harness.runtimes import get_runtime
    from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer

    if not 1 <= opts.servers <= 20:
        raise HarnessError(f"--servers {opts.servers}: expected 1..20")
    if opts.faults < 0 or opts.window_ms < 1:
        raise HarnessError(f"--faults {opts.faults} / --window-ms {opts.window_ms}: expected faults >= 0, window >= 1")
    if opts.l3_faults:
        _require_l3(opts)
    registry = PeerRegistry.default(opts.peers_files)
    server_peer = registry.get("nacos-server", opts.server_peer)
    client_peers = [(registry.get("nacos-client", name), n) for name, n in _parse_clients(opts.clients)]
    server_knobs, client_knobs = _parse_knobs(opts.knobs)
    if opts.scaled_timers:
        server_knobs = {**supported(server_peer, SCALED_SERVER_EJECT), **server_knobs}
    unknown = [k for k in server_knobs if not server_peer.supports(k)]
    if unknown:
        raise HarnessError(f"server peer {server_peer.label} has no knob(s) {unknown}; it declares {sorted(server_peer.knobs)}")
    for knob in client_knobs:
        if not any(peer.supports(knob) for peer, _ in client_peers):
            raise HarnessError(f"no client peer declares knob {knob!r}")
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 2**31)
    n_clients = sum(n for _, n in client_peers)
    schedule, window_ms = _session_schedule(opts, seed, n_clients)
    duration_s = opts.duration_s if opts.duration_s is not None else (window_ms / 1000 + 60 if schedule else 300)
    if not 0 < duration_s <= MAX_DURATION_S:
        raise HarnessError(f"--duration-s {duration_s}: expected 0 < duration <= {MAX_DURATION_S} (sessions are bounded)")
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
                     chaos_schedule=schedule.to_data() if schedule else None, up_options=opts.replay_data())
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
        live: LiveView | None = None
        try:
            if opts.schedule:
                echo(f"[up] replaying the given schedule; session bounded to {duration_s:.0f} s")
            else:
                echo(f"[up] seed {seed} (replay with --chaos-seed {seed}); session bounded to {duration_s:.0f} s")
            if opts.l3_faults:  # each alone in its namespace: members could not reach each other across them
                servers = [topology.nacos_servers(1, peer=server_peer, knobs=server_knobs, namespaced=True)[0]
                           for _ in range(opts.servers)]
            else:
                servers = topology.nacos_servers(opts.servers, peer=server_peer, knobs=server_knobs)
            bound_parts: list[tuple[PeerManifest, dict[str, Any]]] = []
            for peer, n in client_peers:
                knobs = {k: v for k, v in client_knobs.items() if peer.supports(k)}
                if opts.scaled_timers:
                    knobs = {**supported(peer, SOAK_CLIENT_KNOBS), **knobs}
                bound_parts.append((peer, knobs))
                for _ in range(n):
                    topology.nacos_client(peer=peer, servers=servers, knobs=knobs)
            _print_topology(topology, url, own, echo)
            echo(f"[up] history {history_path}  logs {workdir / 'logs'}")
            status = _StatusPrinter(topology, echo, started).start()
            if opts.ui:
                live = _live_view(topology, history, opts, echo)
            end_ms = now_ms() + duration_s * 1000  # the session's time counts once everything is up
            if schedule is not None:
                _wait_baseline(topology, history, echo, timeout_ms=min(_BASELINE_TIMEOUT_MS, end_ms - now_ms()))
                echo(f"[up] schedule: {len(schedule.events)} fault(s) over {window_ms} ms"
                     + (" (given)" if opts.schedule else f" (seed {seed})"))
                for e in schedule.events:
                    echo(f"[up]   +{e.at_ms:6d} ms {e.fault:<10} {e.target:<10} for {e.duration_ms} ms")
                deadline_ms = min(window_ms + _HEAL_SLACK_MS, max(0.0, end_ms - now_ms()))
                history.origin_t_ms = history.elapsed_ms()
                runs = run_schedule(schedule, schedule_resolver(topology), history, deadline_ms=deadline_ms)
                hits = summarize_hits(history.events())
                if hits:
                    echo(f"[up] faults that touched a live connection: {hits['hit']} of {hits['faults']}"
                         + (f" ({hits['unknown']} not measurable: they act on new connections, or in a container)"
                            if hits["unknown"] else ""))
                skipped = sum(1 for r in runs if r.skipped)
                echo(f"[up] schedule done: {len(runs) - skipped} applied, every one healed (kills are not restarted)"
                     + (f"; {skipped} skipped: due after the session's end" if skipped else ""))
                converged, checks = _converge(topology, runs, server_peer, server_knobs, bound_parts, end_ms, history, echo)
                findings += converged
                if live is not None:
                    live.final_checks = [{"name": c.name, "status": "OK" if c.ok else "FAILED", "summary": c.summary}
                                         for c in checks]
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
            if live is not None:
                findings += [f"ui heal failed: {failure}" for failure in live.stop()]
            leaks = topology.close()
            history.info("harness", "teardown", {"leaks": leaks})
            if leaks:
                findings += [f"leak: {leak}" for leak in leaks]
                echo("[up] teardown: LEAKS: " + "; ".join(leaks))
            else:
                echo("[up] teardown: no leaks (every process stopped, proxies deleted, no CLOSE_WAIT)")
            # What failed, by name: `connformance shrink` keeps a smaller schedule only when it fails alike.
            history.meta(session_findings=findings, failed_checks=sorted({f.split(":", 1)[0] for f in findings}),
                         interrupted=interrupted)
    try:  # after the history is closed: the timeline is drawn from it alone
        echo(f"[up] timeline {write_timeline(history_path)}")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        echo(f"[up] no timeline: {exc!r}")
    echo(f"[up] session ended after {(now_ms() - started) / 1000:.1f} s")
    if findings and schedule is not None and not interrupted:
        echo(f"[up] shrink it to a smaller failing schedule: connformance shrink {history_path}")
    if interrupted:
        return 130
    return EXIT_FINDINGS if findings else 0


def _live_view(topology: Topology, history: History, opts: UpOptions, echo: Callable[[str], None]) -> LiveView:
    """The page of ``up --ui``: the session's fault vocabulary on its servers and clients."""
    kinds = [*SOAK_FAULTS, *(LINK_FAULTS if opts.l3_faults else ())]
    targets = [f"server-{s.index}" for s in topology.servers] + [f"client-{i}" for i in range(len(topology.clients))]
    live = LiveView(topology, history, schedule_resolver(topology), kinds=kinds, targets=targets, echo=echo)
    echo(f"[up] live view {live.start()} (127.0.0.1 only; apply and heal faults from it)")
    return live


def _wait_baseline(topology: Topology, history: History, echo: Callable[[str], None], *, timeout_ms: float) -> None:
    view, after_ms = wait_converged(lambda: observe_cluster(topology.servers, topology.clients),
                                    timeout_ms=max(0.0, timeout_ms))
    history.observe("baseline_view", view.to_data() if view else None)
    if after_ms is None:
        echo(f"[up] baseline: NOT every client registered within {timeout_ms:.0f} ms; the schedule starts anyway")
    else:
        echo(f"[up] baseline: {len(topology.clients)} client(s) registered after {after_ms:.0f} ms; the schedule starts")


def _converge(topology: Topology, runs: list[FaultRun], server_peer: PeerManifest, server_knobs: dict[str, Any],
              clients: list[tuple[PeerManifest, dict[str, Any]]], end_ms: float, history: History,
              echo: Callable[[str], None]) -> tuple[list[str], list[CheckResult]]:
    """After the schedule: wait (bounded) for the exact checks of the soak; print them. Returns
    the findings and the checks judged."""
    killed = killed_targets(runs)
    live = [c for i, c in enumerate(topology.clients) if f"client-{i}" not in killed and c.node.alive()]
    dead = [f"client-{i}" for i, c in enumerate(topology.clients) if f"client-{i}" not in killed and not c.node.alive()]
    bound = convergence_bound_ms(server_peer, server_knobs, clients)
    timeout_ms = min(bound["total_ms"], max(0.0, end_ms - now_ms()))
    has_events = all(s.events is not None and s.events.available for s in topology.servers)
    view, after_ms = wait_converged(lambda: observe_cluster(topology.servers, live), timeout_ms=timeout_ms)
    history.observe("session_view", view.to_data() if view else None)
    findings = [f"client died: {name} died without being killed" for name in dead]
    checks: list[CheckResult] = []
    if view is None:
        findings.append(f"no answer: no server or client answered within {timeout_ms:.0f} ms")
    else:
        checks = [check_membership(view), check_ip_counts(view)] + ([check_event_balance(view)] if has_events else [])
        when = f"converged after {after_ms:.0f} ms" if after_ms is not None else f"NOT converged within {timeout_ms:.0f} ms"
        echo(f"[up] after healing ({when}; bound {bound['total_ms']} ms):")
        for check in checks:
            echo(f"[up]   {check.name}: {'OK' if check.ok else 'FAILED'}: {check.summary}")
            if not check.ok:
                findings.append(f"{check.name}: {check.summary}")
    return findings, checks
