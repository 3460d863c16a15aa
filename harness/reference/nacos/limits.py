"""Connection limits: the 2.1.x rule model (research/nacos-protocol.md §2.5), the richest one.

Nacos 2.1.x ``ConnectionManager.checkLimit`` (tag 2.1.2), applied at registration, in order:

1. cluster-source connections are never limited;
2. total: ``countLimit > 0`` and the current SDK connection count ``>= countLimit`` -> deny;
3. per client IP (``countLimitPerClientIp[ip] >= 0``): allow iff the IP's count ``< n``;
4. per app (``countLimitPerClientApp[appName] >= 0``, appName not blank): allow iff the
   *IP's* count ``< n`` (2.1.x compares the per-IP counter here, not a per-app one);
5. per-IP default: ``countLimitPerClientIpDefault <= 0`` is unlimited, else the IP's count
   ``< n``.

The first rule that names the IP (or app) decides; a later rule is not consulted. Note the
asymmetry kept from 2.1.x: for the total and the default, 0 means unlimited as -1 does; for
an explicit per-IP or per-app entry, 0 denies every connection.

Pure functions over plain values: no sockets, no clock, so the rule model is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LimitRule", "LimitVerdict", "check_limit"]


@dataclass
class LimitRule:
    """The 2.1.x ``ConnectionLimitRule``; -1 everywhere means unlimited."""

    count_limit: int = -1
    count_limit_per_client_ip_default: int = -1
    count_limit_per_client_ip: dict[str, int] = field(default_factory=dict)
    count_limit_per_client_app: dict[str, int] = field(default_factory=dict)
    monitor_ip_list: frozenset[str] = frozenset()

    def traced(self, client_ip: str) -> bool:
        """``ConnectionManager.traced``: the IP is in ``monitorIpList``."""
        return client_ip in self.monitor_ip_list


@dataclass(frozen=True)
class LimitVerdict:
    allowed: bool
    rule: str  # which rule decided: cluster-exempt | total | per-ip | per-app | per-ip-default | none
    detail: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def check_limit(
    rule: LimitRule,
    *,
    client_ip: str,
    app_name: str,
    cluster_source: bool,
    sdk_count: int,
    ip_count: int,
) -> LimitVerdict:
    """Decide whether one more connection may register.

    ``sdk_count`` is the number of registered SDK-source connections now; ``ip_count`` the
    per-client-IP counter for ``client_ip`` now (it counts every registered connection of
    that reported IP, cluster ones included, as 2.1.x's ``connectionForClientIp`` does).
    """
    if cluster_source:
        return LimitVerdict(True, "cluster-exempt")
    if rule.count_limit > 0 and sdk_count >= rule.count_limit:
        return LimitVerdict(False, "total", f"sdk connections {sdk_count} >= countLimit {rule.count_limit}")
    per_ip = rule.count_limit_per_client_ip.get(client_ip)
    if per_ip is not None and per_ip >= 0:
        return _against("per-ip", ip_count, per_ip, client_ip)
    if app_name and app_name.strip():
        per_app = rule.count_limit_per_client_app.get(app_name)
        if per_app is not None and per_app >= 0:
            return _against("per-app", ip_count, per_app, client_ip)
    default = rule.count_limit_per_client_ip_default
    if default <= 0:
        return LimitVerdict(True, "none")
    return _against("per-ip-default", ip_count, default, client_ip)


def _against(name: str, ip_count: int, limit: int, client_ip: str) -> LimitVerdict:
    if ip_count < limit:
        return LimitVerdict(True, name)
    return LimitVerdict(False, name, f"client ip {client_ip} has {ip_count} connections, limit {limit}")
