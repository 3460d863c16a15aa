"""The reference server's TCP front never drops bytes a client sends before the upstream side
exists (CPython 3.11.2 reads despite pause_reading() in connection_made: the docker images)."""

from __future__ import annotations

from harness.reference.nacos.transport import _Side


class _Recorder:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def _feed(side: _Side, data: bytes) -> None:
    side.get_buffer(len(data))[: len(data)] = data
    side.buffer_updated(len(data))


def test_bytes_read_before_the_upstream_exists_are_forwarded_in_order():
    client = _Side(front=None, name="client")  # type: ignore[arg-type]
    _feed(client, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    _feed(client, b"<settings>")
    upstream = _Side(front=None, name="upstream", other=client)  # type: ignore[arg-type]
    upstream.transport = _Recorder()  # type: ignore[assignment]
    client.other = upstream
    client.flush_early()
    _feed(client, b"<headers>")
    assert bytes(upstream.transport.written) == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n<settings><headers>"
    assert not client.early
