"""How peers run. ``get_runtime("process")`` is the embedded default; ``get_runtime("docker")``
runs the same manifests as containers (``connformance setup --docker`` first)."""

from __future__ import annotations

from collections.abc import Callable

from harness.errors import HarnessError
from harness.runtime.base import LaunchSpec, Node, Readiness, Runtime
from harness.runtime.process import ProcessNode, ProcessRuntime
from harness.runtime.readiness import HttpReady, LogLineReady, PortReady, wait_ready

__all__ = [
    "LaunchSpec",
    "Node",
    "Readiness",
    "Runtime",
    "ProcessRuntime",
    "ProcessNode",
    "PortReady",
    "HttpReady",
    "LogLineReady",
    "wait_ready",
    "get_runtime",
    "known_runtimes",
]

# Explicit registry: one entry per runtime module.
def _docker_runtime() -> Runtime:
    from harness.runtime.docker import DockerRuntime  # the docker SDK only when asked for

    return DockerRuntime()


_RUNTIMES: dict[str, Callable[[], Runtime]] = {
    "process": ProcessRuntime,
    "docker": _docker_runtime,
}


def known_runtimes() -> list[str]:
    return sorted(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """A new runtime instance by name (``--runtime``). The caller owns it and must ``close()`` it."""
    try:
        factory = _RUNTIMES[name]
    except KeyError:
        raise HarnessError(
            f"unknown runtime {name!r}; known runtimes: {', '.join(known_runtimes())} "
            "(pass one of them to --runtime)"
        ) from None
    return factory()
