"""``connformance check-peer``: does a peer keep the contract (docs/roles/*.md)? Run it before the
suites, so that a contract mistake is one line that says what to fix, never a FAILED verdict.

It starts the peer the way the suites do (behind Toxiproxy, with the reference peers as its
counterparts) and checks, in order, stopping at the first problem that makes the rest moot:
placement and readiness (``Topology``: it listens on ``{host}``), the role's endpoints and field
shapes, and each declared capability's shape. Each problem is one line: ``ROLE/NAME: what: what
to fix``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.agents.control_api import EVENT_KINDS, STATUSES
from harness.errors import HarnessError, SetupError, Unimplemented
from harness.http_plan import PlanError
from harness.observe.history import History
from harness.peers import PeerManifest, PeerRegistry
from harness.probe.nacos_raw import RawNacosConnection
from harness.runtimes import get_runtime
from harness.scenarios.bounds import RUNNING_TIMEOUT_MS
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer
from harness.wait import WaitTimeout, eventually

__all__ = ["check_peer"]

EPOCH_MS_FLOOR = 1_000_000_000_000
CHECK_RUNNING_TIMEOUT_MS = 2 * RUNNING_TIMEOUT_MS  # a peer never seen before: twice a case's bound


class _Problems(list):
    def add(self, peer: PeerManifest, what: str, fix: str) -> None:
        self.append(f"{peer.label}: {what}: {fix}")


def _server(topo: Topology, peer: PeerManifest, problems: _Problems) -> None:
    (server,) = topo.nacos_servers(1, peer=peer)
    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        check = probe.server_check()
        if check.type != "ServerCheckResponse" or not check.body.get("connectionId"):
            problems.add(peer, f"ServerCheck through the proxy answered {check.type} {check.body}",
                         "answer ServerCheckRequest with a ServerCheckResponse carrying connectionId")
    try:
        current = server.admin.current()
    except Exception as exc:  # noqa: BLE001 - the message is the finding
        problems.add(peer, f"registrations unreadable ({exc})",
                     "serve /nacos/v2/core/loader/current, or declare [admin] current")
        return
    if not isinstance(current, dict):
        problems.add(peer, f"current is {type(current).__name__}", "answer a JSON object keyed by connection id")
    extensions: dict[str, Callable[[], Any]] = {
        "events": server.admin.events, "pushes": server.admin.pushes,
        "transports": server.admin.transports, "client_ip_counts": server.admin.client_ip_counts}
    for capability, read in extensions.items():
        if not peer.has_capability(capability):
            continue
        try:
            value = read()
        except Unimplemented:
            problems.add(peer, f"declares {capability} but the endpoint answers 404",
                         f"serve it (docs/roles/nacos-server.md) or leave {capability} out of capabilities")
            continue
        want = dict if capability == "client_ip_counts" else list
        if not isinstance(value, want):
            problems.add(peer, f"{capability} answered a {type(value).__name__}", f"answer a JSON {want.__name__}")
    if peer.has_capability("register_log") and peer.witness.log is None:
        problems.add(peer, "declares register_log without a [witness] table", "give [witness] log and its regexes")


def _client(topo: Topology, peer: PeerManifest, problems: _Problems, registry: PeerRegistry) -> None:
    (server,) = topo.nacos_servers(1, peer=registry.get("nacos-server", "ref"))
    client = topo.nacos_client(peer=peer, servers=[server])
    try:
        state = eventually(client.control.state, timeout_ms=CHECK_RUNNING_TIMEOUT_MS, what="RUNNING",
                           accept=lambda s: s.get("status") == "RUNNING", swallow=(OSError, ValueError)).value
    except WaitTimeout as exc:
        problems.add(peer, f"not RUNNING {CHECK_RUNNING_TIMEOUT_MS} ms after start (last /state {exc.last!r:.200})",
                     "report the library's status as RUNNING once connected (docs/roles/nacos-client.md)")
        return
    for key in ("status", "server", "connection_id", "events"):
        if key not in state:
            problems.add(peer, f"/state has no {key!r}", "serve every field of the contract, null where unknown")
    if state.get("status") not in STATUSES:
        problems.add(peer, f"status {state.get('status')!r}", f"use one of {', '.join(STATUSES)}")
    if state.get("server") not in (None, server.main_address):
        problems.add(peer, f"server {state.get('server')!r}", f"name the address from {{server_list}} ({server.main_address})")
    for event in state.get("events") or []:
        if event.get("kind") not in EVENT_KINDS:
            problems.add(peer, f"event kind {event.get('kind')!r}", f"use one of {', '.join(EVENT_KINDS)}")
            break
        if not isinstance(event.get("t_ms"), (int, float)) or event["t_ms"] < EPOCH_MS_FLOOR:
            problems.add(peer, f"event t_ms {event.get('t_ms')!r} is not epoch milliseconds",
                         "stamp events with the wall clock in ms (time.time()*1000, System.currentTimeMillis())")
            break
    cid = state.get("connection_id")
    if cid is not None:
        try:
            eventually(server.admin.current, timeout_ms=3000, what="registered", accept=lambda c: cid in c)
        except WaitTimeout:
            problems.add(peer, f"connection_id {cid!r} is not registered on the server",
                         "report the id the server minted (ServerCheckResponse.connectionId), or null")
    if peer.has_capability("request"):
        answer = client.control.request()
        if not isinstance(answer.get("ok"), bool):
            problems.add(peer, f"/request answered {answer!r:.200}", "answer {\"ok\": bool, \"error_code\", \"ms\"}")
    meta = state.get("meta")
    if meta is not None and not isinstance(meta, dict):
        problems.add(peer, f"meta is {type(meta).__name__}", "meta is an object (client_ip, client_version, labels)")


def _http_server(topo: Topology, peer: PeerManifest, problems: _Problems) -> None:
    import urllib.request

    (server,) = topo.http_servers(1, peer=peer)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{server.url}/status/200", timeout=5) as resp:
            if resp.status != 200:
                problems.add(peer, f"GET /status/200 through the proxy answered {resp.status}", "answer 200")
    except Exception as exc:  # noqa: BLE001
        problems.add(peer, f"GET /status/200 through the proxy failed ({exc})", "serve /status/<code>")
    if server.ledger is not None:
        try:
            view = server.ledger.ledger()
            if not isinstance(view.get("connections"), list):
                problems.add(peer, "GET /_ledger has no connections list", "see docs/roles/http-server.md")
        except Exception as exc:  # noqa: BLE001
            problems.add(peer, f"declares ledger but GET /_ledger failed ({exc})", "serve it or drop the capability")


def _http_client(topo: Topology, peer: PeerManifest, problems: _Problems, registry: PeerRegistry) -> None:
    (ledger,) = topo.http_servers(1, peer=registry.get("http-server", "ledger"))
    plan = {"knobs": {}, "phases": [{"op": "sequential", "n": 2, "path": "/status/200"}, {"op": "sleep", "ms": 100}]}
    try:
        run = topo.run_http_client(peer=peer, servers=[ledger], plan=plan, timeout_ms=60_000)
    except (SetupError, PlanError) as exc:
        problems.add(peer, str(exc).splitlines()[0], "see docs/roles/http-client.md (output contract)")
        return
    if run.exit_code != 0:
        problems.add(peer, f"exit code {run.exit_code} for a plan of two GETs", "exit 0 after {\"done\": true}")
    if len(run.records) != 2:
        problems.add(peer, f"{len(run.records)} request records for 2 requests", "print one JSON line per request")


def check_peer(peer: PeerManifest, registry: PeerRegistry, *, runtime_name: str = "process",
               echo: Callable[[str], None] = print) -> list[str]:
    """Problems found (empty: the peer keeps the contract as far as checked)."""
    problems = _Problems()
    with tempfile.TemporaryDirectory(prefix="cf-check-") as tmp, ToxiproxyServer() as tp, \
            ToxiproxyClient(tp.url) as client, get_runtime(runtime_name) as runtime:
        history = History(Path(tmp) / "history.jsonl")
        topo = Topology(runtime=runtime, toxiproxy=client, workdir=Path(tmp), history=history)
        started = time.monotonic()
        try:
            if peer.role == "nacos-server":
                _server(topo, peer, problems)
            elif peer.role == "nacos-client":
                _client(topo, peer, problems, registry)
            elif peer.role == "http-server":
                _http_server(topo, peer, problems)
            else:
                _http_client(topo, peer, problems, registry)
        except (SetupError, HarnessError, Unimplemented) as exc:
            problems.add(peer, "start", " ".join(str(exc).split())[:600])
        finally:
            leaks = topo.close()
            history.close()
        if topo.exposed:
            problems.add(peer, f"listens beyond loopback: {'; '.join(topo.exposed)}",
                         "contain it ([containment] / [placement], docs/manifest.md)")
        problems.extend(f"{peer.label}: teardown: {leak}" for leak in leaks)
        echo(f"[check-peer] {peer.label}: checked in {time.monotonic() - started:.1f} s")
    if not problems:
        echo(f"[check-peer] {peer.label}: keeps the contract ({json.dumps(sorted(peer.capabilities))})")
    return list(problems)
