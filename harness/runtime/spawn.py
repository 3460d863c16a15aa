"""Forking peers so that nothing outlives the harness: ``die_with_parent`` (the child's
preexec: join the node's cgroup, ``PR_SET_PDEATHSIG=SIGKILL``, enter its network namespace,
install the datagram filter), ``SPAWNER`` (every fork on one long-lived daemon thread, because
PDEATHSIG fires when the forking *thread* ends) and ``live_group_members`` (a process group's
live members, read from /proc: a group of zombies is gone). See ``harness.runtime.process``.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from harness.placement.netns import setns_in_child
from harness.runtime.containment import join_cgroup_in_child
from harness.runtime.seccomp import DatagramFilter

T = TypeVar("T")

_SPAWN_TIMEOUT_S = 30.0


# --- PR_SET_PDEATHSIG ---------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
# Resolved in the parent: the forked child should run as little Python as possible.
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_SIGKILL = int(signal.SIGKILL)


def die_with_parent(parent_pid: int, cgroup_procs: bytes | None = None,
                     datagrams: DatagramFilter | None = None, netns: bytes | None = None) -> Callable[[], None]:
    def preexec() -> None:
        if cgroup_procs is not None:  # before anything else: whatever it forks stays contained
            join_cgroup_in_child(cgroup_procs)
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the harness died between fork and prctl
            os._exit(1)
        if netns is not None:
            fd = os.open(netns, os.O_RDONLY)
            setns_in_child(fd)  # raises: the peer never runs in the host's namespace by mistake
            os.close(fd)
        if datagrams is not None:
            datagrams.install_in_child()  # raises: the peer never runs unfiltered

    return preexec


class Spawner:
    """Runs every fork on one daemon thread that lives as long as the interpreter (see module doc)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="connformance-spawner", daemon=True)
                self._thread.start()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((fn, done))
        return done.result(timeout=_SPAWN_TIMEOUT_S)

    def _loop(self) -> None:
        while True:
            fn, done = self._requests.get()
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                done.set_exception(exc)


SPAWNER = Spawner()


# --- process groups through /proc ---------------------------------------------------------


def live_group_members(pgid: int) -> dict[int, str]:
    """pid -> state letter for every non-zombie process whose process group is ``pgid``."""
    members: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses
        fields = stat[stat.rindex(b")") + 2 :].split()
        state, pgrp = fields[0].decode(), int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members[int(entry.name)] = state
    return members
