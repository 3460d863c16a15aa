"""The one vocabulary: every fault by name (proxy, node and packet-level), and building one from a
schedule's spec with its parameters checked first."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError
from harness.faults.base import Fault
from harness.faults.node import Kill, Pause, Restart
from harness.faults.packet import LinkDown, PacketLoss, Silence, SynDrop
from harness.faults.proxy import Blackhole, Latency, ProxyDown, ResetPeer
from harness.observe.history import History

FAULTS: dict[str, type[Fault]] = {
    cls.name: cls for cls in (ProxyDown, ResetPeer, Blackhole, Latency, Kill, Pause, Restart,
                              SynDrop, Silence, PacketLoss, LinkDown)
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
    """Build fault ``kind`` (a ``FAULTS`` key) on ``target`` (a Proxy, a Node, or a namespaced server for a packet-level fault) with ``params``."""
    check_fault_params(kind, params)
    return fault_class(kind)(target, history=history, label=label, **params)
