"""aiohttp behind the http-client agent (research/http-pools.md §4.4; aiohttp 3.x).

One ``aiohttp.ClientSession`` over one ``TCPConnector`` for the run, with the library's defaults
unless a knob says otherwise: ``limit=100`` (in-use connections, all hosts), ``limit_per_host=0``
(unlimited), ``keepalive_timeout=15`` s, ``force_close=False``, no idle cap; ``ClientTimeout``
default (300 s total); aiohttp's own one retry of idempotent requests on a dropped reused
connection stays on.

Knobs:

- ``max_conns_per_host`` -> ``limit_per_host``; ``max_conns_total`` -> ``limit``. Both count
  connections *in use*; idle ones count toward neither (research §4.4).
- ``idle_timeout_ms`` -> ``keepalive_timeout`` (seconds). The reaper runs every
  ``keepalive_timeout``, so an idle connection is closed between T and 2T after its last use.
- ``keepalive=false`` -> ``force_close=True`` (aiohttp refuses it together with a
  ``keepalive_timeout``: ``idle_timeout_ms`` alongside is unsupported).
- ``block_when_full=true`` is what aiohttp always does (wait for a slot); ``false``: unsupported.
- ``read_error_body=false`` -> a >= 400 response is released unread (what leaving
  ``async with session.get(...)`` without reading does). aiohttp releases a connection as soon as
  the whole body has been received, so for small bodies this changes nothing: that is the library.
- unsupported: ``max_idle_per_host``, ``max_idle_total`` (aiohttp has no idle cap).

``reused``: a ``TraceConfig`` (public tracing API) with ``on_connection_reuseconn`` and
``on_connection_create_end``; the last one seen for the request decides (after aiohttp's own retry
the answering connection is the new one). ``local_port``: aiohttp releases the connection inside
``ClientResponse.start()`` when the body arrived with the headers, so ``response.connection`` is
often already None; the session's ``response_class`` (a documented parameter) notes
``connection.transport.get_extra_info("sockname")`` as ``start()`` begins.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp

from harness.agents.python.http_agent import AsyncDriver, Outcome, unknown_knobs
from harness.http_plan import Phase

__all__ = ["DRIVER", "AiohttpDriver", "PortNotingResponse"]

UNSUPPORTED = {
    "max_idle_per_host": "aiohttp has no idle-connection cap (limits count connections in use only)",
    "max_idle_total": "aiohttp has no idle-connection cap (limits count connections in use only)",
}


class PortNotingResponse(aiohttp.ClientResponse):
    """Notes the local port of the connection a response arrives on, before aiohttp may release it."""

    cf_local_port: int | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        transport = connection.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            self.cf_local_port = int(sockname[1])
        return await super().start(connection)


async def _on_reuse(session: Any, context: SimpleNamespace, params: Any) -> None:
    if isinstance(context.trace_request_ctx, dict):
        context.trace_request_ctx["reused"] = True


async def _on_create(session: Any, context: SimpleNamespace, params: Any) -> None:
    if isinstance(context.trace_request_ctx, dict):
        context.trace_request_ctx["reused"] = False


class AiohttpDriver(AsyncDriver):
    stack = "aiohttp"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        missing = unknown_knobs(knobs)
        missing.update({k: why for k, why in UNSUPPORTED.items() if k in knobs})
        if knobs.get("block_when_full") is False:
            missing["block_when_full"] = "aiohttp always waits for a free slot; it cannot open extra connections"
        if knobs.get("keepalive") is False and knobs.get("idle_timeout_ms") is not None:
            missing["idle_timeout_ms"] = "aiohttp refuses keepalive_timeout together with force_close (keepalive=false)"
        return missing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connector_kwargs: dict[str, Any] = {}
        if "max_conns_per_host" in self.knobs:
            self.connector_kwargs["limit_per_host"] = self.knobs["max_conns_per_host"]
        if "max_conns_total" in self.knobs:
            self.connector_kwargs["limit"] = self.knobs["max_conns_total"]
        if "idle_timeout_ms" in self.knobs:
            self.connector_kwargs["keepalive_timeout"] = self.knobs["idle_timeout_ms"] / 1000.0
        if self.knobs.get("keepalive") is False:
            self.connector_kwargs["force_close"] = True
        self.read_error_body = self.knobs.get("read_error_body", True)
        self.session: aiohttp.ClientSession | None = None

    def describe(self) -> str:
        kwargs = ", ".join(f"{k}={v}" for k, v in self.connector_kwargs.items())
        return f"aiohttp {aiohttp.__version__} TCPConnector({kwargs}) read_error_body={self.read_error_body}"

    async def open(self) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_on_reuse)
        trace.on_connection_create_end.append(_on_create)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(**self.connector_kwargs),
            trace_configs=[trace],
            response_class=PortNotingResponse,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def request(self, phase: Phase) -> Outcome:
        assert self.session is not None
        context: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"trace_request_ctx": context}
        if phase.timeout_ms is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=phase.timeout_ms / 1000.0)
        if phase.body is not None:
            kwargs["data"] = phase.body.encode()
        async with self.session.request(phase.method, self.url(phase), **kwargs) as response:
            outcome = Outcome(status=response.status, reused=context.get("reused"),
                              local_port=getattr(response, "cf_local_port", None))
            if response.status < 400 or self.read_error_body:
                await response.read()
        return outcome


DRIVER = AiohttpDriver
