"""Proxy faults: toxics on one Toxiproxy proxy, or the proxy disabled (L4; SPEC TC-02..TC-05)."""

from __future__ import annotations

from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.faults.base import Fault, Role
from harness.toxiproxy import NotFound
from harness.toxiproxy import toxics as tx


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
    NEW_CONNECTIONS_ONLY = True
    installed_before_connect: ClassVar[bool] = True

    def __init__(self, target: Any, *, timeout_ms: int = 0, stream: tx.Stream = "upstream", armed: bool = False,
                 **kw: Any) -> None:
        """``armed=True`` installs it at toxicity 0: connections opened meanwhile get linger 0 but
        their traffic is untouched until ``fire()`` raises the toxicity to 1 (TC-03, PL-15)."""
        super().__init__(target, **kw)
        self.armed = armed
        self.toxic = tx.ResetPeerToxic(timeout_ms=timeout_ms, stream=stream, toxicity=0.0 if armed else 1.0,
                                       name=f"fault_reset_peer_{stream}")

    def params(self) -> dict[str, Any]:
        return {"timeout_ms": self.toxic.timeout_ms, "stream": self.toxic.stream,
                **({"armed": True} if self.armed else {})}

    def fire(self) -> None:
        """An armed reset_peer goes live: the next chunk on its stream resets the connection."""
        if not self._applied:
            raise HarnessError(f"{self!r} is not applied; apply it (armed) before firing it")
        self.target.update_toxic(self.toxic.toxic_name, {}, toxicity=1.0)
        self._record("fault_fire")

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
        return [tx.TimeoutToxic(timeout_ms=0, stream=s, name=f"fault_blackhole_{s}") for s in tx.STREAMS]


class Latency(_ProxyFault):
    """Delay each chunk on ``stream`` by ``latency_ms`` ± ``jitter_ms``; applies to live connections."""

    name = "latency"

    def __init__(self, target: Any, *, latency_ms: int, jitter_ms: int = 0, stream: tx.Stream = "downstream",
                 **kw: Any) -> None:
        super().__init__(target, **kw)
        self.toxic = tx.LatencyToxic(latency_ms=latency_ms, jitter_ms=jitter_ms, stream=stream,
                                name=f"fault_latency_{stream}")

    def params(self) -> dict[str, Any]:
        return {"latency_ms": self.toxic.latency_ms, "jitter_ms": self.toxic.jitter_ms, "stream": self.toxic.stream}

    def _toxics(self) -> list[tx.Toxic]:
        return [self.toxic]
