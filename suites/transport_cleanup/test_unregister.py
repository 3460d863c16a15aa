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

from fixtures.case import case
from harness.faults import Kill, ProxyDown, ResetPeer
from harness.scenarios import cleanup
from harness.wait import now_ms


@case("TC-01", "MUST", timeout_s=90, subject="both", interop=True)
def test_client_kill_unregisters(cf, topology, nacos_server_peer, nacos_client_peer):
    """Client process SIGKILL → server unregisters within 1 s: gone from `current`, per-IP count decremented, exactly one `disconnected` event.

    Procedure: baseline (RUNNING, registered, counted); SIGKILL the client's process group (the
    kernel closes its sockets, Toxiproxy passes the close on); watch `current`, `clientIpCounts`
    and `events` from the kill.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    reg = cleanup.prove_registered(cf, client, server)

    kill = Kill(client.node, history=cf.history, label=client.name)
    killed_at = now_ms()
    kill.apply()
    seen = cleanup.watch_unregister(cf, reg, fault="SIGKILL of the client", fault_at_ms=killed_at)
    late = cleanup.judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(killed_at))
    cleanup.recheck_one_disconnect(cf, reg)
    cleanup.finish(cf, reg, seen, late,
                   f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the kill"
                   + (f", count {reg.ip_count}→{seen.last_count} after {seen.counted_ms:.0f} ms" if reg.has_counts else "")
                   + (", one disconnected event" if reg.has_events else ""))


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
    reg = cleanup.prove_registered(cf, client, server)
    peer = cleanup.transport_peer(reg.connection_id)

    down_at = now_ms()
    with ProxyDown(server.proxy, history=cf.history):
        seen = cleanup.watch_unregister(cf, reg, fault="proxy disable", fault_at_ms=down_at)
        if peer is not None:  # evidence only: an orderly close leaves TIME_WAIT on the closer
            cf.history.observe("transport_sockets", {"peer": peer, "states": cleanup.states_of(cleanup.transport_sockets(server, peer))})
        late = cleanup.judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(down_at))
    healed_at = now_ms()

    new_id, rejoin_ms = cleanup.expect_rejoined_once(cf, client, reg, healed_at_ms=healed_at)
    cleanup.recheck_one_disconnect(cf, reg)
    cleanup.finish(cf, reg, seen, late,
                   f"{reg.connection_id} left current {seen.gone_ms:.0f} ms after the proxy went down"
                   + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
                   + (", one disconnected event" if reg.has_events else "")
                   + f"; rejoined once as {new_id} {rejoin_ms:.0f} ms after the proxy came back")


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
        reg = cleanup.prove_registered(cf, client, server)
        peer = cleanup.established_transport(cf, reg)
        rst = cleanup.fire_rst(cf, reset, reg, client, peer)
        seen = cleanup.watch_unregister(cf, reg, fault="RST", fault_at_ms=rst.at_mono_ms)
        late = cleanup.judge_cleanup(cf, reg, seen, at_ms=cf.history.relative_ms(rst.at_mono_ms))
    rst.trigger.join(timeout=10)
    cf.history.info(client.name, "request", rst.trigger.answer)
    cleanup.recheck_one_disconnect(cf, reg)
    cleanup.finish(cf, reg, seen, late,
                   f"RST {rst.evidence['armed_to_reset_ms']:.0f} ms after arming (no closing state left); {reg.connection_id} "
                   f"left current {seen.gone_ms:.0f} ms after it"
                   + (f", count {reg.ip_count}→{seen.last_count}" if reg.has_counts else "")
                   + (", one disconnected event" if reg.has_events else ""))
