"""Network-namespace placement: a peer in a namespace of its own, with an address from its run
slot's ``198.18.<n>.0/24`` (the benchmarking range, RFC 2544, owned by the harness), reachable
from the host — by Toxiproxy and by the harness's admin calls — over a veth pair.

Why: some real servers bind the wildcard address (Nacos 2.x's gRPC ports and raft,
``NettyServerBuilder.forPort``); inside a namespace that has only its loopback and the veth to
the host, "the wildcard" means nothing beyond the harness. The same namespace is where
packet-level faults go (iptables inside it), which Toxiproxy, terminating TCP, cannot make.

Layout of the k-th namespace of slot n (k = 0..63): namespace ``cf<n>-ns<k>``; veth pair
``cf<n>-h<k>`` on the host with ``198.18.n.(4k+1)/30`` and ``cf<n>-p<k>`` inside with
``198.18.n.(4k+2)/30``; ``lo`` up inside. No forwarding, no NAT, no default route: the peer can
reach the host end of its veth and nothing else. A process joins the namespace between fork and
exec (``setns``), so its pid, process group, cgroup and PDEATHSIG are the runtime's as ever.

Everything is named with the slot's prefix, so the reaper removes what a killed run left.
Needs root (CAP_NET_ADMIN) and ``ip`` (iproute2); ``available()`` says why not otherwise.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field

from harness.errors import SetupError
from harness.slots import Slot, current_slot

__all__ = ["Namespace", "available", "delete_namespace", "live_namespaces", "new_namespace", "note_process",
           "owned_address", "setns_in_child"]

_NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_MAX_PER_SLOT = 64
_lock = threading.Lock()
_next_index: dict[int, int] = {}
_live: dict[str, Namespace] = {}
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and proc.returncode != 0:
        raise SetupError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


_available: str | None | bool = False  # False: not probed; None: available; str: why not


def available() -> str | None:
    """None when namespaces can be made here, else the reason (for UNIMPLEMENTED)."""
    global _available
    if _available is not False:
        return _available  # type: ignore[return-value]
    if shutil.which("ip") is None:
        _available = "no `ip` command (Debian package iproute2)"
    elif os.geteuid() != 0:
        _available = f"making network namespaces needs root (CAP_NET_ADMIN); running as uid {os.geteuid()}"
    else:
        probe = f"{current_slot().prefix}probe"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            _available = f"`ip netns add` failed here: {made.stderr.strip()}"
        else:
            _ip("netns", "delete", probe, check=False)
            _available = None
    return _available  # type: ignore[return-value]


@dataclass
class Namespace:
    name: str
    index: int
    host_if: str
    peer_if: str
    host_ip: str  # the host's end of the veth: where the peer's traffic comes from (Toxiproxy)
    peer_ip: str  # the peer's address: where it listens, where the harness dials it
    slot: Slot
    pids: list[int] = field(default_factory=list)  # processes started in it (for /proc/<pid>/net)

    @property
    def path(self) -> str:
        return f"{_NETNS_DIR}/{self.name}"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (``ip netns exec``), e.g. iptables."""
        proc = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=10, check=False)
        if check and proc.returncode != 0:
            raise SetupError(f"in {self.name}: `{' '.join(argv)}` failed ({proc.returncode}): "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def link(self, up: bool) -> None:
        """Bring the peer's end of the veth down (a pulled cable: silence, no FIN, no RST) or up."""
        self.run("ip", "link", "set", self.peer_if, "up" if up else "down")

    def delete(self) -> None:
        with _lock:
            _live.pop(self.name, None)
        delete_namespace(self.name)


def new_namespace() -> Namespace:
    """Make the next namespace of this process's slot. SetupError if it cannot be made."""
    reason = available()
    if reason is not None:
        raise SetupError(f"cannot place a peer in a network namespace: {reason}")
    slot = current_slot()
    with _lock:
        index = _next_index.get(slot.index, 0)
        for _ in range(_MAX_PER_SLOT):
            candidate = index % _MAX_PER_SLOT
            index += 1
            name = f"{slot.prefix}ns{candidate}"
            if name not in _live and not os.path.exists(f"{_NETNS_DIR}/{name}"):
                break
        else:
            raise SetupError(f"all {_MAX_PER_SLOT} namespaces of slot {slot.index} are in use")
        _next_index[slot.index] = index
        block = slot.namespace_block
        base = int(block.network_address) + 4 * candidate
        ns = Namespace(name=name, index=candidate, host_if=f"{slot.prefix}h{candidate}",
                       peer_if=f"{slot.prefix}p{candidate}", host_ip=str(ipaddress.IPv4Address(base + 1)),
                       peer_ip=str(ipaddress.IPv4Address(base + 2)), slot=slot)
        _live[name] = ns
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.peer_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        ns.run("ip", "addr", "add", f"{ns.peer_ip}/30", "dev", ns.peer_if)
        ns.run("ip", "link", "set", ns.peer_if, "up")
        ns.run("ip", "link", "set", "lo", "up")
    except BaseException:
        ns.delete()
        raise
    return ns


def delete_namespace(name: str) -> None:
    """Remove a namespace and its veth (the pair goes with either end). Processes in it are the
    runtime's to end; an empty namespace is freed at once."""
    _ip("netns", "delete", name, check=False)
    if name.startswith("cf") and "-ns" in name:
        prefix, _, index = name.rpartition("-ns")
        _ip("link", "delete", f"{prefix}-h{index}", check=False)


def owned_address(host: str) -> bool:
    """True for the peer or host address of a namespace this process made and still holds."""
    with _lock:
        return any(host in (ns.peer_ip, ns.host_ip) for ns in _live.values())


def note_process(path: str, pid: int) -> None:
    """Remember that ``pid`` runs in the namespace at ``path`` (its /proc/<pid>/net is that
    namespace's view: the socket observer reads it)."""
    with _lock:
        for ns in _live.values():
            if ns.path == path:
                ns.pids.append(pid)


def namespace_tcp_tables() -> list[str]:
    """``/proc/<pid>/net/tcp{,6}`` of one live process in each namespace this process holds."""
    tables = []
    for ns in live_namespaces():
        pid = next((p for p in reversed(ns.pids) if os.path.exists(f"/proc/{p}/net/tcp")), None)
        if pid is not None:
            tables += [f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"]
    return tables


def live_namespaces() -> list[Namespace]:
    with _lock:
        return list(_live.values())


def setns_in_child(fd: int) -> None:
    """preexec part: join the namespace whose ``/run/netns`` file is open as ``fd``."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")
