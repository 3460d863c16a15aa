"""The runtime interface: how a peer runs. ``process`` is the embedded default; ``docker``
runs the same peers as containers behind the same Protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable


@dataclass
class LaunchSpec:
    """Everything a runtime needs to start one peer instance.

    ``argv``/``env`` are already expanded (placeholders filled, knobs applied) by the manifest
    layer. ``log_path`` receives the combined stdout/stderr.
    """

    name: str  # unique instance name within a run, e.g. "server-0" or "client-ref-1"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log_path: Path | None = None
    # Docker runtime only (ignored by the process runtime)
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Path, ...] = ()  # host directories bind-mounted at the same path
    # Containment (both runtimes): refuse socket(AF_INET*, SOCK_DGRAM) in the peer (seccomp)
    deny_ip_datagram_sockets: bool = False
    # Process runtime only: join this network namespace (its /run/netns path) before exec
    netns: str | None = None


@runtime_checkable
class Readiness(Protocol):
    """A readiness strategy handed to ``Runtime.start`` (STYLE.md: testcontainers wait strategies)."""

    description: str

    def is_ready(self, node: Node) -> bool: ...


@runtime_checkable
class Node(Protocol):
    """One running peer instance."""

    name: str
    # How this runtime carries out each node fault ("kill", "pause", "restart"), for the history:
    # a process-group signal, or ``docker kill``/``pause``/``restart``.
    MECHANISMS: ClassVar[Mapping[str, str]]

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def group_alive(self) -> bool:
        """True while any process of the node lives (its descendants too, however detached)."""

    def processes(self) -> list[int]:
        """Host pids of every live process of the node (for socket and listener checks)."""

    def leftovers(self) -> list[str]:
        """Descendants that outlived the node's stop and had to be ended by the harness
        (``"pid cmdline"``): a leak the case reports."""

    def stop(self, timeout_ms: int = 5000) -> int | None:
        """Graceful stop (SIGTERM to the group, SIGKILL after ``timeout_ms``); returns exit code."""

    def kill(self) -> None:
        """SIGKILL the whole process group, no grace (a crash)."""

    def pause(self) -> None:
        """SIGSTOP the group: the process holds its sockets but answers nothing."""

    def resume(self) -> None:
        """SIGCONT the group."""

    def restart(self, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000) -> None:
        """Stop and start again with the same spec (same ports), then wait for readiness."""

    def logs(self, tail_lines: int = 50) -> str: ...


class Runtime(Protocol):
    name: str

    def start(self, spec: LaunchSpec, readiness: Sequence[Readiness] = (), timeout_ms: int = 15000) -> Node:
        """Start and wait until every readiness strategy holds; on timeout raise SetupError
        carrying the last log lines, and leave nothing running."""

    def close(self) -> None:
        """Stop every node this runtime started (teardown of last resort)."""
