"""The reference server's TCP front never drops bytes a client sends before the upstream side
exists (CPython 3.11.2 reads despite pause_reading() in connection_made: the docker images)."""

from __future__ import annotations

from harness.reference.nacos.transport import READ_SIZE_BYTES, _Side


class _Recorder:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


class _Front:
    """The one thing a side needs of its front here: the shared read buffer."""

    read_buffer = bytearray(READ_SIZE_BYTES)


def _feed(side: _Side, data: bytes) -> None:
    side.get_buffer(len(data))[: len(data)] = data
    side.buffer_updated(len(data))


def test_bytes_read_before_the_upstream_exists_are_forwarded_in_order():
    client = _Side(front=_Front(), name="client")  # type: ignore[arg-type]
    _feed(client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    _feed(client, b"<settings>")
    upstream = _Side(front=_Front(), name="upstream", other=client)  # type: ignore[arg-type]
    upstream.transport = _Recorder()  # type: ignore[assignment]
    client.other = upstream
    client.flush_early()
    _feed(client, b"<headers>")
    assert bytes(upstream.transport.written) == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n<settings><headers>"
    assert not client.early


def test_a_lost_side_lets_go_of_its_peer_and_drops_late_bytes():
    """Memory under churn: a closed connection's sides hold nothing (no side <-> side cycle
    waiting for a full GC), and bytes read after the loss go nowhere."""
    client = _Side(front=_Front(), name="client")  # type: ignore[arg-type]
    upstream = _Side(front=_Front(), name="upstream", other=client)  # type: ignore[arg-type]
    client.other = upstream
    client.connection_lost(None)
    assert client.other is None and client.transport is None and client.lost
    _feed(client, b"late")
    assert not client.early
