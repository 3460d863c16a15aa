"""The TC-08 soak case's steps over ``harness.scenarios.soak`` (which ``connformance up`` shares
and which knows no case): the cluster placed, the storm run and recorded, the three exact checks
judged together, and the servers' ports free of CLOSE_WAIT."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.faults import FaultRun, Schedule, run_schedule
from harness.observe.sockets import TcpEntry, snapshot
from harness.peers import PeerManifest
from harness.scenarios.bounds import SCALED_SERVER_EJECT, supported
from harness.scenarios.soak import (
    SOAK_CLIENT_KNOBS,
    ClusterView,
    check_event_balance,
    check_ip_counts,
    check_membership,
    killed_targets,
    schedule_resolver,
)
from harness.topology import CLOSE_WAIT_GRACE_MS, NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually

CLIENT_IPS = ("127.0.0.101", "127.0.0.102")  # reported in metadata.clientIp only; never bound
HEAL_SLACK_MS = 5_000  # run_schedule's deadline beyond the window: time the fault calls take


@dataclass
class Cluster:
    servers: list[NacosServerHandle]
    clients: list[NacosClientHandle]
    server_knobs: dict[str, Any]
    client_knobs: dict[str, Any]


def soak_cluster(topology, server_peer: PeerManifest, client_peer: PeerManifest, *, servers: int,
                 clients: int) -> Cluster:
    """``servers`` servers with scaled eject timers and ``clients`` clients with scaled health
    timers where the peers take them; the clients' first choices spread over the servers, their
    reported IPs over CLIENT_IPS."""
    server_knobs = supported(server_peer, SCALED_SERVER_EJECT)
    server_handles = topology.nacos_servers(servers, peer=server_peer, knobs=server_knobs)
    client_knobs = supported(client_peer, SOAK_CLIENT_KNOBS)
    client_handles = []
    for i in range(clients):
        knobs = dict(client_knobs)
        if client_peer.supports("client_ip"):
            knobs["client_ip"] = CLIENT_IPS[i % len(CLIENT_IPS)]
        order = server_handles[i % servers:] + server_handles[:i % servers]
        client_handles.append(topology.nacos_client(peer=client_peer, servers=order, knobs=knobs))
    return Cluster(server_handles, client_handles, server_knobs, client_knobs)


@dataclass
class Storm:
    runs: list[FaultRun]
    healed_at_ms: float
    applied: Counter
    live: list[NacosClientHandle]  # the clients the schedule did not kill
    killed: set[str]


def run_storm(cf, topology, schedule: Schedule, cluster: Cluster, *, window_ms: int) -> Storm:
    """Run the schedule (every applied fault healed when it returns or raises), record it, and
    check that every client it did not kill still runs."""
    started = cf.history.elapsed_ms()
    runs = run_schedule(schedule, schedule_resolver(topology), cf.history, deadline_ms=window_ms + HEAL_SLACK_MS)
    healed_at = cf.history.elapsed_ms()
    applied = Counter(r.event.fault for r in runs if not r.skipped)
    cf.history.observe("chaos_runs", {"applied": dict(applied), "took_ms": round(healed_at - started),
                                      "runs": [{**r.event.to_data(), "applied_at_ms": r.applied_at_ms,
                                                "healed_at_ms": r.healed_at_ms} for r in runs]})
    killed = killed_targets(runs)
    live = [c for i, c in enumerate(cluster.clients) if f"client-{i}" not in killed]
    crashed = [c.name for c in live if not c.node.alive()]
    cf.check(not crashed, expected="every client the schedule did not kill is still running",
             actual={"died on their own": crashed, "killed by the schedule": sorted(killed)}, at_ms=healed_at)
    return Storm(runs, healed_at, applied, live, killed)


def expect_exact(cf, view: ClusterView, *, has_events: bool, bound: dict[str, Any], after_ms: float | None,
                 at_ms: float) -> list[Any]:
    """Membership, per-IP counts and (where the events can be seen) their balance, judged
    together: a failure names every one that broke (one broken check must not hide another, e.g.
    a registration race beside an events imbalance). Returns the results that were judged."""
    membership, ip_counts = check_membership(view), check_ip_counts(view)
    balance = check_event_balance(view) if has_events else None
    judged = [("membership", membership, {**membership.expected, "within_ms": bound},
               {**membership.actual, "converged_after_ms": after_ms},
               "a registration outlived its transport, or a live client is not registered where it says"),
              ("per-IP counts", ip_counts, ip_counts.expected, ip_counts.actual,
               "the per-client-IP counter drifted from the registrations")]
    if balance is not None:
        judged.append(("events balance", balance, balance.expected, balance.actual,
                       "a listener fired twice, or never, for some connection"))
    broken = [j for j in judged if not j[1].ok]
    if broken:
        # By name, for `connformance shrink`: a smaller schedule counts only if it fails alike.
        cf.history.meta(failed_checks=[name for name, *_ in broken])
        cf.fail(expected={name: expected for name, _, expected, _, _ in broken},
                actual={name: actual for name, _, _, actual, _ in broken}, at_ms=at_ms,
                hint="; ".join(hint for *_, hint in broken)
                + f"; shrink the schedule to a small replay: connformance shrink {cf.history.path}")
    return [result for _, result, *_ in judged]


def close_waits(servers: list[NacosServerHandle]) -> list[TcpEntry]:
    """CLOSE_WAIT sockets on a server port: the server side of main/gRPC/proxy ports, and the
    clients' side of the proxied gRPC ports (the peer under test's own sockets)."""
    local = {p for s in servers for p in (s.main_port, s.grpc_port, s.proxied_grpc_port)}
    remote = {s.proxied_grpc_port for s in servers}
    return [e for e in snapshot(local | remote) if e.state == "CLOSE_WAIT"
            and (e.local_port in local or (e.remote_port in remote and e.local_port not in local))]


def expect_no_close_wait(cf, servers: list[NacosServerHandle]) -> None:
    try:
        eventually(lambda: close_waits(servers), accept=lambda found: not found, timeout_ms=CLOSE_WAIT_GRACE_MS,
                   what="no CLOSE_WAIT on any server port", interval_ms=100)
    except WaitTimeout as exc:
        left = [f"{e.local_ip}:{e.local_port} <- {e.remote_ip}:{e.remote_port}" for e in exc.last or []]
        cf.history.observe("close_wait", left)
        cf.fail(expected=f"no CLOSE_WAIT on any server port within {CLOSE_WAIT_GRACE_MS} ms of convergence",
                actual={"CLOSE_WAIT": left}, hint="a side never closed after its peer did")
