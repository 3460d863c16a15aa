"""Pick a runtime by name (``--runtime``): ``process`` is the embedded default, ``docker`` runs the
same manifests as containers (``connformance setup --docker`` first). It sits above
``harness.runtime`` and ``harness.docker`` so neither imports the other's registry."""

from __future__ import annotations

from collections.abc import Callable

from harness.errors import HarnessError
from harness.runtime import ProcessRuntime, Runtime

__all__ = ["get_runtime", "known_runtimes"]


def _docker_runtime() -> Runtime:
    from harness.docker.runtime import DockerRuntime  # the docker SDK only when asked for

    return DockerRuntime()


# Explicit registry: one entry per runtime.
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
