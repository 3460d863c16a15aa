"""Run slots: what keeps concurrent runs on one machine apart, and what lets a run clean up after
one that was killed.

A process that starts peers takes one *slot* for its lifetime: an exclusive ``flock`` on
``<state>/slot-<n>.lock``. The kernel drops the lock however the process ends (SIGKILL too), so
a slot whose lock can be taken has no living owner. A slot owns, for as long as it is held:

- a loopback block ``127.<100+n>.0.0/16``: Nacos servers on 127.X.0.11, .12, …, HTTP servers on
  127.X.2.11, …, Toxiproxy's API on 127.X.1.1. No other run binds or dials there, so a port
  picked free stays free until the peer binds it (two runs can no longer steal a restarting
  server's port from each other);
- a port range on 127.0.0.1 for the agents' control ports (the agent contract fixes that host);
- a network block ``198.18.<n>.0/24`` for peers placed in network namespaces;
- the name prefix ``cf<n>-`` of every proxy, namespace and cgroup it creates, and a state
  folder ``<state>/slot-<n>/`` for the records the reaper reads.

Taking a slot first reaps whatever its previous owner left behind (``harness.reaper``); the
pytest plugin and ``connformance up`` also reap every unowned slot at start.

Each pytest-xdist worker is its own process, so each worker has its own slot: workers never
share an address, a port or a name.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SetupError

__all__ = ["SLOT_COUNT", "Slot", "current_slot", "current_slot_index", "slot_has_owner", "state_root", "try_lock"]

SLOT_COUNT = 32
_LOOPBACK_SECOND_OCTET = 100  # 127.100.0.0/16 .. 127.131.0.0/16
_CONTROL_PORT_BASE = 20000
_CONTROL_PORTS_PER_SLOT = 380  # 32 slots end below 32768, where the kernel's ephemeral range starts


def state_root() -> Path:
    """Machine-wide (not per clone: two clones on one machine must see each other's slots).
    ``/run`` is a tmpfs, so a reboot starts clean. ``CONNFORMANCE_STATE_DIR`` overrides it."""
    env = os.environ.get("CONNFORMANCE_STATE_DIR")
    if env:
        root = Path(env)
    elif os.access("/run", os.W_OK):
        root = Path("/run/connformance")
    else:
        root = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".cache") / "connformance-state"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class Slot:
    index: int

    # -- addresses -----------------------------------------------------------------------
    @property
    def loopback_prefix(self) -> str:
        return f"127.{_LOOPBACK_SECOND_OCTET + self.index}"

    @property
    def loopback_block(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"{self.loopback_prefix}.0.0/16")

    def server_host(self, index: int) -> str:
        """The index-th Nacos server's address (see ``harness.ports.server_host``)."""
        if not 0 <= index < 200:
            raise ValueError(f"server index {index} out of range 0..199")
        return f"{self.loopback_prefix}.0.{11 + index}"

    def http_server_host(self, index: int) -> str:
        if not 0 <= index < 200:
            raise ValueError(f"http server index {index} out of range 0..199")
        return f"{self.loopback_prefix}.2.{11 + index}"

    @property
    def service_host(self) -> str:
        """Where the run's own services listen (Toxiproxy's API, live views)."""
        return f"{self.loopback_prefix}.1.1"

    @property
    def control_ports(self) -> range:
        start = _CONTROL_PORT_BASE + self.index * _CONTROL_PORTS_PER_SLOT
        return range(start, start + _CONTROL_PORTS_PER_SLOT)

    @property
    def namespace_block(self) -> ipaddress.IPv4Network:
        """198.18.<n>.0/24: the addresses of this slot's namespaced peers."""
        return ipaddress.ip_network(f"198.18.{self.index}.0/24")

    # -- names and records ---------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """The name prefix of everything this slot creates (proxies, namespaces, cgroups)."""
        return f"cf{self.index}-"

    @property
    def state_dir(self) -> Path:
        path = state_root() / f"slot-{self.index}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tmp_dir(self) -> Path:
        """Scratch space of this slot's peers; the reaper empties it."""
        path = self.state_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _lock_path(index: int) -> Path:
    return state_root() / f"slot-{index}.lock"


def try_lock(index: int) -> int | None:
    """An fd holding slot ``index``'s lock, or None when another process holds it."""
    fd = os.open(_lock_path(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def slot_has_owner(index: int) -> bool:
    """True while a living process holds slot ``index`` (ours included)."""
    if _held is not None and _held[0].index == index:
        return True
    fd = try_lock(index)
    if fd is None:
        return True
    os.close(fd)
    return False


_lock = threading.RLock()  # the reaper asks for the slot while it is being taken
_held: tuple[Slot, int] | None = None
_held_pid: int | None = None


def current_slot() -> Slot:
    """This process's slot, taken (and its leftovers reaped) on first use, held until exit."""
    global _held, _held_pid
    with _lock:
        if _held is not None and _held_pid == os.getpid():
            return _held[0]
        # A forked child (not exec'ed) must not believe it owns its parent's slot.
        _held = None
        env = os.environ.get("CONNFORMANCE_SLOT")
        candidates = [int(env)] if env else list(range(SLOT_COUNT))
        for index in candidates:
            fd = try_lock(index)
            if fd is None:
                continue
            slot = Slot(index)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held, _held_pid = (slot, fd), os.getpid()
            from harness.reaper import reap_slot  # the reaper needs Slot

            reap_slot(slot, announce=True)
            return slot
        busy = f"slot {env} (CONNFORMANCE_SLOT)" if env else f"all {SLOT_COUNT} slots"
        raise SetupError(
            f"cannot take a run slot: {busy} held by other connformance processes on this machine "
            f"(locks in {state_root()}); wait for them to finish, or stop the ones you no longer need"
        )


def current_slot_index() -> int | None:
    """This process's slot index if it has taken one (never takes one)."""
    with _lock:
        return _held[0].index if _held is not None and _held_pid == os.getpid() else None
