"""urllib3 behind the http-client agent (research/http-pools.md §4.1; urllib3 2.x).

One ``urllib3.PoolManager`` for the run; a pool per (scheme, host, port) with the library's
defaults unless a knob says otherwise (``maxsize=1``, ``block=False``, ``num_pools=10``,
``retries=Retry(3)``, no timeout).

Knobs:

- ``max_conns_per_host=n`` -> ``maxsize=n, block=True``: urllib3 limits connections only by
  blocking on its ``maxsize`` queue (with ``block=False`` it opens extra connections and
  discards them after use). With ``block_when_full=false`` as well: unsupported.
- ``max_idle_per_host=n`` -> ``maxsize=n`` (the same queue caps idle connections). Given with a
  different ``max_conns_per_host``: unsupported (urllib3 has one number for both).
- ``block_when_full`` -> ``block``.
- ``keepalive=false`` -> a ``Connection: close`` request header (urllib3 has no switch; the server
  then closes and http.client drops the socket instead of pooling it). ``true`` = the default.
- ``read_error_body=false`` -> a >= 400 response is closed unread (``HTTPResponse.close()``: the
  client closes that connection) and released; ``true`` (default) reads it.
- unsupported: ``idle_timeout_ms`` (no idle timeout, no reaper: §4.1), ``max_idle_total``
  (``num_pools`` counts pools, not connections), ``max_conns_total``.

``cancel_burst``: a blocking library cannot cancel a call from outside; the caller's way to give
up is a deadline. Each request gets ``timeout=Timeout(total=cancel_after)`` (in flight) and
``pool_timeout=cancel_after`` (queued for a ``block=True`` slot: ``EmptyPoolError``), with
``retries=False`` so the deadline is not multiplied. The record's error is ``canceled: <the
library's exception>``; a request that finished first has its status.

``reused`` / ``local_port``: the pool class's ``ConnectionCls`` (urllib3's documented extension
point) is a subclass of ``HTTPConnection`` that counts requests sent since its last ``connect()``
and notes the socket's local port there; the response's ``connection`` (kept while the body is
unread: ``preload_content=False``) gives both. ``reused`` = this request was not the first on its
socket. Read before the body, so a retried request reports the connection that answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from harness.agents.python.http_agent import Outcome, ThreadedDriver, describe_error, unknown_knobs
from harness.http_plan import Phase

__all__ = ["DRIVER", "CountingConnection", "CountingPool", "Urllib3Driver", "pool_size_knobs", "read_response"]

UNSUPPORTED = {
    "idle_timeout_ms": "urllib3 has no idle timeout and no reaper; idle connections live until the server closes them",
    "max_idle_total": "urllib3 caps idle connections per pool (maxsize); num_pools counts pools, not connections",
    "max_conns_total": "urllib3 has no limit across hosts",
}


class CountingConnection(HTTPConnection):
    """``HTTPConnection`` that knows how many requests went over its current socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cf_requests = 0
        self.cf_local_port: int | None = None

    def connect(self) -> None:
        self.cf_requests = 0
        self.cf_local_port = None
        super().connect()
        if self.sock is not None:
            self.cf_local_port = self.sock.getsockname()[1]

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().request(*args, **kwargs)
        self.cf_requests += 1


class CountingPool(HTTPConnectionPool):
    ConnectionCls = CountingConnection


def pool_size_knobs(knobs: Mapping[str, Any]) -> tuple[dict[str, str], int | None, bool | None]:
    """(unsupported, maxsize, block) for urllib3's one-queue pool; None = keep the default."""
    missing: dict[str, str] = {}
    conns, idle, block = knobs.get("max_conns_per_host"), knobs.get("max_idle_per_host"), knobs.get("block_when_full")
    if conns is not None and block is False:
        missing["max_conns_per_host"] = ("urllib3 limits connections only with block=True; "
                                         "with block_when_full=false extra connections are opened")
    if conns is not None and idle is not None and conns != idle:
        missing["max_idle_per_host"] = (f"urllib3 has one maxsize for both the connection limit and the idle cap; "
                                        f"cannot have {conns} connections and {idle} idle")
    maxsize = conns if conns is not None else idle
    if block is None and conns is not None:
        block = True
    return missing, maxsize, block


def read_response(resp: Any, read_error_body: bool) -> Outcome:
    """Status, reuse and local port of a ``preload_content=False`` urllib3 response; then its body
    read (or closed unread) and its connection released."""
    conn = resp.connection
    outcome = Outcome(status=resp.status)
    if isinstance(conn, CountingConnection):
        outcome.reused = conn.cf_requests > 1
        outcome.local_port = conn.cf_local_port
    try:
        if resp.status >= 400 and not read_error_body:
            resp.close()  # the app ignores the error body: urllib3 closes the socket
        else:
            resp.read()
    finally:
        resp.release_conn()
    return outcome


class Urllib3Driver(ThreadedDriver):
    stack = "urllib3"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        missing = unknown_knobs(knobs)
        missing.update({k: why for k, why in UNSUPPORTED.items() if k in knobs})
        missing.update(pool_size_knobs(knobs)[0])
        return missing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _, maxsize, block = pool_size_knobs(self.knobs)
        self.pool_kwargs: dict[str, Any] = {}
        if maxsize is not None:
            self.pool_kwargs["maxsize"] = maxsize
        if block is not None:
            self.pool_kwargs["block"] = block
        self.headers = {"Connection": "close"} if self.knobs.get("keepalive") is False else {}
        self.read_error_body = self.knobs.get("read_error_body", True)
        self.manager: urllib3.PoolManager | None = None

    def describe(self) -> str:
        return (f"urllib3 {urllib3.__version__} PoolManager({', '.join(f'{k}={v}' for k, v in self.pool_kwargs.items())})"
                f" headers={self.headers} read_error_body={self.read_error_body}")

    def open(self) -> None:
        self.manager = urllib3.PoolManager(**self.pool_kwargs)
        self.manager.pool_classes_by_scheme = {**self.manager.pool_classes_by_scheme, "http": CountingPool}

    def close(self) -> None:
        if self.manager is not None:
            self.manager.clear()

    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        assert self.manager is not None
        kwargs: dict[str, Any] = {"preload_content": False}
        if phase.timeout_ms is not None:
            kwargs["timeout"] = urllib3.Timeout(total=phase.timeout_ms / 1000.0)
        if cancel_after_ms is not None:
            deadline = cancel_after_ms / 1000.0
            kwargs.update(timeout=urllib3.Timeout(total=deadline), pool_timeout=deadline, retries=False)
        body = phase.body.encode() if phase.body is not None else None
        try:
            resp = self.manager.request(phase.method, self.url(phase), body=body, headers=self.headers or None,
                                        **kwargs)
        except Exception as exc:
            if cancel_after_ms is not None:
                return Outcome(error=f"canceled: {describe_error(exc)}")
            raise
        return read_response(resp, self.read_error_body)


DRIVER = Urllib3Driver
