"""Addresses and ports of a run. Everything binds to loopback (or to a namespace the harness
made); nothing hard-codes a port.

Addresses come from this process's run slot (``harness.slots``): servers get the slot's own
loopback block, so another run on the machine can never take a port we picked, and ports on
127.0.0.1 (the agents' control ports) come from the slot's own range. Within a host a port is
handed out once per process before the cursor wraps, so a TIME_WAIT left by an earlier case
(60 s on Linux) is stepped over rather than hit.
"""

from __future__ import annotations

import socket
import threading

from harness.netaddr import check_host
from harness.slots import current_slot

LOOPBACK = "127.0.0.1"
NACOS_GRPC_OFFSET = 1000  # Constants.SDK_GRPC_PORT_DEFAULT_OFFSET

# Ports on a slot's own addresses: above the well-known ones, below where main + 1000 could
# leave the 16-bit range.
_OWN_HOST_PORTS = range(20000, 60000)
_lock = threading.Lock()
_cursor: dict[str, int] = {}


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound right now (no SO_REUSEADDR: TIME_WAIT counts as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ports_for(host: str) -> range:
    slot = current_slot()
    if host == LOOPBACK:
        return slot.control_ports  # shared host: only the slot's own range
    return _OWN_HOST_PORTS


def free_port(*, also_free_offset: int | None = None, host: str = LOOPBACK) -> int:
    """A port that binds on ``host`` now; with ``also_free_offset`` port + offset too.

    Nacos main ports use ``also_free_offset=1000`` because the proxy for the server listens on
    main + 1000 (SPEC 4.1).
    """
    ports = _ports_for(host)
    with _lock:
        cur = _cursor.get(host, ports.start)
        for _ in range(len(ports)):
            port = cur
            cur = cur + 1 if cur + 1 < ports.stop else ports.start
            if not is_free(port, host):
                continue
            if also_free_offset is not None and not is_free(port + also_free_offset, host):
                continue
            _cursor[host] = cur
            return port
    raise OSError(f"no free port on {host} in {ports.start}..{ports.stop - 1} (slot {current_slot().index}); "
                  "close leftover peers")


def server_host(index: int) -> str:
    """The loopback address of the index-th server of a topology: 127.X.0.11, .12, ... of this
    run's slot.

    Nacos clients match a redirect's target by IP alone and take the port from their own list
    (RpcClient: "Recommend server is not in server list"), so servers sharing one IP could never
    be told apart by a redirect. One address per server keeps redirects meaningful on loopback.
    """
    return current_slot().server_host(index)


def http_server_host(index: int) -> str:
    """The loopback address of the index-th HTTP server of a topology: 127.X.2.11, .12, ...
    (its own range, so a case may hold Nacos and HTTP servers side by side)."""
    return current_slot().http_server_host(index)


def service_host() -> str:
    """Where this run's own services (Toxiproxy's API) listen."""
    return current_slot().service_host


def ephemeral_port() -> int:
    """A kernel-chosen free port (for things that don't need the per-worker range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_loopback(host: str, *, namespaced: bool = False) -> str:
    """Refuse any address outside 127.0.0.0/8 (network hygiene is a non-negotiable); with
    ``namespaced``, an address of a namespace the harness created (198.18.0.0/15) passes too.
    Names are never resolved (``harness.netaddr``). An address of a namespace this process made
    and still holds passes without being vouched for."""
    if not namespaced:
        from harness.placement.netns import owned_address

        namespaced = owned_address(host)
    return check_host(host, namespaced=namespaced)
