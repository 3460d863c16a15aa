"""The kernel's TCP table (SPEC §4.6): which sockets sit in which state on which port.

Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` of the harness's network namespace, which the
process runtime's peers share, so both ends of every loopback connection are visible: the side
whose *local* port is the watched port (the server's sockets, LISTEN included) and the side whose
*remote* port is it (the clients'). Used for CLOSE_WAIT leak checks (TC-06, TC-08, TC-13),
TIME_WAIT surges (PL-02, PL-16) and connection counts (PL-01, TC-07).

Everything but ``snapshot``, ``pids_by_inode``, the waits and the sampler is a pure function of
text or entries. TIME_WAIT lasts 60 s on Linux: give each case fresh ports, or old sockets count.
A sampler sees states at its interval; a state shorter than that can be missed.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from harness.errors import SetupError
from harness.observe.history import History
from harness.wait import Waited, eventually, now_ms

__all__ = [
    "PROC_NET_TCP",
    "TCP_STATES",
    "Side",
    "SocketSampler",
    "TcpEntry",
    "TcpPair",
    "close_wait_on",
    "count",
    "local_sockets",
    "established_between",
    "owners",
    "parse_proc_net_tcp",
    "pids_by_inode",
    "snapshot",
    "state_counts",
    "time_wait_by_side",
    "wait_no_close_wait",
    "wait_state_count",
]

PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")

# include/net/tcp_states.h
TCP_STATES: dict[int, str] = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}

Side = Literal["any", "server", "client"]
_WAIT_INTERVAL_MS = 50.0  # /proc/net/tcp is O(all sockets) to generate: poll gently


@dataclass(frozen=True)
class TcpEntry:
    """One socket of the TCP table. ``inode`` is 0 for sockets no process holds (TIME_WAIT)."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str
    inode: int


class TcpPair(NamedTuple):
    """One connection to a port: its client-side and server-side sockets (None if not seen)."""

    client: TcpEntry | None
    server: TcpEntry | None


# -- parsing ---------------------------------------------------------------------------------


def _ip(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    # The kernel prints each 32-bit word of the address in host byte order.
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    v6 = ipaddress.IPv6Address(raw)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else str(v6)


def _endpoint(field: str) -> tuple[str, int]:
    hex_ip, _, hex_port = field.partition(":")
    return _ip(hex_ip), int(hex_port, 16)


def parse_proc_net_tcp(text: str, ports: Collection[int] | None = None) -> list[TcpEntry]:
    """Parse the text of ``/proc/net/tcp`` or ``/proc/net/tcp6`` (header line optional).

    With ``ports``, keep only entries whose local or remote port is one of them; lines are
    pre-filtered on the hex port text so a busy table costs little.
    """
    wanted = set(ports) if ports is not None else None
    needles = [f":{p:04X} " for p in wanted] if wanted is not None else None
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":"):
            continue  # header or blank
        if needles is not None and not any(n in line for n in needles):
            continue
        local_ip, local_port = _endpoint(fields[1])
        remote_ip, remote_port = _endpoint(fields[2])
        if wanted is not None and local_port not in wanted and remote_port not in wanted:
            continue
        code = int(fields[3], 16)
        entries.append(TcpEntry(local_ip, local_port, remote_ip, remote_port,
                                TCP_STATES.get(code, f"UNKNOWN_{code}"), int(fields[9])))
    return entries


def snapshot(ports: Collection[int] | None = None, *, paths: Iterable[str] | None = None) -> list[TcpEntry]:
    """The TCP table now (v4 and v6), optionally only entries whose local or remote port is in ``ports``.

    By default the host's tables and those of every network namespace this process placed a
    peer in (read through ``/proc/<pid>/net`` of a process inside): a namespaced server's own
    sockets are seen like any other."""
    entries: list[TcpEntry] = []
    read_any = False
    if paths is None:
        from harness.placement.netns import namespace_tcp_tables

        paths = (*PROC_NET_TCP, *namespace_tcp_tables())
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # tcp6 is absent when IPv6 is disabled; a namespace's process just ended
        read_any = True
        entries.extend(parse_proc_net_tcp(text, ports))
    if not read_any:
        raise SetupError(f"cannot read the TCP table ({', '.join(paths)}): socket observers need Linux /proc")
    return entries


# -- queries (pure) ----------------------------------------------------------------------------


def count(entries: Iterable[TcpEntry], *, state: str | None = None, local_port: int | None = None,
          remote_port: int | None = None, local_ip: str | None = None) -> int:
    """How many entries match every given criterion (``local_ip`` tells apart servers on the same
    port in different address blocks: parallel workers each run one)."""
    return sum(
        1 for e in entries
        if (state is None or e.state == state)
        and (local_ip is None or e.local_ip == local_ip)
        and (local_port is None or e.local_port == local_port)
        and (remote_port is None or e.remote_port == remote_port)
    )


def close_wait_on(entries: Iterable[TcpEntry], port: int) -> list[TcpEntry]:
    """CLOSE_WAIT sockets whose local port is ``port``: the server side got the client's FIN
    and never closed (the leak TC-13 catches). For a client-side leak use
    ``count(entries, state="CLOSE_WAIT", remote_port=port)``."""
    return [e for e in entries if e.state == "CLOSE_WAIT" and e.local_port == port]


def time_wait_by_side(entries: Iterable[TcpEntry], *, server_port: int) -> dict[str, int]:
    """TIME_WAIT per side of ``server_port``: the active closer keeps it. ``client`` counts
    sockets whose remote port is the server's, ``server`` those whose local port is."""
    sides = {"client": 0, "server": 0}
    for e in entries:
        if e.state == "TIME_WAIT":
            if e.remote_port == server_port:
                sides["client"] += 1
            elif e.local_port == server_port:
                sides["server"] += 1
    return sides


def local_sockets(host: str, port: int) -> list[TcpEntry]:
    """The sockets whose local address is ``host:port`` (a server's own, LISTEN included). The
    host matters: each run slot has its own 127.X addresses, so the same port number can belong
    to another run's peer (or its Toxiproxy) at the same moment."""
    return [e for e in snapshot([port]) if e.local_port == port and e.local_ip == host]


def established_between(entries: Iterable[TcpEntry], port: int) -> list[TcpPair]:
    """ESTABLISHED connections to ``port``, each once, its two sockets paired when both are in
    the table (a loopback connection shows both). ``len()`` is the number of connections."""
    pairs: dict[tuple[str, int, str, int], list[TcpEntry | None]] = {}
    for e in entries:
        if e.state != "ESTABLISHED":
            continue
        if e.local_port == port:  # server side: key on (server ip, port, client ip, client port)
            pairs.setdefault((e.local_ip, e.local_port, e.remote_ip, e.remote_port), [None, None])[1] = e
        elif e.remote_port == port:
            pairs.setdefault((e.remote_ip, e.remote_port, e.local_ip, e.local_port), [None, None])[0] = e
    return [TcpPair(c, s) for (c, s) in (pairs[k] for k in sorted(pairs))]


def state_counts(entries: Iterable[TcpEntry], ports: Iterable[int]) -> dict[int, dict[str, dict[str, int]]]:
    """``{port: {"server": {state: n}, "client": {state: n}}}``: "server" are sockets whose
    local port is ``port``, "client" those whose remote port is. Empty states are left out."""
    result: dict[int, dict[str, dict[str, int]]] = {p: {"server": {}, "client": {}} for p in ports}
    for e in entries:
        for port, side in ((e.local_port, "server"), (e.remote_port, "client")):
            if port in result:
                states = result[port][side]
                states[e.state] = states.get(e.state, 0) + 1
    return result


# -- owners ------------------------------------------------------------------------------------


def pids_by_inode(pids: Iterable[int] | None = None) -> dict[int, int]:
    """``{socket inode: pid}`` from the ``socket:[inode]`` links in ``/proc/<pid>/fd``.

    Only processes we may read (ours, normally: the peers we started) are seen. Reads every fd
    link of every pid given (all pids when None): call it when a leak is found, not in a loop.
    """
    if pids is None:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    found: dict[int, int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:  # gone, or not ours
            continue
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.setdefault(int(target[8:-1]), pid)
    return found


def owners(entries: Iterable[TcpEntry], pids: Iterable[int] | None = None) -> dict[int, int]:
    """``{inode: pid}`` for the entries whose owner is visible (tells whose socket leaked)."""
    inodes = {e.inode for e in entries if e.inode}
    if not inodes:
        return {}
    return {inode: pid for inode, pid in pids_by_inode(pids).items() if inode in inodes}


# -- bounded waits -----------------------------------------------------------------------------


def wait_no_close_wait(port: int, *, timeout_ms: float, history: History | None = None) -> Waited[list[TcpEntry]]:
    """Wait until no socket on local port ``port`` is in CLOSE_WAIT; records when in ``history``.

    Raises ``WaitTimeout`` whose ``last`` holds the CLOSE_WAIT entries still there.
    """
    waited = eventually(
        lambda: close_wait_on(snapshot([port]), port),
        accept=lambda left: not left,
        timeout_ms=timeout_ms,
        what=f"no CLOSE_WAIT on local port {port}",
        interval_ms=_WAIT_INTERVAL_MS,
    )
    if history is not None:
        history.observe("no_close_wait", {"port": port, "at_t_ms": round(history.relative_ms(waited.at_mono_ms), 3),
                                          "waited_ms": round(waited.elapsed_ms, 3)})
    return waited


def _side_count(entries: Iterable[TcpEntry], port: int, state: str, side: Side) -> int:
    return sum(
        1 for e in entries
        if e.state == state
        and ((side in ("any", "server") and e.local_port == port)
             or (side in ("any", "client") and e.remote_port == port))
    )


def wait_state_count(port: int, state: str, predicate: Callable[[int], bool], *, timeout_ms: float,
                     side: Side = "any", history: History | None = None) -> Waited[int]:
    """Wait until ``predicate(n)`` holds for n = sockets in ``state`` on ``port`` (``side``:
    "server" = local port, "client" = remote port, "any" = both). Raises ``WaitTimeout``."""
    waited = eventually(
        lambda: _side_count(snapshot([port]), port, state, side),
        accept=predicate,
        timeout_ms=timeout_ms,
        what=f"count of {state} sockets ({side} side) on port {port} to satisfy {getattr(predicate, '__name__', predicate)}",
        interval_ms=_WAIT_INTERVAL_MS,
    )
    if history is not None:
        history.observe("socket_state_count", {"port": port, "state": state, "side": side, "count": waited.value,
                                               "at_t_ms": round(history.relative_ms(waited.at_mono_ms), 3)})
    return waited


# -- sampler -----------------------------------------------------------------------------------


class SocketSampler:
    """Samples ``snapshot(ports)`` every ``interval_ms`` on a daemon thread and writes
    ``observe(name, state_counts(...))`` to ``history`` only when the counts change.

    ``samples`` keeps the same changes as ``(t_ms, counts)`` (history clock), so peaks can be read
    from it; ``last()`` is the latest counts. ``hosts``: count only sockets with one end on one of
    these addresses (another run slot can use the same port number on its own 127.X address). An error in the thread ends sampling and is
    re-raised by ``stop()`` (or ``check()``), so it fails the test that owns the sampler.
    """

    def __init__(self, history: History, ports: Collection[int], *, interval_ms: float = 100,
                 name: str = "sockets", hosts: Collection[str] | None = None) -> None:
        self.history = history
        self.ports = sorted(set(ports))
        self.hosts = frozenset(hosts) if hosts is not None else None
        self.interval_ms = interval_ms
        self.name = name
        self.samples: list[tuple[float, dict[int, dict[str, dict[str, int]]]]] = []
        self._last: dict[int, dict[str, dict[str, int]]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> SocketSampler:
        if self._thread is not None:
            raise RuntimeError(f"SocketSampler {self.name!r} already started")
        self._sample()  # first sample synchronously: a missing /proc fails here, not later
        self._thread = threading.Thread(target=self._run, name=f"socket-sampler-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (takes one last sample) and re-raise an error the thread met."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=max(5.0, 10 * self.interval_ms / 1000))
            if thread.is_alive():
                raise RuntimeError(f"SocketSampler {self.name!r} thread did not stop within 5 s")
            if self._error is None:
                self._sample()
        self.check()

    def check(self) -> None:
        """Re-raise the sampling thread's error, if any."""
        if self._error is not None:
            raise RuntimeError(f"SocketSampler {self.name!r} (ports {self.ports}) failed: {self._error!r}") from self._error

    def last(self) -> dict[int, dict[str, dict[str, int]]]:
        return _copy(self._last or {})

    def max_count(self, port: int, state: str, side: Literal["server", "client"] = "server") -> int:
        """The highest count of ``state`` on ``port`` (``side``) among the samples."""
        return max((c.get(port, {}).get(side, {}).get(state, 0) for _, c in self.samples), default=0)

    def _sample(self) -> None:
        entries = snapshot(self.ports)
        if self.hosts is not None:
            entries = [e for e in entries if e.local_ip in self.hosts or e.remote_ip in self.hosts]
        counts = state_counts(entries, self.ports)
        if counts != self._last:
            self._last = counts
            self.samples.append((round(self.history.elapsed_ms(), 3), _copy(counts)))
            self.history.observe(self.name, counts)

    def _run(self) -> None:
        next_ms = now_ms()
        try:
            while True:
                # Never catch up in a burst after a slow sample (a loaded machine): skip ahead.
                next_ms = max(next_ms + self.interval_ms, now_ms())
                # A timer, not synchronisation: wakes early only to stop.
                if self._stop.wait(max(0.0, next_ms - now_ms()) / 1000):
                    return
                self._sample()
        except BaseException as exc:  # surfaced by stop()/check() in the test's thread
            self._error = exc

    def __enter__(self) -> SocketSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _copy(counts: dict[int, dict[str, dict[str, int]]]) -> dict[int, dict[str, dict[str, int]]]:
    return {p: {side: dict(states) for side, states in sides.items()} for p, sides in counts.items()}
