"""Toxiproxy in its own container (``--runtime docker``): the ``toxiproxy`` image with host
networking, its API on a free loopback port, started and removed through the docker runtime."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.paths import cache_dir
from harness.ports import free_port
from harness.runtime.base import LaunchSpec, Runtime
from harness.runtime.readiness import HttpReady

__all__ = ["toxiproxy_container"]

HOST = "127.0.0.1"
READY_TIMEOUT_MS = 20_000


@contextmanager
def toxiproxy_container(runtime: Runtime, name: str = "toxiproxy") -> Iterator[str]:
    """Start Toxiproxy as a container of ``runtime`` (a docker runtime); yield its API URL."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    spec = LaunchSpec(name=name, argv=["/toxiproxy-server", "-host", HOST, "-port", str(port)], image="toxiproxy",
                      log_path=cache_dir() / "logs" / f"{name}-docker-{port}.log",
                      labels={"connformance.peer": "toxiproxy", "connformance.role": "fault-layer"})
    node = runtime.start(spec, [HttpReady(f"{url}/version")], timeout_ms=READY_TIMEOUT_MS)
    try:
        yield url
    finally:
        node.stop()
