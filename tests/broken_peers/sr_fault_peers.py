"""Deliberately broken reference peers for SR-10 and SR-16..SR-19: each overrides ONE behaviour of
the reference client or server, so those cases can be shown to FAIL against it (a check that
cannot fail is a defect). They live in the tests, never in the product peers' code paths.

    python -m tests.broken_peers.sr_fault_peers --variant NAME <reference client or server flags>

Clients (``harness.reference.nacos.client`` flags):

- ``no-backoff`` (SR-18): reconnects in a hot loop, no sleep between failed attempts;
- ``silent-fast-retry`` (SR-18): retries every 10 ms and reports no ``connect_failed`` event
  (only the attempts counted on the wire show it);
- ``stops-reconnecting`` (SR-18): once its connection is lost, never tries again;
- ``no-health-check`` (SR-19): never sends a HealthCheck (it still answers the server's
  ClientDetectionRequest, so it survives only thanks to the server's probes);
- ``gives-up-after-reset`` (SR-17): once a ServerCheck fails at the transport level, it never
  tries to connect again;
- ``request-before-setup`` (SR-16): considers itself connected after ServerCheck and writes its
  ConnectionSetup only after the application's first request went out, so that request meets an
  unregistered connection; and it treats that 301 as fatal (gives the connection up for good).

Servers (``harness.reference.nacos.server`` flags):

- ``per-ip-not-enforced`` (SR-10): the ``countLimitPerClientIp`` map is never consulted;
- ``per-ip-counter-drifts`` (SR-10): a setup denied by a limit still bumps its IP's counter,
  never rolled back (the counter drifts above ``current``);
- ``keeps-dead-registration`` (SR-17): books every accepted transport as a connection at once
  (before ServerCheck or setup) and drops the booking only on an orderly close, so a transport
  reset by its peer (RST) stays registered forever.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import grpc

from harness.protocol.nacos import codec
from harness.reference.nacos import client, server
from harness.reference.nacos.client import RefNacosClient
from harness.reference.nacos.client_connection import RpcConnection
from harness.reference.nacos.client_logic import ServerAddress
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.limits import LimitVerdict, check_limit
from harness.reference.nacos.server import NacosRefServer
from harness.reference.nacos.transport import Transport

# ---- clients ----------------------------------------------------------------------------------


class NoBackoff(RefNacosClient):
    """SR-18: no sleep between failed reconnect attempts (a hot loop while every server is down)."""

    def backoff_ms(self, retry_turns: int) -> float:
        return 0.0


class SilentFastRetry(RefNacosClient):
    """SR-18: retries every 10 ms and reports no attempt at all (no ``connect_failed`` event): only
    the wire can show that its attempts are not paced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        record = self.state.record

        def silent(kind: str, *a: Any, **kw: Any) -> Any:
            return None if kind == "connect_failed" else record(kind, *a, **kw)

        self.state.record = silent  # type: ignore[method-assign]

    def backoff_ms(self, retry_turns: int) -> float:
        return 10.0


class StopsReconnecting(RefNacosClient):
    """SR-18: once its connection is lost it never tries again (it only says it is switching)."""

    async def reconnect(self, ctx: Any) -> None:
        self.state.record("switching", server=self.state.server, detail={"reason": ctx.reason})
        self.set_status("UNHEALTHY")


class NoHealthCheck(RefNacosClient):
    """SR-19: never health-checks; reports itself healthy without asking the server."""

    async def health_check(self) -> bool:
        return True


class GivesUpAfterReset(RefNacosClient):
    """SR-17: a ServerCheck that fails at the transport level (e.g. RST) ends all connecting."""

    gave_up = False

    async def server_check(self, conn: RpcConnection) -> str | None:
        try:
            return await super().server_check(conn)
        except grpc.aio.AioRpcError:
            self.gave_up = True
            raise

    async def connect_to_server(self, server: ServerAddress) -> RpcConnection | None:
        if self.gave_up:
            return None  # no attempt at all (the reconnect loop still sleeps its backoff)
        return await super().connect_to_server(server)


class RequestBeforeSetup(RefNacosClient):
    """SR-16: the first request overtakes the ConnectionSetup; a 301 answer is fatal."""

    gave_up = False

    async def send_setup(self, conn: RpcConnection) -> None:
        conn.setup_deferred = True  # type: ignore[attr-defined]  # written after the first request

    async def _write_deferred_setup(self, conn: RpcConnection) -> None:
        if getattr(conn, "setup_deferred", False):
            conn.setup_deferred = False  # type: ignore[attr-defined]
            await super().send_setup(conn)

    async def health_check(self) -> bool:
        if self.current is not None:
            await self._write_deferred_setup(self.current)
        return await super().health_check()

    async def reconnect(self, ctx: Any) -> None:
        if not self.gave_up:
            await super().reconnect(ctx)

    async def request(self, build: Any, timeout_ms: float) -> dict[str, Any]:
        conn = self.current
        if self.gave_up or conn is None or not self.is_running:
            return {"ok": False, "error_code": -401, "error": f"gave up / not connected ({self.status})",
                    "attempts": []}
        try:
            reply = await conn.unary(build(), timeout_ms)
        except grpc.aio.AioRpcError as exc:
            return {"ok": False, "error_code": codec.SERVER_ERROR, "error": str(exc), "attempts": []}
        await self._write_deferred_setup(conn)
        if reply.type == codec.ERROR_RESPONSE and reply.error_code == codec.UN_REGISTER:
            self.gave_up = True
            self.state.record("error", server=str(conn.server),
                              detail={"what": "request answered 301: fatal, giving up",
                                      "connection_id": conn.connection_id})
            self.set_status("UNHEALTHY")
            await self.close_connection(conn, reason="301 is fatal")
            return {"ok": False, "error_code": codec.UN_REGISTER, "error": "Connection is unregistered.",
                    "attempts": [{"ok": False, "error_code": codec.UN_REGISTER, "connection_id": conn.connection_id}]}
        return {"ok": reply.result_code == 200, "error_code": reply.error_code or None,
                "attempts": [{"ok": True, "connection_id": conn.connection_id, "response_type": reply.type}]}


# ---- servers ----------------------------------------------------------------------------------


class _PerIpIgnored(ConnectionManager):
    def check_limit(self, conn: Connection) -> LimitVerdict:
        meta = conn.meta
        return check_limit(dataclasses.replace(self.rule, count_limit_per_client_ip={}), client_ip=meta.client_ip,
                           app_name=meta.app_name, cluster_source=meta.cluster_source, sdk_count=self.sdk_count(),
                           ip_count=self.client_ip_counts.get(meta.client_ip, 0))


class PerIpNotEnforced(NacosRefServer):
    """SR-10: the per-client-IP map is never consulted."""

    connection_manager_class = _PerIpIgnored


class _DriftingCounter(ConnectionManager):
    def register(self, conn: Connection) -> bool:
        ok = super().register(conn)
        if not ok and conn.is_connected():
            self._increment_client_ip(conn.meta.client_ip)  # counted although denied, never rolled back
        return ok


class PerIpCounterDrifts(NacosRefServer):
    """SR-10: a denied setup still bumps its IP's counter."""

    connection_manager_class = _DriftingCounter


class KeepsDeadRegistration(NacosRefServer):
    """SR-17: registers each transport at accept; forgets it only on an orderly close."""

    def on_transport_ready(self, t: Transport) -> None:
        super().on_transport_ready(t)
        conn = self.build_connection(t, None, None)
        conn.meta.labels = {"source": "sdk"}
        self.register_connection(conn)

    def on_transport_terminated(self, t: Transport) -> None:
        if "reset" in t.cause:
            self.pushes.release(t.id, f"transport {t.cause}")
            return  # the abortive close is missed: the registration stays
        super().on_transport_terminated(t)


CLIENT_VARIANTS: dict[str, type[RefNacosClient]] = {
    "no-backoff": NoBackoff,
    "silent-fast-retry": SilentFastRetry,
    "stops-reconnecting": StopsReconnecting,
    "no-health-check": NoHealthCheck,
    "gives-up-after-reset": GivesUpAfterReset,
    "request-before-setup": RequestBeforeSetup,
}
SERVER_VARIANTS: dict[str, type[NacosRefServer]] = {
    "per-ip-not-enforced": PerIpNotEnforced,
    "per-ip-counter-drifts": PerIpCounterDrifts,
    "keeps-dead-registration": KeepsDeadRegistration,
}


def main(argv: list[str]) -> int:
    names = [*CLIENT_VARIANTS, *SERVER_VARIANTS]
    if len(argv) < 2 or argv[0] != "--variant" or argv[1] not in names:
        print(f"usage: --variant {{{','.join(names)}}} <reference client or server flags>", file=sys.stderr)
        return 2
    variant, rest = argv[1], argv[2:]
    if variant in CLIENT_VARIANTS:
        return client.main(rest, client_cls=CLIENT_VARIANTS[variant])
    return server.main(rest, server_cls=SERVER_VARIANTS[variant])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
