"""The reference Nacos client (``python -m harness.reference.nacos.client``) against a tiny
in-test fake server: handshake, /request, resets with and without redirect, clean shutdown.

The fake (``FakeNacosServer``) speaks just enough 2.2.4 to drive a client: ServerCheck (id per
transport), registration on the bi-stream setup, HealthCheck (301 when unregistered), pushes on
demand, and a record of every answer a client sends. It also serves ``test_sdk_agent.py``. Its
gRPC port is main + 1000 directly (no Toxiproxy here). Servers sit on distinct loopback IPs
because a Java-style client matches a redirect on the IP alone (client_logic docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import requests

from harness.ports import NACOS_GRPC_OFFSET, ephemeral_port, free_port
from harness.protocol.nacos import codec, wire
from harness.wait import eventually, holds_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STARTUP_MS = 15_000
SWITCH_MS = 10_000
HTTP_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 15.0


# ---- the fake server ----------------------------------------------------------------------

class FakeNacosServer:
    """A minimal 2.2.4-style connection server on ``host:main_port+1000`` (grpc sync, threads)."""

    def __init__(self, host: str, main_port: int, *, reset_on_setup: bool = False) -> None:
        self.host = host
        self.reset_on_setup = reset_on_setup  # push a reset right after registering (SR-14 timing)
        self.main_port = main_port
        self.grpc_port = main_port + NACOS_GRPC_OFFSET
        self._lock = threading.Lock()
        self._ids_by_peer: dict[str, str] = {}
        self._outboxes: dict[str, queue.Queue] = {}
        self._push_ids = itertools.count(1)
        self.registered: dict[str, dict[str, Any]] = {}  # connection id -> what setup said
        self.answers: list[dict[str, Any]] = []  # responses clients sent on bi-streams
        self.server_checks = 0
        self.setup_resets: list[str] = []  # requestIds of resets pushed by reset_on_setup
        self._server = grpc.server(ThreadPoolExecutor(max_workers=24, thread_name_prefix=f"fake-{main_port}"))
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(wire.REQUEST_SERVICE, {"request": grpc.unary_unary_rpc_method_handler(
                self._unary, request_deserializer=wire.deserialize, response_serializer=wire.serialize)}),
            grpc.method_handlers_generic_handler(wire.BISTREAM_SERVICE, {
                "requestBiStream": grpc.stream_stream_rpc_method_handler(
                    self._bistream, request_deserializer=wire.deserialize, response_serializer=wire.serialize)}),
        ))
        bound = self._server.add_insecure_port(f"{host}:{self.grpc_port}")
        if bound != self.grpc_port:
            raise OSError(f"fake server could not bind {host}:{self.grpc_port}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.main_port}"

    def start(self) -> FakeNacosServer:
        self._server.start()
        return self

    def stop(self) -> None:
        with self._lock:
            outboxes = list(self._outboxes.values())
        for outbox in outboxes:
            outbox.put(None)
        self._server.stop(grace=None).wait(5)

    # -- identity and registration
    def _connection_id(self, context: grpc.ServicerContext) -> str:
        peer = context.peer()  # "ipv4:127.0.0.1:54321": one per TCP transport
        with self._lock:
            cid = self._ids_by_peer.get(peer)
            if cid is None:
                _, ip, port = peer.rsplit(":", 2) if peer.count(":") >= 2 else ("", peer, "0")
                cid = f"{int(time.time() * 1000)}_{ip}_{port}"
                self._ids_by_peer[peer] = cid
            return cid

    def current(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self.registered.items()}

    def forget(self, connection_id: str) -> None:
        """Drop a registration but keep the transport: the next request gets 301."""
        with self._lock:
            self.registered.pop(connection_id, None)

    def answers_to(self, request_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.answers if a["request_id"] == request_id]

    # -- gRPC handlers
    def _unary(self, payload: Any, context: grpc.ServicerContext) -> Any:
        try:
            msg = codec.decode(payload)
        except codec.BadBody:
            return codec.error_response(codec.BAD_GATEWAY)
        cid = self._connection_id(context)
        if msg.type == codec.SERVER_CHECK_REQUEST:
            with self._lock:
                self.server_checks += 1
            return codec.server_check_response(cid)
        if msg.type != codec.HEALTH_CHECK_REQUEST:
            return codec.error_response(codec.NO_HANDLER)
        with self._lock:
            if cid not in self.registered:
                return codec.error_response(codec.UN_REGISTER)
            self.registered[cid]["health_checks"] += 1
        return codec.health_check_response()

    def _bistream(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        cid = self._connection_id(context)
        outbox: queue.Queue = queue.Queue()
        with self._lock:
            self._outboxes[cid] = outbox

        def read() -> None:
            try:
                for payload in request_iterator:
                    msg = codec.decode(payload)
                    with self._lock:
                        if msg.type == codec.CONNECTION_SETUP_REQUEST and cid not in self.registered:
                            self.registered[cid] = {
                                "client_ip": msg.client_ip, "version": msg.body.get("clientVersion"),
                                "labels": msg.body.get("labels") or {}, "tenant": msg.body.get("tenant"),
                                "health_checks": 0}
                            if self.reset_on_setup:
                                self.setup_resets.append(str(next(self._push_ids)))
                                outbox.put(codec.connect_reset_request(self.setup_resets[-1]))
                        elif msg.is_response:
                            self.answers.append({"connection_id": cid, "type": msg.type,
                                                 "request_id": msg.request_id, "body": msg.body})
            except Exception:  # the RPC ended (client gone, server stopping)
                pass
            finally:
                outbox.put(None)

        threading.Thread(target=read, daemon=True, name=f"fake-read-{cid}").start()
        try:
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item
        finally:
            with self._lock:  # the stream is this fake's stand-in for the transport
                self.registered.pop(cid, None)
                self._outboxes.pop(cid, None)

    # -- pushes
    def push(self, connection_id: str, payload_for_id: Any) -> str:
        request_id = str(next(self._push_ids))
        with self._lock:
            outbox = self._outboxes.get(connection_id)
        if outbox is None:
            raise KeyError(f"no open bi-stream for {connection_id} on {self.address}")
        outbox.put(payload_for_id(request_id))
        return request_id

    def push_reset(self, connection_id: str, server_ip: str | None = None, server_port: int | None = None) -> str:
        port = str(server_port) if server_port is not None else None
        return self.push(connection_id, lambda rid: codec.connect_reset_request(rid, server_ip, port))

    def push_detection(self, connection_id: str) -> str:
        return self.push(connection_id, codec.client_detection_request)


@contextlib.contextmanager
def fake_servers(count: int, **options: Any) -> Iterator[list[FakeNacosServer]]:
    """``count`` servers on 127.0.0.2, 127.0.0.3, ... (distinct IPs: see the module docstring)."""
    servers: list[FakeNacosServer] = []
    try:
        for i in range(count):
            port = free_port(also_free_offset=NACOS_GRPC_OFFSET)
            servers.append(FakeNacosServer(f"127.0.0.{2 + i}", port, **options).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


# ---- agent processes (shared with test_sdk_agent.py) -------------------------------------

class AgentProcess:
    """An agent subprocess and its control API; killed by pid at teardown."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.control_port = ephemeral_port()
        self.url = f"http://127.0.0.1:{self.control_port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--control-port", str(self.control_port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[2]))

    def state(self, since: int = 0) -> dict[str, Any]:
        r = requests.get(f"{self.url}/state", params={"since": since}, timeout=HTTP_TIMEOUT_S)
        r.raise_for_status()
        return r.json()

    def request(self, **body: Any) -> dict[str, Any]:
        r = requests.post(f"{self.url}/request", json=body, timeout=HTTP_TIMEOUT_S)
        r.raise_for_status()
        return r.json()

    def shutdown(self) -> dict[str, Any]:
        r = requests.post(f"{self.url}/shutdown", timeout=HTTP_TIMEOUT_S)
        r.raise_for_status()
        return r.json()

    def wait_running(self, timeout_ms: float = STARTUP_MS) -> dict[str, Any]:
        return eventually(self.state, timeout_ms=timeout_ms, what=f"{self.url} RUNNING with a connection id",
                          accept=lambda s: s["status"] == "RUNNING" and bool(s["connection_id"])).value

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            self._log.close()


@contextlib.contextmanager
def agent_process(module: str, args: list[str], log_path: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(module, args, log_path)
    try:
        yield agent
    except BaseException:
        sys.stderr.write(f"---- agent output ({module}) ----\n{agent.output()}\n")
        raise
    finally:
        agent.kill()


# ---- the reference client -----------------------------------------------------------------

REF_CLIENT = "harness.reference.nacos.client"


def ref_client(servers: list[FakeNacosServer], tmp_path: Path, *extra: str):
    args = ["--servers", ",".join(s.address for s in servers), "--client-ip", "127.0.0.77",
            "--app-name", "conformance-app", *extra]
    return agent_process(REF_CLIENT, args, tmp_path / "ref-client.log")


def by_address(servers: list[FakeNacosServer], address: str) -> FakeNacosServer:
    return next(s for s in servers if s.address == address)


def kinds(state: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in state["events"]]


def tcp_to(pid: int, server: FakeNacosServer) -> list[Any]:
    """The process's ESTABLISHED TCP connections to ``server``'s gRPC port (the transports)."""
    found = []
    for c in psutil.Process(pid).net_connections(kind="tcp"):
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == server.grpc_port \
                and c.raddr.ip.removeprefix("::ffff:") == server.host:
            found.append(c)
    return found


def assert_transport_closed(client: AgentProcess, server: FakeNacosServer) -> None:
    """An abandoned connection's TCP really closes (grpc keeps it while a call object lives)."""
    eventually(lambda: tcp_to(client.proc.pid, server), timeout_ms=SWITCH_MS,
               what=f"client TCP to {server.address} (+1000) closed", accept=lambda conns: not conns)


def assert_reset_answered(server: FakeNacosServer, connection_id: str, request_id: str) -> None:
    answers = eventually(lambda: server.answers_to(request_id), timeout_ms=SWITCH_MS,
                         what=f"ConnectResetResponse for requestId {request_id}").value
    assert [(a["type"], a["connection_id"], a["body"].get("resultCode")) for a in answers] == [
        ("ConnectResetResponse", connection_id, 200)]


def test_reaches_running_registers_and_requests(tmp_path: Path) -> None:
    with fake_servers(1) as servers, ref_client(servers, tmp_path, "--tenant", "t-1") as client:
        state = client.wait_running()
        server = servers[0]
        assert state["server"] == server.address
        registered = server.current()
        assert list(registered) == [state["connection_id"]]
        entry = registered[state["connection_id"]]
        assert entry["client_ip"] == state["meta"]["client_ip"] == "127.0.0.77"
        assert entry["labels"] == {"source": "sdk", "module": "naming", "AppName": "conformance-app"}
        assert entry["version"] == state["meta"]["client_version"]
        assert entry["version"].startswith("Nacos-Python-Ref-Client:v")
        assert entry["tenant"] == "t-1"
        assert kinds(state) == ["connected"]

        result = client.request(timeout_ms=3000)
        assert result["ok"] is True, result
        assert result["error_code"] is None
        assert result["ms"] >= 0
        assert server.current()[state["connection_id"]]["health_checks"] >= 1  # + idle checks on a slow box

        later = client.state(since=1)
        assert (later["events"], later["events_total"]) == ([], 1)


def test_client_detection_is_answered(tmp_path: Path) -> None:
    with fake_servers(1) as servers, ref_client(servers, tmp_path) as client:
        state = client.wait_running()
        rid = servers[0].push_detection(state["connection_id"])
        answers = eventually(lambda: servers[0].answers_to(rid), timeout_ms=SWITCH_MS, what="ClientDetectionResponse").value
        assert [a["type"] for a in answers] == ["ClientDetectionResponse"]


def test_reset_without_address_moves_to_the_other_server(tmp_path: Path) -> None:
    with fake_servers(2) as servers, ref_client(servers, tmp_path) as client:
        before = client.wait_running()
        old = by_address(servers, before["server"])
        new = next(s for s in servers if s is not old)

        rid = old.push_reset(before["connection_id"])

        after = eventually(client.state, timeout_ms=SWITCH_MS, what="client on the other server",
                           accept=lambda s: s["status"] == "RUNNING" and s["server"] == new.address).value
        assert after["connection_id"] in new.current()
        assert_reset_answered(old, before["connection_id"], rid)
        eventually(old.current, timeout_ms=SWITCH_MS, what="old registration gone", accept=lambda c: not c)
        assert_transport_closed(client, old)
        assert len(tcp_to(client.proc.pid, new)) == 1
        resets = [e for e in after["events"] if e["kind"] == "reset_received"]
        assert [(e["detail"]["request_id"], e["detail"]["acted"], e["detail"]["answered"]) for e in resets] == [
            (rid, True, True)]
        assert kinds(after)[-3:] == ["switching", "disconnected", "connected"]
        assert client.request()["ok"] is True


def _three_server_redirect(tmp_path: Path, pick_target) -> None:
    with fake_servers(3) as servers, ref_client(servers, tmp_path) as client:
        before = client.wait_running()
        i = [s.address for s in servers].index(before["server"])
        old = servers[i]
        redirect_ip, redirect_port, expected = pick_target(servers, i)

        rid = old.push_reset(before["connection_id"], redirect_ip, redirect_port)

        after = eventually(client.state, timeout_ms=SWITCH_MS, what=f"client moved to {expected.address}",
                           accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] != before["connection_id"]).value
        assert after["server"] == expected.address
        assert after["connection_id"] in expected.current()
        assert_reset_answered(old, before["connection_id"], rid)
        assert_transport_closed(client, old)
        holds, bad, _ = holds_for(client.state, duration_ms=300, what="no second switch",
                                  accept=lambda s: s["connection_id"] == after["connection_id"])
        assert holds, bad


def test_reset_with_in_list_redirect_goes_exactly_there(tmp_path: Path) -> None:
    # the target is the server rotation would NOT pick next, so only the redirect can explain it
    _three_server_redirect(tmp_path, lambda servers, i: (
        servers[(i + 2) % 3].host, servers[(i + 2) % 3].main_port, servers[(i + 2) % 3]))


def test_reset_with_out_of_list_redirect_is_ignored_and_rotates(tmp_path: Path) -> None:
    _three_server_redirect(tmp_path, lambda servers, i: ("127.0.0.9", servers[(i + 2) % 3].main_port,
                                                         servers[(i + 1) % 3]))


def test_sigterm_exits_cleanly_and_closes_the_connection(tmp_path: Path) -> None:
    with fake_servers(1) as servers, ref_client(servers, tmp_path) as client:
        state = client.wait_running()
        os.kill(client.proc.pid, signal.SIGTERM)
        assert client.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        eventually(servers[0].current, timeout_ms=SWITCH_MS, what="registration gone after SIGTERM",
                   accept=lambda c: state["connection_id"] not in c)


def test_shutdown_endpoint_exits_zero(tmp_path: Path) -> None:
    with fake_servers(1) as servers, ref_client(servers, tmp_path) as client:
        client.wait_running()
        assert client.shutdown() == {"ok": True}
        assert client.proc.wait(timeout=EXIT_TIMEOUT_S) == 0
        eventually(servers[0].current, timeout_ms=SWITCH_MS, what="registration gone after /shutdown",
                   accept=lambda c: not c)


def test_refuses_non_loopback_servers(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", REF_CLIENT, "--servers", "10.0.0.1:8848", "--control-port",
                           str(ephemeral_port())], capture_output=True, timeout=EXIT_TIMEOUT_S)
    assert proc.returncode == 2
    assert b"outside 127.0.0.0/8" in proc.stderr


def test_reset_during_setup_is_answered_but_not_acted_on(tmp_path: Path) -> None:
    # SR-14 timing: the reset arrives while the client waits after setup (not yet RUNNING)
    with fake_servers(1, reset_on_setup=True) as servers, ref_client(servers, tmp_path, "--setup-wait-ms", "300") as client:
        state = client.wait_running()
        server = servers[0]
        rid = eventually(lambda: server.setup_resets, timeout_ms=SWITCH_MS, what="reset pushed at setup").value[0]
        assert_reset_answered(server, state["connection_id"], rid)
        held, bad, _ = holds_for(client.state, duration_ms=500, what="no switch after an early reset",
                                 accept=lambda s: s["connection_id"] == state["connection_id"])
        assert held, bad
        after = client.state()
        resets = [e["detail"] for e in after["events"] if e["kind"] == "reset_received"]
        assert [(r["request_id"], r["acted"], r["answered"]) for r in resets] == [(rid, False, True)]
        assert "switching" not in kinds(after)


def test_unregistered_connection_301_switches_and_the_request_succeeds(tmp_path: Path) -> None:
    # SR-15 shape: one 301, then the retry lands on the new connection
    with fake_servers(2) as servers, ref_client(servers, tmp_path) as client:
        before = client.wait_running()
        old = by_address(servers, before["server"])
        old.forget(before["connection_id"])

        result = client.request(timeout_ms=3000)

        assert result["ok"] is True, result
        codes = [a.get("error_code") for a in result["attempts"] if not a["ok"]]
        assert codes.count(301) == 1, result
        assert codes[0] == 301, result
        assert result["attempts"][-1]["connection_id"] != before["connection_id"]
        after = client.state()
        assert after["connection_id"] == result["attempts"][-1]["connection_id"]
        assert after["server"] != before["server"]


def test_all_servers_down_reconnects_are_paced_then_recover(tmp_path: Path) -> None:
    # SR-18 shape: attempts ≥ one backoff step apart and growing per pass; back when a server is
    step_ms = 100.0
    with fake_servers(2) as servers, ref_client(servers, tmp_path, "--backoff-step-ms", str(step_ms)) as client:
        before = client.wait_running()
        for server in servers:
            server.stop()

        def failed_attempts(state: dict[str, Any]) -> list[dict[str, Any]]:
            return [e for e in state["events"]
                    if e["kind"] == "connect_failed"]

        state = eventually(client.state, timeout_ms=SWITCH_MS, what="six failed reconnect attempts",
                           accept=lambda s: len(failed_attempts(s)) >= 6).value
        times = [e["t_ms"] for e in failed_attempts(state)[:6]]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # passes of two servers: ~100, 100, 200, 200, 300 ms (a little slack below for timer rounding)
        assert all(g >= step_ms * 0.9 for g in gaps), gaps
        assert gaps[2] >= 2 * step_ms * 0.9, gaps
        assert gaps[4] >= 3 * step_ms * 0.9, gaps
        assert state["status"] == "UNHEALTHY"

        back = FakeNacosServer(servers[0].host, servers[0].main_port).start()
        try:
            after = eventually(client.state, timeout_ms=SWITCH_MS, what="reconnected to the returning server",
                               accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] != before["connection_id"]).value
            assert after["server"] == back.address
            assert after["connection_id"] in back.current()
        finally:
            back.stop()


class _InProcessClient:
    """A (possibly broken) RefNacosClient subclass on its own loop thread, for hook tests."""

    def __init__(self, client_cls: type, servers: list[FakeNacosServer]) -> None:
        from harness.reference.nacos.client import RefClientConfig
        from harness.reference.nacos.client_logic import ServerAddress

        self.config = RefClientConfig(servers=[ServerAddress(s.host, s.main_port) for s in servers])
        self.client_cls = client_cls
        self.loop = asyncio.new_event_loop()
        self.client: Any = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="in-process-client")

    def __enter__(self) -> _InProcessClient:
        self.thread.start()
        self.client = self._call(self._make())
        asyncio.run_coroutine_threadsafe(self.client.start(), self.loop)
        return self

    async def _make(self) -> Any:
        return self.client_cls(self.config)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=EXIT_TIMEOUT_S)

    def state(self) -> dict[str, Any]:
        return self.client.state.snapshot()

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self.client.shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=EXIT_TIMEOUT_S)
            self.loop.close()


def test_subclass_hook_builds_a_client_that_never_answers_resets() -> None:
    from harness.reference.nacos.client import RefNacosClient

    class NeverAnswersReset(RefNacosClient):
        def reset_response(self, msg: Any) -> None:
            return None

    with fake_servers(2) as servers, _InProcessClient(NeverAnswersReset, servers) as client:
        before = eventually(client.state, timeout_ms=STARTUP_MS, what="RUNNING",
                            accept=lambda s: s["status"] == "RUNNING").value
        old = by_address(servers, before["server"])
        rid = old.push_reset(before["connection_id"])
        eventually(client.state, timeout_ms=SWITCH_MS, what="switched anyway",
                   accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] != before["connection_id"])
        # the fake drops a registration only after reading everything on that stream
        eventually(old.current, timeout_ms=SWITCH_MS, what="old stream fully read", accept=lambda c: not c)
        assert old.answers_to(rid) == []
        resets = [e["detail"] for e in client.state()["events"] if e["kind"] == "reset_received"]
        assert [(r["acted"], r["answered"]) for r in resets] == [(True, False)]


# ---- against the reference server (when it is there) --------------------------------------

REF_SERVER = "harness.reference.nacos.server"
LOADER = "/nacos/v2/core/loader"


class RefServerProcess:
    """``python -m harness.reference.nacos.server`` on ``host``, gRPC directly on main + 1000."""

    def __init__(self, host: str, log_path: Path) -> None:
        self.host = host
        self.main_port = free_port(also_free_offset=NACOS_GRPC_OFFSET)
        self.grpc_port = self.main_port + NACOS_GRPC_OFFSET
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", REF_SERVER, "--main-port", str(self.main_port), "--grpc-port",
             str(self.grpc_port), "--host", host], stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.main_port}"

    def loader(self, op: str, **params: Any) -> requests.Response:
        return requests.get(f"http://{self.address}{LOADER}/{op}", params=params, timeout=HTTP_TIMEOUT_S)

    def current(self) -> dict[str, Any]:
        r = self.loader("current")
        r.raise_for_status()
        return r.json()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            self._log.close()


@contextlib.contextmanager
def ref_servers(count: int, tmp_path: Path) -> Iterator[list[RefServerProcess]]:
    import importlib.util

    if importlib.util.find_spec(REF_SERVER) is None:
        pytest.skip(f"{REF_SERVER} is not there yet")
    servers: list[RefServerProcess] = []
    try:
        for i in range(count):
            servers.append(RefServerProcess(f"127.0.0.{2 + i}", tmp_path / f"ref-server-{i}.log"))
        for server in servers:
            eventually(server.current, timeout_ms=STARTUP_MS, what=f"reference server {server.address} ready",
                       accept=lambda current: isinstance(current, dict))
        yield servers
    finally:
        for server in servers:
            server.kill()


def pushes_to(server: RefServerProcess, connection_id: str) -> list[dict[str, Any]] | None:
    """The server's push ledger (harness extension) for one connection; None without it."""
    r = server.loader("pushes")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return [p for p in r.json() if p.get("connectionId") == connection_id]


def test_against_reference_server_reload_client_redirect(tmp_path: Path) -> None:
    """SR-06/SR-07 end to end: reloadClient with an in-list redirect moves the client exactly
    there, the reset is answered, and the old transport closes so the server unregisters it."""
    with ref_servers(3, tmp_path) as servers, ref_client(servers, tmp_path) as client:
        before = client.wait_running()
        i = [s.address for s in servers].index(before["server"])
        old, target = servers[i], servers[(i + 2) % 3]
        assert before["connection_id"] in old.current()

        r = old.loader("reloadClient", connectionId=before["connection_id"], redirectAddress=target.address)
        assert (r.status_code, r.text) == (200, "success")

        after = eventually(client.state, timeout_ms=SWITCH_MS, what=f"client on {target.address}",
                           accept=lambda s: s["status"] == "RUNNING" and s["connection_id"] != before["connection_id"]).value
        assert after["server"] == target.address
        assert after["connection_id"] in target.current()
        eventually(old.current, timeout_ms=SWITCH_MS, what="old id gone from current",
                   accept=lambda c: before["connection_id"] not in c)
        pushes = pushes_to(old, before["connection_id"])
        if pushes is not None:
            assert [(p["type"], p["answered"], p["answer_result_code"]) for p in pushes] == [
                ("ConnectResetRequest", True, 200)]
        assert client.request()["ok"] is True
