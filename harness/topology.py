"""A topology of peers behind real Toxiproxy proxies (SPEC §4.1), with nothing pytest-specific
so cases, chaos sessions and ``connformance up`` share it.

Placement: server S has its own loopback address H (127.0.0.11, .12, ...; see
``ports.server_host`` for why), a main port M (admin HTTP on H:M) and a real gRPC port G; its
proxy listens on H:M+1000 and forwards to H:G. Clients get the main addresses ``H:M`` and dial
M + 1000, so every client->server byte crosses the proxy, redirects included.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.control.agent import AgentControl
from harness.control.nacos_admin import NacosAdmin
from harness.errors import HarnessError, SetupError, Unimplemented
from harness.http_run import AgentRun, LedgerAdmin, run_http_agent
from harness.observe.history import History
from harness.observe.listeners import exposed, listeners_of
from harness.observe.server_events import LogWitness, ServerEvents
from harness.observe.sockets import owners, snapshot
from harness.peers import PeerManifest, render
from harness.peers.launch import render_template
from harness.placement.netns import Namespace, new_namespace
from harness.placement.netns import available as netns_available
from harness.ports import NACOS_GRPC_OFFSET, free_port, http_server_host, server_host
from harness.runtime.base import Node, Runtime
from harness.slots import current_slot
from harness.toxiproxy import Proxy, ToxiproxyClient
from harness.wait import WaitTimeout, eventually

_scratch_seq = itertools.count(1)
PLACEMENTS = ("loopback", "netns")  # where servers run: on the slot's loopback block, or each in a namespace

# A peer closes its side within this after the other side did; a CLOSE_WAIT older than that at
# the end of a case is a leak (SPEC TC-13's 60 s CLOSE_WAIT is what this catches).
CLOSE_WAIT_GRACE_MS = 2000


def admin_for(peer: PeerManifest, address: str, *, timeout_s: float = 5.0) -> NacosAdmin:
    return NacosAdmin(address, timeout_s=timeout_s, current_path=peer.admin.current,
                      current_shape=peer.admin.current_shape)


@dataclass
class NacosServerHandle:
    index: int
    peer: PeerManifest
    node: Node
    host: str
    main_port: int
    grpc_port: int
    proxy: Proxy
    admin: NacosAdmin
    knobs: dict[str, Any] = field(default_factory=dict)
    bind_host: str = ""  # where the peer really listens: ``host``, or its namespace's address
    namespace: Namespace | None = None
    events: ServerEvents | None = None  # its listener notifications, from whatever witness it has

    def __post_init__(self) -> None:
        self.bind_host = self.bind_host or self.host

    @property
    def main_address(self) -> str:
        """What clients are given (and what redirects name): the proxied main address."""
        return f"{self.host}:{self.main_port}"

    @property
    def admin_address(self) -> str:
        """Where the harness reaches its admin HTTP: its own address (a namespace's, maybe)."""
        return f"{self.bind_host}:{self.main_port}"

    def new_admin(self, timeout_s: float = 5.0) -> NacosAdmin:
        """A second admin client (e.g. for a call that blocks beside the case's own)."""
        return admin_for(self.peer, self.admin_address, timeout_s=timeout_s)

    @property
    def proxied_grpc_port(self) -> int:
        return self.main_port + NACOS_GRPC_OFFSET

    @property
    def direct_address(self) -> str | None:
        """The server's own address in its namespace, for a client that must meet packet-level
        faults itself (a SYN never answered: Toxiproxy would accept it); None on loopback, or when
        its gRPC port is not the main port + the Nacos offset a client derives it by."""
        if self.namespace is None or self.grpc_port != self.main_port + NACOS_GRPC_OFFSET:
            return None
        return f"{self.bind_host}:{self.main_port}"


@dataclass
class NacosClientHandle:
    name: str
    peer: PeerManifest
    node: Node
    control_port: int
    control: AgentControl
    servers: list[str]
    knobs: dict[str, Any] = field(default_factory=dict)


@dataclass
class HttpServerHandle:
    """An http-server peer on its own loopback address, behind its own proxy."""

    index: int
    peer: PeerManifest
    node: Node
    host: str
    port: int
    proxy: Proxy
    ledger: LedgerAdmin | None  # the server's own truth, when it has the `ledger` capability
    knobs: dict[str, Any] = field(default_factory=dict)
    namespace: Namespace | None = None  # placed in its own network namespace (packet-level faults)

    @property
    def url(self) -> str:
        """The proxied base URL clients are given."""
        return f"http://{self.proxy.listen}"

    @property
    def direct_url(self) -> str:
        """The server itself: on its loopback address, or its namespace's (198.18.0.0/15)."""
        return f"http://{self.bind_host}:{self.port}"

    @property
    def bind_host(self) -> str:
        return self.namespace.peer_ip if self.namespace is not None else self.host

    @property
    def proxy_port(self) -> int:
        return self.proxy.listen_port


class Topology:
    """Starts peers through a runtime, wires proxies, and tears everything down in reverse."""

    def __init__(self, *, runtime: Runtime, toxiproxy: ToxiproxyClient, workdir: Path, history: History,
                 placement: str = "loopback") -> None:
        if placement not in PLACEMENTS:
            raise HarnessError(f"unknown placement {placement!r}; one of {', '.join(PLACEMENTS)}")
        self.placement = placement
        self.runtime = runtime
        self.toxiproxy = toxiproxy
        self.workdir = workdir
        self.history = history
        self.servers: list[NacosServerHandle] = []
        self.clients: list[NacosClientHandle] = []
        self.http_servers_started: list[HttpServerHandle] = []
        self.http_runs: list[AgentRun] = []
        self._nodes: list[Node] = []
        self._names_lock = threading.Lock()
        self._client_seq = itertools.count()
        self._proxies: list[Proxy] = []
        self._closed = False
        self.exposed: list[str] = []
        self._namespaces: list[Namespace] = []
        self._scratch: list[Path] = []
        self._witness_logs: list[tuple[str, Path]] = []

    # -- servers -------------------------------------------------------------------------
    def nacos_servers(self, count: int, *, peer: PeerManifest, knobs: dict[str, Any] | None = None,
                      namespaced: bool = False) -> list[NacosServerHandle]:
        """Start ``count`` servers of ``peer``, each behind its own proxy. A cluster of more
        than one learns its members through the ``members`` knob when the peer has it.

        A peer whose manifest asks for a namespace (``[placement] network_namespace``), or every
        server when the topology places servers in namespaces, listens on its namespace's
        address (``bind_host``); clients still see only its proxy on loopback (``host``).
        ``namespaced``: always (a case with packet-level faults)."""
        knobs = dict(knobs or {})
        first = len(self.servers)
        in_namespace = namespaced or self._wants_namespace(peer)  # a packet-level fault needs one
        if in_namespace and count > 1 and peer.supports("members"):
            raise Unimplemented(f"{peer.label}: a cluster of servers in network namespaces is not placed yet "
                                "(its members would need to reach each other across namespaces)")
        places = []
        for index in range(first, first + count):
            host = server_host(index)
            main = free_port(also_free_offset=NACOS_GRPC_OFFSET, host=host)
            offset = peer.placement.grpc_port_offset
            # In a namespace every port of its own address is free: the gRPC port sits where a
            # client derives it (main + 1000), so the server can also be dialled directly.
            grpc = main + offset if offset is not None else (
                main + NACOS_GRPC_OFFSET if in_namespace else free_port(host=host))
            places.append((index, host, main, grpc))
        members = [f"{host}:{main}" for _, host, main, _ in places]
        if count > 1 and peer.supports("members"):
            knobs.setdefault("members", members)
        prepared = []
        for index, host, main_port, grpc_port in places:
            name = f"server-{index}"
            namespace = self._namespace() if in_namespace else None
            bind_host = namespace.peer_ip if namespace else host
            proxy = self.toxiproxy.create_proxy(
                f"{current_slot().prefix}nacos-{index}-{main_port}",
                upstream=f"{bind_host}:{grpc_port}",
                listen=f"{host}:{main_port + NACOS_GRPC_OFFSET}",
            )
            self._proxies.append(proxy)
            proxy.on_event(self._record_proxy_event)
            server_knobs = dict(knobs)
            if peer.supports("server_address"):
                server_knobs.setdefault("server_address", f"{host}:{main_port}")
            placeholders = {"main_port": main_port, "grpc_port": grpc_port, "host": bind_host,
                            "aux_port": free_port(host=host) if namespace is None else main_port + 2000,
                            "address": f"{host}:{main_port}", "scratch": str(self._new_scratch(name)), "name": name}
            prepared.append((index, name, host, bind_host, main_port, grpc_port, namespace, proxy, server_knobs,
                             placeholders))
        # The servers start side by side: a real server takes seconds to start, and a case with
        # three of them should not wait for each in turn.
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(prepared)),
                                                   thread_name_prefix="server-start") as pool:
            futures = [pool.submit(self._start, peer, p[1], p[9], p[8], namespace=p[6]) for p in prepared]
            nodes = [f.result() for f in futures]
        for p, node in zip(prepared, nodes, strict=True):
            self._check_placement(node, p[3], {"main_port": p[4], "grpc_port": p[5]})
        started = []
        for (index, name, host, bind_host, main_port, grpc_port, namespace, proxy, server_knobs, placeholders), node \
                in zip(prepared, nodes, strict=True):
            witness = self._witness(peer, placeholders)
            admin = admin_for(peer, f"{bind_host}:{main_port}")
            handle = NacosServerHandle(index, peer, node, host, main_port, grpc_port, proxy, admin, server_knobs,
                                       bind_host=bind_host, namespace=namespace,
                                       events=ServerEvents(admin, has_extension=peer.has_capability("events"),
                                                           witness=witness))
            self.servers.append(handle)
            started.append(handle)
            self.history.info("harness", "server_started", {
                "name": name, "peer": peer.name, "host": host, "bind_host": bind_host, "main": main_port,
                "grpc": grpc_port, "proxy": proxy.listen, "knobs": knobs,
                "namespace": namespace.name if namespace else None})
        return started

    def _check_placement(self, node: Node, host: str, ports: dict[str, int]) -> None:
        """The server listens where it was told: each of ``ports`` on ``host`` (its own address;
        a wildcard bind inside its namespace counts). A peer on 127.0.0.1 passes a readiness
        probe written for 127.0.0.1 but is unreachable through its proxy: an ERROR that says
        which placeholder to use, never a FAILED verdict about the peer."""
        if not getattr(node, "cheap_process_list", True):
            return
        listening = [item for item in listeners_of(node.processes()) if item.proto == "tcp"]
        missing = []
        for placeholder, port in ports.items():
            at = [item for item in listening if item.port == port]
            if not any(item.ip in (host, "0.0.0.0", "::") for item in at):
                where = ", ".join(f"{item.ip}:{item.port}" for item in at) or "nowhere"
                missing.append(f"{{{placeholder}}} {port} on {host} (it listens {where})")
        if missing:
            raise SetupError(
                f"peer {node.name} is not placed where the harness expects: " + "; ".join(missing)
                + f". Bind the address given as {{host}} ({host}), not 127.0.0.1: each server has its own "
                  "address, and its proxy and admin calls reach it there (docs/manifest.md, Placement)")

    def _wants_namespace(self, peer: PeerManifest) -> bool:
        return peer.placement.network_namespace or self.placement == "netns"

    def _namespace(self) -> Namespace:
        if self.runtime.name != "process":
            raise Unimplemented(f"network-namespace placement needs the process runtime (this is {self.runtime.name})")
        reason = netns_available()
        if reason is not None:
            raise Unimplemented(f"this peer must run in a network namespace, and this machine cannot make one: {reason}")
        namespace = new_namespace()
        self._namespaces.append(namespace)
        self.history.info("harness", "namespace_created", {"name": namespace.name, "peer_ip": namespace.peer_ip,
                                                            "host_ip": namespace.host_ip})
        return namespace

    # -- clients -------------------------------------------------------------------------
    def nacos_client(self, *, peer: PeerManifest, servers: list[NacosServerHandle] | list[str],
                     knobs: dict[str, Any] | None = None, start_timeout_ms: int | None = None) -> NacosClientHandle:
        """Start one client of ``peer``; ``start_timeout_ms`` raises the readiness bound (many
        clients started at once on a small machine)."""
        addresses = [s.main_address if isinstance(s, NacosServerHandle) else s for s in servers]
        control_port = free_port()
        with self._names_lock:  # clients may be started from several threads at once (SR-13)
            name = f"client-{peer.name}-{next(self._client_seq)}"
        knobs = dict(knobs or {})
        node = self._start(peer, name, {"server_list": ",".join(addresses), "control_port": control_port}, knobs,
                           start_timeout_ms=start_timeout_ms)
        handle = NacosClientHandle(name, peer, node, control_port, AgentControl(control_port), addresses, knobs)
        self.clients.append(handle)
        self.history.info("harness", "client_started", {"name": name, "peer": peer.name, "servers": addresses,
                                                         "control_port": control_port, "knobs": knobs})
        return handle

    # -- HTTP ----------------------------------------------------------------------------
    def http_servers(self, count: int, *, peer: PeerManifest, knobs: dict[str, Any] | None = None,
                     namespaced: bool = False) -> list[HttpServerHandle]:
        """Start ``count`` http-server peers, each on its own loopback address behind a proxy;
        ``namespaced``: each in its own network namespace instead (listening on the namespace's
        address, ``direct_url``; its proxy still on loopback), for packet-level faults."""
        knobs = dict(knobs or {})
        started = []
        for _ in range(count):
            index = len(self.http_servers_started)
            host = http_server_host(index)
            namespace = self._namespace() if namespaced else None
            bind_host = namespace.peer_ip if namespace else host
            # In a namespace every port of its own address is free.
            port, listen_port = (free_port(host=host), free_port(host=host))
            name = f"http-server-{index}"
            proxy = self.toxiproxy.create_proxy(f"{current_slot().prefix}http-{index}-{port}",
                                                upstream=f"{bind_host}:{port}", listen=f"{host}:{listen_port}")
            self._proxies.append(proxy)
            proxy.on_event(self._record_proxy_event)
            node = self._start(peer, name, {"host": bind_host, "port": port}, knobs, namespace=namespace)
            self._check_placement(node, bind_host, {"port": port})
            ledger = LedgerAdmin(f"http://{bind_host}:{port}") if peer.has_capability("ledger") else None
            handle = HttpServerHandle(index, peer, node, host, port, proxy, ledger, knobs, namespace=namespace)
            self.http_servers_started.append(handle)
            started.append(handle)
            self.history.info("harness", "http_server_started", {
                "name": name, "peer": peer.name, "host": host, "bind_host": bind_host, "port": port,
                "proxy": proxy.listen, "knobs": knobs, "namespace": namespace.name if namespace else None})
        return started

    def run_http_client(self, *, peer: PeerManifest, servers: list[HttpServerHandle] | list[str],
                        plan: dict[str, Any], timeout_ms: int = 60000) -> AgentRun:
        """Run one http-client agent over ``plan`` against the servers' proxied URLs, to its exit."""
        urls = [s.url if isinstance(s, HttpServerHandle) else s for s in servers]
        self.history.invoke(f"http-client:{peer.name}", "run_plan", {"urls": urls, "plan": plan})
        run = run_http_agent(self.runtime, peer, urls=urls, plan=plan, workdir=self.workdir / "logs",
                             timeout_ms=timeout_ms, history=self.history)
        self.http_runs.append(run)
        self.history.ok(f"http-client:{peer.name}", "run_plan", {"requests": len(run.records), "exit_code": run.exit_code})
        return run

    # -- plumbing ------------------------------------------------------------------------
    def _record_proxy_event(self, event: dict[str, Any]) -> None:
        """Every toxic added/removed and proxy down/up goes into the history as it is applied;
        heals (toxic removed, proxy up) as ``healed``."""
        detail = {k: v for k, v in event.items() if k not in ("kind", "action", "t_ms", "t_start_ms")}
        action = event.get("action", "?")
        detail["applied_after_ms"] = round(event.get("t_ms", 0) - event.get("t_start_ms", 0), 1)
        if action in ("toxic_removed", "proxy_up", "reset"):
            self.history.healed(action, **detail)
        elif action not in ("proxy_created", "proxy_deleted"):
            self.history.fault(action, **detail)

    def _start(self, peer: PeerManifest, name: str, placeholders: dict[str, Any], knobs: dict[str, Any], *,
               start_timeout_ms: int | None = None, namespace: Namespace | None = None) -> Node:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if "scratch" not in placeholders:
            placeholders = {"scratch": str(self._new_scratch(name)), **placeholders}
        spec, readiness = render(peer, runtime=self.runtime.name, placeholders=placeholders, knobs=knobs,
                                 name=name, log_path=log_path)
        if namespace is not None:
            spec.netns = namespace.path
        # The manifest's readiness bound is the peer's own word on how long it takes; a case may
        # raise it (many peers started at once), never cut it.
        timeout_ms = max(start_timeout_ms or 0, peer.readiness_timeout_ms)
        node = self.runtime.start(spec, readiness, timeout_ms=timeout_ms)
        self._nodes.append(node)
        return node

    def _new_scratch(self, name: str) -> Path:
        """``{scratch}``: a folder of the peer's own (a server's home, data, own logs), removed at
        close; under the slot's scratch space, so the reaper removes it after a crash."""
        scratch = current_slot().tmp_dir / f"{name}-{next(_scratch_seq)}-{os.getpid()}"
        scratch.mkdir(parents=True, exist_ok=True)
        self._scratch.append(scratch)
        return scratch

    def _witness(self, peer: PeerManifest, placeholders: dict[str, Any]) -> LogWitness | None:
        section = peer.witness
        if section.log is None:
            return None
        path = Path(render_template(peer, section.log, "witness.log", placeholders))
        registered = re.compile(section.registered) if section.registered else None
        unregistered = re.compile(section.unregistered) if section.unregistered else None
        witness = LogWitness(path, registered, unregistered)
        self._witness_logs.append((placeholders.get("name", peer.name), path))
        return witness

    def log_paths(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted((self.workdir / "logs").glob("*.log"))}

    def log_tails(self, tail_lines: int = 40) -> dict[str, str]:
        tails = {}
        for node in self._nodes:
            try:
                tails[node.name] = node.logs(tail_lines)
            except OSError as exc:
                tails[node.name] = f"<log unavailable: {exc}>"
        return tails

    def ports(self) -> set[int]:
        """Every port this topology placed: servers' main/gRPC, proxies, client control ports."""
        ports: set[int] = set()
        for server in self.servers:
            ports |= {server.main_port, server.grpc_port, server.proxied_grpc_port}
        for client in self.clients:
            ports.add(client.control_port)
        for http_server in self.http_servers_started:
            ports |= {http_server.port, http_server.proxy_port}
        return ports

    def endpoints(self) -> set[tuple[str, int]]:
        """Every (address, port) this topology placed: a port alone is not ours (another run's
        slot, or this process's own tests, may use the same number on another address)."""
        found: set[tuple[str, int]] = set()
        for server in self.servers:
            found |= {(server.bind_host, server.main_port), (server.bind_host, server.grpc_port),
                      (server.host, server.proxied_grpc_port)}
        for client in self.clients:
            found.add(("127.0.0.1", client.control_port))
        for http_server in self.http_servers_started:
            found |= {(http_server.host, http_server.port), (http_server.host, http_server.proxy_port)}
        return found

    def socket_leaks(self, grace_ms: float = CLOSE_WAIT_GRACE_MS) -> list[str]:
        """CLOSE_WAIT sockets touching our endpoints (either end: a server that never closed after
        its client did, or a client stuck towards a dead server's proxy) that do not clear within
        ``grace_ms``. Names the owning pid where /proc tells."""
        ports = self.ports()
        ours = self.endpoints()

        def stuck() -> list:
            return [e for e in snapshot(ports) if e.state == "CLOSE_WAIT"
                    and ((e.local_ip, e.local_port) in ours or (e.remote_ip, e.remote_port) in ours)]

        try:
            eventually(stuck, timeout_ms=grace_ms, what="no CLOSE_WAIT on the topology's ports",
                       accept=lambda found: not found, interval_ms=100)
            return []
        except WaitTimeout as exc:
            found = exc.last or []
            pids = owners(found)
            self.history.observe("close_wait_leak", [{**vars(e), "pid": pids.get(e.inode)} for e in found])
            return [f"CLOSE_WAIT {e.local_ip}:{e.local_port} <- {e.remote_ip}:{e.remote_port} (pid {pids.get(e.inode, '?')}) "
                    f"still open {grace_ms:.0f} ms into teardown" for e in found]

    def processes(self) -> list[int]:
        return [pid for node in self._nodes for pid in node.processes()]

    def exposed_listeners(self) -> list[str]:
        """Listeners of this topology's peers outside loopback on the host (the loopback promise:
        contain such a peer with its manifest's [containment] or a namespace)."""
        found = exposed(listeners_of(self.processes()))
        if found:
            self.history.observe("exposed_listeners", [str(item) for item in found])
        return [str(item) for item in found]

    def close(self) -> list[str]:
        """Check for CLOSE_WAIT leaks, then stop clients (gracefully), servers, and delete
        proxies. Returns leaks: sockets left in CLOSE_WAIT, any process still alive after its
        stop, any proxy that would not go."""
        if self._closed:
            return []
        self._closed = True
        # Our own idle keep-alive sessions to admin/control ports must not count as leaks.
        for client in self.clients:
            client.control.close()
        for server in self.servers:
            server.admin.close()
        leaks: list[str] = self.socket_leaks() if self._nodes else []
        self.exposed = self.exposed_listeners()
        for client in self.clients:
            if client.node.alive():
                client.control.shutdown()
        for node in reversed(self._nodes):
            try:
                node.stop(timeout_ms=5000)
            except Exception as exc:  # noqa: BLE001 - teardown must go on; the leak check reports it
                leaks.append(f"{node.name}: stop failed: {exc!r}")
            if node.group_alive():
                leaks.append(f"{node.name} (pid {node.pid}) or a child of it still alive after stop")
            leaks.extend(f"{node.name}: descendant {left} outlived the peer's stop (it had left the process "
                         "group); ended by the harness" for left in node.leftovers())
        for client in self.clients:
            client.control.close()
        for server in self.servers:
            server.admin.close()
        for proxy in self._proxies:
            try:
                proxy.delete()
            except Exception as exc:  # noqa: BLE001
                leaks.append(f"proxy {proxy.name}: delete failed: {exc!r}")
        for namespace in self._namespaces:
            namespace.delete()
        for name, path in self._witness_logs:  # the server's own log stays with the case's
            if path.is_file():
                shutil.copyfile(path, self.workdir / "logs" / f"{name}-{path.name}")
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        return leaks

