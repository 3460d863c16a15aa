"""TC — links that go silent below TCP: packet-level faults in the server's network namespace
(docs/catalogue.md TC-15; harness/faults/packet.py; research/real-servers-and-audit.md §4).

Toxiproxy terminates TCP: under its blackhole the server's kernel still gets ACKs from the
proxy, and either side's close crosses at once. A pulled cable or a dead VM gives the server
nothing at all — no data, no ACK, no FIN, no RST — and only its own detection (an idle probe,
TCP or gRPC keepalive) can end the registration. Nacos 2.2.0-2.2.4 keep such clients registered
for hours (alibaba/nacos#10773); 2.3.0 brought the probe back (#10509).

The server runs in a namespace of its own (``namespaced=True``); the fault drops every packet of
the client's registered transport — the server's gRPC port and the proxy's upstream socket, read
from the namespace's TCP table — both ways. The client is left running: its health checks time
out, it reconnects on a new transport (which passes), and whatever it does with the old one stays
on the proxy's side of the silence, so the server is left with exactly the half-open connection a
cable pull leaves. Only that transport is silenced: a silenced port would also swallow the proxy's
dials for the client's reconnects, which Toxiproxy leaves hanging without a connect timeout
(Shopify/toxiproxy#123) and which would wedge it for the next case.
"""

from __future__ import annotations

from contextlib import ExitStack

from fixtures.case import case
from harness.errors import SetupError
from harness.faults import Silence
from harness.scenarios.bounds import FAIL_FACTOR, SCALED_SERVER_EJECT, EjectBound, supported
from harness.scenarios.dead_links import Clock, judge_removal, rounded, upstream_ports, watch_current
from harness.scenarios.steps import brief, registered_id, running


@case("TC-15", "SHOULD", timeout_s=150, subject="server")
def test_server_removes_a_half_open_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Half-open (every packet between the client's connection and the server dropped, no FIN, no RST) → the server removes the registration within `idle_threshold + eject_interval + probe_timeout + tolerance`; one that holds it past twice that gets FAILED with the time it held it (Nacos 2.2.0–2.2.4 would, alibaba/nacos#10773).

    Procedure: the server in its own network namespace; the client RUNNING and registered through
    the proxy (baseline); then iptables in the namespace drops every packet to and from the
    server's gRPC port; watch `current` for the id.
    """
    server_knobs = supported(nacos_server_peer, SCALED_SERVER_EJECT)
    eject = EjectBound.of(nacos_server_peer, server_knobs)
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs=server_knobs, namespaced=True)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    dead_id = registered_id(cf, server, running(cf, client))
    transports = upstream_ports(server)
    if not transports:
        raise SetupError(f"TC-15: no ESTABLISHED transport from the proxy to {server.bind_host}:{server.grpc_port} "
                         f"in the namespace's TCP table although {dead_id} is registered; nothing was judged")
    cf.history.observe("silenced_transports", {"server": f"{server.bind_host}:{server.grpc_port}",
                                               "from": [f"{server.namespace.host_ip}:{p}" for p in transports]})
    with ExitStack() as stack:
        for port in transports:
            stack.enter_context(Silence(server, port=server.grpc_port, peer=(server.namespace.host_ip, port),
                                        history=cf.history, label=server.node.name))
        clock = Clock(cf)
        gone_ms, last = watch_current(server, clock, until=lambda snapshot: dead_id not in snapshot,
                                      timeout_ms=FAIL_FACTOR * eject.bound_ms, what=f"{dead_id} removed")
        held_for_ms = clock.since()
        client_state = brief(client.control.state())
    observed = {"connection_id": dead_id, "bound": str(eject), "removed after (ms)": rounded(gone_ms),
                "current at the end": sorted(last), "client at the end": client_state}
    cf.history.observe("tc15", observed)
    judge_removal(cf, gone_ms, eject, clock, what=f"the half-open connection {dead_id} removed",
                  after="the link went silent",
                  never=f"still registered {held_for_ms:.0f} ms after its link went silent ({FAIL_FACTOR}× the bound); "
                        f"current {sorted(last)}",
                  hint="no idle probe and no keepalive short enough: a pulled cable leaves the client registered")
    cf.ok(f"removed {gone_ms:.0f} ms after the link went silent (bound {eject.bound_ms} ms)",
          expected=f"removed within {eject}", actual=observed)
