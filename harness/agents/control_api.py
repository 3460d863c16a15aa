"""The nacos-client agent control HTTP API (SPEC §4.3), shared by every Python agent.

Served on ``127.0.0.1:<control port>``:

- ``GET /state[?since=n]`` → ``{"status", "server", "connection_id", "events": [...from index n],
  "events_total", "meta"}``. ``meta`` is our extension for SR-03 (what the client reports about
  itself: ``client_ip``, ``client_version``, ``labels``, ``app_name``, ``tenant``; null where the
  library can't tell).
- ``POST /request`` (optional JSON body, e.g. ``{"timeout_ms": 3000, "type": "HealthCheckRequest"}``)
  → ``{"ok", "error_code", "ms", ...}``: one request through the client's own retry semantics.
- ``POST /shutdown`` → ``{"ok": true}``; the program then stops gracefully and exits 0.

An agent owns an :class:`AgentState` (status, current server, event list) and passes callbacks to
:func:`make_app`. Everything runs on one asyncio loop, so the state needs no lock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["AgentState", "EVENT_KINDS", "STATUSES", "make_app", "start_control_server"]

log = logging.getLogger(__name__)

STATUSES = ("STARTING", "RUNNING", "UNHEALTHY", "SHUTDOWN")
EVENT_KINDS = ("connected", "disconnected", "reset_received", "switching", "connect_failed", "error")

RequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def epoch_ms() -> float:
    """Event timestamps are wall-clock epoch ms (SPEC §4.3), comparable across processes."""
    return time.time() * 1000.0


class AgentState:
    """What ``GET /state`` reports. Agents mutate it; the HTTP layer only reads it."""

    def __init__(self, meta: dict[str, Any] | None = None) -> None:
        self.status: str = "STARTING"
        self.server: str | None = None
        self.connection_id: str | None = None
        self.meta: dict[str, Any] = dict(meta or {})
        self.events: list[dict[str, Any]] = []

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        self.status = status

    def record(self, kind: str, *, server: str | None = None, detail: Any = None) -> dict[str, Any]:
        """Append one event; ``kind`` must be one of :data:`EVENT_KINDS`."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind {kind!r} is not one of {EVENT_KINDS}")
        event = {"t_ms": epoch_ms(), "kind": kind, "server": server, "detail": detail}
        self.events.append(event)
        log.info("event %s server=%s detail=%s", kind, server, detail)
        return event

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        return {
            "status": self.status,
            "server": self.server,
            "connection_id": self.connection_id,
            "events": self.events[since:],
            "events_total": len(self.events),
            "meta": self.meta,
        }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def make_app(
    state: AgentState,
    *,
    on_request: RequestHandler,
    on_shutdown: Callable[[], None],
    refresh: Callable[[], None] | None = None,
) -> web.Application:
    """Build the control app.

    ``on_request(body)`` performs one request and returns at least ``ok``/``error_code``/``ms``.
    ``on_shutdown()`` must only *signal* the program to stop (e.g. set an Event): the answer is
    sent first, the teardown happens in the program's main task. ``refresh()``, if given, is
    called before each ``/state`` to pull status from a library that keeps it itself.
    """

    async def get_state(request: web.Request) -> web.Response:
        raw = request.query.get("since", "0")
        try:
            since = int(raw)
            if since < 0:
                raise ValueError
        except ValueError:
            return _json({"error": f"since must be a non-negative integer, got {raw!r}"}, 400)
        if refresh is not None:
            refresh()
        return _json(state.snapshot(since))

    async def post_request(request: web.Request) -> web.Response:
        body: dict[str, Any] = {}
        if request.can_read_body:
            text = await request.text()
            if text.strip():
                try:
                    body = json.loads(text)
                except json.JSONDecodeError as exc:
                    return _json({"error": f"body is not JSON: {exc}"}, 400)
                if not isinstance(body, dict):
                    return _json({"error": "body must be a JSON object"}, 400)
        if state.status == "SHUTDOWN":
            return _json({"ok": False, "error_code": None, "ms": 0.0, "error": "agent is shut down"})
        started = time.monotonic()
        try:
            result = await on_request(body)
        except Exception as exc:  # an agent bug, not a peer verdict: say so loudly
            log.exception("request handler failed")
            return _json({"ok": False, "error_code": None, "ms": (time.monotonic() - started) * 1000.0,
                          "error": f"agent error: {exc!r}"}, 500)
        result.setdefault("ms", (time.monotonic() - started) * 1000.0)
        return _json(result)

    async def post_shutdown(request: web.Request) -> web.Response:
        # Read the body first: an unread body makes aiohttp linger on it (up to 10 s) when the
        # runner is cleaned up, which held agents past their stop timeout.
        await request.read()
        on_shutdown()
        return _json({"ok": True})

    app = web.Application()
    app.router.add_get("/state", get_state)
    app.router.add_post("/request", post_request)
    app.router.add_post("/shutdown", post_shutdown)
    return app


async def start_control_server(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Bind the control app on loopback; the caller awaits ``runner.cleanup()`` at exit."""
    from harness.ports import check_loopback

    check_loopback(host)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
