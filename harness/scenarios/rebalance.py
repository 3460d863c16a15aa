"""Rebalancing through the loader API (SR-12, SR-13): who is registered where (SDK connections
only), the resets a server pushed (its pushes log, where it has one), clients placed and waited
for as a crowd, and the rounds of resets that even a cluster out or a ``smartReloadCluster``
arms."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness.peers import PeerManifest
from harness.scenarios.bounds import (
    CONTROL_ERRORS,
    CROWD_RUNNING_TIMEOUT_MS,
    REGISTER_TIMEOUT_MS,
    RESET_ANSWER_TIMEOUT_MS,
    TOLERANCE_MS,
)
from harness.scenarios.nacos import last_push_seq, wait_registered
from harness.scenarios.reset import switch_bound_ms
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

EJECT_INTERVAL_MS = 1000  # scaled-down server knob (default 3000)
STABLE_MS = 300  # a registration count "settled" holds this long
EVEN_OUT_ANSWER_MS = 1000  # SR-13 preparation: resets unanswered by then count as never answered


def require_rebalance(server_peer, client_peer, *, server: tuple[str, ...] = ("loader",)) -> None:
    """``loader``: the reload endpoints. The pushes log, where a server has one, adds how many
    resets were pushed and answered; without it the registrations alone are judged."""
    server_peer.require_capabilities(server)
    client_peer.require_capabilities(["reset"])


def scaled_eject_knobs(server_peer) -> dict[str, Any]:
    return {"eject_interval_ms": EJECT_INTERVAL_MS} if server_peer.supports("eject_interval_ms") else {}


def sdk_ids(snapshot: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(cid for cid, conn in snapshot.items() if (conn.get("metaInfo") or {}).get("sdkSource"))


def registrations(servers: list[NacosServerHandle]) -> dict[str, list[str]]:
    return {s.main_address: sdk_ids(s.admin.current()) for s in servers}


def counts_of(regs: dict[str, list[str]]) -> dict[str, int]:
    return {addr: len(ids) for addr, ids in regs.items()}




def resets_since(server: NacosServerHandle, since: int) -> list[dict[str, Any]]:
    """The resets pushed since ``since`` (the pushes log; [] for a server without one)."""
    if not server.peer.has_capability("pushes"):
        return []
    return [p for p in server.admin.pushes(since) if p.get("type") == "ConnectResetRequest"]


def push_summary(pushes: list[dict[str, Any]]) -> dict[str, int]:
    return {"pushed": len(pushes), "answered": sum(1 for p in pushes if p.get("answered")),
            "pending": sum(1 for p in pushes if p.get("outcome") == "pending"),
            "unanswered": sum(1 for p in pushes if p.get("outcome") in ("timeout", "closed"))}


def client_errors(clients: list[NacosClientHandle], since_wall_ms: float, limit: int = 2) -> list[str]:
    """Distinct error messages the clients' agents recorded since ``since_wall_ms``."""
    seen: list[str] = []
    for client in clients:
        try:
            events = client.control.state().get("events") or []
        except CONTROL_ERRORS:
            continue
        for event in events:
            if event.get("kind") != "error" or event.get("t_ms", 0) < since_wall_ms:
                continue
            detail = event.get("detail") or {}
            text = str(detail.get("message") or detail.get("what") or detail)
            text = text.split("] ", 1)[-1] if text.startswith("[") else text  # drop a per-connection prefix
            if text not in seen:
                seen.append(text)
        if len(seen) >= limit:
            break
    return seen[:limit]


def all_running(cf, clients: list[NacosClientHandle], *, on: str | None = None) -> list[dict[str, Any]]:
    """Every client RUNNING (on ``on`` if given), waited for concurrently; FAILED baseline otherwise."""

    def wait(client: NacosClientHandle) -> dict[str, Any] | WaitTimeout:
        try:
            return eventually(client.control.state, timeout_ms=CROWD_RUNNING_TIMEOUT_MS, what=f"{client.name} RUNNING",
                              accept=lambda s: s.get("status") == "RUNNING" and (on is None or s.get("server") == on),
                              swallow=CONTROL_ERRORS, interval_ms=50).value
        except WaitTimeout as exc:
            return exc

    cf.history.invoke("harness", "wait_all_running", {"clients": len(clients), "on": on})
    with ThreadPoolExecutor(max_workers=min(len(clients), 32)) as pool:
        states = list(pool.map(wait, clients))
    late = [(i, s.last) for i, s in enumerate(states) if isinstance(s, WaitTimeout)]
    if late:
        cf.history.fail("harness", "wait_all_running", {"not_running": len(late)})
        cf.fail(expected=f"all {len(clients)} clients RUNNING{' on ' + on if on else ''} within "
                         f"{CROWD_RUNNING_TIMEOUT_MS} ms (baseline)",
                actual=f"{len(late)} not: {[(i, (last or {}).get('status'), (last or {}).get('server')) for i, last in late[:5]]}")
    cf.history.ok("harness", "wait_all_running", {"clients": len(clients)})
    return states  # type: ignore[return-value]


def shut_down_clients(clients: list[NacosClientHandle]) -> None:
    """Ask every client to shut down, all at once, without waiting for the exits: they stop in
    parallel while the case ends, and the topology's teardown (one by one, ~0.4 s each for a
    live agent) then only reaps them."""

    def shutdown(client: NacosClientHandle) -> None:
        if client.node.alive():
            client.control.shutdown()  # swallows an agent already gone

    with ThreadPoolExecutor(max_workers=min(len(clients), 32) or 1) as pool:
        list(pool.map(shutdown, clients))


def wait_total(cf, servers: list[NacosServerHandle], total: int, *, timeout_ms: float, what: str) -> dict[str, list[str]]:
    """Exactly ``total`` SDK registrations across ``servers``, holding for STABLE_MS."""
    accept = lambda regs: sum(len(v) for v in regs.values()) == total  # noqa: E731
    probe = lambda: registrations(servers)  # noqa: E731
    try:
        eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS, interval_ms=50)
        held, _, _ = holds_for(probe, duration_ms=STABLE_MS, what=what, accept=accept, interval_ms=50)
        if not held:
            eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS, interval_ms=50)
    except WaitTimeout as exc:
        cf.fail(expected=f"{what}: {total} SDK registrations across the cluster",
                actual=counts_of(exc.last) if isinstance(exc.last, dict) else exc.last)
    regs = registrations(servers)
    cf.history.observe("distribution", {"what": what, "counts": counts_of(regs)})
    return regs


def balanced(counts: dict[str, int], total: int, factor: float) -> bool:
    """max and min within (1 ± loaderFactor) of the average."""
    avg = total / len(counts)
    return max(counts.values()) <= avg * (1 + factor) and min(counts.values()) >= avg * (1 - factor)


def reload_all(servers_by_id: dict[str, NacosServerHandle]) -> ThreadPoolExecutor:
    """Fire ``reloadClient`` (no redirect) for each id at once, each on its own HTTP session;
    the caller watches the pushes log and shuts the pool down."""

    def reload(item: tuple[str, NacosServerHandle]) -> str:
        cid, server = item
        admin = server.new_admin()
        try:
            return admin.reload_client(cid)
        finally:
            admin.close()

    pool = ThreadPoolExecutor(max_workers=min(len(servers_by_id), 16) or 1)
    for item in servers_by_id.items():
        pool.submit(reload, item)
    return pool


def even_out(cf, servers: list[NacosServerHandle], clients: list[NacosClientHandle]) -> str:
    """Start from an even spread (10/10/10): plain resets move a server's excess clients to the
    next server of their (common) list, so every client's rotation cursor stays on the server
    it is on, and the restart below sends the victim's clients to one neighbour, as Java's
    rotation does. A client that does not act on resets stays where it started."""
    target = len(clients) // len(servers)
    switch_ms = switch_bound_ms(clients[0])
    for round_no in range(1, len(servers) + 1):
        regs = registrations(servers)
        excess = {cid: s for s in servers for cid in regs[s.main_address][target:]}
        if not excess:
            return f"spread {target}/{target}/{target} after {round_no - 1} round(s) of resets"
        since = {s.main_address: last_push_seq(s) for s in servers}
        cf.history.invoke("harness", "even_out", {"round": round_no, "counts": counts_of(regs), "resets": len(excess)})
        pool = reload_all(excess)
        try:
            # Only a preparation: a client that has not answered within EVEN_OUT_ANSWER_MS is
            # taken as one that does not answer (the verdict comes from smartReloadCluster below).
            waited = eventually(lambda since=since: [p for s in servers
                                                     for p in resets_since(s, since[s.main_address])],
                                timeout_ms=EVEN_OUT_ANSWER_MS, what="even-out resets answered",
                                accept=lambda ps, want=excess: len(ps) >= len(want) and all(p.get("answered") for p in ps),
                                swallow=CONTROL_ERRORS, interval_ms=20)
            pushes = waited.value
        except WaitTimeout as exc:
            pushes = exc.last if isinstance(exc.last, list) else []
        finally:
            pool.shutdown(wait=False)  # unanswered reloadClient calls end by themselves after 3 s
        summary = push_summary(pushes)
        cf.history.ok("harness", "even_out", {"round": round_no, **summary})
        if summary["answered"] == 0:
            return (f"left as started {counts_of(regs)}: {summary['pushed']} reset(s) to even it out, none answered "
                    f"within {EVEN_OUT_ANSWER_MS} ms")
        answered = {p["connectionId"] for p in pushes if p.get("answered")}
        try:
            eventually(lambda: registrations(servers), timeout_ms=switch_ms, what="reset clients moved",
                       accept=lambda r, gone=answered: not gone & {c for ids in r.values() for c in ids}
                       and sum(len(v) for v in r.values()) == len(clients), swallow=CONTROL_ERRORS, interval_ms=50)
        except WaitTimeout as exc:
            last = exc.last if isinstance(exc.last, dict) else {}
            return f"left at {counts_of(last)}: reset clients did not move within {switch_ms:.0f} ms"
    return f"left at {counts_of(registrations(servers))} after {len(servers)} rounds of resets"


def wait_round(servers: list[NacosServerHandle], since: dict[str, int], interval: float,
                switch_ms: float, total_clients: int) -> dict[str, Any]:
    """After one smartReloadCluster: wait for the eject pass it arms and for its resets to play
    out (every reset resolved, every answered one's connection gone, all clients registered);
    or, when no reset comes, two eject intervals."""
    started = now_ms()

    def probe() -> dict[str, Any]:
        regs = registrations(servers)
        pushes = [p for s in servers for p in resets_since(s, since[s.main_address])]
        live = {c for ids in regs.values() for c in ids}
        return {"regs": regs, "pushes": pushes, "live": live}

    def accept(v: dict[str, Any]) -> bool:
        total = sum(len(ids) for ids in v["regs"].values())
        pushes = v["pushes"]
        if not pushes:
            return now_ms() - started >= 2 * interval + TOLERANCE_MS and total == total_clients
        resolved = all(p.get("outcome") != "pending" for p in pushes)
        gone = all(p["connectionId"] not in v["live"] for p in pushes if p.get("answered"))
        return resolved and gone and total == total_clients

    limit = 2 * interval + RESET_ANSWER_TIMEOUT_MS + switch_ms
    try:
        value = eventually(probe, timeout_ms=limit, what="the reload round to play out", accept=accept,
                           swallow=CONTROL_ERRORS, interval_ms=50).value
        settled = True
    except WaitTimeout as exc:
        value = exc.last if isinstance(exc.last, dict) else probe()
        settled = False
    return {"counts": counts_of(value["regs"]), "settled": settled, **push_summary(value["pushes"]),
            "ms": round(now_ms() - started)}


# ---- SR-12: reloadCurrent --------------------------------------------------------------------

@dataclass
class Shed:
    """What one ``reloadCurrent(keep)`` did: the SDK connections left and the resets pushed
    (``sdk``, ``pushed``, ``answered``, ...), after ``took_ms``, the call's history time."""

    result: dict[str, Any]
    took_ms: float
    at_ms: float
    since_wall_ms: float


def reload_current_and_watch(cf, server: NacosServerHandle, *, keep: int, shed: int, timeout_ms: float) -> Shed:
    """Call ``reloadCurrent(keep)`` and watch until ``server`` holds ``keep`` SDK connections or
    every one of the ``shed`` resets was pushed and none will be answered (bounded)."""
    since = last_push_seq(server)
    since_wall = time.time() * 1000.0
    invoked = cf.history.invoke("harness", "reloadCurrent", {"server": server.main_address, "count": keep})
    started = now_ms()
    answer = server.admin.reload_current(keep)
    cf.history.ok("harness", "reloadCurrent", {"answer": answer})

    def probe() -> dict[str, Any]:
        return {"sdk": len(sdk_ids(server.admin.current())), **push_summary(resets_since(server, since))}

    def accept(v: dict[str, Any]) -> bool:
        return v["sdk"] <= keep or (v["pushed"] >= shed and v["pending"] == 0 and v["answered"] == 0)

    try:
        waited = eventually(probe, timeout_ms=timeout_ms, what=f"{server.main_address} down to {keep}", accept=accept,
                            swallow=CONTROL_ERRORS, interval_ms=20)
        result, took = waited.value, waited.elapsed_ms
    except WaitTimeout as exc:
        result, took = (exc.last if isinstance(exc.last, dict) else probe()), now_ms() - started
    cf.history.observe("shed", {**result, "after_ms": round(took, 1)})
    return Shed(result, took, invoked["t_ms"], since_wall)


def clients_placed_on(cf, topology, client_peer: PeerManifest, a: NacosServerHandle, b: NacosServerHandle, *,
                      n: int) -> list[NacosClientHandle]:
    """``n`` clients listing [A, B], all placed on A (B's proxy is down while they start: those
    that try B first fail over to A), RUNNING and registered there (the baseline)."""
    with b.proxy.down():
        clients = [topology.nacos_client(peer=client_peer, servers=[a, b]) for _ in range(n)]
        all_running(cf, clients, on=a.main_address)
    try:
        wait_registered(cf.history, a, count=n, timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.baseline(False, expected=f"{n} connections registered on {a.main_address}",
                    actual=f"current holds {sorted(exc.last or {})}")
    return clients


def judge_shed(cf, a: NacosServerHandle, b: NacosServerHandle, clients: list[NacosClientHandle], seen: Shed, *,
               keep: int, band_ms: float, interval_ms: float) -> None:
    """FAILED when nothing was shed; graded as the case's level when partly shed, when the shed
    clients are not registered on B or A does not keep exactly ``keep``; NON-STRICT past ``band_ms``."""
    result, took, at = seen.result, seen.took_ms, seen.at_ms
    shed = len(clients) - result["sdk"]
    expected = (f"{a.main_address} down to {keep} SDK connection(s) within {band_ms:.0f} ms "
                f"(eject interval {interval_ms} ms + setup wait + {TOLERANCE_MS} ms)")
    resets = (f"{result['pushed']} ConnectResetRequest(s) pushed, {result['answered']} answered"
              if a.peer.has_capability("pushes") else "resets not seen (no pushes log)")
    if shed <= 0:
        errors = client_errors(clients, seen.since_wall_ms)
        cf.fail(expected=expected, actual=f"nothing shed: {result['sdk']} SDK connections after {took:.0f} ms; {resets}"
                + (f"; client errors: {errors}" if errors else ""),
                at_ms=at, verdict="FAILED",
                hint="the server resets the excess at its next eject pass; a client must act on the reset")
    if result["sdk"] > keep:
        cf.fail(expected=expected, actual=f"partly shed: {result['sdk']} SDK connections left after {took:.0f} ms "
                f"({shed} of {len(clients) - keep} moved); {resets}", at_ms=at)
    try:
        moved = wait_registered(cf.history, b, count=len(clients) - keep, timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the {len(clients) - keep} shed clients registered on {b.main_address} (their other server)",
                actual=f"{b.main_address} holds {sorted(exc.last or {})}", at_ms=at)
    final = len(sdk_ids(a.admin.current()))
    cf.check(final == keep, expected=f"{a.main_address} keeps exactly {keep}",
             actual=f"{final} SDK connections", at_ms=at)
    if took > band_ms:
        cf.late(expected=expected, actual=f"down to {keep} after {took:.0f} ms; {resets}", at_ms=at)
    cf.ok(f"{a.main_address} {len(clients)} -> {keep} SDK connections in {took:.0f} ms (band {band_ms:.0f} ms); "
          f"{resets}; {len(moved)} now on {b.main_address}", expected=expected,
          actual={"after_ms": round(took), "left": final, "moved": len(moved)})


# ---- SR-13: smartReloadCluster rounds --------------------------------------------------------

@dataclass
class Rounds:
    """The counts per server before the first call and after each (``trace``), each call's
    outcome (``rounds``) and whether any client ever moved."""

    trace: list[dict[str, int]]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    moved_ever: bool = False


def smart_reload_rounds(cf, servers: list[NacosServerHandle], start: dict[str, int], *, interval: float,
                        switch_ms: float, total: int, factor: float, max_rounds: int, stall_rounds: int) -> Rounds:
    """Call ``smartReloadCluster(factor)`` and play out the eject pass it arms, until balanced,
    ``max_rounds`` calls, ``stall_rounds`` calls in a row that change nothing, or resets that
    went out and were never answered (nothing will ever move)."""
    seen = Rounds([start])
    unchanged = 0
    while not balanced(seen.trace[-1], total, factor) and len(seen.rounds) < max_rounds:
        since = {s.main_address: last_push_seq(s) for s in servers}
        cf.history.invoke("harness", "smartReloadCluster", {"round": len(seen.rounds) + 1, "loaderFactor": factor})
        answer = servers[0].admin.smart_reload_cluster(factor)
        outcome = wait_round(servers, since, interval, switch_ms, total)
        cf.history.ok("harness", "smartReloadCluster", {"round": len(seen.rounds) + 1, "answer": answer, **outcome})
        seen.rounds.append({"answer": answer, **outcome})
        changed = outcome["counts"] != seen.trace[-1]
        seen.trace.append(outcome["counts"])
        seen.moved_ever = seen.moved_ever or changed
        if outcome["pushed"] and not outcome["answered"] and not seen.moved_ever:
            break
        unchanged = 0 if changed else unchanged + 1
        if unchanged >= stall_rounds:
            break
    return seen
