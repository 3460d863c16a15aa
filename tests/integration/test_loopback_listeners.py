"""The loopback promise, checked on running topologies: every listener (TCP and UDP) of every
process a topology started sits on loopback in the host's namespace, built-in peers included
(the Go Nacos clients' UDP push receiver is refused by their manifests' [containment]); and the
check does see a peer that binds the wildcard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.agents.build_nacos import GO_NACOS_VERSIONS, go_nacos_agent_binary
from harness.observe.history import History
from harness.observe.listeners import exposed, listeners_of
from harness.peers import PeerRegistry, load_manifests
from harness.runtime import LaunchSpec, ProcessRuntime
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer
from harness.wait import eventually

pytestmark = pytest.mark.integration

REGISTRY = PeerRegistry.default()


@pytest.fixture
def topo(tmp_path: Path):
    with ToxiproxyServer() as tp, ToxiproxyClient(tp.url) as tp_client, ProcessRuntime() as runtime:
        history = History(tmp_path / "history.jsonl")
        topology = Topology(runtime=runtime, toxiproxy=tp_client, workdir=tmp_path, history=history)
        try:
            yield topology
        finally:
            topology.close()
            history.close()


@pytest.mark.timeout(120)
def test_built_in_nacos_peers_listen_on_loopback_only(topo: Topology) -> None:
    (server,) = topo.nacos_servers(1, peer=REGISTRY.get("nacos-server", "ref"))
    clients = ["ref", "nacos-sdk-python"] + [f"go-{v}" for v in GO_NACOS_VERSIONS
                                             if go_nacos_agent_binary(v).exists()]
    for name in clients:
        topo.nacos_client(peer=REGISTRY.get("nacos-client", name), servers=[server])
    seen = eventually(lambda: listeners_of(topo.processes()), timeout_ms=10_000, what="every peer listening",
                      accept=lambda found: len({item.pid for item in found}) >= 1 + len(clients)).value
    assert {item.port for item in seen} >= {server.main_port, server.grpc_port}
    assert exposed(seen) == [], "\n".join(map(str, exposed(seen)))
    assert topo.exposed_listeners() == []


@pytest.mark.timeout(240)
def test_the_real_nacos_server_binds_the_wildcard_only_inside_its_namespace(topo: Topology) -> None:
    from harness.agents.build_nacos_server import nacos_server_dir
    from harness.placement.netns import available

    if available() is not None:
        pytest.skip(f"the real Nacos server runs in a network namespace: {available()}")
    if not nacos_server_dir("2.2.4").is_dir():
        pytest.skip("nacos-2.2.4 is not built (connformance setup --only nacos-servers)")
    (server,) = topo.nacos_servers(1, peer=REGISTRY.get("nacos-server", "nacos-2.2.4"))
    seen = listeners_of(topo.processes())
    wildcard = [item for item in seen if item.ip in ("0.0.0.0", "::")]
    # It does bind the wildcard (its gRPC ports): the namespace is what contains it.
    assert any(item.port == server.grpc_port for item in wildcard), "\n".join(map(str, seen))
    assert exposed(seen) == [], "\n".join(map(str, exposed(seen)))
    assert topo.exposed_listeners() == []


WILDCARD_PEER = (
    "import socket, time\n"
    "t = socket.socket(); t.bind(('0.0.0.0', 0)); t.listen()\n"
    "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('', 0))\n"
    "time.sleep(60)\n"
)


@pytest.mark.timeout(60)
def test_a_wildcard_listener_is_seen(tmp_path: Path) -> None:
    with ProcessRuntime() as runtime:
        node = runtime.start(LaunchSpec(name="wild", argv=[sys.executable, "-c", WILDCARD_PEER],
                                        log_path=tmp_path / "wild.log"))
        found = eventually(lambda: exposed(listeners_of(node.processes())), timeout_ms=10_000,
                           what="the wildcard listeners", accept=lambda f: len(f) == 2).value
        assert {(item.proto, item.ip) for item in found} == {("tcp", "0.0.0.0"), ("udp", "0.0.0.0")}


CONTAINED = '''
[peer]
name = "contained"
role = "nacos-client"
[process]
command = ["{python}", "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)", "{control_port}"]
[containment]
deny_ip_datagram_sockets = true
'''


@pytest.mark.timeout(60)
def test_containment_refuses_the_datagram_socket(tmp_path: Path) -> None:
    manifest_path = tmp_path / "contained.toml"
    manifest_path.write_text(CONTAINED)
    (peer,) = load_manifests(manifest_path)
    from harness.peers import render

    spec, _ = render(peer, placeholders={"control_port": 1}, name="contained", log_path=tmp_path / "c.log")
    with ProcessRuntime() as runtime:
        node = runtime.start(spec)
        code = node.wait_exit(10_000)
    assert code != 0
    assert "Permission denied" in (tmp_path / "c.log").read_text()
