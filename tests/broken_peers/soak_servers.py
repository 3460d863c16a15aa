"""Deliberately broken reference servers for the TC-08 soak self-test
(tests/integration/test_soak_fail.py): each breaks the bookkeeping one exact check of the soak
judges, so the soak can be shown to FAIL for the intended reason. They live in the tests, never
in the product peers.

    python -m tests.broken_peers.soak_servers --variant NAME <reference server flags>

- ``forgets-unregister``: a transport's death does not unregister its connection (pending pushes
  are still released). The dead-connection ejector is the backstop that would clean such a
  registration up late (its probe to a closed stream fails), and the soak's convergence bound
  allows for it; so this server is also a Nacos 2.2.0-2.2.4 one whose ejector only logs
  (research/nacos-protocol.md §2.6): nothing ever removes a dead registration, as with a
  ``transportTerminated`` hook that is not wired. Breaks "current == live clients".
- ``ip-count-drift``: unregistering does not decrement the per-client-IP counter. Breaks
  "per-IP counts == truth".
- ``double-disconnect``: each unregister records (and notifies) ``disconnected`` twice. Breaks
  "events balance".
"""

from __future__ import annotations

import logging
import sys

from harness.reference.nacos import server as ref_server
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.server import NacosRefServer
from harness.reference.nacos.transport import Transport
from tests.broken_peers.variants import run_variant

log = logging.getLogger("soak-broken-servers")


class ForgetsUnregister(NacosRefServer):
    """transportTerminated only releases pushes; the ejector only logs (2.2.0-2.2.4)."""

    def on_transport_terminated(self, t: Transport) -> None:
        self.pushes.release(t.id, f"transport {t.cause}")
        if self.connections.check_valid(t.id):
            log.info("transport of %s %s: registration KEPT (broken)", t.id, t.cause)

    async def eject_outdated(self) -> None:
        log.info("Long connection metrics detail, Total count=%d (never ejects)", self.connections.count())


class _NoIpDecrement(ConnectionManager):
    def _decrement_client_ip(self, client_ip: str) -> None:
        log.info("clientIp %s: counter NOT decremented (broken)", client_ip)


class IpCountDrift(NacosRefServer):
    connection_manager_class = _NoIpDecrement


class _DoubleDisconnect(ConnectionManager):
    def unregister(self, connection_id: str, reason: str = "") -> Connection | None:
        conn = super().unregister(connection_id, reason)
        if conn is not None:
            self.events.append(event="disconnected", connectionId=conn.id, clientIp=conn.meta.client_ip)
            self._notify("disconnected", conn)
        return conn


class DoubleDisconnect(NacosRefServer):
    connection_manager_class = _DoubleDisconnect


VARIANTS: dict[str, type[NacosRefServer]] = {
    "forgets-unregister": ForgetsUnregister,
    "ip-count-drift": IpCountDrift,
    "double-disconnect": DoubleDisconnect,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: ref_server.main(flags, server_cls=cls), "reference server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
