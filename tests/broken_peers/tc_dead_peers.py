"""Deliberately broken reference peers for the dead-link / dead-server cases (TC-04, TC-05,
TC-06, TC-09, TC-15..TC-18): each overrides ONE behaviour of the reference server or client so a case can be
shown to FAIL for the intended reason. They live in the tests, never in the product peers.

    python -m tests.broken_peers.tc_dead_peers --variant NAME <reference server or client flags>

Server variants (``NacosRefServer`` subclasses):

- ``never-ejects``: the ejector runs but only logs, as ``NacosRuntimeConnectionEjector.doEject``
  of Nacos 2.2.0-2.2.4 (research/nacos-protocol.md §2.6): no idle detection, no
  ClientDetectionRequest, a dead connection stays registered until its transport ends.
- ``ejects-but-keeps-registration``: unregistering closes the transport but leaves the id in
  ``current`` (and its per-IP count, and sends no ``disconnected`` event): a stale registration
  outlives every ejection and every transport termination.

Client variants (``RefNacosClient`` subclasses):

- ``no-health-check``: never sends a HealthCheck; the keep-alive loop trusts the connection.
- ``health-check-never-fails``: sends the HealthCheck, but a timeout or transport error counts
  as healthy (only an answer with an error code is unhealthy).
- ``leaks-close-wait``: beside each connection it keeps a side TCP connection to the same server
  (an HTTP/2 connection opened and forgotten) that it never reads and never closes: once the far
  side closes it, the client's socket stays in CLOSE_WAIT. (Keeping a grpc call object alive is
  not enough: grpc core shuts the socket down itself when it reads the peer's FIN.)
- ``stays-on-dead-server``: detects a dead server, but every reconnect goes back to the server it
  was on (never rotates away).
- ``spins-while-reconnecting`` (TC-16): from its first failed HealthCheck on, a poller thread
  that never sleeps keeps one core busy (a busy-wait on the connection's state).
- ``leaves-connects-pending`` (TC-16): every connect attempt also opens a raw TCP connect to each
  server of its list (a warm-up it forgets): towards a server that drops SYNs it stays in
  SYN_SENT for the kernel's whole retry schedule (about two minutes), long after the attempt.
- ``keeps-old-transport`` (TC-18): on a switch it reports the old connection closed but keeps
  it open (its transport stays ESTABLISHED, so the server rightly keeps it registered).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any

import grpc

from harness.protocol.nacos import codec
from harness.reference.nacos import client as ref_client
from harness.reference.nacos import server as ref_server
from harness.reference.nacos.client import RefNacosClient
from harness.reference.nacos.client_connection import RpcConnection, describe_error
from harness.reference.nacos.client_logic import ServerAddress
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.server import NacosRefServer

log = logging.getLogger("tc-dead-peers")

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0


# ---- servers ----------------------------------------------------------------------------------

class NeverEjects(NacosRefServer):
    """2.2.0-2.2.4: the eject task only logs metrics."""

    async def eject_outdated(self) -> None:
        log.info("Connection check task start; Long connection metrics detail, Total count=%d (never ejects)",
                 self.connections.count())


class _KeepsRegistration(ConnectionManager):
    def unregister(self, connection_id: str, reason: str = "") -> Connection | None:
        conn = self.current.get(connection_id)
        if conn is None:
            return None
        log.info("unregister %s reason=%s: transport closed, registration KEPT (broken)", connection_id, reason or "-")
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - as the reference: bookkeeping goes on
            log.exception("closing %s failed", connection_id)
        return conn


class EjectsButKeepsRegistration(NacosRefServer):
    connection_manager_class = _KeepsRegistration


# ---- clients ----------------------------------------------------------------------------------

class NoHealthCheck(RefNacosClient):
    """Trusts the connection: no HealthCheck is ever sent."""

    async def health_check(self) -> bool:
        return self.current is not None


class HealthCheckNeverFails(RefNacosClient):
    """A HealthCheck that times out (or meets any transport error) counts as healthy."""

    async def health_check(self) -> bool:
        conn = self.current
        if conn is None:
            self._last_health_failure = "no connection"
            return False
        try:
            reply = await conn.unary(codec.health_check_request(client_ip=self.config.client_ip),
                                     self.config.health_timeout_ms)
        except (grpc.aio.AioRpcError, codec.BadBody) as exc:
            log.info("health check error %s treated as healthy (broken)", describe_error(exc))
            return True
        if reply.result_code == 200:
            return True
        self._last_health_failure = f"{reply.type} errorCode={reply.error_code}"
        return False


class LeaksCloseWait(RefNacosClient):
    """Keeps a side TCP connection to every server it connected to (an HTTP/2 connection it
    opened and then forgot: preface and SETTINGS sent, never read, never closed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forgotten: list[socket.socket] = []

    async def connect_to_server(self, server: ServerAddress) -> RpcConnection | None:
        conn = await super().connect_to_server(server)
        if conn is not None:
            try:
                side = socket.create_connection((server.ip, conn.grpc_port), timeout=1.0)
                side.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)
                self._forgotten.append(side)  # never read, never closed: CLOSE_WAIT once the far side closes
            except OSError as exc:
                log.warning("side connection to %s failed: %s", server, exc)
        return conn


class StaysOnDeadServer(RefNacosClient):
    """Reconnects to the server of its current connection, never to another one."""

    def next_server(self) -> ServerAddress:
        if self.current is not None:
            return self.current.server
        return super().next_server()


class SpinsWhileReconnecting(RefNacosClient):
    """From its first failed HealthCheck on, a poller thread that never sleeps (and never ends)."""

    _spinning = False

    async def health_check(self) -> bool:
        healthy = await super().health_check()
        if not healthy and not self._spinning:
            self._spinning = True
            threading.Thread(target=_spin, name="broken-spin", daemon=True).start()
        return healthy


def _spin() -> None:
    while True:  # deliberately no sleep: the defect under test
        pass


class LeavesConnectsPending(RefNacosClient):
    """Beside each connect attempt, a non-blocking TCP connect to every server of its list, never closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forgotten: list[socket.socket] = []

    async def connect_to_server(self, server: ServerAddress) -> RpcConnection | None:
        for each in self.servers:
            side = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            side.setblocking(False)
            side.connect_ex((each.ip, each.grpc_port(self.config.grpc_port_offset)))
            self._forgotten.append(side)  # never closed: SYN_SENT for as long as the kernel retries
        return await super().connect_to_server(server)


class KeepsOldTransport(RefNacosClient):
    """On a switch, reports the old connection closed (its ``disconnected`` event) but never closes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: list[RpcConnection] = []

    async def close_connection(self, conn: RpcConnection, *, reason: str) -> None:
        if reason != "switched":
            await super().close_connection(conn, reason=reason)
            return
        self._kept.append(conn)  # its stream and channel stay open: the transport stays ESTABLISHED
        self._open.discard(conn)
        if conn is self.current:
            self.current = None
            self._publish_current()
        self.state.record("disconnected", server=str(conn.server),
                          detail={"connection_id": conn.connection_id, "reason": reason})


SERVER_VARIANTS: dict[str, type[NacosRefServer]] = {
    "never-ejects": NeverEjects,
    "ejects-but-keeps-registration": EjectsButKeepsRegistration,
}
CLIENT_VARIANTS: dict[str, type[RefNacosClient]] = {
    "no-health-check": NoHealthCheck,
    "health-check-never-fails": HealthCheckNeverFails,
    "leaks-close-wait": LeaksCloseWait,
    "stays-on-dead-server": StaysOnDeadServer,
    "spins-while-reconnecting": SpinsWhileReconnecting,
    "leaves-connects-pending": LeavesConnectsPending,
    "keeps-old-transport": KeepsOldTransport,
}


def main(argv: list[str]) -> int:
    names = [*SERVER_VARIANTS, *CLIENT_VARIANTS]
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in names:
        print(f"usage: --variant {{{','.join(names)}}} <reference server or client flags>", file=sys.stderr)
        return 2
    variant, rest = argv[1], argv[2:]
    if variant in SERVER_VARIANTS:
        return ref_server.main(rest, server_cls=SERVER_VARIANTS[variant])
    return ref_client.main(rest, client_cls=CLIENT_VARIANTS[variant])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
