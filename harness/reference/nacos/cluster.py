"""Cluster load metrics and smart reload (``ServerLoaderController``, research §3).

Nacos members talk over the cluster gRPC port (``ServerLoaderInfoRequest``,
``ServerReloadRequest``); reference servers talk over their admin HTTP instead, through two
internal endpoints (``_serverLoaderInfo``, ``_serverReload``). The arithmetic is Nacos's:

- ``/cluster``: metrics of every member (self included), ``detail`` sorted by address,
  ``max``/``min``/``total`` over ``sdkConCount``, ``avg = total // metricsCount`` (Java int
  division), ``threshold = avg * 1.1``;
- ``/smartReloadCluster``: ``over = int(avg * (1 + f))``, ``low = int(avg * (1 - f))``;
  members with ``sdk > over`` sorted descending, with ``sdk < low`` ascending; pair i-th with
  i-th and ask the over-loaded one to ``ServerReload{reloadCount=over, reloadServer=low's
  address}``;
- ``ServerReloaderRequestHandler``: "ignore" when ``sdkCount <= reloadCount``, else
  ``loadCount(max(reloadCount, int(sdkCount * 0.9)), reloadServer)`` and "ok".
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

import aiohttp

from harness.protocol.nacos import codec

if TYPE_CHECKING:
    from .server import NacosRefServer

__all__ = ["cluster_metrics", "local_metrics", "server_reload", "smart_reload"]

log = logging.getLogger("nacos-ref.cluster")

LOADER_PREFIX = "/nacos/v2/core/loader"
LOADER_FACTOR = codec.LOADER_FACTOR
MEMBER_TIMEOUT_S = 0.5  # Nacos: 200 ms per member, 1 s overall; loosened for loaded CI hosts
RELOAD_TIMEOUT_S = 0.5  # Nacos: 100 ms


def local_metrics(server: NacosRefServer) -> dict[str, str]:
    """``ServerLoaderInfoRequestHandler``: all values are strings."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    try:
        import psutil

        cpu = psutil.cpu_percent(interval=None) / 100.0
    except Exception:
        cpu = 0.0
    return {
        "conCount": str(server.connections.count()),
        "sdkConCount": str(server.connections.sdk_count()),
        "load": str(load),
        "cpu": str(cpu),
    }


def server_reload(server: NacosRefServer, reload_count: int, reload_server: str | None) -> str:
    sdk_count = server.connections.sdk_count()
    if sdk_count <= reload_count:
        return "ignore"
    server.load_count(max(reload_count, int(sdk_count * (1 - LOADER_FACTOR))), reload_server)
    return "ok"


async def _member_metrics(session: aiohttp.ClientSession, address: str) -> dict[str, Any] | None:
    try:
        async with session.get(f"http://{address}{LOADER_PREFIX}/_serverLoaderInfo",
                               timeout=aiohttp.ClientTimeout(total=MEMBER_TIMEOUT_S)) as resp:
            body = await resp.json(content_type=None)
            return {"address": address, "metric": dict(body["loaderMetrics"])}
    except Exception as exc:  # a member down or slow is simply missing from the detail
        log.warning("metrics of member %s unavailable: %r", address, exc)
        return None


async def cluster_metrics(server: NacosRefServer) -> dict[str, Any]:
    me = server.config.server_address
    others = [m for m in server.config.members if m != me]
    async with aiohttp.ClientSession() as session:
        fetched = await asyncio.gather(*(_member_metrics(session, m) for m in others))
    detail = [d for d in fetched if d is not None]
    detail.append({"address": me, "metric": local_metrics(server)})
    detail.sort(key=lambda d: d["address"])
    counts = [int(d["metric"]["sdkConCount"]) for d in detail if d["metric"].get("sdkConCount")]
    total = sum(counts)
    avg = total // len(detail)
    return {
        "detail": detail,
        "memberCount": len(server.config.members),
        "metricsCount": len(detail),
        "completed": len(detail) == len(server.config.members),
        "max": max(counts, default=0),
        "min": min(counts, default=-1),
        "avg": avg,
        "threshold": avg * 1.1,
        "total": total,
    }


async def smart_reload(server: NacosRefServer, loader_factor: float) -> bool:
    metrics = await cluster_metrics(server)
    avg = metrics["avg"]
    over_limit = int(avg * (1 + loader_factor))
    low_limit = int(avg * (1 - loader_factor))

    def sdk(d: dict[str, Any]) -> int:
        return int(d["metric"]["sdkConCount"])

    over = sorted((d for d in metrics["detail"] if sdk(d) > over_limit), key=sdk, reverse=True)
    low = sorted((d for d in metrics["detail"] if sdk(d) < low_limit), key=sdk)
    log.info("smart reload: avg=%d over>%d %s low<%d %s", avg, over_limit, [d["address"] for d in over],
             low_limit, [d["address"] for d in low])
    ok = True
    async with aiohttp.ClientSession() as session:
        for src, dst in zip(over, low, strict=False):  # pairs, the longer list is cut
            log.info("reload task: from %s to %s, reloadCount=%d", src["address"], dst["address"], over_limit)
            if src["address"] == server.config.server_address:
                server_reload(server, over_limit, dst["address"])
                continue
            try:
                async with session.get(
                    f"http://{src['address']}{LOADER_PREFIX}/_serverReload",
                    params={"reloadCount": str(over_limit), "reloadServer": dst["address"]},
                    timeout=aiohttp.ClientTimeout(total=RELOAD_TIMEOUT_S),
                ) as resp:
                    body = await resp.json(content_type=None)
                    ok = ok and resp.status == 200 and bool(body.get("success"))
            except Exception as exc:
                log.warning("reload of member %s failed: %r", src["address"], exc)
                ok = False
    return ok
