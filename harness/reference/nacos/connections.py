"""The connection registry: ``ConnectionManager`` of Nacos (research/nacos-protocol.md §2.4, §2.7).

Everything here is synchronous and runs on the server's one event loop, which gives the
``synchronized`` of the Java original for free: register and unregister never interleave.
No sockets: a ``Connection`` reaches its transport only through two callables (is it open,
close it), so the bookkeeping is unit-testable with fakes.

Invariants the suites check (TC-01, TC-08, PL-13):
- ``unregister`` is idempotent; the first call removes the id from ``current``, decrements
  the per-client-IP counter (the key goes at 0), closes the transport, records exactly one
  ``disconnected`` event and runs each listener's ``disconnected`` exactly once;
- ``client_ip_counts`` always equals the per-IP tally of ``current``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .limits import LimitRule, LimitVerdict, check_limit

__all__ = ["Connection", "ConnectionListener", "ConnectionManager", "ConnectionMeta", "SeqLog", "epoch_ms"]

log = logging.getLogger("nacos-ref.connections")

LABEL_SOURCE = "source"
LABEL_APP_NAME = "AppName"
LABEL_TAG = "Vipserver-Tag"


def epoch_ms() -> float:
    """Wall-clock milliseconds: the unit of ``lastActiveTime`` and of the extension logs."""
    return time.time() * 1000.0


@dataclass
class ConnectionMeta:
    """``ConnectionMeta``: what the setup request and the transport told us."""

    connection_id: str
    client_ip: str  # reported by the client in metadata.clientIp (trusted, as Nacos does)
    remote_ip: str  # the TCP peer (a proxy, behind Toxiproxy)
    remote_port: int
    local_port: int
    version: str = ""
    app_name: str = "-"
    tenant: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    create_time_ms: float = field(default_factory=epoch_ms)
    last_active_ms: float = field(default_factory=epoch_ms)
    connect_type: str = "GRPC"

    @property
    def source(self) -> str:
        return str(self.labels.get(LABEL_SOURCE) or "")

    @property
    def sdk_source(self) -> bool:
        return self.source.lower() == "sdk"

    @property
    def cluster_source(self) -> bool:
        return self.source.lower() == "cluster"

    def to_json(self) -> dict[str, Any]:
        """``metaInfo`` of ``/current``: 2.2.4's getters plus 2.4's remoteIp/remotePort."""
        return {
            "connectType": self.connect_type,
            "clientIp": self.client_ip,
            "remoteIp": self.remote_ip,
            "remotePort": self.remote_port,
            "localPort": self.local_port,
            "version": self.version,
            "connectionId": self.connection_id,
            # Spring renders java.util.Date as an ISO string with offset
            "createTime": datetime.fromtimestamp(self.create_time_ms / 1000.0).astimezone()
            .isoformat(timespec="milliseconds"),
            "lastActiveTime": int(self.last_active_ms),
            "appName": self.app_name,
            "tenant": self.tenant,
            "labels": dict(self.labels),
            "tag": self.labels.get(LABEL_TAG),
            "sdkSource": self.sdk_source,
            "clusterSource": self.cluster_source,
        }


class Connection:
    """One registered (or registering) connection: meta, traced flag, the push channel, and
    two callables into the transport layer."""

    def __init__(
        self,
        meta: ConnectionMeta,
        *,
        channel: Any = None,
        is_open: Callable[[], bool] = lambda: True,
        closer: Callable[[], None] = lambda: None,
    ) -> None:
        self.meta = meta
        self.channel = channel  # pushes.PushChannel of the bi-stream that set it up
        self.traced = False
        self._is_open = is_open
        self._closer = closer

    @property
    def id(self) -> str:
        return self.meta.connection_id

    def is_connected(self) -> bool:
        return self._is_open()

    def close(self) -> None:
        """Really close the transport (Nacos ``GrpcConnection.close`` closes the channel)."""
        self._closer()

    def refresh_active_time(self, now_ms: float | None = None) -> None:
        self.meta.last_active_ms = epoch_ms() if now_ms is None else now_ms

    def to_json(self) -> dict[str, Any]:
        """One value of ``/current`` (Jackson of Connection + GrpcConnection)."""
        return {
            "traced": self.traced,
            "abilities": None,
            "connected": self.is_connected(),
            "labels": dict(self.meta.labels),
            "metaInfo": self.meta.to_json(),
        }


class ConnectionListener(Protocol):
    """``ClientConnectionEventListener``: told once per registered connection each way."""

    def connected(self, conn: Connection) -> None: ...

    def disconnected(self, conn: Connection) -> None: ...


class SeqLog:
    """An append-only log with a sequence number from 1, read with ``since(seq)``.

    Bounded (oldest entries dropped) so a long soak cannot grow the server without limit.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def append(self, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        entry = {"seq": self._seq, "t_ms": epoch_ms(), **fields}
        self._entries.append(entry)
        return entry

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._entries if e["seq"] > seq]


class ConnectionManager:
    """Registry, per-client-IP counter, limits, listeners and the ``events`` log."""

    def __init__(self, rule: LimitRule | None = None, *, listeners: Iterable[ConnectionListener] = ()) -> None:
        self.rule = rule or LimitRule()
        self.current: dict[str, Connection] = {}
        self.client_ip_counts: dict[str, int] = {}
        self.listeners: list[ConnectionListener] = list(listeners)
        self.events = SeqLog()
        # loadCount(count, redirectAddress): consumed once by the ejector's over-limit pass
        self.load_client = -1
        self.redirect_address: str | None = None

    # ---- lookups ---------------------------------------------------------------------

    def check_valid(self, connection_id: str) -> bool:
        return connection_id in self.current

    def get(self, connection_id: str) -> Connection | None:
        return self.current.get(connection_id)

    def count(self) -> int:
        return len(self.current)

    def sdk_count(self) -> int:
        return sum(1 for c in self.current.values() if c.meta.sdk_source)

    def refresh_active_time(self, connection_id: str) -> None:
        conn = self.current.get(connection_id)
        if conn is not None:
            conn.refresh_active_time()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The ``/current`` body."""
        return {cid: conn.to_json() for cid, conn in self.current.items()}

    # ---- register / unregister -------------------------------------------------------

    def check_limit(self, conn: Connection) -> LimitVerdict:
        meta = conn.meta
        return check_limit(
            self.rule,
            client_ip=meta.client_ip,
            app_name=meta.app_name,
            cluster_source=meta.cluster_source,
            sdk_count=self.sdk_count(),
            ip_count=self.client_ip_counts.get(meta.client_ip, 0),
        )

    def register(self, conn: Connection) -> bool:
        """``register``: False when the transport is gone or a limit denies; True when
        registered now or already registered (the same transport set up twice)."""
        if not conn.is_connected():
            return False
        if conn.id in self.current:
            return True
        verdict = self.check_limit(conn)
        if not verdict:
            log.warning("limit denies %s (clientIp=%s app=%s): %s %s", conn.id, conn.meta.client_ip,
                        conn.meta.app_name, verdict.rule, verdict.detail)
            return False
        conn.traced = self.rule.traced(conn.meta.client_ip)
        self.current[conn.id] = conn
        self._increment_client_ip(conn.meta.client_ip)
        self.events.append(event="connected", connectionId=conn.id, clientIp=conn.meta.client_ip)
        log.info("register %s clientIp=%s app=%s source=%s version=%s", conn.id, conn.meta.client_ip,
                 conn.meta.app_name, conn.meta.source, conn.meta.version)
        self._notify("connected", conn)
        return True

    def unregister(self, connection_id: str, reason: str = "") -> Connection | None:
        """Remove, decrement, close, notify: once. Later calls return None and do nothing."""
        conn = self.current.pop(connection_id, None)
        if conn is None:
            return None
        self._decrement_client_ip(conn.meta.client_ip)
        log.info("unregister %s clientIp=%s reason=%s", conn.id, conn.meta.client_ip, reason or "-")
        try:
            conn.close()
        except Exception:  # a broken transport must not stop the bookkeeping
            log.exception("closing %s failed", connection_id)
        self.events.append(event="disconnected", connectionId=conn.id, clientIp=conn.meta.client_ip)
        self._notify("disconnected", conn)
        return conn

    def _increment_client_ip(self, client_ip: str) -> None:
        self.client_ip_counts[client_ip] = self.client_ip_counts.get(client_ip, 0) + 1

    def _decrement_client_ip(self, client_ip: str) -> None:
        left = self.client_ip_counts.get(client_ip, 0) - 1
        if left <= 0:
            self.client_ip_counts.pop(client_ip, None)
        else:
            self.client_ip_counts[client_ip] = left

    def _notify(self, what: str, conn: Connection) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, what)(conn)
            except Exception:  # as ClientConnectionEventListenerRegistry: log and go on
                log.exception("listener %r failed on %s of %s", listener, what, conn.id)

    # ---- reload ----------------------------------------------------------------------

    def load_count(self, count: int, redirect_address: str | None) -> None:
        """``loadCount``: remembered for the next over-limit pass of the ejector."""
        self.load_client = count
        self.redirect_address = redirect_address or None

    def take_load_count(self) -> tuple[int, str | None]:
        """Read and clear the one-shot load request (-1 when none)."""
        count, redirect = self.load_client, self.redirect_address
        self.load_client, self.redirect_address = -1, None
        return count, redirect
