"""Deliberately broken http-client agents for the PL client-pool self-tests
(tests/integration/test_pl_limits_fail.py; manifests in pl-broken-agents.toml).

Each is the project's urllib3 agent (``harness.agents.python.http_urllib3``) with ONE behaviour
of the pool broken, speaking the same agent contract (SPEC §4.4), so a PL case must come out
FAILED against it for the broken behaviour and nothing else:

- ``fresh-pool``: a new ``PoolManager`` for every request, cleared after it: no limit holds (every
  concurrent request has its own connection) and nothing is kept for reuse. Accepts every pool
  knob and ignores it (PL-01, PL-03, PL-06, PL-09 block on, PL-10).
- ``keeps-idle``: the pool never discards a returned connection — when its queue is full it grows
  instead: the idle cap is ignored, the connection limit (``block=True``) still holds (PL-02,
  PL-07, PL-09 block off).
- ``ignores-keepalive``: ``keepalive=false`` is accepted and ignored (no ``Connection: close``),
  so connections are pooled and reused (PL-05).
- ``retries-post``: urllib3's ``Retry`` told to retry every method (``allowed_methods=None``), so
  a POST whose connection drops after the server read it is re-sent silently (TC-19).
- ``hands-out-closed``: the pool never checks whether an idle connection was closed by the server
  (urllib3's ``is_connection_dropped`` patched to say no) and nothing is retried, so a GET after
  the server's idle close goes out on the dead connection and fails (TC-20).
- ``leaks-slot-on-cancel``: a request that ends in an error (a cancel is a deadline in urllib3)
  never gives its slot back (the pool's ``_put_conn(None)`` dropped), so with ``block=True`` and
  a limit of 1 every later request waits for ever (PL-11, PL-18).
- ``ignores-timeout``: a phase's ``timeout_ms`` is dropped, so a GET sent on a pooled connection
  whose link went half-open waits on TCP alone, until the link heals (TC-21).
- ``serial-requests``: every request of the process, to any host, goes through one lock (one
  exchange at a time for the whole client), so a request stuck connecting to a host that never
  answers holds up every other host, and the other host's own requests wait for each other
  (PL-19: whatever order the threads take the lock in, the live host's requests are late).

    python -m tests.broken_peers.pl_broken_agents --variant fresh-pool --url URL --plan PLAN.json [knob flags]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import urllib3

from harness.agents.python.http_agent import EXIT_BAD_PLAN, Emitter, Outcome, unknown_knobs
from harness.agents.python.http_urllib3 import CountingPool, Urllib3Driver, read_response
from harness.http_plan import (
    EXIT_UNSUPPORTED,
    KNOB_FLAGS,
    KNOBS,
    Phase,
    Plan,
    PlanError,
    knob_from_text,
    parse_knobs,
    parse_plan,
    split_urls,
)
from harness.ports import check_loopback


class FreshPoolDriver(Urllib3Driver):
    """Ignores every pool knob: one throw-away pool per request."""

    stack = "broken-fresh-pool"

    @classmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        return unknown_knobs(knobs)  # accepts max_conns_*, max_idle_*, block_when_full ... and ignores them

    def describe(self) -> str:
        return f"BROKEN fresh-pool: a new urllib3 {urllib3.__version__} PoolManager per request (knobs ignored)"

    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        manager = urllib3.PoolManager()
        manager.pool_classes_by_scheme = {**manager.pool_classes_by_scheme, "http": CountingPool}
        try:
            resp = manager.request(phase.method, self.url(phase), preload_content=False,
                                   headers=self.headers or None)
            return read_response(resp, self.read_error_body)
        finally:
            manager.clear()  # the pool goes, and its connection with it


class GrowingPool(CountingPool):
    """A pool whose queue grows instead of discarding a returned connection."""

    def _put_conn(self, conn: Any) -> None:
        if self.pool is not None and conn is not None and self.pool.full():
            self.pool.maxsize += 1  # keep it: the idle cap is ignored
        super()._put_conn(conn)


class KeepsIdleDriver(Urllib3Driver):
    stack = "broken-keeps-idle"

    def describe(self) -> str:
        return f"BROKEN keeps-idle: {super().describe()} (returned connections are never discarded)"

    def open(self) -> None:
        super().open()
        assert self.manager is not None
        self.manager.pool_classes_by_scheme = {**self.manager.pool_classes_by_scheme, "http": GrowingPool}


class IgnoresKeepaliveDriver(Urllib3Driver):
    stack = "broken-ignores-keepalive"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers = {}  # keepalive=false accepted, no Connection: close sent

    def describe(self) -> str:
        return f"BROKEN ignores-keepalive: {super().describe()}"


class RetriesPostDriver(Urllib3Driver):
    stack = "broken-retries-post"

    def describe(self) -> str:
        return f"BROKEN retries-post: {super().describe()} (Retry(3, allowed_methods=None): POST re-sent)"

    def open(self) -> None:
        self.pool_kwargs["retries"] = urllib3.Retry(3, allowed_methods=None)  # None: every method is retryable
        super().open()


class HandsOutClosedDriver(Urllib3Driver):
    stack = "broken-hands-out-closed"

    def describe(self) -> str:
        return f"BROKEN hands-out-closed: {super().describe()} (no dropped-connection check, no retries)"

    def open(self) -> None:
        urllib3.connectionpool.is_connection_dropped = lambda conn: False  # type: ignore[attr-defined]
        self.pool_kwargs["retries"] = False
        super().open()


class LeakyPool(CountingPool):
    """A pool that loses the slot of a request that failed: the empty slot is never put back."""

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            super()._put_conn(conn)


class LeaksSlotOnCancelDriver(Urllib3Driver):
    stack = "broken-leaks-slot-on-cancel"

    def describe(self) -> str:
        return f"BROKEN leaks-slot-on-cancel: {super().describe()} (a failed request's slot is never returned)"

    def open(self) -> None:
        super().open()
        assert self.manager is not None
        self.manager.pool_classes_by_scheme = {**self.manager.pool_classes_by_scheme, "http": LeakyPool}


class IgnoresTimeoutDriver(Urllib3Driver):
    stack = "broken-ignores-timeout"

    def describe(self) -> str:
        return f"BROKEN ignores-timeout: {super().describe()} (a phase's timeout_ms is dropped)"

    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        return super().request(dataclasses.replace(phase, timeout_ms=None), cancel_after_ms)


class SerialRequestsDriver(Urllib3Driver):
    stack = "broken-serial-requests"
    _one_at_a_time = threading.Lock()

    def describe(self) -> str:
        return f"BROKEN serial-requests: {super().describe()} (one lock around every request, all hosts)"

    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        with self._one_at_a_time:
            return super().request(phase, cancel_after_ms)


VARIANTS = {"fresh-pool": FreshPoolDriver, "keeps-idle": KeepsIdleDriver, "ignores-keepalive": IgnoresKeepaliveDriver,
            "retries-post": RetriesPostDriver, "hands-out-closed": HandsOutClosedDriver,
            "ignores-timeout": IgnoresTimeoutDriver, "leaks-slot-on-cancel": LeaksSlotOnCancelDriver,
            "serial-requests": SerialRequestsDriver}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.broken_peers.pl_broken_agents")
    p.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--plan", required=True)
    for flag, knob in KNOB_FLAGS.items():
        p.add_argument(flag, dest=f"knob_{knob}", default=None)
    args = p.parse_args(argv)
    try:
        urls = split_urls(args.url)
        for url in urls:
            check_loopback(urllib.parse.urlsplit(url).hostname or "", namespaced=True)
        with open(args.plan, encoding="utf-8") as f:
            plan = parse_plan(json.load(f), url_count=len(urls), strict_knobs=False)
        flags = {k: knob_from_text(k, getattr(args, f"knob_{k}")) for k in KNOBS if getattr(args, f"knob_{k}") is not None}
        if flags:
            plan = Plan(phases=plan.phases, knobs={**plan.knobs, **parse_knobs(flags)})
    except (OSError, ValueError, PlanError) as exc:
        print(f"pl_broken_agents: bad arguments or plan {args.plan}: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_PLAN
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    emit = Emitter()
    driver_cls = VARIANTS[args.variant]
    missing = driver_cls.unsupported(plan.knobs, plan.ops)
    if missing:
        emit({"unsupported": sorted(missing), "detail": missing})
        return EXIT_UNSUPPORTED
    driver = driver_cls(plan, urls, emit)
    print(f"pl_broken_agents: {driver.describe()} urls={urls}", file=sys.stderr, flush=True)
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
