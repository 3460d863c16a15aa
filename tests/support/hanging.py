"""A case that starts a server and a client, says so in a file, then hangs until interrupted:
for the tests that kill a run mid-case and check what it leaves behind. With ``namespaced`` the
server sits in a network namespace with a packet-level fault applied inside it (an iptables
rule), and the file names the namespace and the host end of its veth."""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = '''
import json
from pathlib import Path

from fixtures.case import case
from harness.wait import WaitTimeout, eventually


@case({case_id!r}, "MUST")
def test_hangs_mid_case(cf, topology, nacos_server_peer, nacos_client_peer):
    """Hangs with peers up until interrupted."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer, namespaced={namespaced!r})
    topology.nacos_client(peer=nacos_client_peer, servers=[server])
    if server.namespace is not None:
        from harness.faults import SynDrop

        SynDrop(server, port=server.grpc_port, history=cf.history).apply()  # never healed: the kill must reap it
    ns = server.namespace
    Path({marker!r}).write_text(json.dumps({{"namespace": ns and ns.name, "host_if": ns and ns.host_if}}))
    try:
        eventually(lambda: False, timeout_ms={hang_ms}, what="an interrupt", interval_ms=200)
    except WaitTimeout:
        pass
'''


def write_hanging_case(directory: Path, *, case_id: str, hang_ms: int = 90_000,
                       namespaced: bool = False) -> tuple[Path, Path]:
    """Write ``test_hang.py`` into ``directory``; return (its path, the file it creates once peers
    are up: JSON with the server's namespace and veth, null when not namespaced)."""
    marker = directory / "peers-up"
    test_file = directory / "test_hang.py"
    test_file.write_text(_TEMPLATE.format(case_id=case_id, marker=str(marker), hang_ms=hang_ms, namespaced=namespaced))
    return test_file, marker
