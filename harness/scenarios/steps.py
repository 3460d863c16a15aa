"""Steps many cases take: a client's baseline (RUNNING, then registered), the server a client
reports, a compact view of a client's state, and a background runner for a step that must
overlap another (a second client, a fault in flight).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from harness.errors import SetupError
from harness.scenarios.bounds import REGISTER_TIMEOUT_MS, RUNNING_TIMEOUT_MS
from harness.scenarios.nacos import wait_client_running, wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually


def brief(state: Any) -> Any:
    """A client agent's state reduced to what a verdict quotes: status, server, connection id."""
    if not isinstance(state, dict):
        return state
    return {k: state.get(k) for k in ("status", "server", "connection_id")}


def running(cf, client: NacosClientHandle, *, what: str = "baseline",
            timeout_ms: float = RUNNING_TIMEOUT_MS) -> dict[str, Any]:
    """The client RUNNING through its proxy within ``timeout_ms``, else FAILED: a client that never
    completes its handshake against a server that accepts it fails the case's premise."""
    try:
        return wait_client_running(cf.history, client, timeout_ms=timeout_ms)
    except WaitTimeout as exc:
        last = exc.last if isinstance(exc.last, dict) else {}
        cf.fail(expected=f"{client.name} RUNNING within {timeout_ms:.0f} ms ({what})",
                actual=f"last state {brief(last) or exc.last!r}", hint="the handshake did not complete; see the peer logs",
                verdict="FAILED")
        raise  # unreachable: fail() raises


def registered_on(cf, client: NacosClientHandle, server: NacosServerHandle,
                  state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Baseline: the connection the RUNNING ``client`` reports (or its only one) registered on
    ``server`` within the registration bound, else FAILED; its id and the ``current`` that holds it."""
    cid = state.get("connection_id")
    try:
        snapshot = wait_registered(cf.history, server, timeout_ms=REGISTER_TIMEOUT_MS, connection_id=cid,
                                   count=None if cid else 1)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name}'s connection {cid or '(one)'} registered on {server.main_address} (baseline)",
                actual=f"current holds {sorted(exc.last or {})}", verdict="FAILED")
        raise  # unreachable: fail() raises
    return cid or next(iter(snapshot)), snapshot


def registered_id(cf, server: NacosServerHandle, state: dict[str, Any]) -> str:
    """The client's connection id as the server registered it (the agent's, or the only one)."""
    cid = state.get("connection_id")
    snapshot = wait_registered(cf.history, server, timeout_ms=REGISTER_TIMEOUT_MS, connection_id=cid,
                               count=None if cid else 1)
    return cid or next(iter(snapshot))


def server_of(servers: list[NacosServerHandle], address: str | None) -> NacosServerHandle:
    """The handle of the server a client reports it runs on."""
    for server in servers:
        if server.main_address == address:
            return server
    raise AssertionError(f"the client reports server {address!r}, not one of {[s.main_address for s in servers]}")


class Background:
    """Run ``fn`` on a thread; ``result()`` joins it within a bound and re-raises its error."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # surfaced by result() in the test's thread
            self._error = exc

    def start(self) -> Background:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join_quietly(self, timeout_ms: float) -> None:
        """Wait (bounded) for the step to end, ignoring its outcome: cleanup after another error."""
        self._thread.join(timeout_ms / 1000.0)

    def result(self, timeout_ms: float) -> Any:
        self._thread.join(timeout_ms / 1000.0)
        if self._thread.is_alive():
            raise SetupError(f"{self._thread.name} did not end within {timeout_ms:.0f} ms of being awaited")
        if self._error is not None:
            raise self._error
        return self._value


def hold_while_running(cf, background: Background, fault: Any, *, max_ms: float, what: str) -> int | None:
    """Leave ``fault`` (a packet fault) on until ``background``'s run ends, at most ``max_ms``; the
    packets it dropped so far (read before the caller heals it: proof the client met it)."""
    try:
        eventually(lambda: not background.alive, timeout_ms=max_ms, interval_ms=50,
                   what=f"the client's run to end while {what}")
    except WaitTimeout:
        cf.history.note(f"the run outlived {what} ({max_ms:.0f} ms at most): lifting it now")
    return fault.dropped_packets()


def probe_registered(cf, server: NacosServerHandle, probe: Any, probe_id: str) -> None:
    """Baseline: a raw probe sends ConnectionSetup and the server registers it (``probe_id``, from
    its ServerCheck) within the registration bound, else the case fails."""
    probe.setup()
    try:
        wait_registered(cf.history, server, connection_id=probe_id, timeout_ms=REGISTER_TIMEOUT_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"baseline: the probe's setup registers {probe_id}", actual=f"current {exc.last!r}")


def request_ok(cf, client: NacosClientHandle, *, expected: str | None = None) -> dict[str, Any]:
    """One request through the client under test, recorded; graded as the case's level unless
    it succeeds. Returns the agent's answer."""
    cf.history.invoke(client.name, "request")
    answer = client.control.request()
    cf.history.ok(client.name, "request", answer)
    cf.check(answer.get("ok") is True, expected=expected or f"{client.name}'s request succeeds", actual=answer)
    return answer
