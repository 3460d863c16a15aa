"""What both runtimes keep about the nodes they started: a name -> node book under one lock,
closed once (``close()`` also runs at interpreter exit), so teardown reaches every node."""

from __future__ import annotations

import atexit
import threading
from typing import Generic, TypeVar

__all__ = ["NodeBook"]

N = TypeVar("N")


class NodeBook(Generic[N]):
    """Base of ``ProcessRuntime`` and ``DockerRuntime``. Subclasses define ``close()``, which
    starts with ``_begin_close()``; ``start()`` registers a node under ``_lock`` before it runs."""

    def __init__(self) -> None:
        self._nodes: dict[str, N] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def nodes(self) -> list[N]:
        with self._lock:
            return list(self._nodes.values())

    def _forget(self, name: str, node: N) -> None:
        """Drop ``node`` (a failed start), unless the name already belongs to a newer one."""
        with self._lock:
            if self._nodes.get(name) is node:
                del self._nodes[name]

    def _begin_close(self) -> list[N] | None:
        """Mark the book closed and return the nodes to stop; None when it was closed already."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            nodes = list(self._nodes.values())
        atexit.unregister(self.close)
        return nodes
