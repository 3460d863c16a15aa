"""The reference Nacos server as a real subprocess on loopback, driven by a raw grpcio client
built from ``wire.py``/``codec.py`` (and, once, by the real nacos-sdk-python client).

Every wait is bounded (``eventually``); every test has its own timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from harness.ports import ephemeral_port, free_port
from harness.protocol.nacos import codec, wire
from harness.reference.nacos.server import EXIT_CANNOT_BIND
from harness.wait import eventually, holds_for, now_ms

pytestmark = pytest.mark.integration

LOADER = "/nacos/v2/core/loader"
SDK_LABELS = {"source": "sdk", "module": "naming"}


# ---- the server process ------------------------------------------------------------------

class _Exited(Exception):
    def __init__(self, code: int, log: str) -> None:
        super().__init__(f"server exited with {code}:\n{log}")
        self.code = code


class RefServer:
    """The server as a subprocess. Readiness = its own ready line (so a stranger answering on
    a port we were handed cannot fool us) and then its admin HTTP answering."""

    BIND_RETRIES = 3  # another process on the machine may take a free port before we bind it

    def __init__(self, log_dir: Path, args: list[str], *, grpc_at_offset: bool = False,
                 launcher: list[str] | None = None, main_port: int | None = None) -> None:
        retries = 1 if main_port else self.BIND_RETRIES
        for attempt in range(retries):
            self.main_port = main_port or free_port(also_free_offset=1000)
            self.grpc_port = self.main_port + 1000 if grpc_at_offset else ephemeral_port()
            self.log_path = log_dir / f"nacos-ref-{self.main_port}.log"
            argv = (launcher or [sys.executable, "-m", "harness.reference.nacos.server"]) + [
                "--main-port", str(self.main_port), "--grpc-port", str(self.grpc_port), *args]
            self._log = open(self.log_path, "wb")
            self.started_ms = now_ms()
            self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=Path(__file__).parents[2])
            try:
                waited = eventually(self._answers, timeout_ms=15_000, what=f"ready line and admin HTTP of "
                                    f"main={self.main_port}", interval_ms=10, swallow=(OSError,))
                self.ready_ms = waited.at_mono_ms - self.started_ms
                return
            except _Exited as exc:
                self._log.close()
                if exc.code != EXIT_CANNOT_BIND or attempt == retries - 1:
                    raise RuntimeError(str(exc)) from None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise _Exited(self.proc.returncode, self.log_text())
        if f"nacos-ref-server ready main={self.main_port} " not in self.log_text():
            return False
        self.get("current")
        return True

    def get(self, op: str, timeout_s: float = 10.0, **params: Any) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.main_port}{LOADER}/{op}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, op: str, **params: Any) -> Any:
        status, body = self.get(op, **params)
        assert status == 200, (op, status, body)
        return json.loads(body)

    def current(self) -> dict[str, Any]:
        return self.json("current")

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.json("events", since=since)

    def pushes(self, since: int = 0) -> list[dict[str, Any]]:
        return self.json("pushes", since=since)

    def transport_ids(self) -> set[str]:
        return {t["id"] for t in self.json("transports")}

    def stop(self, timeout_s: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_server(tmp_path: Path):
    servers: list[RefServer] = []

    def start(*args: str, **kw: Any) -> RefServer:
        server = RefServer(tmp_path, list(args), **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        print(f"---- {server.log_path.name} ----\n{server.log_text()}")  # shown when the test fails


# ---- a raw client ------------------------------------------------------------------------

class RawClient:
    """One gRPC channel = one TCP transport (local subchannel pool), plus one bi-stream."""

    def __init__(self, target: str, client_ip: str = "10.1.0.1", auto_answer: bool = True) -> None:
        self.target = target
        self.client_ip = client_ip
        self.auto_answer = auto_answer
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self._unary = self.channel.unary_unary(wire.UNARY_METHOD, request_serializer=wire.serialize,
                                               response_deserializer=wire.deserialize)
        self._bi = self.channel.stream_stream(wire.BISTREAM_METHOD, request_serializer=wire.serialize,
                                              response_deserializer=wire.deserialize)
        self.pushes: list[codec.Message] = []
        self.stream_done = threading.Event()
        self.stream_error: grpc.RpcError | None = None
        self._out: queue.Queue = queue.Queue()

    def call(self, payload: Any, timeout_s: float = 5.0) -> codec.Message:
        return codec.decode(self._unary(payload, timeout=timeout_s))

    def server_check(self) -> str:
        resp = self.call(codec.server_check_request(client_ip=self.client_ip))
        assert resp.type == codec.SERVER_CHECK_RESPONSE, resp
        assert resp.body["success"] is True, resp
        return resp.body["connectionId"]

    def health(self) -> codec.Message:
        return self.call(codec.health_check_request(client_ip=self.client_ip))

    def setup(self, labels: dict[str, str] | None = None, version: str = "connformance-raw:1",
              tenant: str | None = None) -> None:
        self._out.put(codec.connection_setup_request(client_version=version, labels=labels or dict(SDK_LABELS),
                                                     tenant=tenant, client_ip=self.client_ip))
        call = self._bi(iter(self._out.get, None))
        threading.Thread(target=self._read, args=(call,), daemon=True).start()

    def _read(self, call: Any) -> None:
        try:
            for payload in call:
                msg = codec.decode(payload)
                self.pushes.append(msg)
                if self.auto_answer and msg.request_id:
                    self._out.put(codec.push_response(msg.type.replace("Request", "Response"), msg.request_id))
        except grpc.RpcError as exc:
            self.stream_error = exc
        finally:
            self.stream_done.set()

    def end_stream(self) -> None:
        self._out.put(None)  # half-close: the request iterator ends

    def close(self) -> None:
        self._out.put(None)
        self.channel.close()


@pytest.fixture
def clients():
    made: list[RawClient] = []

    def make(target: str, **kw: Any) -> RawClient:
        c = RawClient(target, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def local_ports_to(port: int) -> set[int]:
    """Local ports of this process's ESTABLISHED TCP connections to 127.0.0.1:<port>."""
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED}


def peer_port(connection_id: str) -> int:
    return int(connection_id.rsplit("_", 1)[1])


def registered(server: RefServer, cid: str) -> Callable[[], bool]:
    return lambda: cid in server.current()


# ---- SR: setup ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_server_check_mints_one_id_per_transport(start_server, clients):
    server = start_server()
    a, b = clients(server.target), clients(server.target)
    id_a, id_b = a.server_check(), b.server_check()
    assert id_a != id_b
    assert a.server_check() == id_a  # the same transport keeps its id
    for cid in (id_a, id_b):
        ms, ip, port = cid.split("_")
        assert ip == "127.0.0.1"
        assert ms.isdigit()
    # the ids name the client's TCP peer port (no proxy here): our own sockets' local ports
    assert {peer_port(id_a), peer_port(id_b)} <= local_ports_to(server.grpc_port)
    assert server.transport_ids() == {id_a, id_b}


@pytest.mark.timeout(30)
def test_unary_before_setup_is_301_then_succeeds(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    before = c.health()
    assert before.type == codec.ERROR_RESPONSE
    assert before.error_code == 301
    assert before.body["success"] is False
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    after = c.health()
    assert after.type == codec.HEALTH_CHECK_RESPONSE
    assert after.body == {"resultCode": 200, "errorCode": 0,
                                                                         "success": True}


@pytest.mark.timeout(30)
def test_unknown_type_and_bad_body_keep_the_connection(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    assert c.call(codec.encode("NoSuchRequest", {})).error_code == 302  # 302 even before setup
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    assert c.call(codec.encode("NoSuchRequest", {"x": 1})).error_code == 302
    bad = codec.health_check_request()
    bad.body.value = b"{not json"
    assert c.call(bad).error_code == 502
    not_object = codec.health_check_request()
    not_object.body.value = b"[1, 2]"
    assert c.call(not_object).error_code == 502
    assert c.health().body["success"] is True
    assert c.server_check() == cid
    assert cid in server.current()


@pytest.mark.timeout(30)
def test_setup_registers_reported_fields(start_server, clients):
    server = start_server()
    a = clients(server.target, client_ip="10.2.0.7")
    b = clients(server.target, client_ip="10.2.0.8")
    id_a, id_b = a.server_check(), b.server_check()
    a.setup(labels={"source": "sdk", "module": "config", "AppName": "shop"}, version="Nacos-Java-Client:v2.2.4",
            tenant="ns-1")
    b.setup()
    current = eventually(server.current, timeout_ms=3000, what="two registrations",
                         accept=lambda cur: {id_a, id_b} <= set(cur)).value
    meta = current[id_a]["metaInfo"]
    assert meta["clientIp"] == "10.2.0.7"
    assert meta["version"] == "Nacos-Java-Client:v2.2.4"
    assert meta["appName"] == "shop"
    assert meta["tenant"] == "ns-1"
    assert meta["labels"] == {"source": "sdk", "module": "config", "AppName": "shop"}
    assert meta["connectionId"] == id_a
    assert meta["connectType"] == "GRPC"
    assert meta["sdkSource"] is True
    assert meta["remoteIp"] == "127.0.0.1"
    assert meta["remotePort"] == peer_port(id_a)
    assert meta["localPort"] == server.grpc_port
    assert abs(meta["lastActiveTime"] - time.time() * 1000) < 60_000
    assert current[id_a]["connected"] is True
    assert current[id_a]["abilities"] is None
    assert current[id_b]["metaInfo"]["appName"] == "-"
    assert server.json("clientIpCounts") == {"10.2.0.7": 1, "10.2.0.8": 1}


# ---- TC: termination ---------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_channel_close_unregisters_exactly_once(start_server, clients):
    server = start_server()
    c = clients(server.target, client_ip="10.3.0.1")
    keep = clients(server.target, client_ip="10.3.0.2")
    cid, keep_id = c.server_check(), keep.server_check()
    c.setup()
    keep.setup()
    eventually(lambda: {cid, keep_id} <= set(server.current()), timeout_ms=3000, what="registrations")
    seq = server.events()[-1]["seq"]
    c.close()
    waited = eventually(lambda: cid not in server.current(), timeout_ms=1000, what="unregister within 1 s")
    assert waited.elapsed_ms < 1000
    gone = [e for e in server.events(seq) if e["connectionId"] == cid]
    assert [e["event"] for e in gone] == ["disconnected"]
    assert gone[0]["clientIp"] == "10.3.0.1"
    assert server.json("clientIpCounts") == {"10.3.0.2": 1}
    assert cid not in server.transport_ids()
    assert keep_id in server.current()


@pytest.mark.timeout(30)
def test_stream_end_with_live_transport_stays_registered(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    c.end_stream()
    assert c.stream_done.wait(5), "the server did not complete the ended stream"
    assert c.stream_error is None
    held, bad, _ = holds_for(lambda: cid in server.current(), duration_ms=500, what="still registered")
    assert held, bad
    assert c.health().body["success"] is True  # the transport's registration is intact
    assert not [e for e in server.events() if e["event"] == "disconnected"]


@pytest.mark.timeout(40)
def test_starting_server_answers_300_and_rejects_sdk_setup(start_server, clients):
    server = start_server("--startup-delay-ms", "4000")
    sdk = clients(server.target, client_ip="10.4.0.1")
    reply = sdk.call(codec.server_check_request())
    assert reply.type == codec.ERROR_RESPONSE
    assert reply.error_code == 300
    (tid,) = server.transport_ids()
    sdk.setup()
    assert sdk.stream_done.wait(5), "the rejected transport was not closed"
    assert [p.type for p in sdk.pushes] == [codec.CONNECT_RESET_REQUEST]
    assert "serverIp" not in sdk.pushes[0].body
    eventually(lambda: tid not in server.transport_ids(), timeout_ms=2000, what="rejected transport gone")
    eventually(lambda: peer_port(tid) not in local_ports_to(server.grpc_port), timeout_ms=2000,
               what="no ESTABLISHED socket left from the rejected transport")
    # a cluster-source setup is not rejected while starting
    peer = clients(server.target, client_ip="10.4.0.2")
    assert peer.call(codec.server_check_request()).error_code == 300
    peer_tid = (server.transport_ids() - {tid}).pop()
    peer.setup(labels={"source": "cluster"})
    eventually(registered(server, peer_tid), timeout_ms=3000, what="cluster registration while starting")
    assert all(e["connectionId"] != tid for e in server.events())
    (reset,) = [p for p in server.pushes() if p["connectionId"] == tid]
    assert reset["answered"]
    assert reset["answer_result_code"] == 200
    later = clients(server.target)
    eventually(lambda: later.call(codec.server_check_request()).type == codec.SERVER_CHECK_RESPONSE,
               timeout_ms=8000, what="ServerCheck accepted once started", swallow=(grpc.RpcError,))


@pytest.mark.timeout(40)
def test_per_ip_limit_resets_and_really_closes_the_extra_transport(start_server, clients):
    server = start_server("--count-limit-per-client-ip", json.dumps({"10.5.0.1": 2}))
    inside = [clients(server.target, client_ip="10.5.0.1") for _ in range(2)]
    ids = [c.server_check() for c in inside]
    for c in inside:
        c.setup()
    eventually(lambda: set(ids) <= set(server.current()), timeout_ms=3000, what="two under the limit")
    extra = clients(server.target, client_ip="10.5.0.1")
    extra_id = extra.server_check()
    extra.setup()
    assert extra.stream_done.wait(5), "the over-limit transport was not closed"
    assert [p.type for p in extra.pushes] == [codec.CONNECT_RESET_REQUEST]
    push = extra.pushes[0].body
    assert push["headers"] == {}
    assert push["module"] == "internal"
    assert push["requestId"].isdigit()
    eventually(lambda: peer_port(extra_id) not in local_ports_to(server.grpc_port), timeout_ms=2000,
               what="client socket of the rejected transport closed")
    assert extra_id not in server.transport_ids()
    assert extra_id not in server.current()
    assert server.json("clientIpCounts") == {"10.5.0.1": 2}
    other = clients(server.target, client_ip="10.5.0.2")
    other_id = other.server_check()
    other.setup()
    eventually(registered(server, other_id), timeout_ms=3000, what="other IP unaffected")
    assert server.json("clientIpCounts") == {"10.5.0.1": 2, "10.5.0.2": 1}
    assert sum(1 for v in server.current().values() if v["metaInfo"]["clientIp"] == "10.5.0.1") == 2


@pytest.mark.timeout(40)
def test_count_limit_exempts_cluster_source(start_server, clients):
    server = start_server("--count-limit", "1")
    first = clients(server.target, client_ip="10.6.0.1")
    first_id = first.server_check()
    first.setup()
    eventually(registered(server, first_id), timeout_ms=3000, what="first sdk connection")
    second = clients(server.target, client_ip="10.6.0.2")
    second_id = second.server_check()
    second.setup()
    assert second.stream_done.wait(5), "the over-limit sdk transport was not closed"
    member = clients(server.target, client_ip="10.6.0.3")
    member_id = member.server_check()
    member.setup(labels={"source": "cluster"})
    eventually(registered(server, member_id), timeout_ms=3000, what="cluster connection over the limit")
    assert set(server.current()) == {first_id, member_id}
    assert second_id not in server.transport_ids()


# ---- reset and reload --------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_reload_client_unknown_id_is_success_and_changes_nothing(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    assert server.get("reloadClient", connectionId="1_127.0.0.1_1") == (200, "success")
    assert server.get("reloadClient")[0] == 400
    assert set(server.current()) == {cid}
    assert server.pushes() == []
    assert c.pushes == []


@pytest.mark.timeout(30)
def test_reload_client_pushes_reset_and_leaves_the_transport(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    assert server.get("reloadClient", connectionId=cid, redirectAddress="127.0.0.1:18848") == (200, "success")
    (push,) = c.pushes
    assert push.type == codec.CONNECT_RESET_REQUEST
    assert push.body == {"headers": {}, "requestId": push.body["requestId"], "module": "internal",
                         "serverIp": "127.0.0.1", "serverPort": "18848"}
    (record,) = server.pushes()
    assert record["answered"]
    assert record["requestId"] == push.body["requestId"]
    assert cid in server.current()
    assert cid in server.transport_ids()


@pytest.mark.timeout(30)
def test_reload_current_sheds_down_to_count_once(start_server, clients):
    server = start_server("--eject-interval-ms", "300")
    cs = [clients(server.target, client_ip=f"10.7.0.{i}") for i in range(3)]
    ids = [c.server_check() for c in cs]
    for c in cs:
        c.setup()
    eventually(lambda: set(ids) <= set(server.current()), timeout_ms=3000, what="three registrations")
    assert server.get("reloadCurrent")[0] == 400
    assert server.get("reloadCurrent", count=1, redirectAddress="127.0.0.1:18848") == (200, "success")
    resets = lambda: [p for p in server.pushes() if p["type"] == codec.CONNECT_RESET_REQUEST]  # noqa: E731
    waited = eventually(resets, timeout_ms=3000, what="two resets", accept=lambda r: len(r) == 2)
    assert all(r["body"]["serverIp"] == "127.0.0.1" and r["body"]["serverPort"] == "18848" for r in waited.value)
    held, bad, _ = holds_for(lambda: len(resets()) == 2, duration_ms=900, what="one-shot")
    assert held, bad


@pytest.mark.timeout(30)
def test_pending_reset_is_released_when_the_connection_dies(start_server, clients):
    server = start_server()
    c = clients(server.target, auto_answer=False)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    with ThreadPoolExecutor(1) as pool:
        reload = pool.submit(server.get, "reloadClient", connectionId=cid)
        eventually(lambda: c.pushes, timeout_ms=3000, what="reset received")
        closed_at = now_ms()
        c.close()
        assert reload.result(timeout=5) == (200, "success")
        assert now_ms() - closed_at < 1500, "reloadClient waited on a dead connection"
    eventually(lambda: cid not in server.current(), timeout_ms=2000, what="unregistered")
    (record,) = server.pushes()
    assert record["outcome"] == "closed"
    assert not record["answered"]


@pytest.mark.timeout(30)
def test_ejector_removes_a_client_that_stops_answering(start_server, clients):
    server = start_server("--eject-interval-ms", "300", "--idle-threshold-ms", "600", "--probe-timeout-ms", "300")
    alive = clients(server.target, client_ip="10.8.0.1")
    silent = clients(server.target, client_ip="10.8.0.2", auto_answer=False)
    alive_id, silent_id = alive.server_check(), silent.server_check()
    alive.setup()
    silent.setup()
    eventually(lambda: {alive_id, silent_id} <= set(server.current()), timeout_ms=3000, what="registrations")
    gone = eventually(lambda: silent_id not in server.current(), timeout_ms=6000, what="silent client ejected")
    assert gone.elapsed_ms < 600 + 300 + 300 + 300 + 1000  # idle + interval + probe + a pass + tolerance
    assert silent.stream_done.wait(3), "the ejected transport was not closed"
    assert any(p.type == codec.CLIENT_DETECTION_REQUEST for p in silent.pushes)
    assert alive_id in server.current()
    answered = [p for p in server.pushes() if p["connectionId"] == alive_id]
    assert answered
    assert all(p["answered"] for p in answered if p["outcome"] != "pending")
    assert [e["event"] for e in server.events() if e["connectionId"] == silent_id] == ["connected", "disconnected"]


@pytest.mark.timeout(40)
def test_cluster_metrics_and_smart_reload_move_load_to_the_idle_member(start_server, clients):
    main_a, main_b = free_port(also_free_offset=1000), free_port(also_free_offset=1000)
    members = f"127.0.0.1:{main_a},127.0.0.1:{main_b}"
    a = start_server("--members", members, main_port=main_a)
    b = start_server("--members", members, "--eject-interval-ms", "300", main_port=main_b)
    busy = [clients(b.target, client_ip=f"10.11.0.{i}") for i in range(4)]
    ids = [c.server_check() for c in busy]
    for c in busy:
        c.setup()
    eventually(lambda: set(ids) <= set(b.current()), timeout_ms=3000, what="four registrations on b")
    view = a.json("cluster")
    assert [d["address"] for d in view["detail"]] == sorted([f"127.0.0.1:{main_a}", f"127.0.0.1:{main_b}"])
    assert {d["address"]: d["metric"]["sdkConCount"] for d in view["detail"]} == {
        f"127.0.0.1:{main_a}": "0", f"127.0.0.1:{main_b}": "4"}
    assert (view["memberCount"], view["metricsCount"], view["completed"]) == (2, 2, True)
    assert (view["total"], view["max"], view["min"], view["avg"]) == (4, 4, 0, 2)
    # avg 2, f 0.1: b (4 > 2) sheds to max(2, int(4 * 0.9)) = 3 connections, towards a (0 < 1)
    assert a.get("smartReloadCluster") == (200, "Ok")
    resets = eventually(lambda: [p for c in busy for p in c.pushes], timeout_ms=3000, what="one reset on b",
                        accept=lambda r: len(r) == 1).value
    assert resets[0].type == codec.CONNECT_RESET_REQUEST
    assert (resets[0].body["serverIp"], resets[0].body["serverPort"]) == ("127.0.0.1", str(main_a))


# ---- robustness --------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_bad_input_never_kills_the_server(start_server, clients):
    server = start_server("--max-inbound-message-bytes", "65536")
    c = clients(server.target)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    big = codec.health_check_request()
    big.body.value = b'{"pad":"' + b"x" * 100_000 + b'"}'
    with pytest.raises(grpc.RpcError) as info:
        c.call(big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert c.server_check() == cid
    assert c.health().body["success"] is True
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        while raw.recv(65536):  # the server closes it: recv returns b"" (or the socket errors)
            pass
    other = clients(server.target)
    assert other.server_check() != cid
    assert server.proc.poll() is None
    eventually(lambda: len(server.transport_ids()) == 2, timeout_ms=2000, what="garbage transport gone")


@pytest.mark.timeout(60)
def test_churn_leaks_no_socket_and_no_count(start_server, clients):
    server = start_server("--count-limit-per-client-ip", json.dumps({"10.12.0.1": 2}))
    for _ in range(15):
        batch = [clients(server.target, client_ip="10.12.0.1") for _ in range(3)]
        ids = [c.server_check() for c in batch]
        for c in batch:
            c.setup()
        # two registered, the third rejected and closed
        eventually(lambda ids=ids, batch=batch: sum(1 for cid in ids if cid in server.current()) == 2
                   and sum(1 for c in batch if c.stream_done.is_set()) == 1,
                   timeout_ms=5000, what="two registered, one rejected")
        assert server.json("clientIpCounts") == {"10.12.0.1": 2}
        for c in batch:
            c.close()
        eventually(lambda: not server.current() and not server.transport_ids(), timeout_ms=3000,
                   what="all unregistered")
    assert server.json("clientIpCounts") == {}
    kinds = [e["event"] for e in server.events()]
    assert kinds.count("connected") == kinds.count("disconnected") == 30
    proc = psutil.Process(server.proc.pid)

    def server_sockets() -> list[str]:
        return [c.status for c in proc.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]

    # the front holds nothing once its transports are gone (the internal gRPC side of each
    # closed splice ends as the server's own TIME_WAIT, which is not an open socket)
    eventually(lambda: not [st for st in server_sockets() if st != psutil.CONN_TIME_WAIT],
               timeout_ms=5000, what="no ESTABLISHED/CLOSE_WAIT socket left in the server")


@pytest.mark.timeout(30)
def test_sigterm_stops_cleanly(start_server, clients):
    server = start_server()
    c = clients(server.target)
    cid = c.server_check()
    c.setup()
    eventually(registered(server, cid), timeout_ms=3000, what="registration")
    assert server.stop() == 0
    assert c.stream_done.wait(5)
    assert "nacos-ref-server ready" in server.log_text()
    assert "unregister " + cid in server.log_text()


@pytest.mark.timeout(30)
def test_a_broken_variant_runs_from_a_subclass(start_server, clients):
    """A subclass overriding one step (here: leave the rejected transport open) runs as a
    server, so suites can prove they catch the fault."""
    code = ("import sys\n"
            "from harness.reference.nacos.server import NacosRefServer, main\n"
            "class LeaveRejectedOpen(NacosRefServer):\n"
            "    def close_rejected(self, conn):\n"
            "        pass\n"
            "sys.exit(main(sys.argv[1:], server_cls=LeaveRejectedOpen))\n")
    server = start_server("--count-limit-per-client-ip", json.dumps({"10.9.0.1": 0}),
                          launcher=[sys.executable, "-c", code])
    c = clients(server.target, client_ip="10.9.0.1")
    cid = c.server_check()
    c.setup()
    eventually(lambda: c.pushes, timeout_ms=3000, what="reset received")
    held, bad, _ = holds_for(lambda: cid in server.transport_ids(), duration_ms=500, what="left open")
    assert held, bad
    assert cid not in server.current()


# ---- the TCP front in-process (no gRPC): ids, splice, FIN/RST both ways ----------------------

@pytest.mark.timeout(20)
def test_transport_front_splices_and_reports_termination_causes():
    from harness.reference.nacos.transport import TransportFront

    async def scenario() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        ready: list = []
        gone: list = []
        front = TransportFront("127.0.0.1", 0, upstream.sockets[0].getsockname()[1],
                               on_ready=ready.append, on_terminated=gone.append)
        await front.start()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
            r, w = await asyncio.open_connection("127.0.0.1", front.port)
            return r, w, w.get_extra_info("sockname")[1]

        async def until(cond: Callable[[], bool]) -> None:
            async with asyncio.timeout(5):
                while not cond():
                    await asyncio.sleep(0.01)

        # ready once per connection, the id names the client's port, bytes flow both ways
        r1, w1, port1 = await connect()
        await until(lambda: len(ready) == 1)
        assert ready[0].id.endswith(f"_127.0.0.1_{port1}")
        blob = os.urandom(1_000_000)
        w1.write(blob)
        assert await r1.readexactly(len(blob)) == blob
        assert front.by_peer(f"ipv4:127.0.0.1:{ready[0].upstream_addr[1]}") is ready[0]

        # client FIN -> terminated once
        w1.close()
        await until(lambda: len(gone) == 1)
        assert gone[0] is ready[0]
        assert gone[0].cause == "client-eof"

        # client RST (SO_LINGER 0) -> terminated with a reset cause
        r2, w2, _ = await connect()
        await until(lambda: len(ready) == 2)
        sock = w2.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w2.transport.abort()
        await until(lambda: len(gone) == 2)
        assert gone[1].cause == "client-reset"

        # server close with RST -> the client sees a reset; with FIN -> EOF
        r3, w3, _ = await connect()
        r4, w4, _ = await connect()
        await until(lambda: len(ready) == 4)
        assert front.close(ready[2].id, rst=True)
        assert front.close(ready[3].id)
        assert not front.close(ready[3].id)  # once
        with pytest.raises(ConnectionResetError):
            await r3.read(1)
        assert await r4.read(1) == b""
        await until(lambda: len(gone) == 4)
        assert [t.cause for t in gone[2:]] == ["server-reset", "server-close"]
        assert front.transports() == []
        for w in (w2, w3, w4):
            w.close()
        await front.stop()
        upstream.close()
        await upstream.wait_closed()

    asyncio.run(scenario())


# ---- the real nacos-sdk-python client ------------------------------------------------------

class LoopThread:
    """An asyncio loop in a thread, so the test thread can wait without starving the SDK."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout_s: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.mark.timeout(60)
# nacos-sdk-python 3.2.0's models use pydantic's class-based Config (its warning, not ours)
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
def test_nacos_sdk_python_registers_and_stays_registered(start_server, tmp_path):
    from v2.nacos import ClientConfigBuilder, GRPCConfig, NacosNamingService
    from v2.nacos.naming.model.naming_param import ListInstanceParam, RegisterInstanceParam

    server = start_server(grpc_at_offset=True)
    cfg = (ClientConfigBuilder().server_address(f"127.0.0.1:{server.main_port}").namespace_id("")
           .log_dir(str(tmp_path / "sdk-logs")).cache_dir(str(tmp_path / "sdk-cache"))
           .grpc_config(GRPCConfig(grpc_timeout=3000, port_offset=1000)).build())
    lt = LoopThread()
    try:
        naming = lt.run(NacosNamingService.create_naming_service(cfg))
        assert lt.run(naming.register_instance(RegisterInstanceParam(service_name="conn-svc", ip="10.10.0.1",
                                                                     port=8080)))
        (cid, entry), = server.current().items()
        meta = entry["metaInfo"]
        assert meta["version"].startswith("Nacos-Python-Client")
        assert meta["labels"]["module"] == "naming"
        after_register = meta["lastActiveTime"]
        # one HealthCheck cycle (idle >= 5 s, checked every 5 s) refreshes lastActiveTime
        eventually(lambda: server.current()[cid]["metaInfo"]["lastActiveTime"] > after_register,
                   timeout_ms=15_000, interval_ms=200, what="a HealthCheck from the idle SDK client")
        hosts = lt.run(naming.list_instances(ListInstanceParam(service_name="conn-svc", healthy_only=None,
                                                                subscribe=False)))
        assert [(h.ip, h.port) for h in hosts] == [("10.10.0.1", 8080)]
        assert set(server.current()) == {cid}
        assert [e["event"] for e in server.events()] == ["connected"]
        lt.run(naming.shutdown())
        eventually(lambda: not server.current(), timeout_ms=3000, what="unregistered after SDK shutdown")
        assert [e["event"] for e in server.events()] == ["connected", "disconnected"]
    finally:
        lt.close()
