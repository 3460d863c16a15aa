"""The TCP-table observer against real loopback sockets: ESTABLISHED seen on both sides, the
server-side CLOSE_WAIT of a server that never closes (TC-13), its end once the server closes,
and TIME_WAIT on the active closer's side (PL-02). Fresh ephemeral ports per test; every wait
bounded."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from harness.observe.history import History
from harness.observe.sockets import (
    SocketSampler,
    close_wait_on,
    count,
    established_between,
    owners,
    snapshot,
    time_wait_by_side,
    wait_no_close_wait,
    wait_state_count,
)
from harness.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

STATE_WITHIN_MS = 3000  # a loopback FIN is processed in well under a millisecond; 3 s is a hang
SOCKET_TIMEOUT_S = 2.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.fixture
def pair(listener: socket.socket) -> Iterator[tuple[socket.socket, socket.socket, int]]:
    """(client, server-side socket, server port) of one loopback connection."""
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    server, _ = listener.accept()
    try:
        yield client, server, port
    finally:
        client.close()
        server.close()


def test_client_close_leaves_server_close_wait_until_the_server_closes(pair) -> None:
    client, server, port = pair
    client_port = client.getsockname()[1]
    history = History(None)
    with SocketSampler(history, [port], interval_ms=50) as sampler:
        wait_state_count(port, "ESTABLISHED", lambda n: n == 2, timeout_ms=STATE_WITHIN_MS)
        (connection,) = established_between(snapshot([port]), port)
        assert connection.client is not None
        assert connection.client.local_port == client_port
        assert connection.server is not None
        assert connection.server.remote_port == client_port

        client.close()  # the client's FIN; the server does not close
        leaked = eventually(lambda: close_wait_on(snapshot([port]), port), timeout_ms=STATE_WITHIN_MS,
                            what=f"server-side CLOSE_WAIT on {port}").value
        assert [(e.local_port, e.remote_port) for e in leaked] == [(port, client_port)]
        assert owners(leaked, pids=[os.getpid()]) == {leaked[0].inode: os.getpid()}  # whose socket leaked
        eventually(lambda: sampler.last()[port]["server"].get("CLOSE_WAIT") == 1,
                   timeout_ms=STATE_WITHIN_MS, what="the sampler to see the CLOSE_WAIT")

        server.close()
        waited = wait_no_close_wait(port, timeout_ms=STATE_WITHIN_MS, history=history)
        assert waited.value == []
        # The client closed first, so the client side holds the TIME_WAIT.
        sides = eventually(lambda: time_wait_by_side(snapshot([port]), server_port=port),
                           accept=lambda s: s["client"] == 1, timeout_ms=STATE_WITHIN_MS,
                           what=f"client-side TIME_WAIT towards {port}").value
        assert sides == {"client": 1, "server": 0}
    assert sampler.max_count(port, "CLOSE_WAIT") == 1
    assert sampler.max_count(port, "ESTABLISHED", side="client") == 1
    observed = [e["what"] for e in history.events("observe")]
    assert "no_close_wait" in observed
    assert observed.count("sockets") == len(sampler.samples)


def test_server_close_first_puts_time_wait_on_the_server_side(pair) -> None:
    client, server, port = pair
    server.close()  # the server is the active closer this time
    # The client's end now sits in CLOSE_WAIT (a client-side leak if it never closed, TC-06).
    wait_state_count(port, "CLOSE_WAIT", lambda n: n == 1, side="client", timeout_ms=STATE_WITHIN_MS)
    entries = snapshot([port])
    assert count(entries, state="CLOSE_WAIT", remote_port=port) == 1
    assert close_wait_on(entries, port) == []  # nothing on the server's side

    client.close()
    sides = eventually(lambda: time_wait_by_side(snapshot([port]), server_port=port),
                       accept=lambda s: s["server"] == 1, timeout_ms=STATE_WITHIN_MS,
                       what=f"server-side TIME_WAIT on {port}").value
    assert sides == {"client": 0, "server": 1}
