"""Network-namespace placement (SPEC §4.1): a server in a namespace of its own, with an address
from its slot's 198.18.<n>.0/24, serves clients through its proxy on loopback exactly as one on
loopback does; its own sockets are seen by the socket observer; a wildcard bind inside the
namespace is contained (not exposed on the host); teardown leaves no namespace or veth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.observe.history import History
from harness.observe.listeners import exposed, listeners_of, netns_id
from harness.observe.sockets import snapshot
from harness.peers import PeerRegistry
from harness.placement.netns import available
from harness.runtime import LaunchSpec, ProcessRuntime
from harness.slots import current_slot
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer
from harness.wait import eventually

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(available() is not None, reason=f"no network namespaces here: {available()}")]

REGISTRY = PeerRegistry.default()


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(current_slot().prefix)]


@pytest.mark.timeout(120)
def test_a_server_in_a_namespace_serves_through_its_proxy(tmp_path: Path) -> None:
    with ToxiproxyServer() as tp, ToxiproxyClient(tp.url) as tp_client, ProcessRuntime() as runtime:
        history = History(tmp_path / "history.jsonl")
        topo = Topology(runtime=runtime, toxiproxy=tp_client, workdir=tmp_path, history=history,
                        placement="netns")
        try:
            (server,) = topo.nacos_servers(1, peer=REGISTRY.get("nacos-server", "ref"))
            assert server.bind_host.startswith("198.18.") and server.host.startswith("127.")
            assert server.namespace is not None and server.namespace.name in _namespaces()
            client = topo.nacos_client(peer=REGISTRY.get("nacos-client", "ref"), servers=[server])
            state = eventually(client.control.state, timeout_ms=15_000, what="RUNNING through the proxy",
                               accept=lambda s: s.get("status") == "RUNNING").value
            assert state["server"] == server.main_address
            current = server.admin.current()
            assert state["connection_id"] in current
            # The server's end of that connection, seen in the namespace's own table.
            server_side = [e for e in snapshot([server.grpc_port])
                           if e.local_ip == server.bind_host and e.state == "ESTABLISHED"]
            assert server_side, "the namespaced server's sockets should be visible"
            assert exposed(listeners_of(topo.processes())) == []
        finally:
            leaks = topo.close()
            history.close()
        assert leaks == []
    assert _namespaces() == []


WILDCARD = "import socket, time\ns = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); time.sleep(60)\n"


@pytest.mark.timeout(60)
def test_a_wildcard_bind_in_a_namespace_is_contained(tmp_path: Path) -> None:
    from harness.placement.netns import new_namespace

    namespace = new_namespace()
    try:
        with ProcessRuntime() as runtime:
            node = runtime.start(LaunchSpec(name="wild", argv=[sys.executable, "-c", WILDCARD],
                                            log_path=tmp_path / "w.log", netns=namespace.path))
            found = eventually(lambda: listeners_of(node.processes()), timeout_ms=10_000, what="listening",
                               accept=bool).value
            assert found[0].ip == "0.0.0.0" and found[0].netns != netns_id()
            assert exposed(found) == []
    finally:
        namespace.delete()
    assert namespace.name not in _namespaces()
