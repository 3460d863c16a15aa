"""SR — the server-driven reset: ``reloadClient`` with and without a redirect, a reset that races
the client's start or switch, and the application's requests across a reset (SPEC §5 SR-06,
SR-07, SR-08, SR-14, SR-15; research/nacos-protocol.md §2.4 ``loadSingle``, §4.4–§4.5 the Java
client, §5.1 nacos-sdk-python).

Semantics of record are the Java 2.2.4 client's: a ConnectResetRequest is always answered with
its own requestId and acted on only while RUNNING; without an address the client moves to the
next server of its own list; with one it goes there if that IP is in its list, else it drops the
recommendation and rotates. The server never closes the connection it reset: the old id leaves
``current`` when the client closes its transport.

Every case proves its baseline first (the client RUNNING through its proxy and registered on the
server it names), then reads the server's ``pushes`` log for what was pushed and how it was
answered, the servers' ``current`` for registrations, and the agent's events for what the client
did. A client that never answers a reset is FAILED on the spot, with what it did instead.
"""

from __future__ import annotations

import time
from typing import Any

from fixtures.case import case
from harness.scenarios.bounds import (
    REGISTER_TIMEOUT_MS,
    RUNNING_TIMEOUT_MS,
)
from harness.scenarios.nacos import client_state, wait_registered
from harness.scenarios.reset import (
    MAX_FAILED_REQUESTS,
    REQUESTS_AFTER_SWITCH,
    START_WINDOW_MS,
    RegistrationSampler,
    ResetOnRegister,
    agent_events,
    check_answered,
    check_old_leaves,
    check_push,
    check_window,
    max_in_flight,
    next_in_list,
    push_reset,
    request_once,
    require_reset_support,
    reset_baseline,
    saw_301,
    settled_on_one,
    switch_bound_ms,
    switched,
    wait_switch,
)
from harness.scenarios.steps import running
from harness.wait import WaitTimeout, now_ms


@case("SR-06", "MUST", timeout_s=60, subject="both", interop=True)
def test_reload_client_moves_to_next_server(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadClient(id)` → the client gets ConnectResetRequest (`module` internal, `requestId` set), answers ConnectResetResponse with the same requestId, and moves to the next server in its list; the old id leaves `current` once its transport closes."""
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset",))
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = reset_baseline(cf, client, servers)
    expected_next = next_in_list(client, origin.main_address)

    r = push_reset(cf.history, origin, old_id)
    check_push(cf, r)
    state = switched(cf, client, r, then=f"a switch to {expected_next}, the next server in its list")
    cf.check(state.get("server") == expected_next,
             expected=f"reconnects to {expected_next}, the next server after {origin.main_address} in its list "
                      f"{client.servers}", actual=f"reconnected to {state.get('server')}", at_ms=r.t_ms)
    by_address = {s.main_address: s for s in servers}
    try:
        wait_registered(cf.history, by_address[expected_next], connection_id=state["connection_id"],
                        timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the new connection {state['connection_id']} registered on {expected_next}",
                actual=f"current holds {sorted(exc.last or {})}", at_ms=r.t_ms)
    left = check_old_leaves(cf, client, r, state)
    cf.ok(f"reset answered ({r.witness}); {origin.main_address} -> {expected_next} "
          f"as {state['connection_id']}; {left}",
          expected=f"answered; next server {expected_next}; old id unregistered",
          actual={"requestId": r.request_id, "server": state.get("server")})


@case("SR-07", "MUST", timeout_s=60, subject="both", interop=True)
def test_reload_client_redirect_in_list(cf, topology, nacos_server_peer, nacos_client_peer):
    """`reloadClient(id, redirectAddress)` with an address in the client's list → the client reconnects to exactly that server."""
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset", "redirect"))
    servers = topology.nacos_servers(3, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = reset_baseline(cf, client, servers)
    rotation = next_in_list(client, origin.main_address)
    # Not where it is, and not where plain rotation would take it: only the redirect leads there.
    target = next(s for s in servers if s.main_address not in (origin.main_address, rotation))

    r = push_reset(cf.history, origin, old_id, target.main_address)
    check_push(cf, r, server_ip=target.host, server_port=target.main_port)
    state = switched(cf, client, r, then=f"a reconnect to exactly {target.main_address}")
    connects = [e.get("server") for e in agent_events(client.control.state(), r.wall_ms, "connected")]
    cf.check(state.get("server") == target.main_address and connects in ([], [target.main_address]),
             expected=f"reconnects to exactly {target.main_address} (the redirect; rotation would give {rotation})",
             actual=f"reconnected to {state.get('server')}; connected events since the reset: {connects}",
             at_ms=r.t_ms)
    try:
        wait_registered(cf.history, target, connection_id=state["connection_id"], timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"the new connection {state['connection_id']} registered on {target.main_address}",
                actual=f"current holds {sorted(exc.last or {})}", at_ms=r.t_ms)
    left = check_old_leaves(cf, client, r, state)
    cf.ok(f"redirect to {target.main_address} (rotation: {rotation}) followed as {state['connection_id']}; {left}",
          expected=f"on {target.main_address}", actual={"server": state.get("server")})


@case("SR-08", "INFO", timeout_s=60)
def test_reload_client_redirect_out_of_list(cf, topology, nacos_server_peer, nacos_client_peer):
    """Redirect to an address not in the client's list → record what the client does (Java: ignores it, rotates)."""
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset",))
    servers = topology.nacos_servers(3, peer=nacos_server_peer)
    listed, outsider = servers[:2], servers[2]  # a live server, proxied, in nobody's list
    client = topology.nacos_client(peer=nacos_client_peer, servers=listed)
    origin, old_id = reset_baseline(cf, client, listed)
    rotation = next_in_list(client, origin.main_address)

    r = push_reset(cf.history, origin, old_id, outsider.main_address)
    check_push(cf, r, server_ip=outsider.host, server_port=outsider.main_port)
    if r.answered:
        state = wait_switch(cf, client, old_id, switch_bound_ms(client)) or client_state(cf.history, client)
    else:
        state = client_state(cf.history, client)
    after = state.get("server")
    moved = state.get("connection_id") not in (None, old_id)
    if not moved:
        went = f"stayed on {origin.main_address} (no switch)"
    elif after == outsider.main_address:
        went = f"followed the redirect to {outsider.main_address}, which is not in its list"
    elif after == rotation:
        went = f"ignored the redirect and rotated to {rotation}, the next server in its list"
    elif after == origin.main_address:
        went = f"ignored the redirect and reconnected to {origin.main_address} (same server, new id)"
    else:
        went = f"moved to {after}"
    outsider_ids = sorted(outsider.admin.current())
    switching = [e.get("detail") for e in agent_events(client.control.state(), r.wall_ms, "switching")]
    answered = (f"answered (requestId {r.request_id})" if r.answered
                else f"never answered (push outcome {(r.push or {}).get('outcome')!r})")
    cf.informational(f"redirect to {outsider.main_address} (not in its list {client.servers}): reset {answered}; "
                     f"{went}", answered=r.answered, server_before=origin.main_address, server_after=after,
                     moved=moved, rotation=rotation, outsider=outsider.main_address,
                     outsider_registrations=outsider_ids, switching=switching)


@case("SR-14", "MUST", timeout_s=60)
def test_reset_while_starting_or_switching(cf, topology, nacos_server_peer, nacos_client_peer):
    """A reset that arrives while the client is still starting or reconnecting is answered and does not cause a second concurrent switch.

    Phase 1 resets the client's first connection the moment the server registers it (the client
    is then in its post-setup wait, still STARTING); phase 2 resets the connection a reset-driven
    switch is bringing up, the same way. Each time: the push is answered; the client's own events
    never show two connection attempts in flight; `current`, sampled every 15 ms across all
    servers, never holds more than one registration in phase 1 (two, old + new, during a switch
    the client itself reports) nor more than two in phase 2; and the client settles with exactly
    one registration, its own. The reference client's setup wait is widened to 800 ms.
    """
    # Needs to see a registration the moment it happens, and when the reset was pushed.
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset",), server=("loader", "pushes", "events"))
    knobs = {"setup_wait_ms": START_WINDOW_MS} if nacos_client_peer.supports("setup_wait_ms") else {}
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    bound = RUNNING_TIMEOUT_MS
    with RegistrationSampler(cf.history, servers) as sampler:
        # Phase 1: the reset lands while the client is starting.
        watcher = ResetOnRegister(cf.history, servers, timeout_ms=RUNNING_TIMEOUT_MS)
        watcher.start()
        started_wall = time.time() * 1000.0
        client = topology.nacos_client(peer=nacos_client_peer, servers=servers, knobs=knobs)
        r1 = watcher.result(cf, what="phase 1 (starting)", expected="the client registers")
        check_answered(cf, client, r1, then="no second concurrent switch")
        running(cf, client)
        first = settled_on_one(cf, client, servers, timeout_ms=bound, what="phase 1 (reset while starting)")
        events = agent_events(client.control.state(), started_wall)
        first_connected = next((e for e in events if e.get("kind") == "connected"), None)
        check_window(cf, client, r1, first_connected, "starting")
        in_flight, trace = max_in_flight(events, start_open=True)
        cf.check(in_flight <= 1, expected="phase 1: at most one connection attempt in flight (the start)",
                 actual=f"{in_flight} at once; events: {trace}", at_ms=r1.t_ms)
        deferred = first_connected is not None and any(
            e.get("kind") == "switching" and e.get("t_ms", 0) >= first_connected.get("t_ms", 0) for e in events)
        allowed = 2 if deferred else 1
        most, at = sampler.take_max()
        cf.check(most <= allowed, expected=f"phase 1: never more than {allowed} registration(s) at once "
                 "(one, plus the new one while a switch the client reports after its start is in flight)",
                 actual=f"{most} at once: {at}", at_ms=r1.t_ms)

        # Phase 2: the reset lands on the connection a switch is bringing up.
        by_address = {s.main_address: s for s in servers}
        origin = by_address[first["server"]] if first.get("server") in by_address else next(
            s for s in servers if first["ids"][0] in first["registrations"][s.main_address])
        phase2_wall = time.time() * 1000.0
        watcher = ResetOnRegister(cf.history, servers, timeout_ms=switch_bound_ms(client))
        watcher.start()
        r_switch = push_reset(cf.history, origin, first["ids"][0])
        check_answered(cf, client, r_switch, then="a switch")
        r2 = watcher.result(cf, what="phase 2 (switching)",
                            expected="after answering the reset, the client switches and its new connection registers")
        check_answered(cf, client, r2, then="no second concurrent switch")
        second = settled_on_one(cf, client, servers, timeout_ms=2 * switch_bound_ms(client) + bound,
                          what="phase 2 (reset while switching)")
        events = agent_events(client.control.state(), phase2_wall)
        brought_up = next((e for e in events if e.get("kind") == "connected"
                           and (e.get("detail") or {}).get("connection_id") == r2.connection_id), None)
        check_window(cf, client, r2, brought_up, "switching")
        in_flight, trace = max_in_flight(events, start_open=False)
        cf.check(in_flight <= 1, expected="phase 2: at most one switch in flight",
                 actual=f"{in_flight} at once; events: {trace}", at_ms=r2.t_ms)
        most, at = sampler.take_max()
        cf.check(most <= 2, expected="phase 2: never more than two registrations at once (old + new of one switch)",
                 actual=f"{most} at once: {at}", at_ms=r2.t_ms)
    cf.ok(f"reset while starting (requestId {r1.request_id} on {r1.server.main_address}) and while switching "
          f"(requestId {r2.request_id} on {r2.server.main_address}) "
          f"both answered; one attempt in flight at a time; settled on {second['server']} as {second['ids'][0]}",
          expected="answered; no concurrent switch; one registration",
          actual={"phase1": first["ids"], "phase2": second["ids"]})


@case("SR-15", "MUST", timeout_s=60, subject="client", interop=True)
def test_requests_succeed_after_reset(cf, topology, nacos_server_peer, nacos_client_peer):
    """After a reset, requests issued by the application succeed on the new connection (no 301 storm: at most 1 failed request).

    Requests are issued back to back from the moment the reset is answered until the client
    reports its new connection, then 10 more; all of them count.
    """
    require_reset_support(nacos_server_peer, nacos_client_peer, client=("reset", "request"))
    servers = topology.nacos_servers(2, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=servers)
    origin, old_id = reset_baseline(cf, client, servers)
    baseline = request_once(cf, client, "baseline", 0)
    cf.check(baseline.get("ok") is True, expected="a request succeeds before the reset (baseline)", actual=baseline)

    r = push_reset(cf.history, origin, old_id)
    check_answered(cf, client, r, then="a switch, with the application's requests succeeding on the new connection")
    results: list[tuple[str, dict[str, Any]]] = []
    deadline = now_ms() + switch_bound_ms(client)
    state = client.control.state()
    while state.get("connection_id") in (None, old_id) or state.get("status") != "RUNNING":
        if now_ms() > deadline:
            last = client_state(cf.history, client)
            cf.fail(expected="after answering the reset, a switch off the reset connection",
                    actual=f"answered but no switch within {switch_bound_ms(client):.0f} ms: {last.get('status')} on "
                           f"{last.get('server')} as {last.get('connection_id')}", at_ms=r.t_ms)
        results.append(("during switch", request_once(cf, client, "during switch", len(results))))
        state = client.control.state()
    new_id = state.get("connection_id")
    cf.history.observe("switched", {"server": state.get("server"), "connection_id": new_id})
    for i in range(REQUESTS_AFTER_SWITCH):
        results.append(("after switch", request_once(cf, client, "after switch", i)))

    failed = [(phase, a) for phase, a in results if a.get("ok") is not True]
    with_301 = [(phase, a) for phase, a in results if saw_301(a)]
    counts = {"during switch": sum(1 for p, _ in results if p == "during switch"), "after switch": REQUESTS_AFTER_SWITCH,
              "failed": len(failed), "with a 301": len(with_301)}
    cf.check(len(failed) <= MAX_FAILED_REQUESTS,
             expected=f"at most {MAX_FAILED_REQUESTS} failed request after the reset (no 301 storm)",
             actual=f"{len(failed)} of {len(results)} failed ({len(with_301)} saw a 301): "
                    f"{[(p, a.get('error_code'), str(a.get('error'))[:80]) for p, a in failed[:5]]}",
             at_ms=r.t_ms)
    after_ok = [a for p, a in results if p == "after switch" and a.get("ok") is True]
    cf.check(bool(after_ok), expected="requests succeed on the new connection",
             actual=f"none of {REQUESTS_AFTER_SWITCH} requests after the switch succeeded", at_ms=r.t_ms)
    cf.ok(f"switched {origin.main_address} -> {state.get('server')} as {new_id}; {counts}",
          expected=f"<= {MAX_FAILED_REQUESTS} failed", actual=counts)


