"""Who listens where: every TCP listener and bound UDP socket of a set of processes, read from
each process's own network namespace (``/proc/<pid>/net/*``) and file descriptors, so a peer
in a namespace the harness made is seen there and a peer on the host is seen on the host.

The loopback promise (nothing the harness starts listens beyond 127.0.0.0/8 on the host) is
``exposed(listeners_of(pids))`` == []: a listener counts as exposed when it sits in the host's
network namespace on an address that is not loopback. A listener inside a harness-made
namespace is contained by it (that namespace has no route to anything but the harness).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from harness.netaddr import is_loopback
from harness.observe.sockets import parse_proc_net_tcp

__all__ = ["Listener", "exposed", "listeners_of", "netns_id"]

_TABLES = (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6"))


@dataclass(frozen=True)
class Listener:
    pid: int
    proto: str  # tcp | udp
    ip: str
    port: int
    netns: str  # "net:[4026531840]"
    cmdline: str

    def __str__(self) -> str:
        return f"{self.proto} {self.ip}:{self.port} (pid {self.pid} {self.cmdline[:80]}, {self.netns})"


def netns_id(pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def listeners_of(pids: Iterable[int]) -> list[Listener]:
    """Listening TCP sockets and bound, unconnected UDP sockets held by ``pids``."""
    by_ns: dict[str, list[int]] = defaultdict(list)
    for pid in set(pids):
        ns = netns_id(pid)
        if ns is not None:
            by_ns[ns].append(pid)
    found: list[Listener] = []
    for ns, members in by_ns.items():
        owners: dict[int, int] = {}
        for pid in members:
            for inode in _socket_inodes(pid):
                owners[inode] = pid
        tables: dict[str, str] = {}
        for proto, table in _TABLES:
            for pid in members:  # any member's view of its namespace will do
                try:
                    with open(f"/proc/{pid}/net/{table}") as f:
                        tables[table] = f.read()
                    break
                except OSError:
                    continue
            for entry in parse_proc_net_tcp(tables.get(table, "")):
                pid = owners.get(entry.inode)
                if pid is None:
                    continue
                if proto == "tcp" and entry.state != "LISTEN":
                    continue
                if proto == "udp" and (entry.remote_port != 0 or entry.local_port == 0):
                    continue  # a connected UDP socket hears only its peer
                found.append(Listener(pid, proto, entry.local_ip, entry.local_port, ns, _cmdline(pid)))
    return sorted(found, key=lambda item: (item.pid, item.proto, item.port))


def exposed(listeners: Iterable[Listener], host_netns: str | None = None) -> list[Listener]:
    """Listeners in the host's namespace (this process's, unless given) not on loopback."""
    host = host_netns or netns_id()
    return [item for item in listeners if item.netns == host and not is_loopback(item.ip)]
