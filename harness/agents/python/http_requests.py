"""requests behind the http-client agent (research/http-pools.md §4.2).

One ``requests.Session`` whose ``http://`` adapter is an ``HTTPAdapter`` with the library's
defaults unless a knob says otherwise (``pool_connections=10``, ``pool_maxsize=10``,
``pool_block=False``, ``max_retries=0``). ``trust_env`` is off so a proxy in the environment
cannot capture loopback traffic; nothing else differs from a plain ``Session``.

Knobs (the adapter is urllib3's pool underneath, so the same one-queue rules apply):

- ``max_conns_per_host=n`` -> ``pool_maxsize=n, pool_block=True``; with ``block_when_full=false``:
  unsupported.
- ``max_idle_per_host=n`` -> ``pool_maxsize=n``; with a different ``max_conns_per_host``: unsupported.
- ``block_when_full`` -> ``pool_block``.
- ``keepalive=false`` -> the session's ``Connection`` header is ``close`` (requests sends
  ``keep-alive`` by default; it has no switch).
- ``read_error_body=false`` -> a >= 400 response is closed unread (``Response.close()`` closes the
  socket, research §4.1); ``true`` (default) reads ``content``.
- unsupported: ``idle_timeout_ms``, ``max_idle_total``, ``max_conns_total`` (as urllib3).

``cancel_burst`` is unsupported: requests offers no cancellation, and its deadlines do not cover
the wait for a pool slot (``send()`` passes no ``pool_timeout``, so a ``pool_block=True`` waiter
waits for ever, research §4.2).

``reused`` / ``local_port``: as for urllib3 (the adapter's ``poolmanager`` gets the counting
pool class); the request is sent with ``stream=True`` so ``Response.raw.connection`` is still
attached when the headers arrive, then the body is read as a plain ``session.get`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from harness.agents.python.http_agent import Outcome, ThreadedDriver, unknown_knobs
from harness.agents.python.http_urllib3 import UNSUPPORTED as URLLIB3_UNSUPPORTED
from harness.agents.python.http_urllib3 import CountingConnection, CountingPool, pool_size_knobs
from harness.http_plan import Phase

__all__ = ["DRIVER", "RequestsDriver"]


class RequestsDriver(ThreadedDriver):
    stack = "requests"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        missing = unknown_knobs(knobs)
        missing.update({k: why.replace("urllib3", "requests (urllib3)", 1)
                        for k, why in URLLIB3_UNSUPPORTED.items() if k in knobs})
        missing.update(pool_size_knobs(knobs)[0])
        if "cancel_burst" in ops:
            missing["cancel_burst"] = ("requests cannot cancel a request, and its timeouts do not cover the "
                                       "wait for a pool slot (no pool_timeout)")
        return missing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _, maxsize, block = pool_size_knobs(self.knobs)
        self.adapter_kwargs: dict[str, Any] = {}
        if maxsize is not None:
            self.adapter_kwargs["pool_maxsize"] = maxsize
        if block is not None:
            self.adapter_kwargs["pool_block"] = block
        self.read_error_body = self.knobs.get("read_error_body", True)
        self.session: requests.Session | None = None

    def describe(self) -> str:
        return (f"requests {requests.__version__} HTTPAdapter({', '.join(f'{k}={v}' for k, v in self.adapter_kwargs.items())})"
                f" keepalive={self.knobs.get('keepalive', True)} read_error_body={self.read_error_body}")

    def open(self) -> None:
        session = requests.Session()
        session.trust_env = False
        adapter = HTTPAdapter(**self.adapter_kwargs)
        adapter.poolmanager.pool_classes_by_scheme = {**adapter.poolmanager.pool_classes_by_scheme,
                                                      "http": CountingPool}
        session.mount("http://", adapter)
        if self.knobs.get("keepalive") is False:
            session.headers["Connection"] = "close"
        self.session = session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        assert self.session is not None
        timeout = phase.timeout_ms / 1000.0 if phase.timeout_ms is not None else None
        response = self.session.request(phase.method, self.url(phase), data=phase.body, stream=True, timeout=timeout)
        conn = response.raw.connection
        outcome = Outcome(status=response.status_code)
        if isinstance(conn, CountingConnection):
            outcome.reused = conn.cf_requests > 1
            outcome.local_port = conn.cf_local_port
        try:
            if response.status_code < 400 or self.read_error_body:
                _ = response.content
        finally:
            response.close()
        return outcome


DRIVER = RequestsDriver
