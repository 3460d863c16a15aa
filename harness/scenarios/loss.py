"""Packet loss on a client's link during reset traffic (TC-18): the client on one of two
namespaced servers it reaches at their own addresses (``packet.client_on_one_of_two_direct``, so
its own TCP stack meets the loss, not the proxy's), one packet in N dropped both ways on both
servers' gRPC ports while its server resets it (SR-06) and the application keeps sending requests
(SR-15); then the loss heals and the client must end registered exactly once."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from harness.faults import PacketLoss
from harness.scenarios.bounds import CONTROL_ERRORS, POLL_MS, TOLERANCE_MS, EjectBound, reconnect_ms
from harness.scenarios.dead_links import Clock, rounded
from harness.scenarios.packet import DirectPair, MoveBound, transport_states
from harness.scenarios.reset import push_reset, request_once
from harness.scenarios.steps import brief
from harness.wait import WaitTimeout, eventually, now_ms

# One packet in N dropped each way (iptables' nth counter: deterministic, unlike its random mode,
# which cannot be seeded): 20 → 5 %, 3 → 33 % (the 1-in-N rate nearest 30 %).
LOSS_EVERY_NTH = (20, 3)
LOSS_WINDOW_MS = 4000  # requests go on under the loss this long after the reset was pushed
# A close (FIN) sent under the loss is retransmitted on Linux's doubling RTO (200 ms, 400 ms, ...):
# a few losses of it are made good within this of the heal. A lost RST is never sent again: only
# the server's own detection (its eject bound) ends that registration.
RETRANSMIT_ALLOWANCE_MS = 3000


@dataclass
class Registrations:
    """The client's state and every server's ``current`` ids, read together."""

    state: dict[str, Any]
    by_server: dict[str, list[str]]

    @property
    def ids(self) -> list[str]:
        return sorted(cid for ids in self.by_server.values() for cid in ids)

    def exactly_once(self) -> bool:
        cid = self.state.get("connection_id")
        return self.state.get("status") == "RUNNING" and cid is not None and self.ids == [cid]

    def problem(self) -> str:
        """What is wrong with these registrations, in the requirement's words."""
        ids, cid = self.ids, self.state.get("connection_id")
        if len(ids) > 1:
            return f"duplicate registration: {len(ids)} ids registered for one client ({self.by_server})"
        if not ids:
            return f"lost registration: no server holds the client ({brief(self.state)})"
        return f"registered as {ids[0]} while the client reports {brief(self.state)} (connection {cid})"


@dataclass
class LossPhase:
    every_nth: int
    reset_of: str  # the connection the reset was pushed for
    requests: dict[str, int]
    settled_ms: float | None  # after the heal; None: never within the bound
    end: Registrations
    stale: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # id → both ends' TCP states

    def observed(self) -> dict[str, Any]:
        return {"loss": f"1 in {self.every_nth} ({100 / self.every_nth:.0f} %)", "reset of": self.reset_of,
                "requests under loss": self.requests,
                "registered exactly once after the heal (ms)": rounded(self.settled_ms),
                "client at the end": brief(self.end.state), "current at the end": self.end.by_server,
                **({"stale registrations' sockets": self.stale} if self.stale else {})}


def settle_bound_ms(pair: DirectPair, server_peer, server_knobs: dict[str, Any]) -> int:
    """After the heal: the client may still detect a dead link and reconnect once, a close sent
    under the loss may still be in retransmission, and a transport whose RST was lost is the
    server's to find (its eject bound)."""
    move = MoveBound(pair.health, reconnect_ms(pair.client.peer, pair.client.knobs))
    return move.bound_ms + RETRANSMIT_ALLOWANCE_MS + EjectBound.of(server_peer, server_knobs).bound_ms + TOLERANCE_MS


def whose(stale: dict[str, dict[str, list[str]]]) -> str:
    """Who holds each stale registration, from both ends' sockets."""
    said = []
    for cid, ends in stale.items():
        client_end = ends.get("client side", [])
        if "ESTABLISHED" in client_end:
            said.append(f"{cid}: the client still holds its transport open (the client's leak)")
        elif set(client_end) <= {"TIME_WAIT"}:
            said.append(f"{cid}: the client closed it ({client_end or 'socket gone'}), the server still registers "
                        "it (the server's)")
        else:
            said.append(f"{cid}: the client's end is {client_end}, closing")
    return "; ".join(said)


def read_registrations(pair: DirectPair) -> Registrations:
    return Registrations(pair.client.control.state(),
                         {s.direct_address: sorted(s.admin.current()) for s in (pair.on, pair.other)})


def requests_for(cf, pair: DirectPair, window_ms: float) -> dict[str, int]:
    """Application requests back to back for ``window_ms`` (each bounded by the agent's own timeout)."""
    until, answers = now_ms() + window_ms, []
    while now_ms() < until:
        answers.append(request_once(cf, pair.client, "under loss", len(answers)))
    ok = sum(1 for a in answers if a.get("ok") is True)
    return {"sent": len(answers), "ok": ok, "failed": len(answers) - ok}


def reset_under_loss(cf, pair: DirectPair, *, every_nth: int, settle_ms: int) -> LossPhase:
    """Loss on both servers' gRPC ports; the client's server resets it while requests go on; heal;
    then wait (at most ``settle_ms``) until the client is registered exactly once."""
    before = read_registrations(pair)
    servers = {s.direct_address: s for s in (pair.on, pair.other)}
    origin = servers[before.state.get("server")]
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(PacketLoss(server, port=server.grpc_port, every_nth=every_nth, history=cf.history,
                                           label=server.node.name))
        push_reset(cf.history, origin, before.state["connection_id"])
        requests = requests_for(cf, pair, LOSS_WINDOW_MS)
    healed = Clock(cf)
    try:
        end = eventually(lambda: read_registrations(pair), accept=Registrations.exactly_once, timeout_ms=settle_ms,
                         what="the client registered exactly once", swallow=CONTROL_ERRORS, interval_ms=POLL_MS).value
        settled_ms = healed.since()
    except WaitTimeout as exc:
        end, settled_ms = exc.last if isinstance(exc.last, Registrations) else read_registrations(pair), None
    phase = LossPhase(every_nth, before.state["connection_id"], requests, settled_ms, end)
    if settled_ms is None:
        phase.stale = {cid: transport_states(pair, cid) for cid in end.ids if cid != end.state.get("connection_id")}
    cf.history.observe("loss_phase", phase.observed())
    return phase


def expect_registered_once(cf, phase: LossPhase, *, settle_ms: int) -> None:
    """FAILED when the client was not registered exactly once within ``settle_ms`` of the heal."""
    cf.check(phase.settled_ms is not None,
             expected=f"after 1-in-{phase.every_nth} loss healed: the client RUNNING and registered exactly once "
                      f"(its own connection id, on one server) within {settle_ms} ms",
             actual={"problem": phase.end.problem(), **({"whose": whose(phase.stale)} if phase.stale else {}),
                     **phase.observed()}, verdict="FAILED",
             hint="a transport left open after its switch, a close never acted on (duplicate), or a reconnect given up (lost)")
