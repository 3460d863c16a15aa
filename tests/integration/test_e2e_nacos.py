"""End to end through the real Toxiproxy: real clients against the reference server, reading
the server's own ``current`` as the truth."""

from __future__ import annotations

import pytest

from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.wait import eventually, holds_for

pytestmark = pytest.mark.integration

KEEPALIVE_WINDOW_MS = 32000  # > 30 s: several of the library's 5 s HealthCheck periods


@pytest.mark.timeout(120)
def test_nacos_sdk_python_stays_registered_through_toxiproxy(lib_topology, registry) -> None:
    """nacos-sdk-python connects through a Toxiproxy proxy, becomes RUNNING, and its
    HealthChecks keep it registered (same id, lastActiveTime refreshed) for more than 30 s."""
    (server,) = lib_topology.nacos_servers(1, peer=registry.get("nacos-server", "ref"))
    client = lib_topology.nacos_client(peer=registry.get("nacos-client", "nacos-sdk-python"), servers=[server])
    state = wait_client_running(lib_topology.history, client, timeout_ms=15000)
    conn_id = state["connection_id"]
    assert conn_id, f"the SDK agent reports no connection id: {state}"
    snapshot = wait_registered(lib_topology.history, server, connection_id=conn_id, timeout_ms=3000)
    # The proxy is really in the path: the server saw the TCP peer of the proxy's upstream side.
    assert snapshot[conn_id]["metaInfo"]["remotePort"] != server.proxied_grpc_port

    first_active = snapshot[conn_id]["metaInfo"]["lastActiveTime"]
    # Observe the window: the id must stay registered at every poll.
    held, bad, after_ms = holds_for(server.admin.current, duration_ms=KEEPALIVE_WINDOW_MS, interval_ms=500,
                                    what=f"{conn_id} registered", accept=lambda c: conn_id in c)
    assert held, f"{conn_id} left current after {after_ms:.0f} ms: {sorted(bad or {})}"
    last_active = server.admin.current()[conn_id]["metaInfo"]["lastActiveTime"]
    assert last_active > first_active, "HealthChecks did not refresh lastActiveTime within 30 s"
    assert client.control.state()["connection_id"] == conn_id, "the client reconnected during the window"


@pytest.mark.timeout(120)
def test_ref_client_switches_on_reload_client(lib_topology, registry) -> None:
    """The reference client follows reloadClient: without a redirect to the next server in its
    list, with an in-list redirect to exactly that server; the old id leaves current."""
    servers = lib_topology.nacos_servers(3, peer=registry.get("nacos-server", "ref"))
    client = lib_topology.nacos_client(peer=registry.get("nacos-client", "ref"), servers=servers)
    history = lib_topology.history
    by_address = {s.main_address: s for s in servers}

    state = wait_client_running(history, client, timeout_ms=10000)
    old_server, old_id = by_address[state["server"]], state["connection_id"]
    assert old_server.admin.reload_client(old_id) == "success"
    moved = eventually(client.control.state, timeout_ms=10000, what="client moved after reset",
                       accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] != old_id)
    new_server = by_address[moved.value["server"]]
    expected_next = client.servers[(client.servers.index(old_server.main_address) + 1) % len(servers)]
    assert new_server.main_address == expected_next, f"expected rotation to {expected_next}, got {new_server.main_address}"
    eventually(old_server.admin.current, timeout_ms=3000, what=f"{old_id} leaves current",
               accept=lambda c: old_id not in c)

    # Redirect to the server it is NOT on and that is not next in rotation.
    target = next(s for s in servers if s.main_address not in (new_server.main_address,
                  client.servers[(client.servers.index(new_server.main_address) + 1) % len(servers)]))
    second_id = moved.value["connection_id"]
    assert new_server.admin.reload_client(second_id, target.main_address) == "success"
    redirected = eventually(client.control.state, timeout_ms=10000, what=f"client on {target.main_address}",
                            accept=lambda s: s["status"] == "RUNNING" and s["server"] == target.main_address)
    wait_registered(history, target, connection_id=redirected.value["connection_id"], timeout_ms=3000)
    eventually(new_server.admin.current, timeout_ms=3000, what=f"{second_id} leaves current",
               accept=lambda c: second_id not in c)
