"""The one place that decides whether an address may be bound or dialled (network hygiene is a
non-negotiable: loopback, or a namespace the harness made itself).

Addresses are parsed with ``ipaddress``; names are never resolved (``127.evil.example.com``
is a name, not an address). The one name accepted is ``localhost``, taken to mean 127.0.0.1
without asking a resolver. IPv6: ``::1`` and IPv4-mapped loopback (``::ffff:127.0.0.1``, how a
JVM's dual-stack listener shows an IPv4 bind) count as loopback; any other IPv6 address is
refused. ``198.18.0.0/15`` (the benchmarking range, RFC 2544) is allowed only where the caller
says the address belongs to a namespace the harness created.
"""

from __future__ import annotations

import ipaddress

__all__ = ["NAMESPACE_NETWORK", "check_host", "is_loopback", "is_namespace_address", "parse_ip"]

NAMESPACE_NETWORK = ipaddress.ip_network("198.18.0.0/15")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(host: str) -> IPAddress | None:
    """The address ``host`` names literally (brackets and a zone allowed for IPv6), or None for a
    name. ``localhost`` is 127.0.0.1."""
    text = host.strip()
    if text.lower() == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _as_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    return ip.ipv4_mapped


def is_loopback(ip: IPAddress | str) -> bool:
    """127.0.0.0/8, ``::1``, or an IPv4-mapped 127.0.0.0/8 address."""
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    v4 = _as_v4(ip)
    if v4 is not None:
        return v4 in ipaddress.IPv4Network("127.0.0.0/8")
    return ip == ipaddress.IPv6Address("::1")


def is_namespace_address(ip: IPAddress | str) -> bool:
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    v4 = _as_v4(ip)
    return v4 is not None and v4 in NAMESPACE_NETWORK


def check_host(host: str, *, namespaced: bool = False, what: str = "address") -> str:
    """``host`` as an address literal that may be used, or ValueError saying why not.

    ``namespaced=True``: the caller vouches that a 198.18.0.0/15 address belongs to a network
    namespace this harness created (placement records it); otherwise only loopback passes.
    """
    ip = parse_ip(host)
    if ip is None:
        raise ValueError(
            f"{what} {host!r} is not an IP address; connformance never resolves names "
            "(give a literal such as 127.0.0.1)"
        )
    if is_loopback(ip):
        return "127.0.0.1" if host.strip().lower() == "localhost" else str(ip)
    if namespaced and is_namespace_address(ip):
        return str(ip)
    allowed = "127.0.0.0/8 (or ::1)" + (" or 198.18.0.0/15" if namespaced else "")
    raise ValueError(f"{what} {host!r} is outside {allowed}; connformance only binds and dials loopback "
                     "and the namespaces it creates")
