"""http-client agent for the Python stacks: thin programs over each library's public API that
speak SPEC §4.4 (the contract itself is documented in ``harness.http_plan``).

    python -m harness.agents.python.http_agent --stack urllib3|requests|httpx|aiohttp \\
        --url URL[,URL2] [--url URL3 ...] --plan PLAN.json [--max-conns-per-host 3 ...]

``--url`` values, repeated or comma-separated, form the list a phase's ``target`` indexes. Knobs
come from the plan's ``knobs`` and from flags (``--<knob-name-with-dashes> VALUE``, what the
manifest's ``[knobs]`` table renders); a flag wins.

stdout: one JSON line per request, then ``{"done": true}``, exit 0. A knob (or op) the library
lacks: ``{"unsupported": [...], "detail": {...}}`` before any request, exit 3. A plan that breaks
the contract: a message on stderr, exit 2. stderr also gets one line describing the library
configuration in effect, and whatever the library itself logs (urllib3's "Connection pool is
full" warnings, for instance: research/http-pools.md §6.4 P1 counts them).

This module holds what the four stacks share: the CLI, the record writer, and two drivers that
run the phases, one with threads for the blocking libraries (urllib3, requests: a burst of n is
n threads released together by a barrier) and one with asyncio tasks (httpx, aiohttp: a burst is
n tasks gathered; ``cancel_burst`` cancels each task ``cancel_after_ms`` after issuing it). Each
stack module (``http_<stack>.py``) maps knobs onto its library and performs one request, saying
where ``reused`` and ``local_port`` come from. Knobs not given keep the library's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.http_plan import (
    EXIT_UNSUPPORTED,
    KNOB_FLAGS,
    KNOBS,
    Phase,
    Plan,
    PlanError,
    join_url,
    knob_from_text,
    parse_knobs,
    parse_plan,
    split_urls,
)
from harness.ports import check_loopback

__all__ = ["AsyncDriver", "Driver", "Outcome", "STACKS", "ThreadedDriver", "main"]

STACKS = {
    "urllib3": "harness.agents.python.http_urllib3",
    "requests": "harness.agents.python.http_requests",
    "httpx": "harness.agents.python.http_httpx",
    "aiohttp": "harness.agents.python.http_aiohttp",
}
EXIT_BAD_PLAN = 2
BARRIER_TIMEOUT_S = 30.0
ERROR_TEXT_MAX = 300


def epoch_ms() -> float:
    return round(time.time() * 1000.0, 1)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 3] + "..."


@dataclass
class Outcome:
    """What one request came to; ``None`` where the library cannot tell."""

    status: int | None = None
    error: str | None = None
    reused: bool | None = None
    local_port: int | None = None


class Emitter:
    """Writes one JSON object per line to stdout, whole lines only (threads share it)."""

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def __call__(self, obj: Mapping[str, Any]) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]


class Driver(ABC):
    """Runs a plan's phases against one library."""

    stack = "?"

    def __init__(self, plan: Plan, urls: list[str], emit: Emitter) -> None:
        self.plan = plan
        self.urls = urls
        self.knobs = dict(plan.knobs)
        self.emit = emit

    @classmethod
    @abstractmethod
    def unsupported(cls, knobs: Mapping[str, Any], ops: set[str]) -> dict[str, str]:
        """knob or op name -> why this library cannot do it (empty: the plan can run)."""

    @abstractmethod
    def describe(self) -> str:
        """One line: the library, its version and the configuration in effect."""

    @abstractmethod
    def run(self) -> None:
        """Run every phase, emitting a record per request, then ``{"done": true}``."""

    def url(self, phase: Phase) -> str:
        return join_url(self.urls[phase.target], phase.path)

    @staticmethod
    def for_request(phase: Phase, i: int) -> Phase:
        """The phase as request ``i`` sees it: a ``spread_burst``'s own target picked."""
        return dataclasses.replace(phase, target=phase.target_of(i)) if phase.targets else phase

    def record(self, phase_index: int, i: int, start_ms: float, outcome: Outcome) -> None:
        self.emit({
            "phase": phase_index, "i": i, "start_ms": start_ms, "end_ms": epoch_ms(),
            "status": outcome.status, "error": outcome.error, "reused": outcome.reused,
            "local_port": outcome.local_port,
        })


def unknown_knobs(knobs: Mapping[str, Any]) -> dict[str, str]:
    return {k: f"not a knob of the agent contract (known: {', '.join(KNOBS)})" for k in knobs if k not in KNOBS}


class ThreadedDriver(Driver):
    """For blocking libraries: a burst is n threads released together."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def request(self, phase: Phase, cancel_after_ms: int | None) -> Outcome:
        """One request, body read (or not, per ``read_error_body``), connection released."""

    def _one(self, index: int, i: int, phase: Phase, cancel_after_ms: int | None = None) -> None:
        start = epoch_ms()
        try:
            outcome = self.request(self.for_request(phase, i), cancel_after_ms)
        except Exception as exc:  # noqa: BLE001 - every failure is a record, not a crash
            outcome = Outcome(error=describe_error(exc))
        self.record(index, i, start, outcome)

    def run(self) -> None:
        self.open()
        try:
            for index, phase in enumerate(self.plan.phases):
                if phase.op == "sleep":
                    time.sleep(phase.ms / 1000.0)  # the plan's idle period, not synchronisation
                elif phase.op == "sequential":
                    for i in range(phase.n):
                        self._one(index, i, phase)
                else:
                    self._concurrent(index, phase, phase.cancel_after_ms if phase.op == "cancel_burst" else None)
            self.emit({"done": True})
        finally:
            self.close()

    def _concurrent(self, index: int, phase: Phase, cancel_after_ms: int | None) -> None:
        barrier = threading.Barrier(phase.n)

        def worker(i: int) -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(BARRIER_TIMEOUT_S)
            self._one(index, i, phase, cancel_after_ms)

        threads = [threading.Thread(target=worker, args=(i,), name=f"req-{index}-{i}", daemon=True)
                   for i in range(phase.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class AsyncDriver(Driver):
    """For asyncio libraries: a burst is n tasks; cancellation is ``Task.cancel()``."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def request(self, phase: Phase) -> Outcome: ...

    async def _attempt(self, phase: Phase) -> Outcome:
        try:
            return await self.request(phase)
        except Exception as exc:  # noqa: BLE001 - every failure is a record
            return Outcome(error=describe_error(exc))

    async def _one(self, index: int, i: int, phase: Phase) -> None:
        start = epoch_ms()
        self.record(index, i, start, await self._attempt(self.for_request(phase, i)))

    async def _cancelable(self, index: int, i: int, phase: Phase, cancel_after_ms: int) -> None:
        start = epoch_ms()
        task = asyncio.ensure_future(self._attempt(phase))
        done, _ = await asyncio.wait({task}, timeout=cancel_after_ms / 1000.0)
        if done:
            outcome = task.result()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            outcome = Outcome(error="canceled")
        self.record(index, i, start, outcome)

    async def _main(self) -> None:
        await self.open()
        try:
            for index, phase in enumerate(self.plan.phases):
                if phase.op == "sleep":
                    await asyncio.sleep(phase.ms / 1000.0)  # the plan's idle period
                elif phase.op == "sequential":
                    for i in range(phase.n):
                        await self._one(index, i, phase)
                elif phase.op in ("burst", "spread_burst"):
                    await asyncio.gather(*(self._one(index, i, phase) for i in range(phase.n)))
                else:
                    assert phase.cancel_after_ms is not None
                    await asyncio.gather(*(self._cancelable(index, i, phase, phase.cancel_after_ms)
                                           for i in range(phase.n)))
            self.emit({"done": True})
        finally:
            await self.close()

    def run(self) -> None:
        asyncio.run(self._main())


def load_driver(stack: str) -> type[Driver]:
    module = importlib.import_module(STACKS[stack])
    return module.DRIVER


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.agents.python.http_agent", description=__doc__.split("\n")[0])
    p.add_argument("--stack", required=True, choices=sorted(STACKS))
    p.add_argument("--url", action="append", required=True, help="base URL; repeat it or separate with commas")
    p.add_argument("--plan", required=True, help="the plan JSON file (harness.http_plan)")
    for flag, knob in KNOB_FLAGS.items():
        p.add_argument(flag, dest=f"knob_{knob}", default=None, metavar="VALUE", help=f"knob {knob} (wins over the plan)")
    args = p.parse_args(argv)
    try:
        urls = split_urls(args.url)
        # Network hygiene, whoever wrote the command line: loopback, or a harness namespace's
        # address (198.18.0.0/15: a server placed for packet-level faults).
        for url in urls:
            check_loopback(urllib.parse.urlsplit(url).hostname or "", namespaced=True)
        with open(args.plan, encoding="utf-8") as f:
            raw = json.load(f)
        plan = parse_plan(raw, url_count=len(urls), strict_knobs=False)
        flags = {k: knob_from_text(k, getattr(args, f"knob_{k}")) for k in KNOBS if getattr(args, f"knob_{k}") is not None}
        if flags:
            plan = Plan(phases=plan.phases, knobs={**plan.knobs, **parse_knobs(flags)})
    except (OSError, ValueError, PlanError) as exc:
        print(f"http_agent: bad arguments or plan {args.plan}: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_PLAN
    # Library warnings to stderr (urllib3 hangs a NullHandler on its logger, so without a root
    # handler its "Connection pool is full" warnings would vanish).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    emit = Emitter()
    driver_cls = load_driver(args.stack)
    missing = driver_cls.unsupported(plan.knobs, plan.ops)
    if missing:
        emit({"unsupported": sorted(missing), "detail": missing})
        return EXIT_UNSUPPORTED
    driver = driver_cls(plan, urls, emit)
    print(f"http_agent: {driver.describe()} urls={urls}", file=sys.stderr, flush=True)
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
