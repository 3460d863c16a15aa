"""A case that starts a server and a client, says so in a file, then hangs until interrupted:
for the tests that kill a run mid-case and check what it leaves behind."""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = '''
from pathlib import Path

from fixtures.case import case
from harness.wait import WaitTimeout, eventually


@case({case_id!r}, "MUST")
def test_hangs_mid_case(cf, topology, nacos_server_peer, nacos_client_peer):
    """Hangs with peers up until interrupted."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    topology.nacos_client(peer=nacos_client_peer, servers=[server])
    Path({marker!r}).write_text("peers up")
    try:
        eventually(lambda: False, timeout_ms={hang_ms}, what="an interrupt", interval_ms=200)
    except WaitTimeout:
        pass
'''


def write_hanging_case(directory: Path, *, case_id: str, hang_ms: int = 90_000) -> tuple[Path, Path]:
    """Write ``test_hang.py`` into ``directory``; return (its path, the file it creates once peers are up)."""
    marker = directory / "peers-up"
    test_file = directory / "test_hang.py"
    test_file.write_text(_TEMPLATE.format(case_id=case_id, marker=str(marker), hang_ms=hang_ms))
    return test_file, marker
