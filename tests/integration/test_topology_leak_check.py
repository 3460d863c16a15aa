"""The topology's end-of-case leak check sees a real CLOSE_WAIT (a side that never closed after
its peer did) and says where it is; a clean port passes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness.observe.history import History
from harness.topology import Topology

pytestmark = pytest.mark.integration


class _NoRuntime:
    name = "process"


@pytest.mark.timeout(30)
def test_socket_leaks_reports_close_wait_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = History(tmp_path / "h.jsonl")
    topo = Topology(runtime=_NoRuntime(), toxiproxy=None, workdir=tmp_path, history=history)  # type: ignore[arg-type]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr(topo, "ports", lambda: {port})
        monkeypatch.setattr(topo, "endpoints", lambda: {("127.0.0.1", port)})
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        server_side, _ = listener.accept()
        client.close()  # the peer closed; our server side never does -> CLOSE_WAIT on `port`
        try:
            leaks = topo.socket_leaks(grace_ms=300)
            assert len(leaks) == 1 and f"127.0.0.1:{port}" in leaks[0], leaks
        finally:
            server_side.close()
        assert topo.socket_leaks(grace_ms=2000) == []
    history.close()
