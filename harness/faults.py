"""One fault vocabulary for cases and chaos sessions (SPEC TC-02..TC-09, TC-08's seeded soak).

A fault is a small object with ``name``, ``apply()`` and ``heal()``, also a context manager::

    with Blackhole(server.proxy, history=h):
        ...  # the link is dead; leaving the block heals it

``heal()`` is idempotent and a no-op for a fault never applied, so cleanup can always call it.
Every apply/heal is written to the history. Proxy faults write only ``fault_begin``/``fault_end``
(naming the vocabulary fault): the toxics and proxy down/up themselves are recorded by the
topology's proxy event hook, so recording them here would count them twice. Node faults write
``fault``/``healed`` events (kill, pause/resume, restart) with the pid and ``via``: how the
runtime did it (process: signals to the process group; docker: ``docker kill``, ``docker pause``
/``unpause``, ``docker stop`` + ``start`` of the same container).

Seeded schedules of these faults (chaos sessions, the TC-08 soak) live in ``harness.chaos``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from harness.errors import HarnessError
from harness.observe.history import History
from harness.toxiproxy import NotFound
from harness.toxiproxy import toxics as tx
from harness.wait import now_ms

__all__ = [
    "FAULTS", "Blackhole", "Fault", "Kill", "Latency", "Pause", "ProxyDown", "ResetPeer", "Restart",
    "Role", "check_fault_params", "fault_class", "fault_from_spec",
]

Role = Literal["proxy", "node"]


def _via(node: Any, action: str) -> dict[str, str]:
    """How the node's runtime carries out a node fault (``MECHANISMS`` of ProcessNode/DockerNode:
    a process-group signal, or ``docker kill``/``pause``/``restart``), for the history."""
    how = getattr(node, "MECHANISMS", {}).get(action)
    return {"via": how} if how else {}
READY_TIMEOUT_MS = 15_000  # a restarted peer must be ready again within this


class Fault:
    """Base of every fault: applied state and history records. Subclasses set ``name`` (the
    registry key) and ``ROLE``, and implement ``_apply``/``_heal``, which return extra detail
    for the history (a node fault's ``_heal`` returns None when it had nothing to undo)."""

    name: ClassVar[str] = ""
    ROLE: ClassVar[Role] = "node"
    APPLY_ACTION: ClassVar[str] = ""  # node faults: the history's fault/healed actions
    HEAL_ACTION: ClassVar[str] = ""

    def __init__(self, target: Any, *, history: History | None = None, label: str | None = None) -> None:
        self.target = target
        self.history = history
        self.label = label  # the schedule's name for the target ("server-0"), when it has one
        self._applied = False

    @property
    def applied(self) -> bool:
        return self._applied

    @property
    def target_name(self) -> str:
        return str(getattr(self.target, "name", self.target))

    def params(self) -> dict[str, Any]:
        """The fault's parameters, as recorded and as ``fault_from_spec`` accepts them."""
        return {}

    def apply(self) -> None:
        if self._applied:
            raise HarnessError(f"{self!r} is already applied; heal() it before applying it again")
        proxy = self.ROLE == "proxy"
        if proxy:  # before the toxics, so the window encloses their events
            self._record("fault_begin")
        t0 = now_ms()
        try:
            detail = self._apply()
        except BaseException as exc:
            if proxy:
                self._record("fault_end", error=repr(exc))
            raise
        self._applied = True
        if not proxy:
            self._record("fault", action=self.APPLY_ACTION, took_ms=round(now_ms() - t0, 1),
                         **_via(self.target, self.APPLY_ACTION), **(detail or {}))

    def heal(self) -> None:
        """Undo the fault; a no-op when it is not applied (so calling it twice is fine)."""
        if not self._applied:
            return
        t0 = now_ms()
        detail = self._heal()
        self._applied = False
        took_ms = round(now_ms() - t0, 1)
        if self.ROLE == "proxy":
            self._record("fault_end", took_ms=took_ms, **(detail or {}))
        elif detail is not None:
            self._record("healed", action=self.HEAL_ACTION, took_ms=took_ms, **_via(self.target, self.HEAL_ACTION),
                         **detail)

    def __enter__(self) -> Fault:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({self.target_name!r}{params})"

    def _apply(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _heal(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _record(self, kind: str, **fields: Any) -> None:
        if self.history is not None:
            label = {"label": self.label} if self.label is not None else {}
            self.history.append(kind, fault=self.name, target=self.target_name, **label, params=self.params(), **fields)


# -- proxy faults ------------------------------------------------------------------------------


class _ProxyFault(Fault):
    """A fault made of toxics on one ``harness.toxiproxy.Proxy`` (or of disabling it)."""

    ROLE: ClassVar[Role] = "proxy"

    def _toxics(self) -> list[tx.Toxic]:
        return []

    def _apply(self) -> dict[str, Any] | None:
        added: list[str] = []
        try:
            for toxic in self._toxics():
                added.append(self.target.add_toxic(toxic))
        except BaseException:
            for name in added:  # leave no half-applied fault behind
                self.target.remove_toxic(name, missing_ok=True)
            raise
        return None

    def _heal(self) -> dict[str, Any] | None:
        for toxic in self._toxics():
            self.target.remove_toxic(toxic.toxic_name, missing_ok=True)  # gone with /reset or the proxy
        return None


class ProxyDown(_ProxyFault):
    """Disable the proxy: live connections get a FIN on both sides, new connects ECONNREFUSED.
    Healing re-enables it on the same address (TC-02)."""

    name = "proxy_down"

    def _apply(self) -> dict[str, Any] | None:
        self.target.disable()
        return None

    def _heal(self) -> dict[str, Any] | None:
        try:
            self.target.enable()
        except NotFound:  # the proxy was deleted meanwhile: nothing left to heal
            return {"skipped": "proxy deleted"}
        return None


class ResetPeer(_ProxyFault):
    """Close connections with an RST ``timeout_ms`` after the first chunk on ``stream`` (TC-03).

    Installed-before-connect semantics (``installed_before_connect = True``): Toxiproxy sets
    linger 0 (hence RST) only on connections *opened while the toxic is installed*; an existing
    connection gets a plain FIN instead, and an idle one is never touched (the toxic waits for a
    chunk). So apply this fault, then make the peer (re)connect. It keeps resetting every new
    connection until healed; healing does not undo linger 0 on connections made meanwhile.
    """

    name = "reset_peer"
    installed_before_connect: ClassVar[bool] = True

    def __init__(self, target: Any, *, timeout_ms: int = 0, stream: tx.Stream = "upstream", **kw: Any) -> None:
        super().__init__(target, **kw)
        self.toxic = tx.ResetPeer(timeout_ms=timeout_ms, stream=stream, name=f"fault_reset_peer_{stream}")

    def params(self) -> dict[str, Any]:
        return {"timeout_ms": self.toxic.timeout_ms, "stream": self.toxic.stream}

    def _toxics(self) -> list[tx.Toxic]:
        return [self.toxic]


class Blackhole(_ProxyFault):
    """Drop all data both ways (``timeout`` toxics with ``timeout_ms=0`` on both streams); the
    connections stay open. Application-level: Toxiproxy terminates TCP, so the kernel keeps
    ACKing and only application keepalives notice (TC-04, TC-05).

    Data is dropped, but either side's close (FIN) still crosses at once: v2.12.0's timeout
    toxic closes its stub when its input ends (measured: a client's close reached the upstream
    in 0.2 ms). To hold a dead registration, the peer must also be unable to close (pause it).

    Healing removes the toxics, and Toxiproxy *closes* every connection a timeout toxic held
    (data was lost): after a blackhole the peers must reconnect, they do not resume.
    """

    name = "blackhole"

    def _toxics(self) -> list[tx.Toxic]:
        return [tx.Timeout(timeout_ms=0, stream=s, name=f"fault_blackhole_{s}") for s in tx.STREAMS]


class Latency(_ProxyFault):
    """Delay each chunk on ``stream`` by ``latency_ms`` ± ``jitter_ms``; applies to live connections."""

    name = "latency"

    def __init__(self, target: Any, *, latency_ms: int, jitter_ms: int = 0, stream: tx.Stream = "downstream",
                 **kw: Any) -> None:
        super().__init__(target, **kw)
        self.toxic = tx.Latency(latency_ms=latency_ms, jitter_ms=jitter_ms, stream=stream,
                                name=f"fault_latency_{stream}")

    def params(self) -> dict[str, Any]:
        return {"latency_ms": self.toxic.latency_ms, "jitter_ms": self.toxic.jitter_ms, "stream": self.toxic.stream}

    def _toxics(self) -> list[tx.Toxic]:
        return [self.toxic]


# -- node faults -------------------------------------------------------------------------------


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


FAULTS: dict[str, type[Fault]] = {
    cls.name: cls for cls in (ProxyDown, ResetPeer, Blackhole, Latency, Kill, Pause, Restart)
}


def fault_class(kind: str) -> type[Fault]:
    try:
        return FAULTS[kind]
    except KeyError:
        raise HarnessError(f"unknown fault {kind!r}; known faults: {', '.join(sorted(FAULTS))}") from None


def check_fault_params(kind: str, params: Mapping[str, Any]) -> None:
    """Names against the fault's keyword parameters, values by building it on no target
    (constructors only validate and store), so a bad schedule fails before it runs."""
    cls = fault_class(kind)
    named = {
        n: p for n, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY and n not in ("history", "label")
    }
    unknown = sorted(set(params) - set(named))
    missing = sorted(n for n, p in named.items() if p.default is p.empty and n not in params)
    if unknown or missing:
        raise HarnessError(
            f"fault {kind!r}: parameters {dict(params)!r} " + (f"has unknown {unknown} " if unknown else "")
            + (f"lacks required {missing} " if missing else "") + f"(accepted: {sorted(named) or 'none'})"
        )
    cls(None, **params)


def fault_from_spec(kind: str, target: Any, *, history: History | None = None, label: str | None = None,
                    **params: Any) -> Fault:
    """Build fault ``kind`` (a ``FAULTS`` key) on ``target`` (a Proxy or a Node) with ``params``."""
    check_fault_params(kind, params)
    return fault_class(kind)(target, history=history, label=label, **params)
