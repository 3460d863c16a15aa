"""The reference peers take nonsense without breaking (hardening): a bounded, seeded fuzz of the
reference Nacos server (random bytes, bad HTTP/2 frames, malformed and deeply nested payloads,
NaN and Unicode digits, oversized bodies, a connection storm, bad admin parameters) after which
it still serves a real client and its log has no traceback; the reference client answers a
reset whose redirect port is not a number; the ledger refuses bad numbers with 400."""

from __future__ import annotations

import json
import random
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.control.agent import AgentControl
from harness.control.nacos_admin import NacosAdmin
from harness.observe.history import History
from harness.peers import PeerRegistry
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.runtime import ProcessRuntime
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer
from harness.wait import eventually

pytestmark = pytest.mark.integration

SEED = 20261202
REGISTRY = PeerRegistry.default()
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def topo(tmp_path: Path):
    with ToxiproxyServer() as tp, ToxiproxyClient(tp.url) as tp_client, ProcessRuntime() as runtime:
        history = History(tmp_path / "history.jsonl")
        topology = Topology(runtime=runtime, toxiproxy=tp_client, workdir=tmp_path, history=history)
        try:
            yield topology
        finally:
            topology.close()
            history.close()


def _send(host: str, port: int, data: bytes) -> None:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(data)
            sock.settimeout(0.2)
            try:
                sock.recv(4096)
            except (TimeoutError, OSError):
                pass
    except OSError:
        pass


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _status(url: str) -> int:
    try:
        with _NO_PROXY.open(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.timeout(240)
def test_the_reference_server_survives_a_fuzz_and_still_serves(topo: Topology) -> None:
    rng = random.Random(SEED)
    (server,) = topo.nacos_servers(1, peer=REGISTRY.get("nacos-server", "ref"))
    host, port = server.host, server.grpc_port

    for _ in range(150):  # random bytes, with and without a valid preface first
        junk = rng.randbytes(rng.randrange(1, 4096))
        _send(host, port, junk if rng.random() < 0.5 else PREFACE + junk)
    for _ in range(100):  # well-framed HTTP/2 with nonsense inside
        frames = b"".join(_frame(rng.randrange(0, 12), rng.randrange(0, 256), rng.randrange(0, 2**31),
                                 rng.randbytes(rng.randrange(0, 64))) for _ in range(rng.randrange(1, 6)))
        _send(host, port, PREFACE + _frame(4, 0, 0, b"") + frames)
    for _ in range(300):  # a connection storm
        _send(host, port, b"")

    bodies = [_nested(5000), b'{"resultCode": NaN}', b'{"x": 1e400}', b'{"n": ' + b"9" * 5000 + b"}",
              b"\xff\xfe", b"[1,2,3]", "{\"resultCode\": \"²\"}".encode(), b'{"requestId": "\xd9\xa3"}']
    with RawNacosConnection(host, port) as probe:
        check = probe.server_check()
        assert check.result_code == 200
        for body in bodies:
            for type_name in ("HealthCheckRequest", "InstanceRequest", "ServerCheckRequest"):
                answer = probe.send_raw_body(type_name, body)
                assert answer.type == codec.ERROR_RESPONSE or answer.result_code == 200, (type_name, body[:40], answer)
        probe.setup(labels={"source": "sdk", "module": "naming", "deep": json.dumps(json.loads(_nested(50)))})
        for body in bodies:  # the same on the bi-stream, as "answers" to pushes never sent
            payload = codec.encode("ConnectResetResponse", {})
            payload.body.value = body
            probe.send_on_stream(payload)
    with RawNacosConnection(host, port, timeout_s=10) as probe:
        probe.server_check()
        with pytest.raises(Exception, match="RESOURCE_EXHAUSTED|larger than max"):
            probe.send_raw_body("HealthCheckRequest", b"x" * (11 * 1024 * 1024))

    loader = f"http://{server.main_address}/nacos/v2/core/loader"
    bad = ["reloadCurrent?count=%C2%B2", "reloadCurrent?count=nan", "reloadCurrent?count=1e9999",
           "smartReloadCluster?loaderFactor=nan", "smartReloadCluster?loaderFactor=inf",
           "smartReloadCluster?loaderFactor=-1e308", "smartReloadCluster?loaderFactor=%D9%A3",
           "events?since=%C2%B2", "pushes?since=-", "reloadClient"]
    for query in bad:
        assert _status(f"{loader}/{query}") == 400, query
    odd_but_fine = ["reloadClient?connectionId=%00&redirectAddress=127.0.0.11:%C2%B2",
                    "reloadClient?connectionId=x&redirectAddress=::::", "current?x=" + "y" * 4000]
    for query in odd_but_fine:
        assert _status(f"{loader}/{query}") == 200, query
    assert json.loads(urllib.request.urlopen(f"{loader}/current", timeout=5).read())  is not None

    client = topo.nacos_client(peer=REGISTRY.get("nacos-client", "ref"), servers=[server])
    running = eventually(client.control.state, timeout_ms=15_000, what="a real client RUNNING after the fuzz",
                         accept=lambda s: s.get("status") == "RUNNING").value
    assert running["connection_id"] in server.admin.current()
    log = server.node.logs(100_000)
    assert "Traceback" not in log, log[log.find("Traceback") - 500: log.find("Traceback") + 2500]


@pytest.mark.timeout(120)
def test_the_reference_client_answers_a_reset_with_a_non_numeric_redirect_port(topo: Topology) -> None:
    (server,) = topo.nacos_servers(1, peer=REGISTRY.get("nacos-server", "ref"))
    client = topo.nacos_client(peer=REGISTRY.get("nacos-client", "ref"), servers=[server])
    state = eventually(client.control.state, timeout_ms=15_000, what="RUNNING",
                       accept=lambda s: s.get("status") == "RUNNING").value
    admin: NacosAdmin = server.admin
    for redirect in (f"{server.host}:²", f"{server.host}:٣", f"{server.host}:99999", f"{server.host}:"):
        since = max((p["seq"] for p in admin.pushes(0)), default=0)
        admin.reload_client(state["connection_id"], redirect)
        pushes = [p for p in admin.pushes(since) if p["type"] == "ConnectResetRequest"]
        assert pushes and pushes[-1]["answered"], (redirect, pushes)
        state = eventually(client.control.state, timeout_ms=15_000, what="RUNNING again",
                           accept=lambda s: s.get("status") == "RUNNING").value
    assert "Traceback" not in client.node.logs(100_000)
    AgentControl(client.control_port).close()


@pytest.mark.timeout(60)
def test_the_ledger_refuses_bad_numbers(topo: Topology) -> None:
    (ledger,) = topo.http_servers(1, peer=REGISTRY.get("http-server", "ledger"))
    base = ledger.direct_url
    for path in ("/sleep?ms=%C2%B2", "/sleep?ms=%D9%A3", "/bytes?n=nan", "/status/%C2%B2", "/status/٣".encode()
                 .decode("latin-1")):
        assert _status(base + urllib.parse.quote(path, safe="/?=%")) == 400, path
    assert "Traceback" not in ledger.node.logs(100_000)
