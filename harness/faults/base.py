"""The base of every fault: ``Fault`` (apply, heal, a context manager, history records) and
``Role`` (what a fault acts on: a proxy, a node, or — packet-level faults — a server's link,
i.e. the server handle whose network namespace the rules go in)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from harness.errors import HarnessError
from harness.faults.hits import accepted_since, live_connections, log_offset
from harness.observe.history import History
from harness.runtime.base import Node
from harness.wait import now_ms

Role = Literal["proxy", "node", "link"]  # link: a server's namespace (packet-level faults)


def _via(node: Node | Any, action: str) -> dict[str, str]:
    """How the node's runtime carries out a node fault (``Node.MECHANISMS``), for the history.
    A packet fault's target is a server handle, not a Node: it has no runtime mechanism."""
    how = node.MECHANISMS.get(action) if isinstance(getattr(node, "MECHANISMS", None), dict) else None
    return {"via": how} if how else {}


class Fault:
    """Base of every fault: applied state and history records. Subclasses set ``name`` (the
    registry key) and ``ROLE``, and implement ``_apply``/``_heal``, which return extra detail
    for the history (a node fault's ``_heal`` returns None when it had nothing to undo)."""

    name: ClassVar[str] = ""
    ROLE: ClassVar[Role] = "node"
    APPLY_ACTION: ClassVar[str] = ""  # node faults: the history's fault/healed actions
    HEAL_ACTION: ClassVar[str] = ""
    # A fault that acts on connections opened while it is on (reset_peer, syn_drop): the live
    # ones at apply and heal are not what it touches, so its hit is not counted (None).
    NEW_CONNECTIONS_ONLY: ClassVar[bool] = False

    def __init__(self, target: Any, *, history: History | None = None, label: str | None = None) -> None:
        self.target = target
        self.history = history
        self.label = label  # the schedule's name for the target ("server-0"), when it has one
        self._applied = False
        self._log_offset: int | None = None

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
        live = self._live()  # what the fault is about to touch (harness.faults.hits)
        if proxy:  # before the toxics, so the window encloses their events
            self._log_offset = log_offset(self.target)  # what it accepts while on is counted at heal
            self._record("fault_begin", live_connections=live)
        t0 = now_ms()
        try:
            detail = self._apply()
        except BaseException as exc:
            if proxy:
                self._record("fault_end", error=repr(exc))
            raise
        self._applied = True
        if not proxy:
            self._record("fault", action=self.APPLY_ACTION, took_ms=round(now_ms() - t0, 1), live_connections=live,
                         **_via(self.target, self.APPLY_ACTION), **(detail or {}))

    def heal(self) -> None:
        """Undo the fault; a no-op when it is not applied (so calling it twice is fine)."""
        if not self._applied:
            return
        live = self._live()  # what it held, or what came in while it was on
        accepted = accepted_since(self.target, self._log_offset) if self.ROLE == "proxy" else None
        t0 = now_ms()
        detail = self._heal()
        self._applied = False
        took_ms = round(now_ms() - t0, 1)
        if self.ROLE == "proxy":
            self._record("fault_end", took_ms=took_ms, live_connections=live, accepted_during=accepted, **(detail or {}))
        elif detail is not None:
            self._record("healed", action=self.HEAL_ACTION, took_ms=took_ms, live_connections=live,
                         **_via(self.target, self.HEAL_ACTION), **detail)

    def __enter__(self) -> Fault:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({self.target_name!r}{params})"

    def _live(self) -> int | None:
        return None if self.NEW_CONNECTIONS_ONLY else live_connections(self.target, self.ROLE)

    def _apply(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _heal(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _record(self, kind: str, **fields: Any) -> None:
        if self.history is not None:
            label = {"label": self.label} if self.label is not None else {}
            self.history.append(kind, fault=self.name, target=self.target_name, **label, params=self.params(), **fields)
