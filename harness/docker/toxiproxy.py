"""Toxiproxy in its own container (``--runtime docker``): the ``toxiproxy`` image with host
networking, its API on a free port of the run's service address, started and removed through the docker runtime."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.paths import cache_dir
from harness.ports import free_port, service_host
from harness.runtime.base import LaunchSpec, Runtime
from harness.runtime.readiness import HttpReady

__all__ = ["toxiproxy_container"]

READY_TIMEOUT_MS = 20_000


@contextmanager
def toxiproxy_container(runtime: Runtime, name: str = "toxiproxy") -> Iterator[str]:
    """Start Toxiproxy as a container of ``runtime`` (a docker runtime); yield its API URL."""
    host = service_host()
    port = free_port(host=host)
    url = f"http://{host}:{port}"
    spec = LaunchSpec(name=name, argv=["/toxiproxy-server", "-host", host, "-port", str(port)], image="toxiproxy",
                      log_path=cache_dir() / "logs" / f"{name}-docker-{port}.log",
                      labels={"connformance.peer": "toxiproxy", "connformance.role": "fault-layer"})
    node = runtime.start(spec, [HttpReady(f"{url}/version")], timeout_ms=READY_TIMEOUT_MS)
    try:
        yield url
    finally:
        node.stop()
