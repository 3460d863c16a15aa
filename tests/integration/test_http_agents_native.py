"""The non-Python http-client agents (Go net/http, JDK HttpURLConnection, java.net.http, OkHttp,
Apache HttpClient 5, Node's http.Agent, reqwest) against a small in-test HTTP/1.1 server: the
agent contract of SPEC §4.4 and the stacks' default pool behaviour the PL cases build on
(research/http-pools.md G1, J1, J12; the manifests' [timers] for the later ones).

Agents are launched from their built-in manifests (``render``), so the manifests' commands and
knob mappings are exercised too. The builds come from ``connformance setup``; a missing build
skips with the command to run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.agents.build import (
    go_http_agent_binary,
    java_agent_classes,
    java_pool_agents_argfile,
    reqwest_agent_binary,
)
from harness.observe.sockets import snapshot, state_counts
from harness.peers import PeerManifest, PeerRegistry, render
from harness.slots import current_slot
from harness.wait import eventually

pytestmark = pytest.mark.integration

AGENT_RUN_TIMEOUT_S = 60.0  # a JVM start + a few bursts; the agents' own requests time out at 30 s
SOCKETS_TIMEOUT_MS = 5_000  # the idle pool settles right after the burst; this is a bound, not a pause
GO, HUC, JHC = "go-net-http", "jdk-httpurlconnection", "jdk-httpclient"
OKH, AHC, NODE, REQ = "okhttp", "apache-httpclient5", "node-http", "reqwest"
AGENTS = (GO, HUC, JHC, OKH, AHC, NODE, REQ)

_REGISTRY = PeerRegistry.default()


def _manifest(name: str) -> PeerManifest:
    return _REGISTRY.get("http-client", name)


def _with_capability(capability: str) -> list[str]:
    return [name for name in AGENTS if _manifest(name).has_capability(capability)]


# --- the server under the agents --------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says otherwise
    server: _CountingServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # an unread body would be parsed as the next request
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        status, body = 200, b"ok\n"
        if url.path == "/sleep":
            time.sleep(int(query["ms"][0]) / 1000.0)
        elif url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
        elif url.path == "/bytes":
            body = b"x" * int(query["n"][0])
        self.server.count_request()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            pass  # a client that canceled its request closed the socket under us

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


def _fresh_loopback() -> str:
    """A random address in this run's loopback block, outside the harness's own ranges (127.X.0-2.*):
    127.X.100-249.1-254."""
    return f"{current_slot().loopback_prefix}.{random.randint(100, 249)}.{random.randint(1, 254)}"


class _CountingServer(ThreadingHTTPServer):
    """Counts accepted connections, requests, and the most connections open at once."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 would delay a burst's connects (SYN retries)

    def __init__(self) -> None:
        # An address of its own: a client's TIME_WAIT toward an earlier test's server (60 s) is
        # then never counted as this test's (CI: port 38109 reused, 5 stale ones made 15).
        super().__init__((_fresh_loopback(), 0), _Handler)
        self.host, self.port = self.server_address[0], self.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._lock = threading.Lock()
        self.accepted = self.requests = self.open = self.max_open = 0

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self.accepted += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._lock:
                self.open -= 1


def _serve() -> Iterator[_CountingServer]:
    server = _CountingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_CountingServer]:
    yield from _serve()


@pytest.fixture
def server2() -> Iterator[_CountingServer]:
    yield from _serve()


# --- running an agent ---------------------------------------------------------------------------


def _require_built(name: str) -> None:
    if name == GO:
        binary = go_http_agent_binary()
        if not binary.is_file():
            pytest.skip(f"Go http agent not built ({binary} missing); run `connformance setup --only go-http-agent`")
        return
    if name == REQ:
        if not reqwest_agent_binary().is_file():
            pytest.skip(f"reqwest agent not built ({reqwest_agent_binary()} missing); "
                        "run `connformance setup --only rust-http-agent`")
        return
    if name == NODE:
        if shutil.which("node") is None:
            pytest.skip("no `node` on PATH; run `connformance setup --only node`")
        return
    if shutil.which("java") is None:
        pytest.skip("no `java` on PATH: the JDK agents need a JDK 17+")
    if name in (OKH, AHC):
        if not java_pool_agents_argfile().is_file():
            pytest.skip(f"OkHttp/HttpClient 5 agents not built ({java_pool_agents_argfile()} missing); "
                        "run `connformance setup --only java-pool-agents`")
        return
    classes = java_agent_classes()
    if not (classes / "HttpUrlConnectionAgent.class").is_file():
        pytest.skip(f"JDK http agents not built ({classes} missing); run `connformance setup --only java-http-agents`")


def _launch(name: str, urls: list[str], plan: dict, tmp_path: Path,
            knobs: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    _require_built(name)
    plan_path = tmp_path / f"plan-{name}.json"
    plan_path.write_text(json.dumps(plan))
    spec, readiness = render(_manifest(name), placeholders={"url": ",".join(urls), "plan": str(plan_path)},
                             knobs=knobs)
    assert readiness == [], "a one-shot agent has no readiness probe"
    return subprocess.Popen(spec.argv, env={**os.environ, **spec.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=AGENT_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"agent did not exit within {AGENT_RUN_TIMEOUT_S:.0f} s; stdout {out!r} stderr {err[-2000:]!r}")
    return proc.returncode, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _run(name: str, urls: list[str], plan: dict, tmp_path: Path,
         knobs: dict[str, Any] | None = None) -> tuple[int, list[dict], str]:
    return _finish(_launch(name, urls, plan, tmp_path, knobs))


def _records(name: str, rc: int, lines: list[dict], err: str) -> list[dict]:
    """The request records of a run that must have completed (exit 0, last line done)."""
    assert rc == 0, f"{name} exited {rc}; stderr: {err[-2000:]}"
    assert lines, f"{name} printed nothing; stderr: {err[-2000:]}"
    assert lines[-1] == {"done": True}, f"{name}: last line is not {{'done': true}}: {lines[-3:]}"
    records = lines[:-1]
    for r in records:
        assert set(r) == {"phase", "i", "start_ms", "end_ms", "status", "error", "reused", "local_port"}, r
        assert r["start_ms"] <= r["end_ms"], r
    return records


def _burst(n: int, path: str = "/sleep?ms=300", target: int = 0) -> dict:
    return {"op": "burst", "n": n, "path": path, "method": "GET", "target": target}


# --- the contract --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", AGENTS)
def test_a_burst_gives_one_record_per_request(name: str, server: _CountingServer, tmp_path: Path) -> None:
    rc, lines, err = _run(name, [server.url], {"knobs": {}, "phases": [_burst(5)]}, tmp_path)
    records = _records(name, rc, lines, err)

    assert sorted(r["i"] for r in records) == [0, 1, 2, 3, 4]
    assert all(r["phase"] == 0 and r["status"] == 200 and r["error"] is None for r in records), records
    # Five requests in flight together: every one started before any ended, on five connections.
    assert max(r["start_ms"] for r in records) < min(r["end_ms"] for r in records), records
    assert server.max_open == 5
    assert server.requests == 5
    manifest = _manifest(name)
    if manifest.has_capability("reused"):
        assert [r["reused"] for r in records] == [False] * 5, records
    else:
        assert all(r["reused"] is None for r in records), records
    if manifest.has_capability("local_port"):
        ports = {r["local_port"] for r in records}
        assert len(ports) == 5, records
        assert all(isinstance(p, int) and p > 0 for p in ports), records
    else:
        assert all(r["local_port"] is None for r in records), records


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("name", "knobs", "kept"),
    [
        pytest.param(GO, None, 2, id="go-default-2"),                 # DefaultMaxIdleConnsPerHost (G1)
        pytest.param(GO, {"max_idle_per_host": 4}, 4, id="go-flag-4"),
        pytest.param(HUC, None, 5, id="jdk-urlconnection-default-5"),  # http.maxConnections (J1, PL-07)
        pytest.param(HUC, {"max_idle_per_host": 3}, 3, id="jdk-urlconnection-sysprop-3"),  # J2
        pytest.param(JHC, None, 10, id="jdk-httpclient-unbounded"),    # all kept (J12)
        pytest.param(OKH, None, 5, id="okhttp-default-5"),             # ConnectionPool maxIdleConnections 5
        pytest.param(OKH, {"max_idle_total": 2}, 2, id="okhttp-flag-2"),
        pytest.param(AHC, {"max_conns_per_host": 10}, 10, id="httpclient5-no-idle-cap"),  # keeps what it opened
        pytest.param(NODE, None, 10, id="node-default-256"),           # maxFreeSockets 256: all kept
        pytest.param(NODE, {"max_idle_per_host": 3}, 3, id="node-flag-3"),
        pytest.param(REQ, None, 10, id="reqwest-default-unbounded"),   # pool_max_idle_per_host usize::MAX
        pytest.param(REQ, {"max_idle_per_host": 4}, 4, id="reqwest-flag-4"),
    ],
)
def test_idle_cap_after_a_10_wide_burst(name: str, knobs: dict | None, kept: int, server: _CountingServer,
                                        tmp_path: Path) -> None:
    """After a 10-wide burst the stack keeps its idle cap open and closes the rest itself
    (client-side TIME_WAIT), observed in the socket table while the agent sleeps."""
    plan = {"knobs": {}, "phases": [_burst(10), {"op": "sleep", "ms": 3000}]}
    proc = _launch(name, [server.url], plan, tmp_path, knobs)
    try:
        def client_side() -> dict[str, int]:
            toward = [e for e in snapshot([server.port]) if e.remote_ip == server.host]
            return state_counts(toward, [server.port])[server.port]["client"]

        settled = eventually(
            client_side, timeout_ms=SOCKETS_TIMEOUT_MS,
            what=f"{name}: {kept} idle ESTABLISHED and {10 - kept} TIME_WAIT toward :{server.port}",
            accept=lambda s: s.get("ESTABLISHED", 0) == kept and s.get("TIME_WAIT", 0) == 10 - kept,
            interval_ms=50,
        )
        assert proc.poll() is None, f"{name} exited during its sleep phase (must stay alive through it)"
        # The client's side is ESTABLISHED once the kernel completed the handshake; the server's
        # accept loop may still be taking them from its backlog (reqwest: 6 of 10 counted then).
        accepted = eventually(lambda: server.accepted, accept=lambda n: n >= 10, timeout_ms=SOCKETS_TIMEOUT_MS,
                              what=f"{name}: the server's accept loop took all 10 connections", interval_ms=20)
        assert accepted.value == 10, f"{name}: the server accepted {accepted.value} connections, not 10"
        assert settled.value.get("CLOSE_WAIT", 0) == 0
    finally:
        rc, lines, err = _finish(proc)
    assert len(_records(name, rc, lines, err)) == 10


@pytest.mark.timeout(90)
def test_go_second_burst_reuses_exactly_its_idle_cap(server: _CountingServer, tmp_path: Path) -> None:
    """Go's default keeps 2 idle connections: a second 10-wide burst reuses those 2 (by local
    port, from httptrace) and dials 8 more (research G1: the TIME_WAIT surge)."""
    plan = {"knobs": {}, "phases": [_burst(10), _burst(10)]}
    records = _records(GO, *_run(GO, [server.url], plan, tmp_path))
    first = {r["local_port"] for r in records if r["phase"] == 0}
    second = [r for r in records if r["phase"] == 1]
    reused = [r for r in second if r["reused"]]
    assert len(reused) == 2, second
    assert {r["local_port"] for r in reused} <= first, (first, reused)
    assert not {r["local_port"] for r in second if not r["reused"]} & first
    assert server.accepted == 18


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "knobs", "expected"),
    [
        pytest.param(GO, {"block_when_full": False}, ["block_when_full"], id="go-block-when-full-false"),
        pytest.param(GO, {"pool_maxsize": 3, "max_conns_total": 2}, ["max_conns_total", "pool_maxsize"],
                     id="go-unknown-knobs"),
        pytest.param(HUC, {"max_conns_per_host": 3, "idle_timeout_ms": 1500},
                     ["idle_timeout_ms", "max_conns_per_host"], id="jdk-urlconnection-max-conns-and-ms"),
        pytest.param(HUC, {"max_idle_per_host": 0}, ["max_idle_per_host"], id="jdk-urlconnection-idle-0"),
        pytest.param(JHC, {"keepalive": False}, ["keepalive"], id="jdk-httpclient-keepalive"),
        pytest.param(OKH, {"keepalive": False, "max_idle_per_host": 2}, ["keepalive", "max_idle_per_host"],
                     id="okhttp-keepalive-and-per-host-cap"),
        pytest.param(AHC, {"max_idle_total": 3}, ["max_idle_total"], id="httpclient5-idle-cap"),
        pytest.param(NODE, {"max_idle_total": 3, "block_when_full": False}, ["block_when_full", "max_idle_total"],
                     id="node-idle-total-and-no-block"),
        pytest.param(REQ, {"max_conns_per_host": 3, "keepalive": False}, ["keepalive", "max_conns_per_host"],
                     id="reqwest-limit-and-keepalive"),
    ],
)
def test_an_unsupported_knob_exits_3(name: str, knobs: dict, expected: list[str], server: _CountingServer,
                                     tmp_path: Path) -> None:
    rc, lines, err = _run(name, [server.url], {"knobs": knobs, "phases": [_burst(1, "/")]}, tmp_path)
    assert rc == 3, f"{name} exited {rc}, not 3; stdout {lines} stderr {err[-1000:]}"
    [report] = lines
    assert report["unsupported"] == expected
    assert sorted(report["detail"]) == expected, "every unsupported name comes with a reason"
    assert server.accepted == 0, "an agent that cannot honour its knobs must not send anything"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [n for n in AGENTS if n not in _with_capability("cancel")])
def test_an_agent_that_cannot_cancel_says_so(name: str, server: _CountingServer, tmp_path: Path) -> None:
    plan = {"knobs": {}, "phases": [{"op": "cancel_burst", "n": 2, "cancel_after_ms": 50, "path": "/"}]}
    rc, lines, _ = _run(name, [server.url], plan, tmp_path)
    assert rc == 3
    assert lines[0]["unsupported"] == ["cancel_burst"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", _with_capability("multi_url"))
def test_target_picks_the_url(name: str, server: _CountingServer, server2: _CountingServer, tmp_path: Path) -> None:
    plan = {"knobs": {}, "phases": [
        {"op": "sequential", "n": 2, "path": "/", "target": 0},
        {"op": "sequential", "n": 3, "path": "/", "target": 1},
    ]}
    records = _records(name, *_run(name, [server.url, server2.url], plan, tmp_path))
    assert [r["status"] for r in records] == [200] * 5
    assert (server.requests, server2.requests) == (2, 3)
    if name == REQ:
        # hyper-util's legacy client races a new connect against the pooled connection's return
        # when none is idle at checkout (hyperium/hyper#4134): back to back, a second connection
        # to a host opens in about half the runs here.
        assert 1 <= server.accepted <= 2 and 1 <= server2.accepted <= 3, (server.accepted, server2.accepted)
    else:
        assert (server.accepted, server2.accepted) == (1, 1), "sequential requests reuse one connection per host"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", _with_capability("multi_url"))
def test_spread_burst_sends_request_i_to_targets_i_mod_len(name: str, server: _CountingServer,
                                                           server2: _CountingServer, tmp_path: Path) -> None:
    """PL-19's op: one burst over two hosts, request i to targets[i % len(targets)]."""
    plan = {"knobs": {}, "phases": [{"op": "spread_burst", "n": 5, "targets": [1, 0], "path": "/sleep?ms=200"}]}
    records = _records(name, *_run(name, [server.url, server2.url], plan, tmp_path))
    assert sorted(r["i"] for r in records) == [0, 1, 2, 3, 4]
    assert all(r["status"] == 200 for r in records), records
    assert (server.requests, server2.requests) == (2, 3)
    assert max(r["start_ms"] for r in records) < min(r["end_ms"] for r in records), "not released together"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", _with_capability("cancel"))
def test_cancel_burst_cancels_and_the_pool_still_works(name: str, server: _CountingServer, tmp_path: Path) -> None:
    plan = {"knobs": {}, "phases": [
        {"op": "cancel_burst", "n": 3, "cancel_after_ms": 100, "path": "/sleep?ms=1500"},
        {"op": "sequential", "n": 2, "path": "/"},
    ]}
    records = _records(name, *_run(name, [server.url], plan, tmp_path))
    canceled = [r for r in records if r["phase"] == 0]
    assert len(canceled) == 3
    assert all(r["status"] is None and r["error"].startswith("canceled") for r in canceled), canceled
    assert all(r["end_ms"] - r["start_ms"] < 1000 for r in canceled), "canceled at 100 ms, not after the 1.5 s answer"
    assert [r["status"] for r in records if r["phase"] == 1] == [200, 200]
