"""The docker runtime: every peer a container of its image, with host networking on loopback.

The same ``Node`` interface as the process runtime, mapped onto the engine:

| Node        | process runtime              | docker runtime                                     |
|-------------|------------------------------|----------------------------------------------------|
| start       | fork + exec in a new group   | create + start (``--network host --init``), then readiness |
| stop        | SIGTERM, SIGKILL after grace | ``docker stop -t``, then the container is removed  |
| kill        | SIGKILL the group            | ``docker kill`` (SIGKILL)                          |
| pause       | SIGSTOP the group            | ``docker pause`` (the freezer cgroup)              |
| resume      | SIGCONT                      | ``docker unpause``                                 |
| restart     | stop + start, same spec      | ``docker stop`` + ``docker start`` of the same container |
| logs        | the log file                 | stdout/stderr streamed into the same log file      |

Guarantees:

- **Nothing outlives its run.** Every container carries the labels ``connformance.run`` and
  ``connformance.owner`` (pid and start time of the harness process). ``close()`` (a fixture
  teardown, also ``atexit``) removes every container of the run; and a new runtime first reaps
  containers whose owner process is gone: what a crash (or SIGKILL) left behind.
- **Same paths.** A launch's ``mounts`` (the directories of the plan files a case writes) are
  bind-mounted at the same path, so an argv rendered for the host names the same files.
- **Only our containers.** Every engine call names a container this runtime created, or one
  labelled by a dead owner.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from harness.docker.engine import engine_client, find_engine
from harness.docker.images import resolve_image
from harness.errors import HarnessError, SetupError
from harness.runtime.base import LaunchSpec, Readiness
from harness.runtime.logfile import LogFileReader
from harness.runtime.node_book import NodeBook
from harness.runtime.readiness import launch_until_ready, wait_ready
from harness.wait import WaitTimeout, eventually

__all__ = ["DockerNode", "DockerRuntime", "owner_label", "reap_leftovers"]

LABEL_RUN = "connformance.run"
LABEL_OWNER = "connformance.owner"  # "<pid>:<start time in clock ticks>" of the harness process
STOP_TIMEOUT_MS = 5000
STATE_TIMEOUT_MS = 10_000  # a kill/pause/unpause shows in the container's state within this
PUMP_DRAIN_MS = 5000  # after exit, the log stream ends within this
_RUNNING = ("running", "paused", "restarting")
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time): with the pid, names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


def owner_label(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid)}"


def _owner_alive(label: str) -> bool:
    pid, _, ticks = label.partition(":")
    return pid.isdigit() and _start_ticks(int(pid)) == ticks


def reap_leftovers(client) -> list[str]:
    """Remove containers left by harness processes that no longer exist; their names."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if not _owner_alive(container.labels.get(LABEL_OWNER, "")):
            container.remove(force=True)
            removed.append(container.name)
    return removed


class DockerNode(LogFileReader):
    """One peer container. ``exit_code`` follows the process runtime: negative = killed by that signal."""

    MECHANISMS = {"kill": "docker kill (SIGKILL)", "pause": "docker pause (freezer cgroup)",
                  "resume": "docker unpause", "restart": "docker stop + docker start (same container)"}

    def __init__(self, spec: LaunchSpec, container, log_path: Path, readiness: Sequence[Readiness],
                 owner: DockerRuntime) -> None:
        self.name = spec.name
        self.spec = spec
        self.container = container
        self.log_path = log_path
        self.readiness = tuple(readiness)
        self.starts = 0
        self._owner = owner
        self._lock = threading.RLock()
        self._pump: threading.Thread | None = None
        self._log_start_offset = 0
        self._removed = False
        self._exit_code: int | None = None

    # -- state ----------------------------------------------------------------------------
    def _state(self) -> dict:
        if self._removed:
            return {"Status": "removed", "Pid": 0}
        from docker.errors import NotFound

        try:
            self.container.reload()
        except NotFound:
            return {"Status": "removed", "Pid": 0}
        return self.container.attrs.get("State", {})

    @property
    def pid(self) -> int | None:
        """The host pid of the container's init (docker-init) while it runs."""
        pid = self._state().get("Pid") or 0
        return pid or None

    @property
    def exit_code(self) -> int | None:
        state = self._state()
        if state.get("Status") in _RUNNING:
            return None
        if state.get("Status") == "removed":
            return self._exit_code
        return _as_process_code(state.get("ExitCode"))

    def alive(self) -> bool:
        return self._state().get("Status") in _RUNNING

    def group_alive(self) -> bool:
        return self.alive()

    cheap_process_list = False  # `docker top` per readiness poll would be too slow: readiness skips it

    def processes(self) -> list[int]:
        if not self.alive():
            return []
        try:
            top = self.container.top(ps_args="-o pid")
        except Exception:  # noqa: BLE001 - gone meanwhile
            return []
        return [int(row[0]) for row in top.get("Processes") or [] if row and str(row[0]).isdecimal()]

    def leftovers(self) -> list[str]:
        return []  # a container's processes end with it (--init reaps, removal ends the rest)

    # -- lifecycle --------------------------------------------------------------------------
    def _launch(self) -> None:
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            marker = f"=== connformance: start #{self.starts} of {self.name} ({self.container.name}): {self.spec.argv}\n"
            log.write(marker.encode())
            self._log_start_offset = log.tell()
        # Attach before start so no output is lost; the stream ends when the container stops.
        stream = self.container.attach(stdout=True, stderr=True, stream=True, logs=False)
        self._pump = threading.Thread(target=_pump, args=(stream, self.log_path), daemon=True,
                                      name=f"docker-log-{self.name}")
        self._pump.start()
        self.container.start()

    def _drain(self) -> None:
        if self._pump is not None:
            self._pump.join(PUMP_DRAIN_MS / 1000)

    def _wait_state(self, accept, what: str) -> None:
        try:
            eventually(lambda: self._state().get("Status"), timeout_ms=STATE_TIMEOUT_MS, what=f"{self.name} {what}",
                       interval_ms=20, accept=accept)
        except WaitTimeout as exc:
            raise SetupError(f"container {self.container.name}: {exc}") from None

    def stop(self, timeout_ms: int = STOP_TIMEOUT_MS) -> int | None:
        """``docker stop`` (SIGTERM, SIGKILL after ``timeout_ms``), then remove the container.
        Returns the exit code; idempotent."""
        with self._lock:
            if self._removed:
                return self._exit_code
            self._halt(timeout_ms)
            self._exit_code = _as_process_code(self._state().get("ExitCode"))
            self.container.remove(force=True)
            self._removed = True
            return self._exit_code

    def _halt(self, timeout_ms: int) -> None:
        state = self._state().get("Status")
        if state == "paused":
            self.container.unpause()  # a frozen process cannot act on SIGTERM
        if state in _RUNNING:
            self.container.stop(timeout=max(1, round(timeout_ms / 1000)))
            self._wait_state(lambda s: s not in _RUNNING, "to stop")
        self._drain()

    def kill(self) -> None:
        """``docker kill``: SIGKILL, no grace (a crash). The container stays for ``restart``."""
        with self._lock:
            if self._removed or not self.alive():
                return
            from docker.errors import APIError

            try:
                self.container.kill()
            except APIError:  # exited between the check and the kill
                pass
            self._wait_state(lambda s: s not in _RUNNING, "to die")
            self._drain()

    def pause(self) -> None:
        """``docker pause``: every process frozen; the kernel keeps its sockets."""
        self.container.pause()
        self._wait_state(lambda s: s == "paused", "to pause")

    def resume(self) -> None:
        self.container.unpause()
        self._wait_state(lambda s: s == "running", "to run again")

    def restart(self, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000) -> None:
        """Stop and start the same container (same argv, same ports), then wait for readiness."""
        with self._lock:
            if self._owner.closed or self._removed:
                raise HarnessError(f"cannot restart {self.name}: its runtime is closed or it was removed")
            self._halt(STOP_TIMEOUT_MS)
            if readiness:
                self.readiness = tuple(readiness)
            self._launch()
            try:
                wait_ready(self, self.readiness, timeout_ms)
            except BaseException:
                self.kill()
                raise

    def wait_exit(self, timeout_ms: int) -> int | None:
        eventually(lambda: not self.alive(), timeout_ms=timeout_ms, what=f"{self.name} to exit", interval_ms=20)
        self._drain()
        return self.exit_code

    def __repr__(self) -> str:
        return f"DockerNode({self.name!r}, container={self.container.name!r})"


def _pump(stream, log_path: Path) -> None:
    try:
        with open(log_path, "ab", buffering=0) as log:
            for chunk in stream:
                log.write(chunk)
    except Exception:  # noqa: BLE001 - the engine closed the stream (removed, engine gone)
        pass


def _as_process_code(code: int | None) -> int | None:
    """docker-init exits 128+N when its child died of signal N; the process runtime says -N."""
    if code is not None and 128 < code < 160:
        return -(code - 128)
    return code


class DockerRuntime(NodeBook[DockerNode]):
    """Starts peers as containers and removes them at ``close()``; reaps a crashed run's leftovers."""

    name = "docker"

    def __init__(self) -> None:
        self.engine = find_engine()
        self.client = engine_client(self.engine)
        self.run_id = uuid.uuid4().hex[:10]
        self.owner = owner_label()
        self.reaped = reap_leftovers(self.client)
        self._images: dict[str, str] = {}
        super().__init__()

    def _image(self, image: str | None, name: str) -> str:
        from docker.errors import ImageNotFound

        if not image:
            raise HarnessError(f"LaunchSpec {name!r} has no image; the manifest's [docker] table must name one")
        if image not in self._images:
            ref = resolve_image(image)
            try:
                self.client.images.get(ref)
            except ImageNotFound:
                raise SetupError(f"image {ref} (for {name}) is not in the engine; run `connformance setup --docker` "
                                 "to build the peer images (an image that changed gets a new content tag)") from None
            self._images[image] = ref
        return self._images[image]

    def start(self, spec: LaunchSpec, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000) -> DockerNode:
        if not spec.argv:
            raise HarnessError(f"LaunchSpec {spec.name!r} has an empty argv; the manifest must give a command")
        image = self._image(spec.image, spec.name)
        with self._lock:
            if self._closed:
                raise HarnessError(f"cannot start {spec.name}: this DockerRuntime is closed")
            previous = self._nodes.get(spec.name)
        if previous is not None:
            if previous.alive():
                raise HarnessError(f"a node named {spec.name!r} is still running; names are unique within a run")
            previous.stop()
        log_path = Path(spec.log_path) if spec.log_path else Path(f"/tmp/connformance-{self.run_id}-{spec.name}.log")
        container = self.client.containers.create(
            image, entrypoint=[spec.argv[0]], command=list(spec.argv[1:]), environment=dict(spec.env),
            working_dir=str(spec.cwd) if spec.cwd else None, network_mode="host", init=True,
            name=f"cf-{self.run_id}-{_NAME_OK.sub('_', spec.name)}",
            labels={**spec.labels, LABEL_RUN: self.run_id, LABEL_OWNER: self.owner},
            volumes={str(m): {"bind": str(m), "mode": "rw"} for m in spec.mounts},
            tmpfs={"/tmp": "rw,mode=1777"},  # a fresh /tmp per container (scratch images have none)
        )
        node = DockerNode(spec, container, log_path, readiness, owner=self)
        with self._lock:
            self._nodes[spec.name] = node  # registered before it runs: close() reaches it
        launch_until_ready(node, timeout_ms, discard=lambda: node.stop(timeout_ms=0), forget=lambda: self._forget(spec.name, node))
        return node

    def leaked(self) -> list[DockerNode]:
        return [node for node in self.nodes() if node.alive()]

    def close(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """Remove every container of this run (stopped first, ``timeout_ms`` grace each)."""
        nodes = self._begin_close()
        if nodes is None:
            return
        failures = []
        for node in nodes:
            try:
                node.stop(timeout_ms=timeout_ms)
            except Exception as exc:  # noqa: BLE001 - go on removing the others
                failures.append(f"{node.name}: {exc!r}")
        # Anything of this run the nodes did not cover (a create that raced an interrupt).
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={self.run_id}"}):
            container.remove(force=True)
        self.client.close()
        if failures:
            raise SetupError("DockerRuntime.close could not stop: " + "; ".join(failures))

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
