"""Containment that a peer cannot escape: a cgroup (v2) per node, under a cgroup per run slot.

Why a cgroup and not the process group: a process leaves its group with ``setsid`` (a daemon,
a double fork, nginx without ``daemon off``), but it can never leave its cgroup without root's
help. So every descendant of a node, however it detaches, is found (``members()``), ended
(``kill()`` writes ``cgroup.kill``: one atomic SIGKILL to the whole subtree) and counted by the
leak check. The tree is ``<cgroup2 mount>/connformance/cf<slot>/<seq>-<node>``; a run killed with
SIGKILL leaves its slot's subtree behind, and the next owner of the slot kills and removes it
(``harness.reaper``).

Where cgroup v2 cannot be written (not root, no cgroup2 mount), containment falls back to an
environment marker every spawned process inherits (``CONNFORMANCE_OWNER=<slot>:<pid>``) and a
scan of /proc for it: weaker (a process may clear its environment), and said so once.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from pathlib import Path

from harness.slots import Slot, current_slot
from harness.wait import WaitTimeout, eventually

__all__ = ["NODE_ENV", "OWNER_ENV", "Cgroup", "cgroup_root", "join_cgroup_in_child", "marked_processes",
           "node_cgroup", "owner_marker", "process_cmdline", "processes_with_env", "slot_cgroup"]

OWNER_ENV = "CONNFORMANCE_OWNER"
NODE_ENV = "CONNFORMANCE_NODE"
_TREE = "connformance"
_seq = itertools.count(1)
_root_lock = threading.Lock()
_root: Path | None | bool = False  # False: not probed yet
_warned = False


def _cgroup2_mounts() -> list[Path]:
    mounts = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    mounts.append(Path(parts[1]))
    except OSError:
        return []
    return mounts


def cgroup_root() -> Path | None:
    """``<cgroup2 mount>/connformance`` when it can be created and written, else None."""
    global _root
    with _root_lock:
        if _root is not False:
            return _root  # type: ignore[return-value]
        _root = None
        if os.environ.get("CONNFORMANCE_NO_CGROUP") != "1":
            for mount in _cgroup2_mounts():
                tree = mount / _TREE
                try:
                    tree.mkdir(exist_ok=True)
                    if os.access(tree / "cgroup.procs", os.W_OK):
                        _root = tree
                        break
                except OSError:
                    continue
        return _root


class Cgroup:
    """One cgroup directory. Safe to use on a path that no longer exists (reads give nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> Cgroup:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.path.is_dir()

    def members(self) -> list[int]:
        """Every live (non-zombie) process in this cgroup and below."""
        pids: list[int] = []
        if not self.path.is_dir():
            return pids
        for directory, _dirs, _files in os.walk(self.path):
            try:
                text = Path(directory, "cgroup.procs").read_text()
            except OSError:
                continue
            pids.extend(int(p) for p in text.split() if p.strip().isdecimal() and _alive(int(p)))
        return pids

    def kill(self) -> None:
        """SIGKILL every process of the subtree at once (``cgroup.kill``, Linux ≥ 5.14), or one
        by one where the file is missing."""
        kill_file = self.path / "cgroup.kill"
        try:
            kill_file.write_text("1")
            return
        except OSError:
            pass
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def signal_all(self, sig: int) -> None:
        for pid in self.members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait_empty(self, timeout_ms: float) -> bool:
        try:
            eventually(lambda: not self.members(), timeout_ms=timeout_ms, what=f"{self.path} empty", interval_ms=10)
        except WaitTimeout:
            return False
        return True

    def remove(self) -> None:
        """rmdir the subtree, deepest first (only empty cgroups can go)."""
        if not self.path.is_dir():
            return
        for directory, _dirs, _files in sorted(os.walk(self.path), key=lambda w: -len(w[0])):
            try:
                os.rmdir(directory)
            except OSError:
                pass

    def join_preexec(self) -> bytes:
        """The cgroup.procs path as bytes, for a child to join itself between fork and exec."""
        return os.fsencode(self.path / "cgroup.procs")

    def __repr__(self) -> str:
        return f"Cgroup({str(self.path)!r})"


def slot_cgroup(slot: Slot | None = None) -> Cgroup | None:
    root = cgroup_root()
    if root is None:
        return None
    slot = slot or current_slot()
    return Cgroup(root / slot.prefix.rstrip("-"))


def node_cgroup(name: str) -> Cgroup | None:
    """A new cgroup for one node of this process's slot, or None without cgroup v2 (warned once)."""
    global _warned
    parent = slot_cgroup()
    if parent is None:
        if not _warned:
            _warned = True
            print("connformance: cgroup v2 is not writable here; detached descendants are tracked by an "
                  f"environment marker ({OWNER_ENV}) instead", file=sys.stderr)
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Cgroup(parent.path / f"{next(_seq)}-{safe}").create()


def join_cgroup_in_child(procs_path: bytes) -> None:
    """preexec part: move the forked child into its cgroup before it can fork anything."""
    fd = os.open(procs_path, os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def owner_marker(slot: Slot | None = None) -> str:
    slot = slot or current_slot()
    return f"{slot.index}:{os.getpid()}"


def processes_with_env(item: str, *, prefix: bool = False) -> list[int]:
    """Live processes (not this one) whose environment holds ``item`` (``VAR=value``), or an
    entry starting with it when ``prefix``."""
    needle = item.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(needle) if prefix else e == needle for e in env) and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def marked_processes(slot_index: int, *, exclude_owner: int | None = None) -> list[int]:
    """Live processes carrying this slot's owner marker (the fallback without cgroups);
    ``exclude_owner`` keeps those of a living owner (this process) out."""
    found = processes_with_env(f"{OWNER_ENV}={slot_index}:", prefix=True)
    if exclude_owner is None:
        return found
    mine = set(processes_with_env(f"{OWNER_ENV}={slot_index}:{exclude_owner}"))
    return [pid for pid in found if pid not in mine]


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rindex(b")") + 2:].split()[0]
    return state not in (b"Z", b"X")
