"""nacos-client agent for nacos-sdk-python: a thin adapter over the real library (SPEC §4.3).

    python -m harness.agents.python.nacos_sdk_agent --servers 127.0.0.1:P[,...] --control-port C
        [--app-name X] [--tenant T] [--request-timeout-ms N] [--work-dir DIR]

Library: nacos-sdk-python 3.2.0 (PyPI), package ``v2.nacos``; this adapter reads
``v2.nacos.__version__`` and refuses nothing, but was written against 3.2.0. The library does
the work; the adapter only starts it, observes it and forwards one request on demand. Its timers
keep the library's defaults (HealthCheck when idle ≥ 5 s, 3000 ms timeouts, 3 attempts).

Hooks used (all reached from ``NacosNamingService.grpc_client_proxy.rpc_client``, the
library's ``RpcClient``/``GrpcClient``):

- events ``connected``/``disconnected``: a ``ConnectionEventListener`` (the library's own ABC,
  ``v2.nacos.transport.connection_event_listener``) registered with
  ``RpcClient.register_connection_listener`` — the same hook its redo service uses. It is
  registered right after ``create_naming_service`` returns: the start-up CONNECTED event sits in
  the library's event queue until its listener task next runs, and there is no await point that
  yields in between, so it is not missed. ``on_disconnect`` carries no connection, and by the
  time it runs the library has already installed the new one, so the server and id of a
  ``disconnected`` event are those of the last ``connected`` event this listener saw.
- events ``error``: records of level ≥ ERROR on the library's own logger (``naming``), e.g.
  ``handle server request occur exception: Error [500]: unknown payload type:ConnectResetRequest``.
  The library has no hook for resets or switches, so ``reset_received``/``switching`` never occur.
- ``status``: ``RpcClient.rpc_client_status`` (INITIALIZED is reported as STARTING).
- ``server``/``connection_id``: ``RpcClient.current_connection`` (``server_info`` holds the gRPC
  port; the main port reported is that minus ``GRPCConfig.port_offset``) and its ``connection_id``.
- ``meta``: ``client_ip`` = ``NetUtils.get_local_ip()`` (what ``GrpcUtils`` puts in
  ``metadata.clientIp``), ``client_version`` = ``Constants.CLIENT_VERSION``, ``labels`` and
  ``tenant`` = what ``RpcClient`` sends in ConnectionSetupRequest; ``app_name`` null (the naming
  client sends no AppName label, so a server shows its default).
- ``POST /request``: ``{"type": "HealthCheckRequest"}`` (default) goes through
  ``RpcClient.request`` — the library's request path, with its retries and 301 → switch;
  ``"ServiceQueryRequest"`` through ``NamingGRPCClientProxy.query_instance_of_service``;
  ``"list_instances"`` through the public ``NacosNamingService.list_instances`` (subscribe=False;
  note the library still sends a SubscribeServiceRequest). A ``NacosException``'s
  ``error_code`` is returned as is: the library turns every ErrorResponse (301 included) into
  ``NacosException(500, message)``, so ``error`` carries the server's message as well.

Logs: the library's log and cache dirs default to ``~/logs/nacos`` and ``~/nacos/cache``; they
are pointed into ``--work-dir`` (default: a fresh temp dir named after the agent's pid, removed
at exit; dirs left by agents that were SIGKILLed are reaped by the next agent) and the tail of
``naming.log`` is copied to stderr when the agent exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from v2.nacos import ClientConfig, GRPCConfig, ListInstanceParam, NacosException, NacosNamingService
from v2.nacos import __version__ as SDK_VERSION
from v2.nacos.common.constants import Constants
from v2.nacos.transport.connection_event_listener import ConnectionEventListener
from v2.nacos.transport.model.internal_request import HealthCheckRequest
from v2.nacos.transport.rpc_client import RpcClient
from v2.nacos.utils.net_util import NetUtils

from harness.agents.control_api import AgentState, make_app, start_control_server
from harness.ports import check_loopback

log = logging.getLogger("connformance.nacos_sdk_agent")

GRPC_PORT_OFFSET = 1000
PROBE_SERVICE = "connformance-probe"
LIBRARY_LOGGER = Constants.NAMING_MODULE  # "naming": the logger (and log file) of the naming client
LOG_TAIL_LINES = 60
WORK_DIR_PREFIX = "connformance-nacos-sdk-"
_WORK_DIR_RE = re.compile(re.escape(WORK_DIR_PREFIX) + r"(\d+)-")


class _EventListener(ConnectionEventListener):
    """Turns the library's connection events into agent events."""

    def __init__(self, agent: SdkAgent) -> None:
        self.agent = agent
        self.last_connected: tuple[str | None, str | None] = (None, None)

    async def on_connected(self) -> None:
        server, cid = self.agent.current_connection()
        self.last_connected = (server, cid)
        self.agent.state.record("connected", server=server, detail={"connection_id": cid})

    async def on_disconnect(self) -> None:
        server, cid = self.last_connected
        self.agent.state.record("disconnected", server=server,
                                detail={"connection_id": cid, "source": "last connected event"})


# nacos-sdk-python's log line when one connection attempt fails (rpc_client.py)
CONNECT_FAILED = re.compile(r"connect (attempt|to server) fail", re.IGNORECASE)


class _ErrorLogHandler(logging.Handler):
    """Library log records ≥ ERROR become ``error`` events."""

    def __init__(self, agent: SdkAgent) -> None:
        super().__init__(level=logging.ERROR)
        self.agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in the library must not kill the agent
            message = str(record.msg)
        server, _ = self.agent.current_connection()
        # The library's own wording for a failed connection attempt becomes the contract's event.
        kind = "connect_failed" if CONNECT_FAILED.search(message) else "error"
        self.agent.state.record(kind, server=server, detail={"logger": record.name, "message": message})


class SdkAgent:
    def __init__(self, servers: str, *, app_name: str, tenant: str, request_timeout_ms: float | None,
                 work_dir: Path) -> None:
        self.servers = servers
        self.app_name = app_name
        self.tenant = tenant
        self.work_dir = work_dir
        grpc_config = GRPCConfig(port_offset=GRPC_PORT_OFFSET)
        if request_timeout_ms is not None:
            grpc_config.grpc_timeout = int(request_timeout_ms)  # also the channel-ready and ServerCheck wait
        self.grpc_config = grpc_config
        self.request_timeout_ms = float(grpc_config.grpc_timeout)
        self.naming: NacosNamingService | None = None
        self.state = AgentState(meta={"client_ip": _library_local_ip(), "client_version": Constants.CLIENT_VERSION,
                                      "labels": None, "app_name": None, "tenant": tenant,
                                      "library": f"nacos-sdk-python {SDK_VERSION}"})
        self.listener = _EventListener(self)
        self.error_handler = _ErrorLogHandler(self)

    @property
    def rpc_client(self) -> RpcClient | None:
        proxy = self.naming.grpc_client_proxy if self.naming is not None else None
        return proxy.rpc_client if proxy is not None else None

    def current_connection(self) -> tuple[str | None, str | None]:
        rpc = self.rpc_client
        conn = rpc.current_connection if rpc is not None else None
        if conn is None:
            return None, None
        info = conn.get_server_info()
        return f"{info.server_ip}:{info.server_port - self.grpc_config.port_offset}", conn.get_connection_id()

    def refresh(self) -> None:
        """Pull status/server/connection from the library before each ``/state``."""
        if self.state.status == "SHUTDOWN":
            return
        rpc = self.rpc_client
        if rpc is None:
            return
        name = rpc.rpc_client_status.name
        self.state.set_status("STARTING" if name == "INITIALIZED" else name)
        self.state.server, self.state.connection_id = self.current_connection()
        self.state.meta["labels"] = dict(rpc.labels)
        self.state.meta["tenant"] = rpc.tenant

    def client_config(self) -> ClientConfig:
        cfg = ClientConfig(server_addresses=self.servers, namespace_id=self.tenant, app_name=self.app_name,
                           log_dir=str(self.work_dir / "logs"))
        cfg.set_cache_dir(str(self.work_dir / "cache"))
        cfg.set_grpc_config(self.grpc_config)
        return cfg

    async def start(self) -> None:
        logging.getLogger(LIBRARY_LOGGER).addHandler(self.error_handler)
        naming = await NacosNamingService.create_naming_service(self.client_config())
        self.naming = naming
        # No await that yields between create_naming_service's return and this registration:
        # the start-up CONNECTED event is still queued for the library's listener task.
        await naming.grpc_client_proxy.rpc_client.register_connection_listener(self.listener)
        self.refresh()

    async def shutdown(self) -> None:
        self.refresh()
        if self.naming is not None:
            try:
                await self.naming.shutdown()
            except Exception:
                log.exception("library shutdown failed")
        self.state.set_status("SHUTDOWN")
        logging.getLogger(LIBRARY_LOGGER).removeHandler(self.error_handler)

    async def handle_control_request(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = str(body.get("type", "HealthCheckRequest"))
        try:
            timeout_ms = float(body.get("timeout_ms", self.request_timeout_ms))
        except (TypeError, ValueError):
            return {"ok": False, "error_code": None, "ms": 0.0, "error": "timeout_ms must be a number"}
        if self.naming is None:
            return {"ok": False, "error_code": None, "ms": 0.0, "error": "library not started yet"}
        started = time.monotonic()
        try:
            if kind == "HealthCheckRequest":
                await self.naming.grpc_client_proxy.rpc_client.request(HealthCheckRequest(), int(timeout_ms))
            elif kind == "ServiceQueryRequest":
                await self.naming.grpc_client_proxy.query_instance_of_service(
                    PROBE_SERVICE, Constants.DEFAULT_GROUP, "", False)
            elif kind == "list_instances":
                await self.naming.list_instances(ListInstanceParam(service_name=PROBE_SERVICE, subscribe=False))
            else:
                return {"ok": False, "error_code": None, "ms": 0.0,
                        "error": f"unsupported type {kind!r}; use HealthCheckRequest, ServiceQueryRequest or list_instances"}
        except NacosException as exc:
            return {"ok": False, "error_code": _int_or_none(exc.error_code), "error": exc.message,
                    "ms": (time.monotonic() - started) * 1000.0}
        except Exception as exc:  # e.g. a grpc AioRpcError, which escapes the library's retry loop
            return {"ok": False, "error_code": None, "error": f"{type(exc).__name__}: {exc}",
                    "ms": (time.monotonic() - started) * 1000.0}
        return {"ok": True, "error_code": None, "ms": (time.monotonic() - started) * 1000.0}

    def mirror_log_tail(self) -> None:
        path = self.work_dir / "logs" / f"{LIBRARY_LOGGER}.log"
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        print(f"---- last {LOG_TAIL_LINES} lines of the library log {path} ----", file=sys.stderr)
        for line in lines[-LOG_TAIL_LINES:]:
            print(line, file=sys.stderr)
        sys.stderr.flush()


def _library_local_ip() -> str | None:
    """What the library puts in metadata.clientIp; it raises without a non-loopback IPv4
    interface, and then cannot send anything itself — its own error will say so."""
    try:
        return NetUtils.get_local_ip()
    except NacosException as exc:
        log.error("the library found no local IP: %s", exc)
        return None


def reap_stale_work_dirs(parent: Path) -> None:
    """Remove default work dirs whose agent process is gone (it was killed before cleaning up)."""
    import psutil

    for entry in parent.glob(WORK_DIR_PREFIX + "*"):
        match = _WORK_DIR_RE.match(entry.name)
        if match and entry.is_dir() and not psutil.pid_exists(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def run(agent: SdkAgent, control_port: int) -> None:
    stop = asyncio.Event()
    runner = await start_control_server(
        make_app(agent.state, on_request=agent.handle_control_request, on_shutdown=stop.set,
                 refresh=agent.refresh), control_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.create_task(agent.start(), name="sdk-start")
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if starter.done() and starter.exception() is not None:
            agent.state.record("error", detail={"what": "library start failed", "reason": repr(starter.exception())})
            log.error("library start failed: %r", starter.exception())
        await stop.wait()
    finally:
        if not starter.done():
            starter.cancel()
            await asyncio.gather(starter, return_exceptions=True)
        stopper.cancel()
        await agent.shutdown()
        await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.agents.python.nacos_sdk_agent",
                                description="nacos-client agent over nacos-sdk-python (v2.nacos)")
    p.add_argument("--servers", required=True, help="ip:mainPort[,ip:mainPort...] (loopback, or a harness namespace in 198.18.0.0/15)")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--app-name", default="", help="ClientConfig.app_name (naming: sent only as a subscribe header)")
    p.add_argument("--tenant", default="", help="ClientConfig.namespace_id")
    p.add_argument("--request-timeout-ms", type=float, default=None,
                   help="GRPCConfig.grpc_timeout (library default 3000)")
    p.add_argument("--work-dir", default=None, help="library log/cache dir (default: a temp dir removed at exit)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        for part in args.servers.split(","):
            if part.strip():
                check_loopback(part.strip().rpartition(":")[0] or part.strip(), namespaced=True)
    except ValueError as exc:
        print(f"nacos-sdk agent: {exc}", file=sys.stderr)
        return 2
    own_dir = args.work_dir is None
    if own_dir:
        reap_stale_work_dirs(Path(tempfile.gettempdir()))
        work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    else:
        work_dir = Path(args.work_dir)
    agent = SdkAgent(args.servers, app_name=args.app_name, tenant=args.tenant,
                     request_timeout_ms=args.request_timeout_ms, work_dir=work_dir)
    try:
        asyncio.run(run(agent, args.control_port))
    finally:
        agent.mirror_log_tail()
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
