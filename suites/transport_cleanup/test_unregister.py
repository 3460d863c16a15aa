"""TC — unregister when a transport dies: the client process killed, the proxy disabled (FIN both
ways), the link reset (RST) (SPEC §5 TC-01..TC-03; research/nacos-protocol.md §2.4, §2.7;
research/toxiproxy-and-anchors.md §A3).

What must follow a transport's death (Nacos: ``AddressTransportFilter.transportTerminated`` →
``ConnectionManager.unregister``): its id leaves ``current``, the per-client-IP counter of the IP
it reported drops by one (``clientIpCounts``, capability ``client_ip_counts``), and the
disconnect listeners fire exactly once — seen as exactly one ``disconnected`` event for that id
(``events``, capability ``events``). Both are harness extensions (SPEC §4.2): a server without
one is judged on the rest, then gets UNIMPLEMENTED naming what could not be checked.

Bound: 1 s after the fault + the 250 ms tolerance (SPEC §5 preamble). Grading: everything within
the bound → OK; within the 5 s watch → NON-STRICT, the detail says how long the dead registration
was held; not within the watch, a wrong count or a second event → FAILED, saying what was held
for how long.

Each case proves its baseline first: the client under test RUNNING through its server's proxy
and registered under the id it reports, with the per-IP counter and the event log read before
the fault. Nothing can re-register while the cleanup is judged: the killed client is gone, the
disabled proxy refuses connections, and the armed reset_peer toxic resets every new connection
at its first bytes.

TC-03 technique (a real RST): Toxiproxy sets SO_LINGER 0 only on connections made while a
``reset_peer`` toxic is installed, and with ``toxicity`` 0 it skips the toxic but still sets the
linger (research §A3, Shopify/toxiproxy#603). So the toxic (upstream, timeout 0) goes in at
toxicity 0 *before* the client starts — traffic passes and the baseline is proven through it —
then a PATCH raises its toxicity to 1.0 (the live link's stubs restart and re-roll it) and the
client is asked for one request: that first chunk fires the toxic, which closes both sockets of
the link with linger 0, an RST each way. Evidence, from the kernel's table: the transport's
server-side socket (the connection id ``<ms>_<peerIp>_<peerPort>`` names its 4-tuple) vanishes
and neither end of that 4-tuple is left in TIME_WAIT or any other closing state, which a FIN
close would leave. Without that evidence the fault did not happen as designed: a setup error, not
a finding. The 1 s is counted from the moment the socket was seen gone.

The steps (``prove_registered``, ``watch_unregister``, ``judge_cleanup``, ...) live in
``harness/scenarios/cleanup.py``, shared with TC-10.
"""

from __future__ import annotations

import threading
from typing import Any

from fixtures.case import case
from harness.control.agent import AgentControl
from harness.errors import SetupError
from harness.faults import Kill, ProxyDown, ResetPeer
from harness.scenarios.bounds import CONTROL_ERRORS, HealthBound, reconnect_ms
from harness.scenarios.cleanup import (
    Registered,
    finish,
    judge_cleanup,
    prove_registered,
    recheck_one_disconnect,
    states_of,
    transport_peer,
    transport_sockets,
    watch_unregister,
)
from harness.scenarios.steps import brief
from harness.topology import NacosClientHandle
from harness.wait import WaitTimeout, eventually, holds_for, now_ms

SETTLE_MS = 500  # TC-02: "registered again once" must still hold this long after the rejoin
RST_WAIT_MS = 3000  # TC-03: the armed toxic fires on the client's request within this
CLOSING_STATES = ("FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSING")



# ---- TC-01 ------------------------------------------------------------------------------------

@case("TC-01", "MUST", timeout_s=90, subject="both", interop=True)
def test_client_kill_unregisters(cf, topology, nacos_server_peer, nacos_client_peer):
    """Client process SIGKILL → server unregisters within 1 s: gone from `current`, per-IP count decremented, exactly one `disconnected` event.

    Procedure: baseline (RUNNING, registered, counted); SIGKILL the client's process group (the
    kernel closes its sockets, Toxiproxy passes the close on); watch `current`, `clientIpCounts`
    and `events` from the kill.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    reg = prove_registered(cf, client, server)

    kill = Kill(client.node, history=cf.history, label=client.name)
    killed_at = now_ms()
    kill.apply()
    seen = watch_unregister(cf, reg, fault="SIGKILL of the client", fault_at_ms=killed_at)
    late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(killed_at))
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the kill"
           + (f", count {reg.ip_count}→{seen.last_count} after {seen.counted_ms:.0f} ms" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else ""))


# ---- TC-02 ------------------------------------------------------------------------------------

def _rejoin_guard_ms(client: NacosClientHandle) -> float:
    """Hang guard for the rejoin after the proxy is back: the client may only notice through a
    failed HealthCheck, then backs off once and connects (no timing requirement, a bound only)."""
    return HealthBound.of(client.peer, client.knobs).bound_ms + reconnect_ms(client.peer, client.knobs)


def _connected_events(reg: Registered) -> list[dict[str, Any]]:
    return [e for e in reg.server.events.since(reg.events_seq) if e.get("event") == "connected"]


@case("TC-02", "MUST", timeout_s=120, subject="both", interop=True)
def test_proxy_down_unregisters_and_client_rejoins_once(cf, topology, nacos_server_peer, nacos_client_peer):
    """Proxy disabled (FIN both sides) → same as TC-01; after re-enable the client reconnects and is registered again once.

    Procedure: baseline; disable the server's proxy (Toxiproxy closes both sockets of every
    connection: FIN each way; new connects are refused); watch the cleanup from the disable; then
    re-enable it and wait until the client is RUNNING under a new id that is registered. Then
    exactly one `connected` event since the fault (the new id), `current` == {new id} for 500 ms,
    and the per-IP count back at its baseline.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    reg = prove_registered(cf, client, server)
    peer = transport_peer(reg.connection_id)

    down_at = now_ms()
    with ProxyDown(server.proxy, history=cf.history):
        seen = watch_unregister(cf, reg, fault="proxy disable", fault_at_ms=down_at)
        if peer is not None:  # evidence only: an orderly close leaves TIME_WAIT on the closer
            cf.history.observe("transport_sockets", {"peer": peer, "states": states_of(transport_sockets(server, peer))})
        late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(down_at))
    healed_at = now_ms()

    guard_ms = _rejoin_guard_ms(client)

    def rejoin() -> tuple[dict[str, Any], dict[str, Any]]:
        return client.control.state(), server.admin.current()

    def rejoined(seen_now: tuple[dict[str, Any], dict[str, Any]]) -> bool:
        state, ids = seen_now
        new = set(ids) - {reg.connection_id}
        if state.get("status") != "RUNNING" or not new:
            return False
        return state.get("connection_id") in (None, *new)

    cf.history.invoke(client.name, "rejoin", {"guard_ms": guard_ms})
    try:
        waited = eventually(rejoin, timeout_ms=guard_ms, what=f"{client.name} RUNNING and registered again",
                            accept=rejoined, swallow=CONTROL_ERRORS, interval_ms=50)
    except WaitTimeout as exc:
        state, ids = exc.last if isinstance(exc.last, tuple) else ({}, {})
        cf.fail(expected=f"after the proxy is re-enabled, {client.name} reconnects and is registered again "
                         f"(within the {guard_ms:.0f} ms guard)",
                actual={"state": brief(state), "current": sorted(ids)}, verdict="FAILED")
        raise
    state, ids = waited.value
    new_id = state.get("connection_id") or next(iter(set(ids) - {reg.connection_id}))
    rejoin_ms = now_ms() - healed_at
    cf.history.ok(client.name, "rejoin", {"connection_id": new_id, "after_ms": round(rejoin_ms, 1)})

    def once() -> dict[str, Any]:
        view: dict[str, Any] = {"current": sorted(server.admin.current())}
        if reg.has_events:
            view["connected"] = [e.get("connectionId") for e in _connected_events(reg)]
        return view

    def exactly_once(view: dict[str, Any]) -> bool:
        return view["current"] == [new_id] and (not reg.has_events or view["connected"] == [new_id])

    held, bad, broken_after_ms = holds_for(once, duration_ms=SETTLE_MS, what="registered again exactly once",
                                           accept=exactly_once, interval_ms=50)
    cf.check(held, expected=f"{client.name} registered again exactly once: current == [{new_id}] and one connected "
                            f"event since the fault (for {new_id}), for {SETTLE_MS} ms",
             actual={"seen": bad, "after_ms": round(broken_after_ms, 1)}, verdict="FAILED",
             hint="the client registered twice (two transports), or the old id came back")
    if reg.has_counts:
        counts = server.admin.client_ip_counts()
        cf.history.observe("client_ip_counts", counts)
        cf.check(counts.get(reg.client_ip, 0) == reg.ip_count,
                 expected=f"per-IP count of {reg.client_ip} back at {reg.ip_count} once the client is registered again",
                 actual=counts, verdict="FAILED")
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the proxy went down"
           + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else "")
           + f"; rejoined once as {new_id} {rejoin_ms:.0f} ms after the proxy came back")


# ---- TC-03 ------------------------------------------------------------------------------------

class _Request(threading.Thread):
    """One ``/request`` on the client's own control connection, off the case's thread (the
    request's bytes are what fires the armed reset_peer toxic; its answer does not matter)."""

    def __init__(self, client: NacosClientHandle, timeout_ms: int) -> None:
        super().__init__(name=f"tc03-request-{client.name}", daemon=True)
        self.control = AgentControl(client.control_port)
        self.timeout_ms = timeout_ms
        self.answer: Any = None

    def run(self) -> None:
        try:
            self.answer = self.control.request(timeout_ms=self.timeout_ms)
        except Exception as exc:  # noqa: BLE001 - recorded, never judged
            self.answer = repr(exc)
        finally:
            self.control.close()


@case("TC-03", "MUST", timeout_s=90, subject="both")
def test_reset_peer_unregisters(cf, topology, nacos_server_peer, nacos_client_peer):
    """reset_peer (RST; toxic installed before the connection) → same as TC-01.

    Procedure: a reset_peer toxic (upstream, timeout 0) at toxicity 0 on the server's proxy before
    the client starts (linger 0 on its connection, traffic untouched); baseline through it; PATCH
    toxicity to 1.0 and have the client send one request: the toxic fires on that chunk and
    resets both sockets. RST evidence from the socket table (no closing state left on the
    transport's 4-tuple), then the TC-01 watch from the moment the server's socket was gone.
    The toxic stays armed (new connections die at their first bytes) until the judgement is done.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    with ResetPeer(server.proxy, timeout_ms=0, stream="upstream", armed=True, history=cf.history) as reset:
        client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
        reg = prove_registered(cf, client, server)
        peer = transport_peer(reg.connection_id)
        if peer is None:
            cf.unimplemented(f"{server.peer.name}'s connection id {reg.connection_id!r} is not <ms>_<peerIp>_<peerPort> "
                             "(Nacos's form): the transport's own sockets cannot be picked out, so the RST that "
                             "TC-03 is about cannot be shown to have happened")
        before = transport_sockets(server, peer)
        cf.history.observe("transport_sockets", {"phase": "baseline", "peer": peer, "states": states_of(before)})
        if not any(e.state == "ESTABLISHED" and e.local_port == server.grpc_port for e in before):
            raise SetupError(f"TC-03: no ESTABLISHED socket {server.host}:{server.grpc_port} <- {peer[0]}:{peer[1]} for "
                             f"{reg.connection_id}; the id does not name its transport, nothing was judged")

        armed_at = now_ms()
        reset.fire()
        trigger = _Request(client, timeout_ms=1000)
        cf.history.invoke(client.name, "request", {"why": "its first chunk fires the armed reset_peer"})
        trigger.start()
        try:
            gone = eventually(lambda: transport_sockets(server, peer), timeout_ms=RST_WAIT_MS, interval_ms=10,
                              what=f"transport {peer[0]}:{peer[1]} reset",
                              accept=lambda es: not any(e.state == "ESTABLISHED" for e in es))
        except WaitTimeout as exc:
            raise SetupError(f"TC-03: the armed reset_peer did not reset {reg.connection_id} within {RST_WAIT_MS} ms of "
                             f"the request (sockets {states_of(exc.last or [])}); nothing was judged") from None
        rst_at = gone.at_mono_ms
        evidence = {"peer": peer, "armed_to_reset_ms": round(rst_at - armed_at, 1), "left": states_of(gone.value)}
        cf.history.observe("rst", evidence)
        if any(e.state in CLOSING_STATES for e in gone.value):
            raise SetupError(f"TC-03: {reg.connection_id} was closed with a FIN, not an RST (left {states_of(gone.value)}); "
                             "linger 0 was not set on it, nothing was judged")

        seen = watch_unregister(cf, reg, fault="RST", fault_at_ms=rst_at)
        late = judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(rst_at))
    trigger.join(timeout=10)
    cf.history.info(client.name, "request", trigger.answer)
    recheck_one_disconnect(cf, reg)
    finish(cf, reg, seen, late,
           f"RST {evidence['armed_to_reset_ms']:.0f} ms after arming (no closing state left); {reg.connection_id} "
           f"left current {seen.gone_ms:.0f} ms after it"
           + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
           + (", one disconnected event" if reg.has_events else ""))
