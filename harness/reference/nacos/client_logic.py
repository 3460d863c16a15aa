"""Pure parts of the reference Nacos client: server addresses, rotation, the redirect rule,
the reconnect pacing, and the configuration. No sockets, no asyncio; unit-tested on their own.

Semantics are the Java 2.2.4 client's (research/nacos-protocol.md §4):

- rotation: ``nextRpcServer()`` = ``index = (index + 1) % n`` from a random initial index
  (naming ``ServerListManager``);
- redirect: a recommended server is used only if its *IP* appears in the client's own list, and
  then with the *list's* port (the first entry with that IP); otherwise it is dropped and the
  client rotates. Consequence: on one loopback IP every redirect lands on the first list entry,
  so cases that test redirects put servers on distinct 127.0.0.x addresses;
- pacing: after each failed attempt in ``reconnect()``, while not RUNNING, sleep
  ``min(retryTurns + 1, 50) × step``; ``retryTurns`` grows after each full pass over the list
  (100 ms between servers in the first pass, 200 ms in the second, ... capped at 5 s).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from harness import strict
from harness.ports import NACOS_GRPC_OFFSET, check_loopback

DEFAULT_MAIN_PORT = 8848  # resolveServerInfo: the port when an address has none
MAX_RETRY_TURNS_FACTOR = 50  # Math.min(retryTurns + 1, 50)


@dataclass(frozen=True)
class ServerAddress:
    """A server as the client knows it: IP and *main* port (the client dials main + offset)."""

    ip: str
    port: int

    @classmethod
    def parse(cls, text: str, *, default_port: int = DEFAULT_MAIN_PORT) -> ServerAddress:
        """``ip[:port]``, an optional ``http://`` prefix stripped (resolveServerInfo)."""
        raw = text.strip()
        for prefix in ("http://", "https://"):
            if raw.startswith(prefix):
                raw = raw[len(prefix):]
        raw = raw.rstrip("/")
        if not raw:
            raise ValueError(f"empty server address in {text!r}")
        host, sep, port = raw.rpartition(":")
        if not sep:
            return cls(raw, default_port)
        number = strict.ascii_int(port, minimum=1, maximum=65535)
        if number is None or not host:
            raise ValueError(f"server address {text!r} is not ip:port")
        return cls(host, number)

    def grpc_port(self, offset: int = NACOS_GRPC_OFFSET) -> int:
        return self.port + offset

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


def parse_server_list(text: str, *, loopback_only: bool = True) -> list[ServerAddress]:
    """``ip:port,ip:port``; refuses anything outside 127.0.0.0/8 and the harness's namespaces
    (198.18.0.0/15: a server placed in one, dialled directly by a packet-level case) unless told
    otherwise."""
    servers = [ServerAddress.parse(part) for part in text.split(",") if part.strip()]
    if not servers:
        raise ValueError("the server list is empty")
    if loopback_only:
        for server in servers:
            check_loopback(server.ip, namespaced=True)
    return servers


class ServerList:
    """The client's own server list and its round-robin cursor."""

    def __init__(self, servers: Sequence[ServerAddress], *, rng: random.Random | None = None) -> None:
        if not servers:
            raise ValueError("the server list is empty")
        self._servers = tuple(servers)
        self._index = (rng or random.Random()).randrange(len(self._servers))

    @property
    def servers(self) -> tuple[ServerAddress, ...]:
        return self._servers

    def __len__(self) -> int:
        return len(self._servers)

    def __iter__(self) -> Iterator[ServerAddress]:
        return iter(self._servers)

    def __contains__(self, server: object) -> bool:
        return server in self._servers

    def next(self) -> ServerAddress:
        """``genNextServer``: advance first, then return (the random start is never used as-is)."""
        self._index = (self._index + 1) % len(self._servers)
        return self._servers[self._index]

    def resolve_recommended(self, recommended: ServerAddress) -> ServerAddress | None:
        """The Java "must be in my server list" rule: match on IP only, take the list's port."""
        for server in self._servers:
            if server.ip == recommended.ip:
                return server
        return None


def backoff_ms(retry_turns: int, *, step_ms: float, cap_ms: float) -> float:
    """Sleep after a failed reconnect attempt while not RUNNING."""
    return min(min(retry_turns + 1, MAX_RETRY_TURNS_FACTOR) * step_ms, cap_ms)


class ReconnectPacer:
    """Counts the attempts of one ``reconnect()`` call (``reConnectTimes``/``retryTurns``)."""

    def __init__(self, server_count: int) -> None:
        if server_count <= 0:
            raise ValueError("server_count must be positive")
        self.server_count = server_count
        self.reconnect_times = 0
        self.retry_turns = 0

    def after_failed_attempt(self) -> int:
        """Book one failed attempt; return the retry turn that decides the following sleep."""
        if self.reconnect_times > 0 and self.reconnect_times % self.server_count == 0:
            self.retry_turns += 1
        self.reconnect_times += 1
        return self.retry_turns


def sleep_schedule_ms(server_count: int, attempts: int, *, step_ms: float, cap_ms: float) -> list[float]:
    """The sleeps after ``attempts`` consecutive failures (what SR-18 observes)."""
    pacer = ReconnectPacer(server_count)
    return [backoff_ms(pacer.after_failed_attempt(), step_ms=step_ms, cap_ms=cap_ms) for _ in range(attempts)]


@dataclass
class RefClientConfig:
    """Knobs of the reference client; defaults are the Java 2.2.4 client's."""

    servers: list[ServerAddress]
    client_ip: str = "127.0.0.1"  # reported in metadata.clientIp (Java: NetUtils.localIP())
    app_name: str = "unknown"  # labels.AppName (Java: project.name or "unknown")
    tenant: str | None = None
    grpc_port_offset: int = NACOS_GRPC_OFFSET
    health_interval_ms: float = 5000.0  # nacos.remote.client.grpc.connect.keep.alive
    health_timeout_ms: float = 3000.0  # nacos.remote.client.grpc.health.timeout
    health_retry: int = 3  # nacos.remote.client.grpc.health.retry (so 4 attempts)
    health_jitter_ms: float = 0.0  # Java sleeps random(<500 ms) before the first attempt; 0 keeps SR-19 crisp
    server_check_timeout_ms: float = 3000.0  # nacos.remote.client.grpc.server.check.timeout
    request_timeout_ms: float = 3000.0  # nacos.remote.client.grpc.timeout
    retry_times: int = 3  # nacos.remote.client.grpc.retry.times (2.2.4: `< retryTimes`)
    setup_wait_ms: float = 100.0  # the sleep after ConnectionSetupRequest
    backoff_step_ms: float = 100.0
    backoff_cap_ms: float = 5000.0
    labels_extra: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """What the Java naming client sends (NamingGrpcClientProxy)."""
        return {"source": "sdk", "module": "naming", "AppName": self.app_name, **self.labels_extra}
