"""Admin HTTP on the main port: the ``/nacos/v2/core/loader/`` API and the harness extensions.

All GET, raw bodies (not the v2 ``{code, message, data}`` wrapper), research §3:

- ``current`` -> JSON keyed by connectionId;
- ``reloadClient?connectionId=&redirectAddress=`` -> ``success`` (always, also for an
  unknown id; answered after the reset's answer or its 3 s timeout);
- ``reloadCurrent?count=&redirectAddress=`` -> ``success`` (``count`` required: 400);
- ``smartReloadCluster?loaderFactor=`` -> ``Ok`` | ``Fail``;
- ``cluster`` -> load metrics of all members.

Harness extensions (capability ``events``; not in Nacos):

- ``events?since=<seq>`` -> ``[{seq, t_ms, event, connectionId, clientIp}]``;
- ``clientIpCounts`` -> ``{ip: n}``, the per-client-IP counter itself;
- ``pushes?since=<seq>`` -> ``[{seq, t_ms, connectionId, type, requestId, body, answered,
  answer_result_code, answer_ms, outcome}]``;
- ``transports`` -> ``[{id, peer, registered, opened_ms}]``, the open TCP transports.

Internal, between reference servers: ``_serverLoaderInfo``, ``_serverReload``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from ... import strict
from . import cluster

if TYPE_CHECKING:
    from .server import NacosRefServer

__all__ = ["LOADER_PREFIX", "start_admin"]

log = logging.getLogger("nacos-ref.admin")

LOADER_PREFIX = cluster.LOADER_PREFIX
SERVER_KEY = web.AppKey("server", object)


def _srv(request: web.Request) -> NacosRefServer:
    return request.app[SERVER_KEY]  # type: ignore[return-value]


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status)


def _missing(name: str) -> web.Response:
    return _text(f"Required request parameter '{name}' is not present", 400)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    """ASCII digits only (``harness.strict``); anything else is a ValueError -> 400."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = strict.ascii_int(raw, minimum=-(2**31), maximum=2**31 - 1)
    if value is None:
        raise ValueError(f"{name}={raw!r} is not an integer")
    return value


def _json(data: object) -> web.Response:
    return web.json_response(data, dumps=strict.dumps)  # never a bare NaN


async def current(request: web.Request) -> web.Response:
    return _json(_srv(request).connections.snapshot())


async def reload_client(request: web.Request) -> web.Response:
    connection_id = request.query.get("connectionId")
    if not connection_id:
        return _missing("connectionId")
    await _srv(request).load_single(connection_id, request.query.get("redirectAddress") or None)
    return _text("success")


async def reload_current(request: web.Request) -> web.Response:
    try:
        count = _int_param(request, "count")
    except ValueError:
        return _text("count must be an integer", 400)
    if count is None:
        return _missing("count")
    _srv(request).load_count(count, request.query.get("redirectAddress") or None)
    return _text("success")


async def smart_reload_cluster(request: web.Request) -> web.Response:
    raw = request.query.get("loaderFactor")
    factor = strict.finite_float(raw) if raw and raw.strip() else cluster.LOADER_FACTOR
    # over = avg * (1 + f), low = avg * (1 - f): outside [0, 1] the band is empty or inverted and
    # every client would be reset; nan/inf are not factors at all.
    if factor is None or not 0.0 <= factor <= 1.0:
        return _text(f"loaderFactor must be a finite number in [0, 1], got {raw!r}", 400)
    ok = await cluster.smart_reload(_srv(request), factor)
    return _text("Ok" if ok else "Fail")


async def cluster_view(request: web.Request) -> web.Response:
    return _json(await cluster.cluster_metrics(_srv(request)))


async def events(request: web.Request) -> web.Response:
    try:
        since = _int_param(request, "since", 0) or 0
    except ValueError:
        return _text("since must be an integer", 400)
    return _json(_srv(request).connections.events.since(since))


async def client_ip_counts(request: web.Request) -> web.Response:
    return _json(dict(_srv(request).connections.client_ip_counts))


async def pushes(request: web.Request) -> web.Response:
    try:
        since = _int_param(request, "since", 0) or 0
    except ValueError:
        return _text("since must be an integer", 400)
    return _json(_srv(request).pushes.log.since(since))


async def transports(request: web.Request) -> web.Response:
    server = _srv(request)
    return _json([
        {"id": t.id, "peer": t.peer, "registered": server.connections.check_valid(t.id), "opened_ms": t.opened_ms}
        for t in server.front.transports()
    ])


async def server_loader_info(request: web.Request) -> web.Response:
    return _json({"resultCode": 200, "loaderMetrics": cluster.local_metrics(_srv(request)),
                              "success": True})


async def server_reload(request: web.Request) -> web.Response:
    try:
        count = _int_param(request, "reloadCount")
    except ValueError:
        return _text("reloadCount must be an integer", 400)
    if count is None:
        return _missing("reloadCount")
    message = cluster.server_reload(_srv(request), count, request.query.get("reloadServer") or None)
    return _json({"resultCode": 200, "message": message, "success": True})


ROUTES = {
    "current": current,
    "reloadClient": reload_client,
    "reloadCurrent": reload_current,
    "smartReloadCluster": smart_reload_cluster,
    "cluster": cluster_view,
    "events": events,
    "clientIpCounts": client_ip_counts,
    "pushes": pushes,
    "transports": transports,
    "_serverLoaderInfo": server_loader_info,
    "_serverReload": server_reload,
}


async def start_admin(server: NacosRefServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the admin app; returns the runner and the bound port (``port`` may be 0)."""
    app = web.Application()
    app[SERVER_KEY] = server
    for name, handler in ROUTES.items():
        app.router.add_get(f"{LOADER_PREFIX}/{name}", handler)
    runner = web.AppRunner(app, access_log=None)  # the harness polls `current`: no per-request lines
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
