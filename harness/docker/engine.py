"""The Docker engine the docker runtime talks to: a reachable one, or one the project starts.

Discovery order (``find_engine``):

1. ``DOCKER_HOST`` when set: the user's choice, used as is (an error if it does not answer).
2. The project's own engine, when ``connformance docker up`` (or ``setup --docker``) started it:
   its socket is ``<cache>/docker/docker.sock``.
3. The default socket ``/var/run/docker.sock`` when something answers there.

``start_own_engine`` installs Debian's ``docker.io`` when ``dockerd`` is missing and starts
``dockerd`` in a session of its own with no bridge network and no iptables rules
(``--bridge=none --iptables=false``): every container runs with host networking on loopback
addresses, so the engine creates no network and touches no address outside 127.0.0.0/8. Its
data (images, layers) live in ``<cache>/docker/data``; its pid in ``<cache>/docker/dockerd.pid``.
``stop_own_engine`` signals that pid only after checking it is still our ``dockerd``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SetupError
from harness.paths import cache_dir
from harness.wait import WaitTimeout, eventually

__all__ = [
    "DEFAULT_SOCKET",
    "Engine",
    "engine_client",
    "find_engine",
    "own_engine_paths",
    "own_engine_running",
    "start_own_engine",
    "stop_own_engine",
]

DEFAULT_SOCKET = Path("/var/run/docker.sock")
ENGINE_START_TIMEOUT_MS = 60_000  # first start initialises the data root; ~1 s when warm
ENGINE_STOP_TIMEOUT_MS = 20_000  # dockerd stops its containers first
PING_TIMEOUT_S = 5
DOCKERD_FLAGS = (
    "--bridge=none",  # no docker0, no private addresses: containers use host networking
    "--iptables=false",
    "--ip6tables=false",
    "--ip-masq=false",
    "--userland-proxy=false",
)
APT_PACKAGES = ("docker.io",)  # brings dockerd, containerd, runc and docker-init (tini)


@dataclass(frozen=True)
class Engine:
    """A reachable engine: its ``base_url`` (``unix:///...``) and who runs it."""

    base_url: str
    origin: str  # "DOCKER_HOST", "own" or "default socket"
    version: str


@dataclass(frozen=True)
class OwnEnginePaths:
    root: Path  # <cache>/docker
    socket: Path
    pidfile: Path
    data_root: Path
    exec_root: Path  # short, under /run: containerd's socket path must stay under 108 bytes
    log: Path


def own_engine_paths() -> OwnEnginePaths:
    root = cache_dir() / "docker"
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return OwnEnginePaths(root=root, socket=root / "docker.sock", pidfile=root / "dockerd.pid",
                          data_root=root / "data", exec_root=Path("/run") / f"connformance-docker-{tag}",
                          log=root / "dockerd.log")


def engine_client(engine: Engine, timeout_s: int = 120):
    """A ``docker.DockerClient`` for ``engine`` (the caller closes it)."""
    import docker  # imported here: the process runtime never needs the SDK

    return docker.DockerClient(base_url=engine.base_url, timeout=timeout_s)


def _ping(base_url: str) -> str | None:
    """The engine's version when it answers at ``base_url``, else None."""
    from docker.errors import DockerException

    import docker

    try:
        client = docker.DockerClient(base_url=base_url, timeout=PING_TIMEOUT_S)
    except DockerException:
        return None
    try:
        return str(client.version().get("Version", "?"))
    except (DockerException, OSError, ValueError):
        return None
    finally:
        client.close()


def find_engine(*, required: bool = True) -> Engine | None:
    """The engine to use (see the module doc). ``required``: raise SetupError when none answers."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host:
        version = _ping(env_host)
        if version is None:
            if required:
                raise SetupError(f"DOCKER_HOST={env_host} does not answer a Docker ping; start that engine, "
                                 "or unset DOCKER_HOST to use the project's own (`connformance docker up`)")
            return None
        return Engine(env_host, "DOCKER_HOST", version)
    own = own_engine_paths()
    for origin, socket in (("own", own.socket), ("default socket", DEFAULT_SOCKET)):
        if socket.exists():
            version = _ping(f"unix://{socket}")
            if version is not None:
                return Engine(f"unix://{socket}", origin, version)
    if required:
        raise SetupError("no Docker engine answers (DOCKER_HOST unset, nothing at "
                         f"{own.socket} or {DEFAULT_SOCKET}); run `connformance setup --docker`, which "
                         "installs Debian's docker.io if needed and starts an engine of the project's own")
    return None


def _our_dockerd_pid() -> int | None:
    """The pid in our pidfile, if that process is still a dockerd using our data root."""
    paths = own_engine_paths()
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not cmdline or not cmdline[0].endswith(b"dockerd"):
        return None
    if f"--data-root={paths.data_root}".encode() not in cmdline:
        return None
    return pid


def own_engine_running() -> bool:
    return _our_dockerd_pid() is not None and _ping(f"unix://{own_engine_paths().socket}") is not None


def _install_docker(progress) -> None:
    from harness.agents.buildkit import apt_install, is_root

    if not is_root():
        raise SetupError("dockerd is not installed and installing Debian's docker.io needs root; "
                         "install docker.io (or point DOCKER_HOST at an engine) and rerun")
    apt_install(APT_PACKAGES, progress, "docker-engine")


def start_own_engine(progress=print) -> Engine:
    """Start the project's own ``dockerd`` (installing docker.io first when missing); idempotent."""
    paths = own_engine_paths()
    if own_engine_running():
        return Engine(f"unix://{paths.socket}", "own", _ping(f"unix://{paths.socket}") or "?")
    if shutil.which("dockerd") is None:
        _install_docker(progress)
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise SetupError("docker.io is installed but `dockerd` is not on PATH; check the package")
    for path in (paths.root, paths.data_root):
        path.mkdir(parents=True, exist_ok=True)
    paths.socket.unlink(missing_ok=True)  # a stale socket of a crashed engine
    argv = [dockerd, *DOCKERD_FLAGS, f"--data-root={paths.data_root}", f"--exec-root={paths.exec_root}",
            f"--host=unix://{paths.socket}", f"--pidfile={paths.pidfile}"]
    progress(f"[docker] starting {' '.join(argv)} (log {paths.log})")
    with open(paths.log, "ab") as log:
        # Its own session: the engine outlives the command that started it until `docker down`.
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    base_url = f"unix://{paths.socket}"

    def answer() -> str | int | None:  # the version, or the exit code of a dockerd that gave up
        code = proc.poll()
        return _ping(base_url) if code is None else code

    try:
        version = eventually(answer, timeout_ms=ENGINE_START_TIMEOUT_MS, what="the project's dockerd to answer",
                             interval_ms=200, accept=lambda v: v is not None).value
    except WaitTimeout:
        version = None
    if not isinstance(version, str):
        code = proc.poll()
        if code is None:
            proc.kill()
            proc.wait(timeout=10)
        tail = paths.log.read_text(errors="replace").splitlines()[-15:]
        raise SetupError(f"dockerd did not answer at {paths.socket} within {ENGINE_START_TIMEOUT_MS} ms "
                         f"(exit code {code}); last log lines:\n" + "\n".join(tail))
    return Engine(base_url, "own", version)


def stop_own_engine(progress=print) -> bool:
    """SIGTERM the project's own dockerd and wait for it to exit. False when none was running."""
    pid = _our_dockerd_pid()
    if pid is None:
        return False
    progress(f"[docker] stopping the project's dockerd (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    try:
        eventually(lambda: _our_dockerd_pid() is None, timeout_ms=ENGINE_STOP_TIMEOUT_MS,
                   what="dockerd to exit", interval_ms=100)
    except WaitTimeout:
        os.kill(pid, signal.SIGKILL)
        progress(f"[docker] dockerd (pid {pid}) ignored SIGTERM for {ENGINE_STOP_TIMEOUT_MS} ms; killed")
    paths = own_engine_paths()
    paths.pidfile.unlink(missing_ok=True)
    _remove_exec_root(paths.exec_root)
    return True


def _remove_exec_root(exec_root: Path) -> None:
    """dockerd leaves its exec root behind, with the host network namespace bind-mounted at
    ``netns/default`` (the sandbox of --network host): unmount that, then remove the rest."""
    for mount in sorted(exec_root.glob("netns/*")):
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=10)
    shutil.rmtree(exec_root, ignore_errors=True)
