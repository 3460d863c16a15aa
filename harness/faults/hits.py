"""Did a fault touch anything? The live TCP connections of a fault's target, counted from the
kernel's tables just before the fault is applied and again just before it is healed (what it
held, or what came in while it was on). Recorded with the fault (``hit``) so a check that passed
while its fault hit nothing can say so.

- a proxy fault: the Toxiproxy side of the proxy's accepted connections (local = its listen
  address), i.e. the clients connected through it; and at heal, the connections the proxy accepted
  while the fault was on (Toxiproxy's own log, "Accepted client", from the offset at apply), which
  a latency or reset_peer acts on and which may be gone by the heal;
- a node fault (kill, pause): the established sockets the node's processes hold;
- a packet-level fault: every established socket in the server's network namespace, and at heal
  the packets its iptables rules dropped (their own counters).

None when the target's sockets cannot be seen from here (a container's, another machine's): the
hit is then unknown, never counted as zero.
"""

from __future__ import annotations

from typing import Any

from harness.errors import SetupError
from harness.observe.sockets import local_sockets, pids_by_inode, snapshot

__all__ = ["VACUOUS_PREFIX", "accepted_since", "live_connections", "log_offset", "summarize_hits", "vacuous"]

_ESTABLISHED = "ESTABLISHED"
_APPLY = ("fault_begin", "fault")
_HEAL = ("fault_end", "healed")
_HEAL_COUNTS = ("accepted_during", "dropped_packets")  # more evidence recorded at heal
_ACCEPTED = '"message":"Accepted client"'
VACUOUS_PREFIX = "VACUOUS OK: every fault hit nothing"


def summarize_hits(events: list[dict[str, Any]]) -> dict[str, int] | None:
    """Over a history's events: faults applied, how many touched a live connection (at apply or
    at heal), how many could not be measured. None when no fault was applied."""
    applied: dict[tuple[str, str], list[int | None]] = {}
    order: list[list[int | None]] = []
    for e in events:
        if "fault" not in e or "live_connections" not in e or e.get("error"):
            continue
        key = (str(e["fault"]), str(e.get("label") or e.get("target")))
        if e["kind"] in _APPLY:
            applied[key] = [e["live_connections"]]
            order.append(applied[key])
        elif e["kind"] in _HEAL and key in applied:
            applied.pop(key).extend([e["live_connections"], *(e[k] for k in _HEAL_COUNTS if k in e)])
    if not order:
        return None
    hit = sum(1 for counts in order if any(c for c in counts if c is not None))
    unknown = sum(1 for counts in order if not any(c for c in counts if c is not None) and None in counts)
    return {"faults": len(order), "hit": hit, "unknown": unknown}


def vacuous(hits: dict[str, int] | None) -> bool:
    """Faults were applied, each could be measured, and none touched a live connection."""
    return bool(hits) and hits["faults"] > 0 and hits["hit"] == 0 and hits["unknown"] == 0


def live_connections(target: Any, role: str) -> int | None:
    """Established connections of ``target`` for a fault of ``role`` ("proxy", "node", "link")."""
    try:
        if role == "proxy":
            return _proxy_connections(target)
        if role == "node":
            return _process_connections(_pids(target), own_only=True)
        if role == "link":
            return _process_connections(_pids(getattr(target, "node", None))[:1], own_only=False)
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _proxy_connections(proxy: Any) -> int | None:
    sockets = local_sockets(proxy.listen_host, proxy.listen_port)
    if not any(e.state == "LISTEN" for e in sockets) and getattr(proxy, "enabled", True):
        return None  # an enabled proxy listens where we cannot see (in a container): unknown
    return sum(1 for e in sockets if e.state == _ESTABLISHED)


def _pids(node: Any) -> list[int]:
    if node is None:
        return []
    try:
        return [int(p) for p in node.processes()]
    except (NotImplementedError, TypeError):
        return []


def _process_connections(pids: list[int], *, own_only: bool) -> int | None:
    """Established sockets in the network namespace of ``pids[0]``: those the processes hold
    (``own_only``), or all of them (a namespace's)."""
    if not pids:
        return None
    inodes = set(pids_by_inode(pids)) if own_only else set()
    try:  # the tables of the namespace the first process lives in
        entries = snapshot(paths=(f"/proc/{pids[0]}/net/tcp", f"/proc/{pids[0]}/net/tcp6"))
    except SetupError:
        return None
    return sum(1 for e in entries if e.state == _ESTABLISHED and (not own_only or e.inode in inodes))


def log_offset(proxy: Any) -> int | None:
    """Where the proxy's Toxiproxy log ends now (None: not a log this process can read)."""
    path = _log(proxy)
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def accepted_since(proxy: Any, offset: int | None) -> int | None:
    """Connections the proxy accepted since ``offset`` of its Toxiproxy's log."""
    path = _log(proxy)
    if path is None or offset is None:
        return None
    name = f'"name":"{proxy.name}"'
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return sum(1 for line in text.splitlines() if _ACCEPTED in line and name in line)


def _log(proxy: Any) -> Any:
    from harness.toxiproxy.server import log_of  # the server module starts processes: import late

    client = getattr(proxy, "_client", None)
    return log_of(client.url) if client is not None else None
