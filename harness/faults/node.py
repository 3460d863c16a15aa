"""Node faults: a peer's process (or container) killed, paused or restarted (SPEC TC-01, TC-06,
TC-09), by the runtime's own mechanism (recorded as ``via``)."""

from __future__ import annotations

from typing import Any

from harness.faults.base import Fault

READY_TIMEOUT_MS = 15_000  # a restarted peer must be ready again within this


class Kill(Fault):
    """SIGKILL the node's process group (a crash: no FIN from a graceful shutdown path, the
    kernel closes its sockets). Healing does nothing, or restarts it with ``restart_on_heal``."""

    name = "kill"
    APPLY_ACTION = "kill"
    HEAL_ACTION = "restart"

    def __init__(self, target: Any, *, restart_on_heal: bool = False, ready_timeout_ms: int = READY_TIMEOUT_MS,
                 **kw: Any) -> None:
        super().__init__(target, **kw)
        self.restart_on_heal = restart_on_heal
        self.ready_timeout_ms = ready_timeout_ms

    def params(self) -> dict[str, Any]:
        return {"restart_on_heal": self.restart_on_heal}

    def _apply(self) -> dict[str, Any] | None:
        pid, was_alive = self.target.pid, self.target.alive()
        self.target.kill()
        return {"pid": pid, "was_alive": was_alive}

    def _heal(self) -> dict[str, Any] | None:
        if self.restart_on_heal:
            self.target.restart(timeout_ms=self.ready_timeout_ms)
            return {"pid": self.target.pid}
        return None


class Pause(Fault):
    """SIGSTOP the node's group: it keeps its sockets (the kernel still accepts and ACKs) but
    answers nothing. Healing sends SIGCONT (TC-09)."""

    name = "pause"
    APPLY_ACTION = "pause"
    HEAL_ACTION = "resume"

    def _apply(self) -> dict[str, Any] | None:
        self.target.pause()
        return {"pid": self.target.pid}

    def _heal(self) -> dict[str, Any] | None:
        if not self.target.alive():  # killed or stopped meanwhile: nothing to continue
            return {"skipped": "node not running"}
        self.target.resume()
        return {"pid": self.target.pid}


class Restart(Fault):
    """Stop the node gracefully and start it again with the same spec, waiting for readiness.
    Apply-only: ``heal()`` has nothing to undo."""

    name = "restart"
    APPLY_ACTION = "restart"

    def __init__(self, target: Any, *, ready_timeout_ms: int = READY_TIMEOUT_MS, **kw: Any) -> None:
        super().__init__(target, **kw)
        self.ready_timeout_ms = ready_timeout_ms

    def _apply(self) -> dict[str, Any] | None:
        pid_before = self.target.pid
        self.target.restart(timeout_ms=self.ready_timeout_ms)
        return {"pid_before": pid_before, "pid": self.target.pid}

    def _heal(self) -> dict[str, Any] | None:
        return None
