"""``reloadClient`` for an id the server does not know (SR-09) as steps: the calls, a quiet
window in which nothing may change (``current``, the client's state), and what reached a
bystander probe's bi-stream."""

from __future__ import annotations

import queue
from typing import Any

from harness.control.http import ControlError
from harness.probe.nacos_raw import RawNacosConnection
from harness.scenarios.nacos import client_state
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import holds_for

# How long "nothing changes" is watched after the reloads. reloadClient is synchronous (it
# returns after the reset's answer or its 3 s wait), so a reset it sent has arrived by then; a
# client that obeys one leaves within its setup wait (100 ms) + a connect: 1 s covers it.
QUIET_WINDOW_MS = 1000
CLIENT_EVENTS_OF_A_RESET = ("reset_received", "switching", "disconnected")




def reload_unknown(cf, server: NacosServerHandle, unknown: str) -> dict[str, str]:
    """``reloadClient(unknown)`` once plain, once with a redirect to the server itself: each must
    answer ``success``. Returns the bodies by label."""
    bodies = {}
    for label, redirect in (("plain", None), ("with redirect", server.main_address)):
        cf.history.invoke("admin", "reloadClient", {"connectionId": unknown, "redirectAddress": redirect})
        try:
            bodies[label] = server.admin.reload_client(unknown, redirect)
        except ControlError as exc:
            cf.fail(expected=f"reloadClient({unknown}) {label} answers success", actual=str(exc))
        cf.history.ok("admin", "reloadClient", {"body": bodies[label]})
    for label, body in bodies.items():
        cf.check(body.strip() == "success", expected=f"reloadClient for an unknown id ({label}) answers success",
                 actual=body)
    return bodies


def watch_quiet(cf, server: NacosServerHandle, client: NacosClientHandle, state: dict[str, Any],
                ids_before: list[str]) -> tuple[bool, Any, float]:
    """For QUIET_WINDOW_MS: ``current`` keeps ``ids_before`` and the client stays RUNNING on the
    same server and connection. Returns (held, the first change seen, when)."""
    changes: list[dict[str, Any]] = []

    def observe() -> dict[str, Any]:
        snapshot = sorted(server.admin.current())
        now = client_state(cf.history, client)
        seen = {"current": snapshot, "status": now.get("status"), "server": now.get("server"),
                "connection_id": now.get("connection_id")}
        if (snapshot != ids_before or seen["status"] != "RUNNING" or seen["server"] != state.get("server")
                or seen["connection_id"] != state.get("connection_id")):
            changes.append(seen)
        return seen

    return holds_for(observe, duration_ms=QUIET_WINDOW_MS, what="nothing changes", accept=lambda seen: not changes,
                     interval_ms=100)


def pushed_to(cf, probe: RawNacosConnection) -> list[Any]:
    """Everything the server pushed on the probe's bi-stream so far (or its end), recorded."""
    seen: list[Any] = []
    while True:
        try:
            item = probe.next_push(timeout_s=0.05)
        except queue.Empty:
            break
        seen.append({"type": item.type, "body": item.body} if item else "stream ended")
        if item is None:
            break
    cf.history.observe("probe_inbox", seen)
    return seen
