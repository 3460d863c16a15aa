"""The process runtime: every peer a local process group on loopback (the embedded default).

Three guarantees, and how they hold:

- **Nothing outlives the harness.** Each node runs in its own session/process group
  (``start_new_session``) with ``PR_SET_PDEATHSIG=SIGKILL``, and the runtime's ``close()`` runs
  from ``atexit``. PDEATHSIG fires when the *thread* that forked the child ends, not the process,
  so every fork happens on one long-lived daemon thread (``Spawner``): a node started from a
  short-lived worker thread would otherwise be killed when that thread finished. PDEATHSIG
  reaches only the direct child; grandchildren are covered by ``close()`` (group signals).
- **No descendant escapes.** Each launch also runs in its own cgroup (``containment``): a
  descendant that left the process group (``setsid``, a double fork) is still found. What is
  left of a node's cgroup once the node has stopped is recorded (``leftovers()``: the leak check
  reports it) and killed. A harness that dies before teardown leaves the cgroup to the reaper.
- **Only our own processes are signalled.** Signals go to the group whose id is the leader's
  pid, and the leader is *not reaped* (``waitid(WNOWAIT)`` peeks at its status) until its group
  has no live member: a zombie leader keeps the pid, and so the group id, from being reused.
  After the reap the node never signals again.
- **"Gone" means no live member.** Orphaned grandchildren are reparented to PID 1, which may not
  reap them (it does not in some sandboxes), so ``killpg(pgid, 0)`` can succeed forever on a
  group of zombies. Liveness is read from ``/proc/<pid>/stat`` (state and pgrp) instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import HarnessError, SetupError
from harness.placement.netns import note_process
from harness.runtime.base import LaunchSpec, Readiness
from harness.runtime.containment import (
    NODE_ENV,
    OWNER_ENV,
    Cgroup,
    node_cgroup,
    owner_marker,
    process_cmdline,
    processes_with_env,
)
from harness.runtime.logfile import LogFileReader
from harness.runtime.node_book import NodeBook
from harness.runtime.readiness import launch_until_ready, wait_ready
from harness.runtime.seccomp import datagram_filter
from harness.runtime.spawn import SPAWNER, die_with_parent, live_group_members
from harness.slots import current_slot
from harness.wait import WaitTimeout, eventually, now_ms

__all__ = ["ProcessRuntime", "ProcessNode"]


STOP_TIMEOUT_MS = 5000
KILL_TIMEOUT_MS = 5000  # SIGKILL is not ignorable; only an uninterruptible (D-state) process takes long
SIGNAL_SETTLE_MS = 2000  # SIGSTOP/SIGCONT delivery is asynchronous; wait until every member shows it
_GROUP_POLL_MS = 10.0


def _marked_with(marker: str) -> list[int]:
    """Live processes whose environment says they descend from the node ``marker`` names."""
    return processes_with_env(f"{NODE_ENV}={marker}")


# --- nodes --------------------------------------------------------------------------------


class ProcessNode(LogFileReader):
    """One peer process group. Created by ``ProcessRuntime.start``; also a context manager (stop on exit).

    ``exit_code`` follows ``subprocess``: negative means killed by that signal.
    """

    MECHANISMS = {"kill": "SIGKILL to the process group", "pause": "SIGSTOP to the process group",
                  "resume": "SIGCONT to the process group", "restart": "SIGTERM, then the same command again"}

    def __init__(
        self, spec: LaunchSpec, log_path: Path, readiness: Sequence[Readiness], owner: ProcessRuntime
    ):
        self.name = spec.name
        self.spec = spec
        self.log_path = log_path
        self.readiness: tuple[Readiness, ...] = tuple(readiness)
        self.starts = 0
        self._owner = owner
        self._popen: subprocess.Popen | None = None
        self._reaped = False  # once True, never signal this group again
        self._log_start_offset = 0
        self._lock = threading.RLock()
        self._cgroup: Cgroup | None = None
        self._marker = f"{spec.name}#{id(self)}"  # per node: finds its descendants without a cgroup
        self._leftovers: list[str] = []
        self._tmp: Path | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The leader's pid (also the process-group id) of the latest start; kept after exit."""
        return self._popen.pid if self._popen else None

    @property
    def pgid(self) -> int | None:
        return self.pid

    @property
    def exit_code(self) -> int | None:
        """The leader's exit code, or None while it runs (or if it never started)."""
        exited, code = self._leader_status()
        return code if exited else None

    def alive(self) -> bool:
        """True while the leader process runs (a paused one counts as alive)."""
        return self._popen is not None and not self._leader_status()[0]

    def group_alive(self) -> bool:
        """True while any process of the node (its group, or a descendant that left the group)
        is alive, zombies aside."""
        return bool(self.live_members()) or bool(self._contained())

    def processes(self) -> list[int]:
        return sorted(set(self.live_members()) | set(self._contained()))

    def leftovers(self) -> list[str]:
        """Descendants that outlived their node's stop (found in its cgroup after the group had
        ended), as ``"pid cmdline"``; they were killed. A leak of the peer's own making."""
        return list(self._leftovers)

    def _contained(self) -> list[int]:
        """Every live process of this node's launch, however detached."""
        if self._cgroup is not None:
            return self._cgroup.members()
        return _marked_with(self._marker)

    def live_members(self) -> dict[int, str]:
        """pid -> /proc state letter for each live process in the node's group."""
        if self._popen is None or self._reaped:
            return {}
        return live_group_members(self._popen.pid)

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self, timeout_ms: int = STOP_TIMEOUT_MS) -> int | None:
        """SIGTERM the group (and SIGCONT, so a paused group can act on it); SIGKILL whatever
        is left after ``timeout_ms``; reap. Returns the leader's exit code."""
        with self._lock:
            self._terminate()
            return self._finish_stop(timeout_ms)

    def kill(self) -> None:
        """SIGKILL the whole group with no grace (a crash), then reap."""
        with self._lock:
            if self._popen is None or self._reaped:
                return
            self._kill_group()
            self._reap()
            self._kill_contained()
            self._remove_scratch()

    def pause(self) -> None:
        """SIGSTOP the group; returns once every member is stopped. Sockets stay open, nothing answers."""
        self._signal_and_settle(signal.SIGSTOP, lambda state: state in ("T", "t"), "stopped (T)")

    def resume(self) -> None:
        """SIGCONT the group; returns once no member is stopped."""
        self._signal_and_settle(signal.SIGCONT, lambda state: state not in ("T", "t"), "running again")

    def restart(self, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000) -> None:
        """Stop, start again with the same spec (same ports, same log, appended), wait for
        readiness: ``readiness`` if given, else what the first start used."""
        with self._lock:
            if self._owner.closed:
                raise HarnessError(f"cannot restart {self.name}: its runtime is closed")
            self.stop()
            if readiness:
                self.readiness = tuple(readiness)
            self._launch()
            try:
                wait_ready(self, self.readiness, timeout_ms)
            except BaseException:
                self.kill()
                raise

    def wait_exit(self, timeout_ms: int) -> int | None:
        """Wait until the leader exits by itself; return its exit code. Raises ``WaitTimeout``."""
        what = f"{self.name} to exit"
        eventually(lambda: not self.alive(), timeout_ms=timeout_ms, what=what, interval_ms=_GROUP_POLL_MS)
        return self.exit_code

    # -- internals --------------------------------------------------------------------------

    def _launch(self) -> None:
        spec = self.spec
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            command_line = shlex.join(spec.argv).replace("\n", "\\n")  # the marker stays one line
            marker = f"=== connformance: start #{self.starts} of {self.name}: {command_line}\n"
            log.write(marker.encode())
            log.flush()
            self._log_start_offset = log.tell()
            # Scratch files go to a folder the runtime removes at stop and the reaper after a crash.
            self._tmp = current_slot().tmp_dir / f"{self.name}-{os.getpid()}-{self.starts}"
            self._tmp.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "TMPDIR": str(self._tmp), **spec.env, OWNER_ENV: owner_marker(),
                   NODE_ENV: self._marker}
            self._cgroup = node_cgroup(self.name)
            procs = self._cgroup.join_preexec() if self._cgroup is not None else None
            datagrams = None
            if spec.deny_ip_datagram_sockets:
                datagrams = datagram_filter()
                if datagrams is None:
                    raise SetupError(f"{self.name}: its manifest asks for no IP datagram sockets "
                                     f"([containment]), but this machine's architecture has no filter for it")

            def popen() -> subprocess.Popen:
                return subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,  # own session and process group: signals reach descendants
                    preexec_fn=die_with_parent(os.getpid(), procs, datagrams,
                                                os.fsencode(spec.netns) if spec.netns else None),
                )

            try:
                self._popen = SPAWNER.run(popen)
                if spec.netns:
                    note_process(spec.netns, self._popen.pid)
            except (OSError, subprocess.SubprocessError) as exc:
                raise SetupError(
                    f"cannot start peer {self.name}: {exc}\n"
                    f"  argv: {spec.argv}\n  cwd:  {spec.cwd or os.getcwd()}\n"
                    "  what to do: install the program (`connformance setup`) or fix the manifest's command"
                ) from exc
        self._reaped = False

    def _terminate(self) -> None:
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued

    def _finish_stop(self, timeout_ms: float) -> int | None:
        if self._popen is None:
            return None
        if not self._reaped:
            if not self._wait_group_gone(timeout_ms):
                self._kill_group()
            self._reap()
        self._end_leftovers()
        return self._popen.returncode

    def _end_leftovers(self) -> None:
        """The group has ended: whatever of the launch still lives escaped it. Record, kill."""
        left = self._contained()
        if left:
            self._leftovers.extend(f"{pid} {process_cmdline(pid)}" for pid in left)
            self._kill_contained()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self._cgroup is not None:
            self._cgroup.remove()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _kill_contained(self) -> None:
        if self._cgroup is not None:
            self._cgroup.kill()
            if not self._cgroup.wait_empty(KILL_TIMEOUT_MS):
                raise SetupError(f"{self.name}: processes {self._cgroup.members()} of {self._cgroup.path} survived "
                                 f"cgroup.kill for {KILL_TIMEOUT_MS} ms")
            return
        for pid in _marked_with(self._marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _leader_status(self) -> tuple[bool, int | None]:
        """(exited, exit code) of the leader, without reaping it."""
        popen = self._popen
        if popen is None:
            return True, None
        if self._reaped:
            return True, popen.returncode
        try:
            info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Reaped behind our back (a waitpid(-1) elsewhere): the group id is no longer
            # pinned, so stop signalling it.
            self._reaped = True
            return True, popen.returncode
        if info is None:
            return False, None
        return True, info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _signal_group(self, sig: int) -> None:
        if self._popen is None or self._reaped:
            return  # never signal a group id we no longer pin
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_group_gone(self, timeout_ms: float) -> bool:
        try:
            eventually(
                lambda: not self.live_members(),
                timeout_ms=timeout_ms,
                what=f"process group of {self.name} to end",
                interval_ms=_GROUP_POLL_MS,
            )
        except WaitTimeout:
            return False
        return True

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self._cgroup is not None and not self._reaped:
            self._cgroup.kill()  # a crash takes the node's detached descendants with it
        if not self._wait_group_gone(KILL_TIMEOUT_MS):
            raise SetupError(
                f"{self.name}: processes {self.live_members()} of group {self.pgid} survived SIGKILL for "
                f"{KILL_TIMEOUT_MS} ms (uninterruptible sleep?); check them with `ps -o pid,stat,wchan -g {self.pgid}`"
            )

    def _reap(self) -> None:
        assert self._popen is not None
        if not self._reaped:
            # The group has no live member, so the leader is a zombie: this returns at once.
            self._popen.wait(timeout=KILL_TIMEOUT_MS / 1000.0)
            self._reaped = True

    def _signal_and_settle(self, sig: int, settled: Callable[[str], bool], what: str) -> None:
        with self._lock:
            if not self.group_alive():
                raise HarnessError(
                    f"cannot send {signal.Signals(sig).name} to {self.name}: it is not running"
                )
            self._signal_group(sig)
            try:
                eventually(
                    lambda: all(settled(state) for state in self.live_members().values()),
                    timeout_ms=SIGNAL_SETTLE_MS,
                    what=f"every process of {self.name} to be {what}",
                    interval_ms=_GROUP_POLL_MS,
                )
            except WaitTimeout as exc:
                raise SetupError(f"{exc}; members now: {self.live_members()}") from None

    def __enter__(self) -> ProcessNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = (
            "not started"
            if self._popen is None
            else ("alive" if self.alive() else f"exited {self.exit_code}")
        )
        return f"ProcessNode({self.name!r}, pid={self.pid}, {state})"


# --- the runtime --------------------------------------------------------------------------


class ProcessRuntime(NodeBook[ProcessNode]):
    """Starts peers as local process groups and keeps a registry of them for teardown.

    ``close()`` is idempotent and also runs at interpreter exit. Logs without a
    ``spec.log_path`` go to a private temp directory that ``close()`` removes.
    """

    name = "process"

    def __init__(self) -> None:
        super().__init__()
        self._temp_log_dir: Path | None = None

    def start(
        self, spec: LaunchSpec, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000
    ) -> ProcessNode:
        """Start ``spec`` and wait for every readiness strategy. On failure the group is killed
        and ``SetupError`` carries the log tail."""
        if not spec.argv:
            raise HarnessError(
                f"LaunchSpec {spec.name!r} has an empty argv; the manifest must give a command"
            )
        with self._lock:
            if self._closed:
                raise HarnessError(f"cannot start {spec.name}: this ProcessRuntime is closed")
            previous = self._nodes.get(spec.name)
            log_path = Path(spec.log_path) if spec.log_path else self._temp_log_path(spec.name)
            node = ProcessNode(spec, log_path, readiness, owner=self)
            # Registered before it runs, so close() reaches it even if start is interrupted.
            self._nodes[spec.name] = node
        if previous is not None:
            # Stopped here whatever it is: a leader that exited on its own is reaped; one still
            # running belongs to a case whose teardown was cut short (that case reported it).
            previous.stop()
        launch_until_ready(node, timeout_ms, discard=node.kill, forget=lambda: self._forget(spec.name, node))
        return node

    def leaked(self) -> list[ProcessNode]:
        """Nodes with a live process left in their group (for the leak check after a case)."""
        return [node for node in self.nodes() if node.group_alive()]

    def close(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """Stop every node: SIGTERM all groups at once, one shared grace period, SIGKILL the rest."""
        nodes = self._begin_close()
        if nodes is None:
            return
        for node in nodes:
            with node._lock:
                node._terminate()
        deadline_ms = now_ms() + timeout_ms
        failures: list[str] = []
        for node in nodes:
            try:
                with node._lock:
                    node._finish_stop(max(0.0, deadline_ms - now_ms()))
            except SetupError as exc:
                failures.append(str(exc))
        if self._temp_log_dir is not None:
            shutil.rmtree(self._temp_log_dir, ignore_errors=True)
        if failures:
            raise SetupError("ProcessRuntime.close left processes behind:\n" + "\n".join(failures))

    def _temp_log_path(self, node_name: str) -> Path:
        if self._temp_log_dir is None:
            self._temp_log_dir = Path(tempfile.mkdtemp(prefix="connformance-logs-"))
        return self._temp_log_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", node_name) + ".log")

    def __enter__(self) -> ProcessRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- log reading --------------------------------------------------------------------------
