"""httpx behind the http-client agent (research/http-pools.md §4.3; httpx 0.28 / httpcore 1.0).

One ``httpx.AsyncClient`` for the run (asyncio), ``trust_env=False`` (no proxy from the
environment), otherwise the library's defaults: ``Limits(max_connections=100,
max_keepalive_connections=20, keepalive_expiry=5.0)`` and ``Timeout(5.0)`` (so a request that
waits more than 5 s for a pool slot fails with ``PoolTimeout``: that is httpx's behaviour).

Knobs. httpx's limits are pool-wide, across all origins; it has no per-host limit (its docs:
``max_connections`` is "the maximum number of concurrent connections that may be
established"; the pool key only selects a connection, research §4.3). So:

- ``max_conns_total`` -> ``max_connections``; ``max_idle_total`` -> ``max_keepalive_connections``
  (httpcore evicts idle connections whenever the *total* exceeds it, research §4.3).
- ``idle_timeout_ms`` -> ``keepalive_expiry`` (checked lazily, only when the pool is used: no reaper).
- ``keepalive=false`` -> ``max_keepalive_connections=0`` (every connection closed by the client
  after its response); given with ``max_idle_total``: unsupported.
- ``block_when_full=true`` is what httpx always does (a request waits for a slot, up to the pool
  timeout); ``false`` (open extra connections instead) does not exist: unsupported.
- ``read_error_body=false`` -> a >= 400 response is closed unread (httpcore closes that connection).
- unsupported: ``max_conns_per_host``, ``max_idle_per_host`` (no per-host limits). A case that
  wants httpx's pool-wide cap asks for ``max_conns_total`` (PL-10).

Limits given only in part keep the documented defaults for the rest (``httpx.Limits`` itself
defaults every field to None = unlimited, which is not the client's default).

``reused``: the request's ``trace`` extension (public, httpx docs "Request Extensions") sees
``connection.connect_tcp.*`` exactly when httpcore opens a new connection for this request;
``reused`` is true when it did not. ``local_port``: the response's ``network_stream`` extension,
``get_extra_info("client_addr")``, read while the response is still open (``client.stream``).

Start-up loads anyio's asyncio backend (``await anyio.sleep(0)``), which httpcore would otherwise
import inside the first request of the first burst, delaying its siblings (measured: 400 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from harness.agents.python.http_agent import AsyncDriver, Outcome, unknown_knobs
from harness.http_plan import Phase

__all__ = ["DEFAULT_LIMITS", "DRIVER", "HttpxDriver"]

# httpx's documented client defaults (httpx/_config.py DEFAULT_LIMITS; keepalive_expiry 5.0 s).
DEFAULT_LIMITS = {"max_connections": 100, "max_keepalive_connections": 20, "keepalive_expiry": 5.0}

UNSUPPORTED = {
    "max_conns_per_host": "httpx limits connections pool-wide (max_connections), not per host; use max_conns_total",
    "max_idle_per_host": "httpx caps idle connections pool-wide (max_keepalive_connections); use max_idle_total",
}


class HttpxDriver(AsyncDriver):
    stack = "httpx"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        missing = unknown_knobs(knobs)
        missing.update({k: why for k, why in UNSUPPORTED.items() if k in knobs})
        if knobs.get("block_when_full") is False:
            missing["block_when_full"] = "httpx always waits for a pool slot (up to the pool timeout); it cannot open extra connections"
        if knobs.get("keepalive") is False and knobs.get("max_idle_total") is not None:
            missing["max_idle_total"] = "keepalive=false is max_keepalive_connections=0 in httpx; it cannot also be another idle cap"
        return missing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits: dict[str, Any] = {}
        if "max_conns_total" in self.knobs:
            limits["max_connections"] = self.knobs["max_conns_total"]
        if "max_idle_total" in self.knobs:
            limits["max_keepalive_connections"] = self.knobs["max_idle_total"]
        if self.knobs.get("keepalive") is False:
            limits["max_keepalive_connections"] = 0
        if "idle_timeout_ms" in self.knobs:
            limits["keepalive_expiry"] = self.knobs["idle_timeout_ms"] / 1000.0
        self.limits = {**DEFAULT_LIMITS, **limits} if limits else None
        self.read_error_body = self.knobs.get("read_error_body", True)
        self.client: httpx.AsyncClient | None = None

    def describe(self) -> str:
        limits = f"Limits({self.limits})" if self.limits else "default limits"
        return f"httpx {httpx.__version__} AsyncClient({limits}) read_error_body={self.read_error_body}"

    async def open(self) -> None:
        # httpcore imports anyio and its asyncio backend on the first request; under load that
        # took 400 ms inside the first task of a burst, so its siblings started late. Load it now.
        await anyio.sleep(0)
        kwargs: dict[str, Any] = {"trust_env": False}
        if self.limits is not None:
            kwargs["limits"] = httpx.Limits(**self.limits)
        self.client = httpx.AsyncClient(**kwargs)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def request(self, phase: Phase) -> Outcome:
        assert self.client is not None
        connected: list[str] = []

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.startswith("connection.connect_tcp."):
                connected.append(event)

        kwargs: dict[str, Any] = {"extensions": {"trace": trace}}
        if phase.timeout_ms is not None:
            kwargs["timeout"] = phase.timeout_ms / 1000.0
        if phase.body is not None:
            kwargs["content"] = phase.body.encode()
        async with self.client.stream(phase.method, self.url(phase), **kwargs) as response:
            outcome = Outcome(status=response.status_code, reused=not connected)
            stream = response.extensions.get("network_stream")
            addr = stream.get_extra_info("client_addr") if stream is not None else None
            if isinstance(addr, tuple) and len(addr) >= 2:
                outcome.local_port = int(addr[1])
            if response.status_code < 400 or self.read_error_body:
                await response.aread()
        return outcome


DRIVER = HttpxDriver
