"""A minimal naming module, so real SDK calls succeed against the reference server.

Ephemeral instances only, bound to the connection that registered them and released when it
unregisters (Nacos ``ConnectionBasedClientManager``: research §2.7). No push of service
changes to subscribers: subscriptions are answered with the current ServiceInfo.

JSON shapes (nacos-sdk-python ``v2/nacos/naming/model``, checked against the Java api module):
- ``InstanceRequest{namespace, serviceName, groupName, type: registerInstance|deregisterInstance,
  instance{ip, port, weight, healthy, enabled, ephemeral, clusterName, serviceName, metadata}}``
  -> ``InstanceResponse{type}``;
- ``BatchInstanceRequest{..., instances[]}`` -> ``BatchInstanceResponse{type}`` (replaces the
  connection's instances of that service, as Nacos does);
- ``ServiceQueryRequest{..., cluster, healthyOnly}`` -> ``QueryServiceResponse{serviceInfo}``;
- ``SubscribeServiceRequest{..., clusters, subscribe}`` -> ``SubscribeServiceResponse{serviceInfo}``;
- ``ServiceListRequest{namespace, groupName, pageNo, pageSize}`` -> ``ServiceListResponse{count,
  serviceNames}``.
``ServiceInfo{name, groupName, clusters, cacheMillis, hosts[], lastRefTime, checksum, allIPs,
reachProtectionThreshold, valid}`` with hosts' ``serviceName`` grouped (``group@@name``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from harness import strict
from harness.protocol.nacos.codec import Message

from .connections import Connection, epoch_ms

__all__ = ["NamingStore", "NamingError"]

log = logging.getLogger("nacos-ref.naming")

DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
DEFAULT_NAMESPACE = "public"
INVALID_PARAM = 400


class NamingError(Exception):
    """A request the naming module refuses; ``code`` becomes the ErrorResponse errorCode."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Service:
    namespace: str
    group: str
    name: str
    # (ip, port, cluster) -> (instance JSON, owning connection id)
    instances: dict[tuple[str, int, str], tuple[dict[str, Any], str]] = field(default_factory=dict)
    subscribers: set[str] = field(default_factory=set)


def _key(body: dict[str, Any]) -> tuple[str, str, str]:
    name = str(body.get("serviceName") or "")
    if not name:
        raise NamingError(INVALID_PARAM, "serviceName is required")
    return str(body.get("namespace") or DEFAULT_NAMESPACE), str(body.get("groupName") or DEFAULT_GROUP), name


class NamingStore:
    """Services and their ephemeral instances; also a ``ConnectionListener``."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str, str], _Service] = {}

    # ---- ConnectionListener ----------------------------------------------------------

    def connected(self, conn: Connection) -> None:
        pass

    def disconnected(self, conn: Connection) -> None:
        """``ConnectionBasedClient.release``: the connection's instances and subscriptions go."""
        removed = 0
        for svc in self._services.values():
            for k in [k for k, (_, owner) in svc.instances.items() if owner == conn.id]:
                del svc.instances[k]
                removed += 1
            svc.subscribers.discard(conn.id)
        if removed:
            log.info("released %d instance(s) of %s", removed, conn.id)

    # ---- unary handlers: (request, connection) -> (response type, response fields) ------

    def instance(self, msg: Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        body = msg.body
        svc = self._service(body)
        op = str(body.get("type") or "")
        inst = self._instance(body.get("instance"), svc)
        k = (inst["ip"], inst["port"], inst["clusterName"])
        if op == "registerInstance":
            svc.instances[k] = (inst, conn.id)
        elif op == "deregisterInstance":
            svc.instances.pop(k, None)
        else:
            raise NamingError(INVALID_PARAM, f"unsupported InstanceRequest type {op!r}")
        log.info("%s %s@@%s %s:%s by %s", op, svc.group, svc.name, inst["ip"], inst["port"], conn.id)
        return "InstanceResponse", {"type": op}

    def batch_instance(self, msg: Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        body = msg.body
        svc = self._service(body)
        op = str(body.get("type") or "")
        if op != "batchRegisterInstance":
            raise NamingError(INVALID_PARAM, f"unsupported BatchInstanceRequest type {op!r}")
        for k in [k for k, (_, owner) in svc.instances.items() if owner == conn.id]:
            del svc.instances[k]
        for raw in body.get("instances") or []:
            inst = self._instance(raw, svc)
            svc.instances[(inst["ip"], inst["port"], inst["clusterName"])] = (inst, conn.id)
        return "BatchInstanceResponse", {"type": op}

    def query(self, msg: Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        body = msg.body
        svc = self._service(body)
        healthy_only = bool(body.get("healthyOnly") or body.get("healthOnly"))
        return "QueryServiceResponse", {"serviceInfo": self._service_info(svc, str(body.get("cluster") or ""),
                                                                           healthy_only)}

    def subscribe(self, msg: Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        body = msg.body
        svc = self._service(body)
        if body.get("subscribe", True):
            svc.subscribers.add(conn.id)
        else:
            svc.subscribers.discard(conn.id)
        return "SubscribeServiceResponse", {"serviceInfo": self._service_info(svc, str(body.get("clusters") or ""),
                                                                               False)}

    def list_services(self, msg: Message, conn: Connection) -> tuple[str, dict[str, Any]]:
        body = msg.body
        namespace = str(body.get("namespace") or DEFAULT_NAMESPACE)
        group = str(body.get("groupName") or DEFAULT_GROUP)
        names = sorted(s.name for (ns, g, _), s in self._services.items()
                       if ns == namespace and g == group and s.instances)
        page_no = strict.ascii_int(body.get("pageNo") or 1, minimum=1, maximum=10**6)
        page_size = strict.ascii_int(body.get("pageSize") or 10, minimum=1, maximum=10**4)
        if page_no is None or page_size is None:
            raise NamingError(INVALID_PARAM, "pageNo and pageSize must be small positive integers")
        page = names[(page_no - 1) * page_size: page_no * page_size]
        return "ServiceListResponse", {"count": len(names), "serviceNames": page}

    # ---- helpers ---------------------------------------------------------------------

    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self._services.values())

    def _service(self, body: dict[str, Any]) -> _Service:
        k = _key(body)
        svc = self._services.get(k)
        if svc is None:
            svc = self._services[k] = _Service(*k)
        return svc

    @staticmethod
    def _instance(raw: Any, svc: _Service) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw.get("ip"):
            raise NamingError(INVALID_PARAM, "instance with an ip is required")
        port = strict.ascii_int(raw.get("port"), minimum=0, maximum=65535)
        weight = strict.finite_float(raw.get("weight", 1.0))
        if port is None or weight is None:
            raise NamingError(INVALID_PARAM, "instance port must be an integer 0..65535 and weight a finite number")
        cluster = str(raw.get("clusterName") or DEFAULT_CLUSTER)
        grouped = f"{svc.group}@@{svc.name}"
        return {
            "instanceId": raw.get("instanceId") or f"{raw['ip']}#{port}#{cluster}#{grouped}",
            "ip": str(raw["ip"]),
            "port": port,
            "weight": weight,
            "healthy": bool(raw.get("healthy", True)),
            "enabled": bool(raw.get("enabled", True)),
            "ephemeral": True,
            "clusterName": cluster,
            "serviceName": grouped,
            "metadata": dict(raw.get("metadata") or {}),
        }

    @staticmethod
    def _service_info(svc: _Service, clusters: str, healthy_only: bool) -> dict[str, Any]:
        wanted = {c for c in clusters.split(",") if c}
        hosts = [inst for (inst, _) in svc.instances.values()
                 if (not wanted or inst["clusterName"] in wanted) and (not healthy_only or inst["healthy"])]
        return {
            "name": svc.name,
            "groupName": svc.group,
            "clusters": clusters,
            "cacheMillis": 10000,
            "hosts": hosts,
            "lastRefTime": int(epoch_ms()),
            "checksum": "",
            "allIPs": False,
            "reachProtectionThreshold": False,
            "valid": True,
        }
