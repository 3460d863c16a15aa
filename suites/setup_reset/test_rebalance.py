"""SR — rebalancing through the loader API: ``reloadCurrent(count)`` sheds a server's SDK
connections, ``smartReloadCluster`` spreads a cluster's clients after a restart (SPEC §5 SR-12,
SR-13; research/nacos-protocol.md §2.6 the over-limit eject pass, §3 ``reloadCurrent`` and
``smartReloadCluster``, §7 "no automatic rebalancing after a node restart").

Both work the 2.3+ way: the request is remembered (``loadCount``) and the next eject pass resets
the excess SDK connections with ``ConnectResetRequest`` (``smartReloadCluster`` with a redirect
to the least-loaded member). The server never closes them itself, so a connection is shed only
when its client acts on the reset: these cases grade the server and the client together. In
2.2.0-2.2.4 both calls answer and do nothing (alibaba/nacos#10761).

The servers run with a scaled-down eject interval (1 s). Each case proves its baseline first:
every client RUNNING through its proxy and registered where the case placed it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fixtures.case import case
from harness.scenarios.bounds import (
    CONTROL_ERRORS,
    CROWD_RUNNING_TIMEOUT_MS,
    REGISTER_TIMEOUT_MS,
    RESET_ANSWER_TIMEOUT_MS,
    SWITCH_SLACK_MS,
    TOLERANCE_MS,
)
from harness.scenarios.nacos import wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

EJECT_INTERVAL_MS = 1000  # scaled-down server knob (default 3000)
STABLE_MS = 300  # a registration count "settled" holds this long
EVEN_OUT_ANSWER_MS = 1000  # SR-13 preparation: resets unanswered by then count as never answered

SR12_CLIENTS = 4
SR12_KEEP = 1  # reloadCurrent(count=1): three of four connections must go

N_CLIENTS = 30  # SR-13, as the catalogue says
CONCURRENT_START_TIMEOUT_MS = 60_000  # readiness bound for each of the 30 clients started at once (a setup
# bound, not an expectation: 30 interpreters or JVMs, or containers, starting together on 2 cores)
LOADER_FACTOR = 0.1  # smartReloadCluster's default (RemoteUtils.LOADER_FACTOR)
MAX_ROUNDS = 10
STALL_ROUNDS = 2  # this many rounds in a row without a change: the cluster will not move further



# ---- helpers ----------------------------------------------------------------------------------

def _require(server_peer, client_peer, *, server: tuple[str, ...] = ("loader",)) -> None:
    """``loader``: the reload endpoints. The pushes log, where a server has one, adds how many
    resets were pushed and answered; without it the registrations alone are judged."""
    server_peer.require_capabilities(server)
    client_peer.require_capabilities(["reset"])


def _server_knobs(server_peer) -> dict[str, Any]:
    return {"eject_interval_ms": EJECT_INTERVAL_MS} if server_peer.supports("eject_interval_ms") else {}


def _switch_ms(client: NacosClientHandle) -> float:
    peer, knobs = client.peer, client.knobs
    return peer.timer("server_check_timeout_ms", knobs, default=3000) + peer.timer("setup_wait_ms", knobs, default=100)


def _sdk_ids(snapshot: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(cid for cid, conn in snapshot.items() if (conn.get("metaInfo") or {}).get("sdkSource"))


def _registrations(servers: list[NacosServerHandle]) -> dict[str, list[str]]:
    return {s.main_address: _sdk_ids(s.admin.current()) for s in servers}


def _counts(regs: dict[str, list[str]]) -> dict[str, int]:
    return {addr: len(ids) for addr, ids in regs.items()}


def _last_push_seq(server: NacosServerHandle) -> int:
    if not server.peer.has_capability("pushes"):
        return 0
    return max((p["seq"] for p in server.admin.pushes(0)), default=0)


def _resets_since(server: NacosServerHandle, since: int) -> list[dict[str, Any]]:
    """The resets pushed since ``since`` (the pushes log; [] for a server without one)."""
    if not server.peer.has_capability("pushes"):
        return []
    return [p for p in server.admin.pushes(since) if p.get("type") == "ConnectResetRequest"]


def _push_summary(pushes: list[dict[str, Any]]) -> dict[str, int]:
    return {"pushed": len(pushes), "answered": sum(1 for p in pushes if p.get("answered")),
            "pending": sum(1 for p in pushes if p.get("outcome") == "pending"),
            "unanswered": sum(1 for p in pushes if p.get("outcome") in ("timeout", "closed"))}


def _client_errors(clients: list[NacosClientHandle], since_wall_ms: float, limit: int = 2) -> list[str]:
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


def _all_running(cf, clients: list[NacosClientHandle], *, on: str | None = None) -> list[dict[str, Any]]:
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


def _shut_down_clients(clients: list[NacosClientHandle]) -> None:
    """Ask every client to shut down, all at once, without waiting for the exits: they stop in
    parallel while the case ends, and the topology's teardown (one by one, ~0.4 s each for a
    live agent) then only reaps them."""

    def shutdown(client: NacosClientHandle) -> None:
        if client.node.alive():
            client.control.shutdown()  # swallows an agent already gone

    with ThreadPoolExecutor(max_workers=min(len(clients), 32) or 1) as pool:
        list(pool.map(shutdown, clients))


def _wait_total(cf, servers: list[NacosServerHandle], total: int, *, timeout_ms: float, what: str) -> dict[str, list[str]]:
    """Exactly ``total`` SDK registrations across ``servers``, holding for STABLE_MS."""
    accept = lambda regs: sum(len(v) for v in regs.values()) == total  # noqa: E731
    probe = lambda: _registrations(servers)  # noqa: E731
    try:
        eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS, interval_ms=50)
        held, _, _ = holds_for(probe, duration_ms=STABLE_MS, what=what, accept=accept, interval_ms=50)
        if not held:
            eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=CONTROL_ERRORS, interval_ms=50)
    except WaitTimeout as exc:
        cf.fail(expected=f"{what}: {total} SDK registrations across the cluster",
                actual=_counts(exc.last) if isinstance(exc.last, dict) else exc.last)
    regs = _registrations(servers)
    cf.history.observe("distribution", {"what": what, "counts": _counts(regs)})
    return regs


# ---- SR-12 ------------------------------------------------------------------------------------

@case("SR-12", "SHOULD", timeout_s=90, subject="server")
def test_reload_current_sheds_to_count(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadCurrent(count)` sheds SDK connections down to `count` within one eject interval.

    Four clients of the peer under test, each with [A, B], are placed on A (B's proxy is down
    while they start). `reloadCurrent(1)` on A: the next eject pass resets three connections and
    their clients move to B. Band: one eject interval + the client's setup wait + 250 ms from the
    call to A holding one SDK connection. Late or partial → NON-STRICT; nothing shed → FAILED.
    """
    _require(nacos_server_peer, nacos_client_peer)
    knobs = _server_knobs(nacos_server_peer)
    a, b = topology.nacos_servers(2, peer=nacos_server_peer, knobs=knobs)
    interval = nacos_server_peer.timer("eject_interval_ms", knobs)

    with b.proxy.down():  # clients that try B first fail over to A
        clients = [topology.nacos_client(peer=nacos_client_peer, servers=[a, b]) for _ in range(SR12_CLIENTS)]
        _all_running(cf, clients, on=a.main_address)
    try:
        wait_registered(cf.history, a, count=SR12_CLIENTS, timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"{SR12_CLIENTS} connections registered on {a.main_address} (baseline)",
                actual=f"current holds {sorted(exc.last or {})}")
    shed_target = SR12_CLIENTS - SR12_KEEP
    setup_wait = clients[0].peer.timer("setup_wait_ms", clients[0].knobs, default=100)
    band_ms = interval + setup_wait + TOLERANCE_MS
    hard_ms = 3 * interval + RESET_ANSWER_TIMEOUT_MS + _switch_ms(clients[0]) + SWITCH_SLACK_MS

    since = _last_push_seq(a)
    since_wall = time.time() * 1000.0
    invoked = cf.history.invoke("harness", "reloadCurrent", {"server": a.main_address, "count": SR12_KEEP})
    started = now_ms()
    answer = a.admin.reload_current(SR12_KEEP)
    cf.history.ok("harness", "reloadCurrent", {"answer": answer})

    def probe() -> dict[str, Any]:
        sdk = _sdk_ids(a.admin.current())
        return {"sdk": len(sdk), **_push_summary(_resets_since(a, since))}

    def accept(v: dict[str, Any]) -> bool:  # shed, or every reset pushed and none will be answered
        return v["sdk"] <= SR12_KEEP or (v["pushed"] >= shed_target and v["pending"] == 0 and v["answered"] == 0)

    try:
        waited = eventually(probe, timeout_ms=hard_ms, what=f"{a.main_address} down to {SR12_KEEP}", accept=accept,
                            swallow=CONTROL_ERRORS, interval_ms=20)
        result, took = waited.value, waited.elapsed_ms
    except WaitTimeout as exc:
        result, took = (exc.last if isinstance(exc.last, dict) else probe()), now_ms() - started
    cf.history.observe("shed", {**result, "after_ms": round(took, 1)})
    shed = SR12_CLIENTS - result["sdk"]
    expected = (f"{a.main_address} down to {SR12_KEEP} SDK connection(s) within {band_ms:.0f} ms "
                f"(eject interval {interval} ms + setup wait + {TOLERANCE_MS} ms)")
    resets = (f"{result['pushed']} ConnectResetRequest(s) pushed, {result['answered']} answered"
              if a.peer.has_capability("pushes") else "resets not seen (no pushes log)")
    if shed <= 0:
        errors = _client_errors(clients, since_wall)
        cf.fail(expected=expected, actual=f"nothing shed: {result['sdk']} SDK connections after {took:.0f} ms; {resets}"
                + (f"; client errors: {errors}" if errors else ""),
                at_ms=invoked["t_ms"], verdict="FAILED",
                hint="the server resets the excess at its next eject pass; a client must act on the reset")
    if result["sdk"] > SR12_KEEP:
        cf.fail(expected=expected, actual=f"partly shed: {result['sdk']} SDK connections left after {took:.0f} ms "
                f"({shed} of {shed_target} moved); {resets}", at_ms=invoked["t_ms"])
    try:
        moved = wait_registered(cf.history, b, count=shed_target, timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the {shed_target} shed clients registered on {b.main_address} (their other server)",
                actual=f"{b.main_address} holds {sorted(exc.last or {})}", at_ms=invoked["t_ms"])
    final = len(_sdk_ids(a.admin.current()))
    cf.check(final == SR12_KEEP, expected=f"{a.main_address} keeps exactly {SR12_KEEP}",
             actual=f"{final} SDK connections", at_ms=invoked["t_ms"])
    if took > band_ms:
        cf.late(expected=expected, actual=f"down to {SR12_KEEP} after {took:.0f} ms; {resets}", at_ms=invoked["t_ms"])
    cf.ok(f"{a.main_address} {SR12_CLIENTS} -> {SR12_KEEP} SDK connections in {took:.0f} ms (band {band_ms:.0f} ms); "
          f"{resets}; {len(moved)} now on {b.main_address}", expected=expected,
          actual={"after_ms": round(took), "left": final, "moved": len(moved)})


# ---- SR-13 ------------------------------------------------------------------------------------

def _balanced(counts: dict[str, int], total: int, factor: float) -> bool:
    """max and min within (1 ± loaderFactor) of the average."""
    avg = total / len(counts)
    return max(counts.values()) <= avg * (1 + factor) and min(counts.values()) >= avg * (1 - factor)


def _reload_all(servers_by_id: dict[str, NacosServerHandle]) -> ThreadPoolExecutor:
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


def _even_out(cf, servers: list[NacosServerHandle], clients: list[NacosClientHandle]) -> str:
    """Start from an even spread (10/10/10): plain resets move a server's excess clients to the
    next server of their (common) list, so every client's rotation cursor stays on the server
    it is on, and the restart below sends the victim's clients to one neighbour, as Java's
    rotation does. A client that does not act on resets stays where it started."""
    target = N_CLIENTS // len(servers)
    switch_ms = _switch_ms(clients[0]) + SWITCH_SLACK_MS
    for round_no in range(1, len(servers) + 1):
        regs = _registrations(servers)
        excess = {cid: s for s in servers for cid in regs[s.main_address][target:]}
        if not excess:
            return f"spread {target}/{target}/{target} after {round_no - 1} round(s) of resets"
        since = {s.main_address: _last_push_seq(s) for s in servers}
        cf.history.invoke("harness", "even_out", {"round": round_no, "counts": _counts(regs), "resets": len(excess)})
        pool = _reload_all(excess)
        try:
            # Only a preparation: a client that has not answered within EVEN_OUT_ANSWER_MS is
            # taken as one that does not answer (the verdict comes from smartReloadCluster below).
            waited = eventually(lambda since=since: [p for s in servers
                                                     for p in _resets_since(s, since[s.main_address])],
                                timeout_ms=EVEN_OUT_ANSWER_MS, what="even-out resets answered",
                                accept=lambda ps, want=excess: len(ps) >= len(want) and all(p.get("answered") for p in ps),
                                swallow=CONTROL_ERRORS, interval_ms=20)
            pushes = waited.value
        except WaitTimeout as exc:
            pushes = exc.last if isinstance(exc.last, list) else []
        finally:
            pool.shutdown(wait=False)  # unanswered reloadClient calls end by themselves after 3 s
        summary = _push_summary(pushes)
        cf.history.ok("harness", "even_out", {"round": round_no, **summary})
        if summary["answered"] == 0:
            return (f"left as started {_counts(regs)}: {summary['pushed']} reset(s) to even it out, none answered "
                    f"within {EVEN_OUT_ANSWER_MS} ms")
        answered = {p["connectionId"] for p in pushes if p.get("answered")}
        try:
            eventually(lambda: _registrations(servers), timeout_ms=switch_ms, what="reset clients moved",
                       accept=lambda r, gone=answered: not gone & {c for ids in r.values() for c in ids}
                       and sum(len(v) for v in r.values()) == N_CLIENTS, swallow=CONTROL_ERRORS, interval_ms=50)
        except WaitTimeout as exc:
            last = exc.last if isinstance(exc.last, dict) else {}
            return f"left at {_counts(last)}: reset clients did not move within {switch_ms:.0f} ms"
    return f"left at {_counts(_registrations(servers))} after {len(servers)} rounds of resets"


def _wait_round(servers: list[NacosServerHandle], since: dict[str, int], interval: float,
                switch_ms: float) -> dict[str, Any]:
    """After one smartReloadCluster: wait for the eject pass it arms and for its resets to play
    out (every reset resolved, every answered one's connection gone, all clients registered);
    or, when no reset comes, two eject intervals."""
    started = now_ms()

    def probe() -> dict[str, Any]:
        regs = _registrations(servers)
        pushes = [p for s in servers for p in _resets_since(s, since[s.main_address])]
        live = {c for ids in regs.values() for c in ids}
        return {"regs": regs, "pushes": pushes, "live": live}

    def accept(v: dict[str, Any]) -> bool:
        total = sum(len(ids) for ids in v["regs"].values())
        pushes = v["pushes"]
        if not pushes:
            return now_ms() - started >= 2 * interval + TOLERANCE_MS and total == N_CLIENTS
        resolved = all(p.get("outcome") != "pending" for p in pushes)
        gone = all(p["connectionId"] not in v["live"] for p in pushes if p.get("answered"))
        return resolved and gone and total == N_CLIENTS

    limit = 2 * interval + RESET_ANSWER_TIMEOUT_MS + switch_ms + SWITCH_SLACK_MS
    try:
        value = eventually(probe, timeout_ms=limit, what="the reload round to play out", accept=accept,
                           swallow=CONTROL_ERRORS, interval_ms=50).value
        settled = True
    except WaitTimeout as exc:
        value = exc.last if isinstance(exc.last, dict) else probe()
        settled = False
    return {"counts": _counts(value["regs"]), "settled": settled, **_push_summary(value["pushes"]),
            "ms": round(now_ms() - started)}


@case("SR-13", "SHOULD", timeout_s=240, subject="both")
def test_smart_reload_rebalances_after_restart(cf, topology, nacos_server_peer, nacos_client_peer):
    """3 servers, 30 clients; restart one server; after its return `smartReloadCluster` (repeated ≤ 10×) brings max/min connections per server within `1 + loaderFactor` of the average.

    Read as max ≤ avg·(1 + f) and min ≥ avg·(1 − f), f = 0.1 (the default), avg = 10. The 30
    clients (all [A, B, C]) start concurrently and are evened out to 10/10/10 with plain resets;
    C restarts and its clients rotate to A (20/10/0); then smartReloadCluster is called, each
    call followed by the eject pass it arms and the resets it causes, until balanced, 10 calls,
    or two calls in a row that change nothing. Balanced → OK; improved → NON-STRICT; no client
    ever moved → FAILED.
    """
    _require(nacos_server_peer, nacos_client_peer)
    nacos_server_peer.require_capabilities(["cluster"])
    knobs = _server_knobs(nacos_server_peer)
    servers = topology.nacos_servers(3, peer=nacos_server_peer, knobs=knobs)
    interval = nacos_server_peer.timer("eject_interval_ms", knobs)

    t0 = now_ms()
    with ThreadPoolExecutor(max_workers=N_CLIENTS) as pool:
        clients = list(pool.map(lambda _: topology.nacos_client(peer=nacos_client_peer, servers=servers,
                                                                start_timeout_ms=CONCURRENT_START_TIMEOUT_MS),
                                range(N_CLIENTS)))
    try:
        _all_running(cf, clients)
        start_ms = now_ms() - t0
        cf.history.note(f"{N_CLIENTS} clients started concurrently and RUNNING in {start_ms:.0f} ms")
        _wait_total(cf, servers, N_CLIENTS, timeout_ms=REGISTER_TIMEOUT_MS, what="baseline")
        spread = _even_out(cf, servers, clients)
        cf.history.note(f"even out: {spread}")
        switch_ms = _switch_ms(clients[0])

        victim = servers[-1]
        cf.history.fault("restart", server=victim.main_address)
        victim.node.restart()
        cf.history.healed("restart", server=victim.main_address)
        regs = _wait_total(cf, servers, N_CLIENTS, timeout_ms=CROWD_RUNNING_TIMEOUT_MS,
                           what=f"every client registered again after {victim.main_address} restarted")
        trace = [_counts(regs)]
        rounds: list[dict[str, Any]] = []
        moved_ever = False
        unchanged = 0
        reload_wall = time.time() * 1000.0
        while not _balanced(trace[-1], N_CLIENTS, LOADER_FACTOR) and len(rounds) < MAX_ROUNDS:
            since = {s.main_address: _last_push_seq(s) for s in servers}
            cf.history.invoke("harness", "smartReloadCluster", {"round": len(rounds) + 1, "loaderFactor": LOADER_FACTOR})
            answer = servers[0].admin.smart_reload_cluster(LOADER_FACTOR)
            outcome = _wait_round(servers, since, interval, switch_ms)
            cf.history.ok("harness", "smartReloadCluster", {"round": len(rounds) + 1, "answer": answer, **outcome})
            rounds.append({"answer": answer, **outcome})
            changed = outcome["counts"] != trace[-1]
            trace.append(outcome["counts"])
            moved_ever = moved_ever or changed
            if outcome["pushed"] and not outcome["answered"] and not moved_ever:
                break  # resets went out and none was answered: nothing will ever move
            unchanged = 0 if changed else unchanged + 1
            if unchanged >= STALL_ROUNDS:
                break
        errors = _client_errors(clients, reload_wall) if not moved_ever else []
    finally:
        _shut_down_clients(clients)

    final = trace[-1]
    avg = N_CLIENTS / len(servers)
    expected = (f"within {MAX_ROUNDS} smartReloadCluster calls: max ≤ "
                f"{avg * (1 + LOADER_FACTOR):g} and min ≥ {avg * (1 - LOADER_FACTOR):g} connections per server "
                f"(avg {avg:g}, loaderFactor {LOADER_FACTOR})")
    calls = [(r["answer"], r["counts"], f"{r['answered']}/{r['pushed']} resets answered") for r in rounds]
    story = (f"{N_CLIENTS} clients RUNNING in {start_ms:.0f} ms; {spread}; after the restart {trace[0]}; "
             f"calls: {calls}")
    if _balanced(final, N_CLIENTS, LOADER_FACTOR):
        cf.ok(f"balanced after {len(rounds)} call(s): {story}", expected=expected, actual=final)
        return
    if not moved_ever:
        pushed = sum(r["pushed"] for r in rounds)
        answered = sum(r["answered"] for r in rounds)
        cf.fail(expected=expected, actual=f"no client ever moved ({pushed} resets pushed, {answered} answered): {story}"
                + (f"; client errors: {errors}" if errors else ""),
                verdict="FAILED", hint="smartReloadCluster works through ConnectResetRequest with a redirect: "
                "the server must push them, the clients must follow them")
    cf.fail(expected=expected, actual=f"not balanced after {len(rounds)} call(s), ended at {final}: {story}")
