"""Packet-level faults (L3), in the network namespace of a placed peer: what Toxiproxy cannot make,
because it terminates TCP (its kernel ACKs, answers keepalives and accepts every connection).

Every fault is iptables rules (or the veth's link state) inside the peer's namespace, on the
traffic between the peer and the host end of its veth, which is where its proxy's connections
come from. Optionally narrowed to one connection (``peer=(ip, port)``: the 4-tuple the server's
connection id names). The same ``Fault`` interface and history records as the proxy and node
faults (``harness.faults.proxy``, ``harness.faults.node``): ``fault``/``healed`` with the rules and times.

| fault            | rules                                                               | what it makes |
|------------------|---------------------------------------------------------------------|---------------|
| ``syn_drop``     | INPUT ``--syn`` DROP                                                | a connect that is never answered (SYN_SENT until the caller's timeout) |
| ``silence``      | INPUT and/or OUTPUT DROP (``direction`` both / to_peer / from_peer)   | a half-open link: no FIN, no RST, no ACK (a pulled cable, a dead VM) |
| ``packet_loss``  | INPUT and OUTPUT ``statistic --mode nth --every N`` DROP             | deterministic loss of 1 in N packets each way (``every_nth``: 20 = 5 %) |
| ``link_down``    | ``ip link set <veth> down`` in the namespace                         | the interface gone: silence for every connection of the peer |

Needs the peer placed in a namespace (``[placement]`` or ``--placement netns``) and iptables
(Debian's package, installed by ``connformance setup`` as root); otherwise the fault raises
Unimplemented with the reason.
"""

from __future__ import annotations

import itertools
import shutil
from typing import Any, ClassVar

from harness.errors import Unimplemented
from harness.faults.base import Fault
from harness.observe.history import History
from harness.placement.netns import Namespace

__all__ = ["L3_FAULTS", "LinkDown", "PacketLoss", "Silence", "SynDrop", "namespace_of"]

_ids = itertools.count(1)


def namespace_of(target: Any) -> Namespace:
    """The namespace of a server handle (or a Namespace itself), or Unimplemented."""
    ns = target if isinstance(target, Namespace) else getattr(target, "namespace", None)
    if ns is None:
        name = getattr(getattr(target, "node", None), "name", target)
        raise Unimplemented(f"a packet-level fault needs {name} in a network namespace (a case that asks for one, "
                            "or --placement netns; as root); Toxiproxy alone cannot drop packets")
    return ns


class _NetFault(Fault):
    """Rules added at apply, removed (exactly those) at heal."""

    ROLE: ClassVar = "link"

    def __init__(self, target: Any, *, history: History | None = None, label: str | None = None,
                 port: int | None = None, peer: tuple[str, int] | None = None) -> None:
        super().__init__(target, history=history, label=label)
        # No target: a schedule's parameters being checked (``check_fault_params``), never applied.
        self.ns = namespace_of(target) if target is not None else None
        self.port = port  # the peer's own port (its gRPC port, say); None: every port
        self.peer = peer  # one remote end (the proxy's upstream socket); None: the host end as a whole
        self.tag = f"cf-fault-{next(_ids)}"
        self._rules: list[list[str]] = []

    @property
    def target_name(self) -> str:
        return getattr(getattr(self.target, "node", None), "name", None) or self.ns.name

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("port", self.port), ("peer", list(self.peer) if self.peer else None)) if v}

    def _match(self, chain: str) -> list[str]:
        """Packets of the host link (and the narrowing) in ``chain``: INPUT = to the peer."""
        remote, local = ("-s", "--sport"), ("--dport",)
        if chain == "OUTPUT":
            remote, local = ("-d", "--dport"), ("--sport",)
        ip, port = self.peer if self.peer else (self.ns.host_ip, None)
        rule = ["-p", "tcp", remote[0], ip]
        if port is not None:
            rule += [remote[1], str(port)]
        if self.port is not None:
            rule += [local[0], str(self.port)]
        return rule

    def _add(self, chain: str, extra: list[str]) -> None:
        if shutil.which("iptables") is None:
            raise Unimplemented("iptables is not installed (Debian package iptables; `connformance setup` as root)")
        rule = [chain, *self._match(chain), *extra, "-m", "comment", "--comment", self.tag, "-j", "DROP"]
        self.ns.run("iptables", "-w", "-I", *rule)
        self._rules.append(rule)

    def dropped_packets(self) -> int | None:
        """Packets this fault's rules have dropped so far (iptables' own counters): proof that it
        hit something. None when the counters cannot be read."""
        total, marker = 0, f"/* {self.tag} */"
        for chain in sorted({rule[0] for rule in self._rules}):
            listing = self.ns.run("iptables", "-w", "-L", chain, "-v", "-x", "-n", check=False)
            if listing.returncode != 0:
                return None
            total += sum(int(line.split()[0]) for line in listing.stdout.splitlines() if marker in line)
        return total

    def _heal(self) -> dict[str, Any] | None:
        dropped = self.dropped_packets() if self._rules else None
        removed = []
        for rule in reversed(self._rules):
            self.ns.run("iptables", "-w", "-D", *rule, check=False)
            removed.append(" ".join(rule))
        self._rules.clear()
        return {"namespace": self.ns.name, "removed": removed, "dropped_packets": dropped}

    def _applied_detail(self) -> dict[str, Any]:
        return {"namespace": self.ns.name, "rules": [" ".join(r) for r in self._rules], **self.params()}


class SynDrop(_NetFault):
    """New connections to the peer are never answered (their SYNs dropped); live ones go on."""

    name = "syn_drop"
    NEW_CONNECTIONS_ONLY = True
    APPLY_ACTION = "syn_drop"
    HEAL_ACTION = "syn_accept"

    def _apply(self) -> dict[str, Any]:
        self._add("INPUT", ["--syn"])
        return self._applied_detail()


class Silence(_NetFault):
    """Every packet dropped, both ways or one: no FIN, no RST, no ACK (``direction`` ``both``,
    ``to_peer``: what the host sends is lost, ``from_peer``: what the peer sends is lost)."""

    name = "silence"
    APPLY_ACTION = "silence"
    HEAL_ACTION = "unsilence"
    DIRECTIONS = ("both", "to_peer", "from_peer")

    def __init__(self, target: Any, *, direction: str = "both", **kw: Any) -> None:
        if direction not in self.DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {self.DIRECTIONS}")
        super().__init__(target, **kw)
        self.direction = direction

    def params(self) -> dict[str, Any]:
        return {**super().params(), "direction": self.direction}

    def _apply(self) -> dict[str, Any]:
        if self.direction in ("both", "to_peer"):
            self._add("INPUT", [])
        if self.direction in ("both", "from_peer"):
            self._add("OUTPUT", [])
        return self._applied_detail()


class PacketLoss(_NetFault):
    """One packet in ``every_nth`` dropped, each way, deterministically (iptables' nth counter;
    its random mode cannot be seeded). 20 → 5 %, 3 → 33 %."""

    name = "packet_loss"
    APPLY_ACTION = "packet_loss"
    HEAL_ACTION = "no_loss"

    def __init__(self, target: Any, *, every_nth: int = 20, **kw: Any) -> None:
        if every_nth < 2:
            raise ValueError(f"every_nth must be >= 2, got {every_nth}")
        super().__init__(target, **kw)
        self.every_nth = every_nth

    def params(self) -> dict[str, Any]:
        return {**super().params(), "every_nth": self.every_nth, "loss_percent": round(100 / self.every_nth, 1)}

    def _apply(self) -> dict[str, Any]:
        for chain in ("INPUT", "OUTPUT"):
            self._add(chain, ["-m", "statistic", "--mode", "nth", "--every", str(self.every_nth), "--packet", "0"])
        return self._applied_detail()


class LinkDown(_NetFault):
    """The peer's end of its veth down: the cable pulled (every connection silent)."""

    name = "link_down"
    APPLY_ACTION = "link_down"
    HEAL_ACTION = "link_up"

    def _apply(self) -> dict[str, Any]:
        self.ns.link(up=False)
        return {"namespace": self.ns.name, "interface": self.ns.peer_if}

    def _heal(self) -> dict[str, Any]:
        self.ns.link(up=True)
        return {"namespace": self.ns.name, "interface": self.ns.peer_if}


L3_FAULTS: dict[str, type[Fault]] = {f.name: f for f in (SynDrop, Silence, PacketLoss, LinkDown)}
