"""Deliberately broken reference servers for the transport-cleanup cases TC-01..TC-03, TC-07 and
TC-10: each overrides ONE step of ``NacosRefServer`` so a case can be shown to FAIL for the
intended reason. They live in the tests, never in the product peer.

    python -m tests.broken_peers.tc_unregister_servers --variant NAME <reference server flags>

Variants:

- ``never-unregisters`` (TC-01..TC-03): a dead transport releases its pending pushes but its
  registration stays in ``current`` (no counter decrement, no ``disconnected`` event). TC-10 still
  passes against it, rightly: ``loadSingle`` unregisters a connection its push finds closed
  (Nacos does the same on ``ConnectionAlreadyClosedException``, research §2.4).
- ``unregisters-late`` (TC-01..TC-03): the registration goes 2 s after its transport died: right,
  but late (NON-STRICT, with a query sent after the bound that still showed it).
- ``per-ip-counter-drifts`` (TC-01..TC-03): unregistering never decrements the per-client-IP
  counter, so ``clientIpCounts`` drifts above ``current``.
- ``double-disconnect-event`` (TC-01..TC-03): every unregister records its ``disconnected``
  event (and tells the listeners) twice.
- ``leaves-rejected-open`` (TC-07): a rejected setup gets its ConnectResetRequest, but
  ``close_rejected`` does nothing: the transport stays open, unregistered (what Java 2.2.4 may do,
  research/nacos-protocol.md §2.3).
- ``pending-push-hangs`` (TC-10): a push is never released when its transport or stream dies,
  and resets wait ``HANG_MS`` (20 s) instead of 3 s, so ``reloadClient`` on a dead connection
  hangs until that bounded timeout.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from harness.reference.nacos import server
from harness.reference.nacos.config import ServerConfig
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.pushes import PushChannel
from harness.reference.nacos.server import NacosRefServer
from harness.reference.nacos.transport import Transport
from tests.broken_peers.variants import run_variant

log = logging.getLogger("nacos-ref.broken")

LATE_MS = 2_000  # unregisters-late: past TC-01..TC-03's 1000 + 250 ms band, well inside their 5 s watch
HANG_MS = 20_000  # pending-push-hangs: longer than reloadClient's 10 s HTTP guard in the harness


class NeverUnregisters(NacosRefServer):
    """The transport dies, the registration stays."""

    def on_transport_terminated(self, t: Transport) -> None:
        self.pushes.release(t.id, f"transport {t.cause}")
        log.info("transport %s terminated (%s): registration kept (broken)", t.id, t.cause)


class UnregistersLate(NacosRefServer):
    """The transport dies; the registration goes, but only ``LATE_MS`` later (right, but late)."""

    def on_transport_terminated(self, t: Transport) -> None:
        self.pushes.release(t.id, f"transport {t.cause}")
        log.info("transport %s terminated (%s): unregistering in %d ms (broken: late)", t.id, t.cause, LATE_MS)
        asyncio.get_running_loop().call_later(LATE_MS / 1000, self.unregister, t.id, f"transport {t.cause}, late")


class _NoDecrement(ConnectionManager):
    def _decrement_client_ip(self, client_ip: str) -> None:
        log.info("per-IP counter of %s not decremented (broken)", client_ip)


class PerIpCounterDrifts(NacosRefServer):
    """Unregister leaves the per-client-IP counter where it was."""

    connection_manager_class = _NoDecrement


class _TwiceDisconnected(ConnectionManager):
    def unregister(self, connection_id: str, reason: str = "") -> Connection | None:
        conn = super().unregister(connection_id, reason)
        if conn is not None:
            self.events.append(event="disconnected", connectionId=conn.id, clientIp=conn.meta.client_ip)
            self._notify("disconnected", conn)
        return conn


class DoubleDisconnectEvent(NacosRefServer):
    """Listeners hear of every unregister twice."""

    connection_manager_class = _TwiceDisconnected


class LeavesRejectedOpen(NacosRefServer):
    """A rejected setup is reset but its transport never closed."""

    def close_rejected(self, conn: Connection) -> None:
        log.info("rejected %s left open (broken)", conn.id)


class PendingPushHangs(NacosRefServer):
    """Pending pushes wait out a 20 s timeout whatever happens to their connection."""

    def __init__(self, config: ServerConfig) -> None:
        config.reset_timeout_ms = HANG_MS
        super().__init__(config)

    def on_transport_terminated(self, t: Transport) -> None:
        self.unregister(t.id, f"transport {t.cause}")  # pending pushes not released (broken)

    def on_stream_end(self, t: Transport, channel: PushChannel) -> None:
        log.info("bi-stream of %s ended; pending pushes kept waiting (broken)", t.id)


VARIANTS: dict[str, type[NacosRefServer]] = {
    "never-unregisters": NeverUnregisters,
    "unregisters-late": UnregistersLate,
    "per-ip-counter-drifts": PerIpCounterDrifts,
    "double-disconnect-event": DoubleDisconnectEvent,
    "leaves-rejected-open": LeavesRejectedOpen,
    "pending-push-hangs": PendingPushHangs,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: server.main(flags, server_cls=cls), "reference server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
