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

from fixtures.case import case
from harness.protocol.nacos import codec
from harness.scenarios.bounds import (
    CROWD_RUNNING_TIMEOUT_MS,
    REGISTER_TIMEOUT_MS,
    RESET_ANSWER_TIMEOUT_MS,
    TOLERANCE_MS,
)
from harness.scenarios.rebalance import (
    all_running,
    balanced,
    client_errors,
    clients_placed_on,
    counts_of,
    even_out,
    judge_shed,
    reload_current_and_watch,
    require_rebalance,
    scaled_eject_knobs,
    shut_down_clients,
    smart_reload_rounds,
    wait_total,
)
from harness.scenarios.reset import switch_bound_ms
from harness.wait import now_ms

SR12_CLIENTS = 4
SR12_KEEP = 1  # reloadCurrent(count=1): three of four connections must go

N_CLIENTS = 30  # SR-13, as the catalogue says
CONCURRENT_START_TIMEOUT_MS = 60_000  # readiness bound for each of the 30 clients started at once (a setup
# bound, not an expectation: 30 interpreters or JVMs, or containers, starting together on 2 cores)
LOADER_FACTOR = codec.LOADER_FACTOR
MAX_ROUNDS = 10
STALL_ROUNDS = 2  # this many rounds in a row without a change: the cluster will not move further


@case("SR-12", "SHOULD", timeout_s=90, subject="server")
def test_reload_current_sheds_to_count(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadCurrent(count)` sheds SDK connections down to `count` within one eject interval.

    Four clients of the peer under test, each with [A, B], are placed on A (B's proxy is down
    while they start). `reloadCurrent(1)` on A: the next eject pass resets three connections and
    their clients move to B. Band: one eject interval + the client's setup wait + 250 ms from the
    call to A holding one SDK connection. Late or partial → NON-STRICT; nothing shed → FAILED.
    """
    require_rebalance(nacos_server_peer, nacos_client_peer)
    knobs = scaled_eject_knobs(nacos_server_peer)
    a, b = topology.nacos_servers(2, peer=nacos_server_peer, knobs=knobs)
    interval = nacos_server_peer.timer("eject_interval_ms", knobs)

    clients = clients_placed_on(cf, topology, nacos_client_peer, a, b, n=SR12_CLIENTS)
    shed_target = SR12_CLIENTS - SR12_KEEP
    setup_wait = clients[0].peer.timer("setup_wait_ms", clients[0].knobs, default=100)
    band_ms = interval + setup_wait + TOLERANCE_MS
    hard_ms = 3 * interval + RESET_ANSWER_TIMEOUT_MS + switch_bound_ms(clients[0])

    seen = reload_current_and_watch(cf, a, keep=SR12_KEEP, shed=shed_target, timeout_ms=hard_ms)
    judge_shed(cf, a, b, clients, seen, keep=SR12_KEEP, band_ms=band_ms, interval_ms=interval)


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
    require_rebalance(nacos_server_peer, nacos_client_peer)
    nacos_server_peer.require_capabilities(["cluster"])
    knobs = scaled_eject_knobs(nacos_server_peer)
    servers = topology.nacos_servers(3, peer=nacos_server_peer, knobs=knobs)
    interval = nacos_server_peer.timer("eject_interval_ms", knobs)

    t0 = now_ms()
    with ThreadPoolExecutor(max_workers=N_CLIENTS) as pool:
        clients = list(pool.map(lambda _: topology.nacos_client(peer=nacos_client_peer, servers=servers,
                                                                start_timeout_ms=CONCURRENT_START_TIMEOUT_MS),
                                range(N_CLIENTS)))
    try:
        all_running(cf, clients)
        start_ms = now_ms() - t0
        cf.history.note(f"{N_CLIENTS} clients started concurrently and RUNNING in {start_ms:.0f} ms")
        wait_total(cf, servers, N_CLIENTS, timeout_ms=REGISTER_TIMEOUT_MS, what="baseline")
        spread = even_out(cf, servers, clients)
        cf.history.note(f"even out: {spread}")
        switch_ms = switch_bound_ms(clients[0])

        victim = servers[-1]
        cf.history.fault("restart", server=victim.main_address)
        victim.node.restart()
        cf.history.healed("restart", server=victim.main_address)
        regs = wait_total(cf, servers, N_CLIENTS, timeout_ms=CROWD_RUNNING_TIMEOUT_MS,
                           what=f"every client registered again after {victim.main_address} restarted")
        reload_wall = time.time() * 1000.0
        seen = smart_reload_rounds(cf, servers, counts_of(regs), interval=interval, switch_ms=switch_ms,
                                   total=N_CLIENTS, factor=LOADER_FACTOR, max_rounds=MAX_ROUNDS,
                                   stall_rounds=STALL_ROUNDS)
        trace, rounds, moved_ever = seen.trace, seen.rounds, seen.moved_ever
        errors = client_errors(clients, reload_wall) if not moved_ever else []
    finally:
        shut_down_clients(clients)

    final = trace[-1]
    avg = N_CLIENTS / len(servers)
    expected = (f"within {MAX_ROUNDS} smartReloadCluster calls: max ≤ "
                f"{avg * (1 + LOADER_FACTOR):g} and min ≥ {avg * (1 - LOADER_FACTOR):g} connections per server "
                f"(avg {avg:g}, loaderFactor {LOADER_FACTOR})")
    calls = [(r["answer"], r["counts"], f"{r['answered']}/{r['pushed']} resets answered") for r in rounds]
    story = (f"{N_CLIENTS} clients RUNNING in {start_ms:.0f} ms; {spread}; after the restart {trace[0]}; "
             f"calls: {calls}")
    if balanced(final, N_CLIENTS, LOADER_FACTOR):
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
