"""Run the pinned Toxiproxy server binary as a child process on a loopback port.

The child gets its own process group (so stop() can signal exactly it) and
``PR_SET_PDEATHSIG=SIGKILL`` (so it dies with the harness even on SIGKILL of the harness).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import requests

from harness.errors import HarnessError, SetupError
from harness.paths import cache_dir
from harness.ports import free_port, is_free, service_host
from harness.runtime.containment import OWNER_ENV, Cgroup, join_cgroup_in_child, node_cgroup, owner_marker
from harness.toolchain import toxiproxy_binary
from harness.toxiproxy.client import ToxiproxyClient, normalise_toxiproxy_url
from harness.wait import WaitTimeout, eventually

__all__ = ["ToxiproxyServer", "log_of"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl: Any
try:
    # Resolved in the parent: the child must not dlopen between fork and exec.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None

_API_FAILED = "Server finished with error"  # cmd/server/server.go log message
# The log of every Toxiproxy this process runs, by API URL: a fault reads what its proxy accepted
# while it was on from there (``harness.faults.hits``). Containers' and external ones are absent.
_LOGS: dict[str, Path] = {}


def log_of(url: str) -> Path | None:
    """The log file of the Toxiproxy at ``url`` if this process started it, else None."""
    return _LOGS.get(normalise_toxiproxy_url(url))
_PORT_RETRIES = 3  # free_port() then bind is racy: another process may take the port in between


def _child_setup(parent_pid: int, cgroup_procs: bytes | None) -> None:
    """preexec_fn: runs in the child after fork (start_new_session already made it a group leader)."""
    if cgroup_procs is not None:
        join_cgroup_in_child(cgroup_procs)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect; then nobody would ever kill us.
        if os.getppid() != parent_pid:
            os._exit(1)


class _Exited(Exception):
    """The server cannot become ready (ended, or its API failed); not swallowed by ``eventually``."""


class ToxiproxyServer:
    """The real Toxiproxy server, started on this run's service address (``127.X.1.1:<port>``,
    ``harness.slots``) in a cgroup of the run.

    ``with ToxiproxyServer() as server: client = server.client()``. ``port=None`` picks a free
    loopback port (retrying if it was taken meanwhile). Readiness = ``GET /version`` answers 200
    within ``start_timeout_ms``; otherwise SetupError with the last log lines.

    PDEATHSIG fires when the *thread* that started the server exits, so start it from a
    long-lived thread (pytest's main thread, not a short-lived worker thread).
    """

    def __init__(
        self,
        binary: Path | str | None = None,
        *,
        port: int | None = None,
        log_path: Path | str | None = None,
        start_timeout_ms: float = 10_000,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        host: str | None = None,
    ) -> None:
        self._binary = Path(binary) if binary is not None else None
        self._fixed_port = port
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self.start_timeout_ms = start_timeout_ms
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.host = host or service_host()
        self.port: int | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroup: Cgroup | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise HarnessError("ToxiproxyServer has no URL before start()")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, timeout_s: float = 5.0) -> ToxiproxyClient:
        return ToxiproxyClient(self.url, timeout_s=timeout_s)

    def start(self) -> ToxiproxyServer:
        if self._proc is not None:
            raise HarnessError(f"ToxiproxyServer already started (pid {self._proc.pid}, {self.url})")
        if self._binary is None:
            self._binary = toxiproxy_binary()  # SetupError "run `connformance setup`" when missing
        attempts = 1 if self._fixed_port is not None else _PORT_RETRIES
        if self._fixed_port is not None and not is_free(self._fixed_port, self.host):
            raise SetupError(
                f"cannot start Toxiproxy on {self.host}:{self._fixed_port}: the port is busy "
                "(address already in use); pass port=None to pick a free one or stop what holds it"
            )
        for attempt in range(1, attempts + 1):
            port = self._fixed_port if self._fixed_port is not None else free_port(host=self.host)
            self._spawn(port)
            try:
                self._wait_ready()
                _LOGS[normalise_toxiproxy_url(self.url)] = self.log_path
                return self
            except BaseException as exc:  # leave nothing running, whatever interrupted us
                log = self.logs()
                self.stop()
                if isinstance(exc, SetupError) and attempt < attempts and "address already in use" in log:
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self.port = port
        if self._log_path_arg is not None:
            self.log_path = self._log_path_arg
        else:
            self.log_path = cache_dir() / "logs" / f"toxiproxy-{os.getpid()}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(self._binary), "-host", self.host, "-port", str(port), *self.extra_args]
        parent = os.getpid()
        self._cgroup = cgroup = node_cgroup("toxiproxy")
        procs = cgroup.join_preexec() if cgroup is not None else None
        with open(self.log_path, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "LOG_LEVEL": self.log_level, OWNER_ENV: owner_marker()},
                    start_new_session=True,  # own session + process group: pgid == pid
                    preexec_fn=lambda: _child_setup(parent, procs),
                )
            except OSError as exc:
                raise SetupError(f"cannot start Toxiproxy {argv}: {exc}; rerun `connformance setup`") from exc

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        session = requests.Session()
        session.trust_env = False

        def probe() -> bool:
            if proc.poll() is not None:
                raise _Exited(f"exited with code {proc.returncode}")
            # v2.12.0 logs a failed API bind ("Server finished with error") and keeps running
            # without an API; fail fast instead of waiting out the timeout.
            if _API_FAILED in self.logs(5):
                raise _Exited("could not serve its API (still running)")
            if session.get(f"{self.url}/version", timeout=(0.5, 1.0)).status_code != 200:
                return False
            # Someone else may answer on this port (another Toxiproxy): only our pid's listener counts.
            return self._listens(proc.pid)

        try:
            eventually(
                probe,
                timeout_ms=self.start_timeout_ms,
                what=f"Toxiproxy GET {self.url}/version",
                interval_ms=20,
                swallow=(requests.RequestException, OSError),
            )
        except _Exited as exc:
            raise SetupError(
                f"Toxiproxy ({self._binary}, pid {proc.pid}) {exc.args[0]} before answering {self.url}/version; "
                f"last log lines ({self.log_path}):\n{self.logs(20)}"
            ) from None
        except WaitTimeout as exc:
            raise SetupError(
                f"Toxiproxy (pid {proc.pid}) did not answer {self.url}/version within "
                f"{self.start_timeout_ms:.0f} ms ({exc.last_error!r}); last log lines ({self.log_path}):\n"
                f"{self.logs(20)}"
            ) from None
        finally:
            session.close()

    def _listens(self, pid: int) -> bool:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            return False
        return any(
            c.status == psutil.CONN_LISTEN
            and c.laddr
            and (c.laddr.ip, c.laddr.port) == (self.host, self.port)
            for c in conns
        )

    def logs(self, tail_lines: int = 50) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail_lines:]) or "(empty log)"

    def stop(self, timeout_ms: float = 5000) -> int | None:
        """SIGTERM the server's process group, SIGKILL after ``timeout_ms``; returns the exit code.

        Signals go only to our child's own group, and only while the child is unreaped (so its
        pid/pgid cannot have been reused).
        """
        proc = self._proc
        if proc is None:
            return None
        _LOGS.pop(normalise_toxiproxy_url(self.url), None)
        if proc.poll() is None:
            pgid = proc.pid  # start_new_session made it the group leader
            try:
                os.killpg(pgid, signal.SIGTERM)
                proc.wait(timeout=timeout_ms / 1000)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self._proc = None
        if self._cgroup is not None:
            self._cgroup.kill()
            self._cgroup.wait_empty(5000)
            self._cgroup.remove()
            self._cgroup = None
        return proc.returncode

    def __enter__(self) -> ToxiproxyServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, {self.url}" if self._proc is not None else "stopped"
        return f"ToxiproxyServer({state})"
