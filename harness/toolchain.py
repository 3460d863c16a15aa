"""``connformance setup``: an explicit registry of named, idempotent setup steps.

Each step knows how to tell whether it is already done (``is_done``) and how to do it
(``run``); ``run_setup`` prints progress and the duration of every step and skips done ones, so
running setup twice is cheap. Other modules add their steps (Go/Java agents) with
``register_step`` at import time; the CLI imports them before calling ``run_setup``.

Modules that register steps are listed in ``STEP_MODULES`` and imported by ``load_steps()``
(``run_setup`` calls it), so a library caller and the CLI see the same registry.

The first step installs the real Toxiproxy server with Go's own tooling (research §A1):
``go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0`` into
``<cache_dir()>/toxiproxy/v2.12.0/server``.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import importlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, SetupError
from harness.paths import cache_dir

__all__ = [
    "MIN_GO_VERSION",
    "TOXIPROXY_BIN_ENV",
    "TOXIPROXY_MODULE",
    "TOXIPROXY_VERSION",
    "Progress",
    "STEP_MODULES",
    "Step",
    "check_go",
    "load_steps",
    "register_step",
    "run_setup",
    "step_names",
    "toxiproxy_binary",
]

TOXIPROXY_VERSION = "2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_BIN_ENV = "CONNFORMANCE_TOXIPROXY_BIN"
MIN_GO_VERSION = (1, 23)  # Toxiproxy v2.12.0's go.mod says `go 1.23.0`

_GO_INSTALL_TIMEOUT_S = 900.0  # cold module download + compile; ~1-2 min on 2 cores
_VERSION_PROBE_TIMEOUT_S = 10.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One named setup step. ``is_done`` must be cheap and side-effect free."""

    name: str
    description: str
    is_done: Callable[[], bool]
    run: Callable[[Progress], None]
    group: str = "default"  # "docker"/"browser": only with `connformance setup --docker`/`--browser`
    # A long, CPU-bound build (cargo) that shares nothing with the other steps: it starts first,
    # on its own thread, while the others run one after another (they are mostly downloads).
    background: bool = False


_STEPS: dict[str, Step] = {}

# Modules whose import registers more steps (Go/Java agents), in execution order after ours.
STEP_MODULES: tuple[str, ...] = ("harness.agents.build", "harness.agents.build_nacos",
                                 "harness.agents.build_nacos_server", "harness.docker.setup_steps")
GROUPS = ("default", "docker", "browser")


def load_steps() -> None:
    """Import every module in ``STEP_MODULES`` so its steps are registered (idempotent)."""
    for module in STEP_MODULES:
        importlib.import_module(module)


def register_step(step: Step) -> Step:
    """Add a step to the registry (order of registration = order of execution)."""
    if step.name in _STEPS:
        raise HarnessError(f"setup step {step.name!r} is registered twice; step names must be unique")
    _STEPS[step.name] = step
    return step


def step_names(groups: Sequence[str] = ("default",)) -> list[str]:
    """Registered steps of ``groups``, in execution order (``setup --docker`` adds "docker")."""
    load_steps()
    return [name for name, step in _STEPS.items() if step.group in groups]


def run_setup(steps: Sequence[str] | None = None, progress: Progress = print) -> dict[str, float]:
    """Run the named steps (all registered ones when None), in registry order.

    Returns seconds spent per step (a skipped step costs its ``is_done`` check). Raises
    ``HarnessError`` for an unknown step name and lets a step's ``SetupError`` through.
    """
    load_steps()
    if steps is None:
        selected = step_names()
    else:
        unknown = [s for s in steps if s not in _STEPS]
        if unknown:
            raise HarnessError(
                f"unknown setup step(s) {unknown}; known steps: {', '.join(_STEPS) or '(none)'}"
            )
        wanted = set(steps)
        selected = [s for s in _STEPS if s in wanted]

    durations: dict[str, float] = {}
    # One setup at a time per cache: parallel workers or two terminals must not race on GOBIN.
    with _setup_lock():
        background = [name for name in selected if _STEPS[name].background]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(background))) as pool:
            running = {name: pool.submit(_run_step, _STEPS[name], progress) for name in background}
            try:
                for name in selected:
                    if name not in running:
                        durations[name] = _run_step(_STEPS[name], progress)
            finally:
                for name, future in running.items():  # a failed foreground step still waits for these
                    durations[name] = future.result()
    return durations


def _run_step(step: Step, progress: Progress) -> float:
    """Run one step unless done; its duration in seconds."""
    start = time.monotonic()
    if step.is_done():
        took = time.monotonic() - start
        progress(f"[setup] {step.name}: already done ({took:.2f} s)")
        return took
    progress(f"[setup] {step.name}: {step.description} ...")
    step.run(progress)
    if not step.is_done():
        raise SetupError(
            f"setup step {step.name!r} ran without error but its check still fails; "
            "see the output above and rerun `connformance setup --only " + step.name + "`"
        )
    took = time.monotonic() - start
    progress(f"[setup] {step.name}: done in {took:.1f} s")
    return took


@contextmanager
def _setup_lock() -> Iterator[None]:
    path = cache_dir() / "setup.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- Go ---------------------------------------------------------------------------------------


def check_go(min_version: tuple[int, int] = MIN_GO_VERSION) -> tuple[str, tuple[int, ...]]:
    """Return (path of `go`, version tuple); SetupError when missing or older than ``min_version``."""
    go = shutil.which("go")
    want = ".".join(map(str, min_version))
    if go is None:
        raise SetupError(
            f"`go` not found on PATH; Toxiproxy v{TOXIPROXY_VERSION} is built with `go install` and "
            f"needs Go >= {want}. Install Go, or set {TOXIPROXY_BIN_ENV} to an existing toxiproxy-server "
            "binary, or pass `--toxiproxy-url` to use a running Toxiproxy."
        )
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=_VERSION_PROBE_TIMEOUT_S,
            env={**os.environ, "GOTOOLCHAIN": "local"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"could not run `{go} env GOVERSION`: {exc!r}") from exc
    raw = out.stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", raw)
    if out.returncode != 0 or not m:
        raise SetupError(
            f"`{go} env GOVERSION` gave exit {out.returncode}, output {raw!r} {out.stderr.strip()!r}; "
            f"expected something like 'go{want}.0'"
        )
    version = tuple(int(g) for g in m.groups() if g is not None)
    if version[:2] < min_version:
        raise SetupError(
            f"Go at {go} is {raw}, but Toxiproxy v{TOXIPROXY_VERSION} needs Go >= {want} (its go.mod says "
            f"go 1.23.0). Install a newer Go, or set {TOXIPROXY_BIN_ENV} to an existing toxiproxy-server binary."
        )
    return go, version


# --- Toxiproxy --------------------------------------------------------------------------------


def _toxiproxy_gobin() -> Path:
    return cache_dir() / "toxiproxy" / f"v{TOXIPROXY_VERSION}"


def _runs(binary: Path) -> bool:
    """True when ``binary -version`` exits 0 and names toxiproxy-server."""
    try:
        out = subprocess.run(
            [str(binary), "-version"], capture_output=True, text=True, timeout=_VERSION_PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "toxiproxy-server" in (out.stdout + out.stderr)


def toxiproxy_binary() -> Path:
    """Path of the Toxiproxy server binary: ``$CONNFORMANCE_TOXIPROXY_BIN`` or the cached install."""
    env = os.environ.get(TOXIPROXY_BIN_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SetupError(
                f"{TOXIPROXY_BIN_ENV}={env!r} is not an executable file; point it at a toxiproxy-server "
                f"v{TOXIPROXY_VERSION} binary or unset it and run `connformance setup`"
            )
        return path
    path = _toxiproxy_gobin() / "server"
    if not path.is_file():
        raise SetupError(
            f"Toxiproxy server v{TOXIPROXY_VERSION} not found at {path}; run `connformance setup` "
            f"(or set {TOXIPROXY_BIN_ENV} to an existing toxiproxy-server binary)"
        )
    return path


def _toxiproxy_done() -> bool:
    try:
        return _runs(toxiproxy_binary())
    except SetupError:
        return False


def _install_toxiproxy(progress: Progress) -> None:
    if os.environ.get(TOXIPROXY_BIN_ENV):
        # The user chose a binary; installing another one would silently be ignored.
        raise SetupError(
            f"{TOXIPROXY_BIN_ENV}={os.environ[TOXIPROXY_BIN_ENV]!r} does not run (`-version` failed); "
            "fix or unset it"
        )
    go, version = check_go()
    gobin = _toxiproxy_gobin()
    gobin.mkdir(parents=True, exist_ok=True)
    target = f"{TOXIPROXY_MODULE}/cmd/server@v{TOXIPROXY_VERSION}"
    progress(f"[setup] toxiproxy: go{'.'.join(map(str, version))} install {target} (GOBIN={gobin})")
    env = {
        **os.environ,
        "GOBIN": str(gobin),
        # Never let `go` fetch a different toolchain: check_go already vetted this one.
        "GOTOOLCHAIN": "local",
        # Static binary, no C compiler needed.
        "CGO_ENABLED": "0",
    }
    try:
        out = subprocess.run(
            [go, "install", target],
            capture_output=True,
            text=True,
            timeout=_GO_INSTALL_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"`go install {target}` did not finish within {_GO_INSTALL_TIMEOUT_S:.0f} s; "
            "check access to the Go module proxy (GOPROXY) and rerun `connformance setup`"
        ) from exc
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-20:])
        raise SetupError(
            f"`go install {target}` failed with exit {out.returncode}:\n{tail}\n"
            "Check GOPROXY/network access to the Go module proxy, then rerun `connformance setup`."
        )


register_step(
    Step(
        name="toxiproxy",
        description=f"install Toxiproxy server v{TOXIPROXY_VERSION} with `go install`",
        is_done=_toxiproxy_done,
        run=_install_toxiproxy,
    )
)
