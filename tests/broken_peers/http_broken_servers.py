"""Deliberately broken ledger http-servers for the self-tests of PL-12, TC-11, TC-12 and TC-13:
each overrides ONE step of ``harness.reference.http.ledger.LedgerServer`` so its case can be shown
to FAIL for the intended reason. They live in the tests, never in the product peer.

    python -m tests.broken_peers.http_broken_servers --variant NAME <ledger flags>

Variants:

- ``never-closes-on-500`` (TC-11): answers 500 and keeps the connection, whatever
  ``--close-on-status`` says (the other statuses of the list still close).
- ``ignores-max-connections`` (PL-12): ``--max-connections`` is parsed and reported, but every
  connection is served at once.
- ``keepalive-never-fires`` (TC-12): ``--keepalive-timeout-ms`` is ignored; an idle connection
  waits for its next request forever.
- ``close-wait-leak`` (TC-13): when the client closes, the server never closes its side — the
  socket sits in CLOSE_WAIT until the process stops (the seed's Tomcat story, made permanent).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from harness.reference.http.book import ConnRecord, Slots
from harness.reference.http.config import LedgerConfig, parse_args
from harness.reference.http.http1 import Request
from harness.reference.http.ledger import EXIT_CANNOT_BIND, LedgerServer, _Closed, _Reader

__all__ = ["VARIANTS", "main"]


class NeverClosesOn500(LedgerServer):
    """A 500 keeps the connection."""

    def _close_reason(self, record: ConnRecord, request: Request, status: int) -> str | None:
        if status == 500:
            return None
        return super()._close_reason(record, request, status)


class IgnoresMaxConnections(LedgerServer):
    """Every connection gets a serving slot at once."""

    def __init__(self, config: LedgerConfig) -> None:
        super().__init__(config)
        self.slots = Slots(-1)


class KeepaliveNeverFires(LedgerServer):
    """No idle timer: a kept-alive connection waits for its next request forever."""

    async def _next_request(self, record: ConnRecord, reader: _Reader, writer: asyncio.StreamWriter,
                            pending: asyncio.Future) -> Request:
        try:
            await asyncio.shield(pending)  # wait as long as it takes (the timeout is gone)
        except Exception:  # noqa: BLE001 - re-read below, where the real handling happens
            pass
        return await super()._next_request(record, reader, writer, pending)


class CloseWaitLeak(LedgerServer):
    """After the client's FIN the server's socket is never closed (CLOSE_WAIT until stop)."""

    async def _next_request(self, record: ConnRecord, reader: _Reader, writer: asyncio.StreamWriter,
                            pending: asyncio.Future) -> Request:
        try:
            return await super()._next_request(record, reader, writer, pending)
        except _Closed:
            if record.closed_by == "client":
                await asyncio.get_running_loop().create_future()  # held open until the server stops
            raise


VARIANTS: dict[str, type[LedgerServer]] = {
    "never-closes-on-500": NeverClosesOn500,
    "ignores-max-connections": IgnoresMaxConnections,
    "keepalive-never-fires": KeepaliveNeverFires,
    "close-wait-leak": CloseWaitLeak,
}


async def _run(config: LedgerConfig, server_cls: type[LedgerServer]) -> int:
    """``harness.reference.http.ledger._run`` with the server class as a parameter."""
    server = server_cls(config)
    try:
        await server.start()
    except OSError as exc:
        print(f"ledger: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_BIND
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ledger ready port={server.port} (broken: {server_cls.__name__})", flush=True)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in VARIANTS:
        print(f"usage: --variant {{{','.join(VARIANTS)}}} <ledger flags>", file=sys.stderr)
        return 2
    config = parse_args(argv[2:])
    result: Any = asyncio.run(_run(config, VARIANTS[argv[1]]))
    return int(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
