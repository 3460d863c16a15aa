"""Reset and eject: ``loadSingle``, ``loadCount`` and the runtime ejector (2.3+ semantics).

research/nacos-protocol.md §2.4, §2.6 (``NacosRuntimeConnectionEjector`` of 2.3.0+):
every ``eject_interval_ms`` (fixed delay, like ``scheduleWithFixedDelay``)

1. connections idle for ``>= idle_threshold_ms`` get a ``ClientDetectionRequest`` (all at
   once, each with ``probe_timeout_ms``); an answer with resultCode 200 refreshes
   ``lastActiveTime``, anything else (timeout, dead stream, error code) unregisters the
   connection, which closes its transport;
2. the one-shot over-limit pass: after ``reloadCurrent(count, redirectAddress)``, reset
   ``sdkCount - count`` SDK connections via ``loadSingle`` (concurrently), then forget it.

``eject_interval_ms = 0`` runs no ejector at all: the 2.2.0-2.2.4 behaviour, where dead
connections stay registered and ``reloadCurrent`` does nothing.

A mixin of the server, so a broken variant overrides one step (e.g. ``probe``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from harness.protocol.nacos import codec

from .connections import Connection, epoch_ms
from .pushes import ConnectionClosed, PushTimeout

if TYPE_CHECKING:
    from .server import NacosRefServer

__all__ = ["EjectorMixin", "split_redirect"]

log = logging.getLogger("nacos-ref.ejector")


def split_redirect(redirect_address: str | None) -> tuple[str | None, str | None]:
    """``loadSingle``'s split: "ip:port" -> ("ip", "port") strings; no ':' -> no address
    (as Nacos; an IPv6 address breaks it there too)."""
    if redirect_address and ":" in redirect_address:
        parts = redirect_address.split(":")
        return parts[0], parts[1]
    return None, None


class EjectorMixin:
    async def load_single(self: NacosRefServer, connection_id: str, redirect_address: str | None) -> bool:
        """``loadSingle``: push ConnectResetRequest (redirect split into serverIp/serverPort)
        to an SDK connection and wait for the answer; never close the transport here, the
        client is expected to leave. A connection found closed is unregistered."""
        conn = self.connections.get(connection_id)
        if conn is None or not conn.meta.sdk_source:
            log.info("reload %s: %s, nothing to do", connection_id,
                     "unknown id" if conn is None else "not an sdk connection")
            return False
        server_ip, server_port = split_redirect(redirect_address)
        log.info("reset %s redirect=%s", connection_id, redirect_address or "-")
        try:
            answer = await self.pushes.push(conn.id, conn.channel, codec.CONNECT_RESET_REQUEST,
                                            {"serverIp": server_ip, "serverPort": server_port},
                                            timeout_ms=self.config.reset_timeout_ms)
        except ConnectionClosed as exc:
            log.info("reset %s: connection already closed (%s)", connection_id, exc)
            if not conn.is_connected():
                self.unregister(connection_id, "reset: connection already closed")
            return False
        except PushTimeout as exc:
            log.warning("reset %s: %s", connection_id, exc)
            return False
        return answer.result_code == 200

    def load_count(self: NacosRefServer, count: int, redirect_address: str | None) -> None:
        """``loadCount``: remembered for the next over-limit pass."""
        log.info("loadCount count=%d redirect=%s", count, redirect_address or "-")
        self.connections.load_count(count, redirect_address)

    async def run_ejector(self: NacosRefServer) -> None:
        interval_s = self.config.eject_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval_s)  # the ejector's period, not a synchronisation
            try:
                await self.eject_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("eject pass failed")

    async def eject_pass(self: NacosRefServer) -> None:
        await self.eject_outdated()
        await self.eject_over_limit()

    def outdated_connections(self: NacosRefServer) -> list[Connection]:
        now = epoch_ms()
        threshold = self.config.idle_threshold_ms
        return [c for c in self.connections.current.values() if now - c.meta.last_active_ms >= threshold]

    async def eject_outdated(self: NacosRefServer) -> None:
        stale = self.outdated_connections()
        if not stale:
            return
        log.info("probing %d idle connection(s)", len(stale))
        answered = await asyncio.gather(*(self.probe(c) for c in stale))
        for conn, ok in zip(stale, answered, strict=True):
            if not ok and self.connections.check_valid(conn.id):
                log.info("eject %s clientIp=%s: no answer to ClientDetectionRequest", conn.id, conn.meta.client_ip)
                self.unregister(conn.id, "ejected")

    async def probe(self: NacosRefServer, conn: Connection) -> bool:
        """One ClientDetectionRequest; True iff answered with resultCode 200 in time."""
        try:
            answer = await self.pushes.push(conn.id, conn.channel, codec.CLIENT_DETECTION_REQUEST, {},
                                            timeout_ms=self.config.probe_timeout_ms)
        except (ConnectionClosed, PushTimeout) as exc:
            log.info("probe %s failed: %s", conn.id, exc)
            return False
        if answer.result_code == 200:
            conn.refresh_active_time()
            return True
        return False

    async def eject_over_limit(self: NacosRefServer) -> None:
        count, redirect = self.connections.take_load_count()
        if count < 0:
            return
        sdk = [c for c in self.connections.current.values() if c.meta.sdk_source]
        excess = len(sdk) - count
        log.info("over-limit pass: loadCount=%d sdkCount=%d redirect=%s -> resetting %d",
                 count, len(sdk), redirect or "-", max(excess, 0))
        if excess <= 0:
            return
        await asyncio.gather(*(self.load_single(c.id, redirect) for c in sdk[:excess]))
