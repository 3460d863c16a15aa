"""The reference Nacos 2.x client: the Java 2.2.4 ``RpcClient``/``GrpcClient`` semantics in
Python (grpc.aio), behind the agent control API (SPEC §4.3, ``harness/agents/control_api.py``).

    python -m harness.reference.nacos.client --servers 127.0.0.2:P1,127.0.0.3:P2 --control-port C
        [--client-ip IP] [--app-name X] [--tenant T] [--health-interval-ms 5000]
        [--health-timeout-ms 3000] [--health-retry 3] [--server-check-timeout-ms 3000]
        [--request-timeout-ms 3000] [--retry-times 3] [--setup-wait-ms 100]
        [--backoff-step-ms 100] [--backoff-cap-ms 5000]

Server addresses are *main* ports; the client dials main + 1000 (SPEC §4.1). Loopback only.

What it does (research/nacos-protocol.md §4; the pure parts live in ``client_logic``):

- ``start``: up to ``retry_times`` synchronous attempts over ``next_server()``; otherwise the
  background loop takes over. ``connect_to_server``: new channel → ServerCheck (one try,
  ``server_check_timeout_ms``; an ErrorResponse such as 300 fails the attempt) → bi-stream on the
  same channel → ConnectionSetupRequest → ``setup_wait_ms`` → RUNNING.
- background loop: a switch request, or else a HealthCheck once idle ≥ ``health_interval_ms``
  (``health_retry + 1`` attempts on transport errors; the first response decides, a 301 is
  unhealthy) → UNHEALTHY + reconnect.
- ``reconnect``: the recommended server once, else rotate; after each failed attempt, while not
  RUNNING, sleep ``backoff_ms(retry_turns)``; on success the old connection is abandoned and
  closed (``disconnected``), the new one installed (``connected``). Switch triggers collapse into
  a queue of one.
- pushes: ``ConnectResetRequest`` is always answered with the same requestId and acted on only
  when RUNNING (with ``serverIp`` → recommend, subject to the in-list rule; without → rotate);
  ``ClientDetectionRequest`` is answered. A stream that ends while RUNNING and not abandoned →
  UNHEALTHY + switch.

Subclass hooks for deliberately broken variants (override one method, keep the rest; run it
with ``main(argv, client_cls=Broken)``):
``next_server`` (rotation), ``resolve_recommended`` (return None = "ignore redirect"),
``backoff_ms`` (return 0 = "no backoff"), ``reset_response`` (return None = "never answers
reset"), ``on_connect_reset`` (whether/how a reset acts), ``server_check``, ``send_setup``,
``wait_after_setup``, ``health_check``, ``on_stream_closed``, ``request_payload``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from harness import __version__
from harness.agents.control_api import AgentState, make_app, start_control_server
from harness.protocol.nacos import codec

from .client_connection import RpcConnection, describe_error
from .client_logic import (
    ReconnectPacer,
    RefClientConfig,
    ServerAddress,
    ServerList,
    backoff_ms,
    parse_server_list,
)
from .client_pushes import PushMixin
from .client_requests import NacosError, RequestMixin

__all__ = ["CLIENT_VERSION", "NacosError", "RefClientConfig", "RefNacosClient", "main"]

CLIENT_VERSION = f"Nacos-Python-Ref-Client:v{__version__}"

log = logging.getLogger("connformance.ref_client")


def _mono_ms() -> float:
    return time.monotonic() * 1000.0


class ConnectFailed(Exception):
    """One connect attempt failed (the Java client returns null from connectToServer)."""


@dataclass
class ReconnectContext:
    recommend: ServerAddress | None = None
    on_request_fail: bool = False
    reason: str = ""
    recommend_ignored: str | None = None


class RefNacosClient(RequestMixin, PushMixin):
    """One Nacos connection client. All methods run on one asyncio loop.

    Connecting, switching and health checks live here; ``/request`` in ``RequestMixin``
    (client_requests.py); bi-stream pushes in ``PushMixin`` (client_pushes.py).
    """

    def __init__(self, config: RefClientConfig, state: AgentState | None = None,
                 *, rng: random.Random | None = None) -> None:
        self.config = config
        self.state = state if state is not None else AgentState()
        self.state.meta = self.meta()
        self.servers = ServerList(config.servers, rng=rng)
        self._rng = rng or random.Random()
        self.status = "STARTING"
        self.current: RpcConnection | None = None
        self.last_active_ms = _mono_ms()
        self._switch_signal: asyncio.Queue[ReconnectContext] = asyncio.Queue(maxsize=1)
        self._stopping = asyncio.Event()
        self._keepalive_task: asyncio.Task | None = None
        self._open: set[RpcConnection] = set()  # every channel we opened and not yet closed
        self._last_health_failure: str | None = None

    # ---- status ---------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {"client_ip": self.config.client_ip, "client_version": CLIENT_VERSION,
                "labels": self.config.labels(), "app_name": self.config.app_name,
                "tenant": self.config.tenant}

    @property
    def is_running(self) -> bool:
        return self.status == "RUNNING"

    @property
    def is_shutdown(self) -> bool:
        return self.status == "SHUTDOWN"

    def set_status(self, status: str) -> None:
        if self.is_shutdown:
            return
        self.status = status
        self.state.set_status(status)

    def cas_status(self, expect: str, new: str) -> bool:
        if self.status != expect:
            return False
        self.set_status(new)
        return True

    def _publish_current(self) -> None:
        conn = self.current
        self.state.server = str(conn.server) if conn else None
        self.state.connection_id = conn.connection_id if conn else None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._keepalive_task = asyncio.create_task(self._keepalive_loop(), name="ref-client-keepalive")
        conn: RpcConnection | None = None
        for _ in range(self.config.retry_times):
            if self.is_shutdown:
                return
            conn = await self.connect_to_server(self.next_server())
            if conn is not None:
                break
        if self.is_shutdown:
            if conn is not None:
                await self._discard(conn)
            return
        if conn is None:
            self.switch_server_async(reason="start-up attempts failed")
            return
        self.current = conn
        self.set_status("RUNNING")
        self._publish_current()
        self.state.record("connected", server=str(conn.server), detail={"connection_id": conn.connection_id})

    async def shutdown(self) -> None:
        if self.is_shutdown:
            return
        self.state.set_status("SHUTDOWN")
        self.status = "SHUTDOWN"
        self._stopping.set()
        task = self._keepalive_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.current is not None:
            await self.close_connection(self.current, reason="shutdown")
        for conn in list(self._open):
            await self._discard(conn)

    async def _sleep_ms(self, ms: float) -> None:
        """A product timer (backoff, setup wait) that shutdown cuts short."""
        if ms <= 0:
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=ms / 1000.0)
        except TimeoutError:
            pass

    # ---- connecting -----------------------------------------------------------------------

    def next_server(self) -> ServerAddress:
        return self.servers.next()

    async def connect_to_server(self, server: ServerAddress) -> RpcConnection | None:
        """``GrpcClient.connectToServer``: a connection in setup, or None (an ``error`` event says why)."""
        conn = RpcConnection(server, server.grpc_port(self.config.grpc_port_offset))
        self._open.add(conn)
        try:
            conn.connection_id = await self.server_check(conn)
            self.open_bistream(conn)
            await self.send_setup(conn)
            await self.wait_after_setup(conn)
            if self.is_shutdown:
                raise ConnectFailed("shut down while connecting")
            return conn
        except (ConnectFailed, grpc.aio.AioRpcError, codec.BadBody, OSError, RuntimeError) as exc:
            self.state.record("connect_failed", server=str(server),
                              detail={"what": "connect attempt failed", "reason": describe_error(exc)})
            await self._discard(conn)
            return None

    async def server_check(self, conn: RpcConnection) -> str | None:
        """One ServerCheckRequest, no retry (2.2.4); anything but a ServerCheckResponse fails."""
        reply = await conn.unary(codec.server_check_request(client_ip=self.config.client_ip),
                                 self.config.server_check_timeout_ms)
        if reply.type != codec.SERVER_CHECK_RESPONSE:
            raise ConnectFailed(f"server check answered {reply.type} errorCode={reply.error_code} "
                                f"message={reply.body.get('message')!r}")
        cid = reply.body.get("connectionId")
        return str(cid) if cid is not None else None

    def open_bistream(self, conn: RpcConnection) -> None:
        conn.open_stream()
        conn.reader_task = asyncio.create_task(self._read_stream(conn), name=f"ref-client-stream-{conn.connection_id}")

    async def send_setup(self, conn: RpcConnection) -> None:
        await conn.send(codec.connection_setup_request(
            client_version=CLIENT_VERSION, labels=self.config.labels(), tenant=self.config.tenant,
            client_ip=self.config.client_ip))

    async def wait_after_setup(self, conn: RpcConnection) -> None:
        """2.2.x has no setup acknowledgement: the Java client sleeps 100 ms and goes RUNNING."""
        await self._sleep_ms(self.config.setup_wait_ms)

    async def _discard(self, conn: RpcConnection) -> None:
        conn.abandoned = True
        self._open.discard(conn)
        await conn.close()

    async def close_connection(self, conn: RpcConnection, *, reason: str) -> None:
        """``closeConnection``: close it and fire DISCONNECTED."""
        await self._discard(conn)
        if conn is self.current:
            self.current = None
            self._publish_current()
        self.state.record("disconnected", server=str(conn.server),
                          detail={"connection_id": conn.connection_id, "reason": reason})

    # ---- switching ------------------------------------------------------------------------

    def switch_server_async(self, recommend: ServerAddress | None = None, *, on_request_fail: bool = False,
                            reason: str = "") -> bool:
        """Offer a reconnect; False when one is already queued (the Java queue holds one)."""
        try:
            self._switch_signal.put_nowait(ReconnectContext(recommend, on_request_fail, reason))
            return True
        except asyncio.QueueFull:
            log.info("switch request collapsed into the queued one: %s", reason)
            return False

    def resolve_recommended(self, recommended: ServerAddress) -> ServerAddress | None:
        return self.servers.resolve_recommended(recommended)

    def backoff_ms(self, retry_turns: int) -> float:
        return backoff_ms(retry_turns, step_ms=self.config.backoff_step_ms, cap_ms=self.config.backoff_cap_ms)

    async def _keepalive_loop(self) -> None:
        interval_ms = self.config.health_interval_ms
        while not self.is_shutdown:
            try:
                try:
                    ctx: ReconnectContext | None = await asyncio.wait_for(
                        self._switch_signal.get(), timeout=interval_ms / 1000.0)
                except TimeoutError:
                    ctx = None
                if self.is_shutdown:
                    return
                if ctx is None:
                    if _mono_ms() - self.last_active_ms < interval_ms:
                        continue
                    if await self.health_check():
                        self.last_active_ms = _mono_ms()
                        continue
                    if self.current is None or self.is_shutdown:
                        continue
                    self.state.record("error", server=self.state.server,
                                      detail={"what": "health check failed", "reason": self._last_health_failure})
                    self.set_status("UNHEALTHY")
                    ctx = ReconnectContext(reason="health check failed")
                if ctx.recommend is not None:
                    resolved = self.resolve_recommended(ctx.recommend)
                    if resolved is None:
                        log.info("recommended server %s is not in the server list, ignored", ctx.recommend)
                        ctx.recommend_ignored = str(ctx.recommend)
                    ctx.recommend = resolved
                await self.reconnect(ctx)
            except asyncio.CancelledError:
                raise
            except Exception:  # the Java loop swallows Throwable and keeps going
                log.exception("keep-alive loop error")

    async def reconnect(self, ctx: ReconnectContext) -> None:
        if ctx.on_request_fail and await self.health_check():
            self.set_status("RUNNING")  # the server still answers: stay (no event, as Java)
            return
        self.state.record("switching", server=self.state.server, detail={
            "reason": ctx.reason, "recommend": str(ctx.recommend) if ctx.recommend else None,
            "recommend_ignored": ctx.recommend_ignored, "on_request_fail": ctx.on_request_fail})
        pacer = ReconnectPacer(len(self.servers))
        recommend = ctx.recommend
        while not self.is_shutdown:
            server = recommend if recommend is not None else self.next_server()
            recommend = None  # used once
            conn = await self.connect_to_server(server)
            if conn is not None:
                if self.is_shutdown:
                    await self._discard(conn)
                    return
                old = self.current
                if old is not None:
                    await self.close_connection(old, reason="switched")
                self.current = conn
                self.set_status("RUNNING")
                self._publish_current()
                self.state.record("connected", server=str(conn.server), detail={"connection_id": conn.connection_id})
                return
            retry_turns = pacer.after_failed_attempt()
            if not self.is_running:
                await self._sleep_ms(self.backoff_ms(retry_turns))

    # ---- health ----------------------------------------------------------------------------

    async def health_check(self) -> bool:
        conn = self.current
        if conn is None:
            self._last_health_failure = "no connection"
            return False
        for attempt in range(self.config.health_retry + 1):
            if attempt == 0 and self.config.health_jitter_ms > 0:
                await self._sleep_ms(self._rng.uniform(0, self.config.health_jitter_ms))
            try:
                reply = await conn.unary(codec.health_check_request(client_ip=self.config.client_ip),
                                         self.config.health_timeout_ms)
            except (grpc.aio.AioRpcError, codec.BadBody) as exc:
                self._last_health_failure = describe_error(exc)
                continue
            if reply.result_code == 200:
                return True
            self._last_health_failure = f"{reply.type} errorCode={reply.error_code}"
            return False  # the first response decides (a 301 included)
        return False

# ---- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = RefClientConfig(servers=[])
    p = argparse.ArgumentParser(prog="python -m harness.reference.nacos.client", description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", required=True, help="ip:mainPort[,ip:mainPort...] (loopback only)")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--client-ip", default=d.client_ip, help="reported in metadata.clientIp")
    p.add_argument("--app-name", default=d.app_name)
    p.add_argument("--tenant", default=None)
    p.add_argument("--grpc-port-offset", type=int, default=d.grpc_port_offset)
    p.add_argument("--health-interval-ms", type=float, default=d.health_interval_ms)
    p.add_argument("--health-timeout-ms", type=float, default=d.health_timeout_ms)
    p.add_argument("--health-retry", type=int, default=d.health_retry)
    p.add_argument("--health-jitter-ms", type=float, default=d.health_jitter_ms)
    p.add_argument("--server-check-timeout-ms", type=float, default=d.server_check_timeout_ms)
    p.add_argument("--request-timeout-ms", type=float, default=d.request_timeout_ms)
    p.add_argument("--retry-times", type=int, default=d.retry_times)
    p.add_argument("--setup-wait-ms", type=float, default=d.setup_wait_ms)
    p.add_argument("--backoff-step-ms", type=float, default=d.backoff_step_ms)
    p.add_argument("--backoff-cap-ms", type=float, default=d.backoff_cap_ms)
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> RefClientConfig:
    return RefClientConfig(
        servers=parse_server_list(args.servers), client_ip=args.client_ip, app_name=args.app_name,
        tenant=args.tenant, grpc_port_offset=args.grpc_port_offset, health_interval_ms=args.health_interval_ms,
        health_timeout_ms=args.health_timeout_ms, health_retry=args.health_retry,
        health_jitter_ms=args.health_jitter_ms, server_check_timeout_ms=args.server_check_timeout_ms,
        request_timeout_ms=args.request_timeout_ms, retry_times=args.retry_times,
        setup_wait_ms=args.setup_wait_ms, backoff_step_ms=args.backoff_step_ms, backoff_cap_ms=args.backoff_cap_ms)


async def run(config: RefClientConfig, control_port: int,
              client_cls: type[RefNacosClient] = RefNacosClient) -> None:
    """Serve the control API, run the client until /shutdown or SIGTERM, then stop cleanly."""
    state = AgentState()
    client = client_cls(config, state)
    stop = asyncio.Event()
    runner = await start_control_server(
        make_app(state, on_request=client.handle_control_request, on_shutdown=stop.set), control_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.create_task(client.start(), name="ref-client-start")
    try:
        await stop.wait()
    finally:
        await client.shutdown()
        if not starter.done():
            starter.cancel()
        await asyncio.gather(starter, return_exceptions=True)
        await runner.cleanup()


def main(argv: list[str] | None = None, *, client_cls: type[RefNacosClient] = RefNacosClient) -> int:
    """The CLI; a broken variant runs as ``main(argv, client_cls=Broken)`` from its own module."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"ref client: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(config, args.control_port, client_cls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
