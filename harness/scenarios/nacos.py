"""Scenario steps over a Nacos topology, shared by cases and chaos sessions. Every wait is
bounded, every observation goes into the history with the time it became true."""

from __future__ import annotations

from typing import Any

from harness.control.http import ControlError
from harness.observe.history import History
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually

_SWALLOW = (OSError, ValueError, ControlError)


def client_state(history: History, client: NacosClientHandle) -> dict[str, Any]:
    state = client.control.state()
    history.observe("client_state", {"client": client.name, "status": state.get("status"),
                                     "server": state.get("server"), "connection_id": state.get("connection_id")})
    return state


def wait_client_running(history: History, client: NacosClientHandle, *, timeout_ms: float,
                        server: str | None = None) -> dict[str, Any]:
    """Wait until the client agent says RUNNING (on ``server`` if given). Raises WaitTimeout."""

    def probe() -> dict[str, Any]:
        return client.control.state()

    def accept(state: dict[str, Any]) -> bool:
        running = state.get("status") == "RUNNING" and (server is None or state.get("server") == server)
        return running or state.get("status") == "SHUTDOWN"  # a client that stopped never comes back

    history.invoke(client.name, "wait_running", {"server": server, "timeout_ms": timeout_ms})
    what = f"{client.name} RUNNING" + (f" on {server}" if server else "")
    try:
        waited = eventually(probe, timeout_ms=timeout_ms, what=what, accept=accept, swallow=_SWALLOW, interval_ms=50)
        if waited.value.get("status") == "SHUTDOWN":
            raise WaitTimeout(f"{what} (it stopped: SHUTDOWN after {waited.elapsed_ms:.0f} ms)", timeout_ms,
                              waited.value, None)
    except WaitTimeout as exc:
        history.fail(client.name, "wait_running", {"last": exc.last}, error=str(exc))
        raise
    history.ok(client.name, "wait_running", {"status": waited.value.get("status"), "server": waited.value.get("server"),
                                              "connection_id": waited.value.get("connection_id"),
                                              "after_ms": round(waited.elapsed_ms, 1)})
    return waited.value


def current(history: History, server: NacosServerHandle) -> dict[str, dict[str, Any]]:
    snapshot = server.admin.current()
    history.observe("current", {"server": server.main_address, "ids": sorted(snapshot)})
    return snapshot


def wait_registered(history: History, server: NacosServerHandle, *, timeout_ms: float,
                    connection_id: str | None = None, count: int | None = None) -> dict[str, dict[str, Any]]:
    """Wait until ``current`` holds ``connection_id`` (or exactly ``count`` connections)."""

    def accept(snapshot: dict[str, Any]) -> bool:
        if connection_id is not None and connection_id not in snapshot:
            return False
        return count is None or len(snapshot) == count

    what = f"{server.main_address} current holds " + (connection_id or f"{count} connection(s)")
    waited = eventually(server.admin.current, timeout_ms=timeout_ms, what=what, accept=accept,
                        swallow=_SWALLOW, interval_ms=50)
    history.observe("current", {"server": server.main_address, "ids": sorted(waited.value),
                                "became_true_after_ms": round(waited.elapsed_ms, 1)})
    return waited.value


def last_seq(entries: list[dict[str, Any]]) -> int:
    """The highest ``seq`` of a server's pushes or events log entries (0 when empty)."""
    return max((int(e.get("seq", 0)) for e in entries), default=0)


def last_push_seq(server: NacosServerHandle, admin: Any = None) -> int:
    """Where the server's pushes log stands now (0 for a server without one)."""
    return last_seq((admin or server.admin).pushes(0)) if server.peer.has_capability("pushes") else 0


def last_event_seq(server: NacosServerHandle) -> int:
    """Where the server's events log stands now (0 for a server without the extension)."""
    return last_seq(server.admin.events()) if server.peer.has_capability("events") else 0
