"""Steps of the per-client-IP limit case (SR-10): the IP a client reports, a server filled to its
limit by raw probes reporting that IP, a watch of that IP's tally, the over-limit reset and close,
the client landing on its other server, and the per-IP balance from the server's events log."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from harness.peers import PeerManifest
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import POLL_MS, RESET_ANSWER_TIMEOUT_MS, TOLERANCE_MS, HealthBound, reconnect_ms
from harness.scenarios.nacos import wait_registered
from harness.topology import NacosClientHandle, NacosServerHandle
from harness.wait import WaitTimeout, eventually, now_ms

SCOUT_EXIT_MS = 5000
REF_CLIENT_IP = "10.0.10.10"  # what a peer with a client_ip knob is told to report


class LimitWatch:
    """Samples the limited server: the IP's tally in ``current``, its per-IP counter, and every
    id of that IP besides the probes (the client must never be one of them)."""

    def __init__(self, cf, server: NacosServerHandle, ip: str, limit: int, probe_ids: list[str],
                 has_events: bool) -> None:
        self.cf, self.server, self.ip, self.limit = cf, server, ip, limit
        self.probe_ids, self.has_events = set(probe_ids), has_events
        self.max_tally = self.max_counter = self.samples = 0
        self.over: list[dict[str, Any]] = []  # samples above the limit
        self.foreign_ids: set[str] = set()

    def sample(self) -> dict[str, Any]:
        current = self.server.admin.current()
        mine = sorted(cid for cid, e in current.items() if e.get("metaInfo", {}).get("clientIp") == self.ip)
        counter = self.server.admin.client_ip_counts().get(self.ip, 0) if self.has_events else len(mine)
        self.samples += 1
        self.max_tally = max(self.max_tally, len(mine))
        self.max_counter = max(self.max_counter, counter)
        self.foreign_ids.update(cid for cid in mine if cid not in self.probe_ids)
        if len(mine) > self.limit or counter > self.limit:
            seen = {"t_ms": round(self.cf.history.elapsed_ms(), 1), "ids": mine, "counter": counter}
            self.over.append(seen)
            self.cf.history.observe("over_limit", seen)
        return {"ids": mine, "counter": counter}

    @property
    def held(self) -> bool:
        return not self.over and not self.foreign_ids

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "max in current": self.max_tally, "max per-IP counter": self.max_counter,
                "ids of the IP besides the probes": sorted(self.foreign_ids), "over": self.over[:5]}

    def check_held(self) -> None:
        self.cf.check(self.held, expected=f"{self.ip} never above {self.limit} in current or the per-IP count "
                                          "on A; the client never registered there", actual=self.summary())


def reported_client_ip(cf, topology, client_peer, spare: NacosServerHandle) -> tuple[str, dict[str, Any]]:
    """The IP the client under test reports, and the knobs that make it so: told through its
    ``client_ip`` knob, or read from a scout instance's ``/state`` meta (nacos-sdk-python reports
    the host's interface IP). UNIMPLEMENTED when the client reports none."""
    if client_peer.supports("client_ip"):
        return REF_CLIENT_IP, {"client_ip": REF_CLIENT_IP}
    with spare.proxy.down():  # the scout must not connect anywhere
        scout = topology.nacos_client(peer=client_peer, servers=[spare])
        ip = (scout.control.state().get("meta") or {}).get("client_ip")
        # SIGTERM, SIGKILL after the grace: the scout's own shutdown is not under test here.
        exit_code = scout.node.stop(timeout_ms=SCOUT_EXIT_MS)
    cf.history.observe("reported_client_ip", {"peer": client_peer.name, "client_ip": ip, "scout_exit": exit_code})
    if not ip:
        cf.unimplemented(f"{client_peer.name} reports no client IP in /state meta.client_ip; SR-10 limits that IP")
    return ip, {}


@dataclass
class Filled:
    watch: LimitWatch
    probe_ids: list[str]
    push_seq: int
    event_seq: int


def fill_to_limit(cf, stack: ExitStack, server: NacosServerHandle, ip: str, limit: int, has_events: bool) -> Filled:
    """Baseline: ``limit`` raw connections reporting ``ip`` register on ``server`` (the limit
    allows n), and its per-IP count says so. Returns the watch and where the logs stood."""
    probe_ids = []
    for _ in range(limit):
        probe = stack.enter_context(RawNacosConnection(server.host, server.proxied_grpc_port, client_ip=ip))
        probe_ids.append(probe.server_check().body.get("connectionId"))
        probe.setup()
    try:
        wait_registered(cf.history, server, timeout_ms=3000, count=limit)
    except WaitTimeout as exc:
        cf.fail(expected=f"baseline: {limit} connections reporting {ip} register (the limit allows n)",
                actual=sorted(exc.last or {}), hint="the server refuses connections under the limit")
    watch = LimitWatch(cf, server, ip, limit, probe_ids, has_events)
    baseline = watch.sample()
    cf.check(baseline["counter"] == limit and sorted(baseline["ids"]) == sorted(probe_ids),
             expected=f"baseline: {ip} has {limit} registered connections and per-IP count {limit}", actual=baseline)
    push_seq = max((p["seq"] for p in server.admin.pushes()), default=0) if has_events else 0
    event_seq = max((e["seq"] for e in server.admin.events()), default=0) if has_events else 0
    return Filled(watch, probe_ids, push_seq, event_seq)


def expect_reset_and_close(cf, filled: Filled, client: NacosClientHandle, *, guard_ms: float) -> list[dict[str, Any]]:
    """The (n+1)-th connection (the client's) gets a ConnectResetRequest without a redirect, and
    its transport closes; the IP never passes n meanwhile. Returns the resets seen."""
    watch, server = filled.watch, filled.watch.server

    def rejections() -> list[dict[str, Any]]:
        watch.sample()
        return [p for p in server.admin.pushes(filled.push_seq)
                if p["type"] == codec.CONNECT_RESET_REQUEST and p["connectionId"] not in filled.probe_ids]

    try:  # until the server resets the client, or lets it in, which ends the wait at once
        rejected = eventually(rejections, timeout_ms=guard_ms, what="the limited server resets the client",
                              accept=lambda r: bool(r) or not watch.held, interval_ms=POLL_MS).value
    except WaitTimeout:
        rejected = []
    watch.check_held()
    if not rejected:
        cf.fail(expected=f"the (n+1)-th connection reporting {watch.ip} gets ConnectResetRequest "
                         f"(within {guard_ms:.0f} ms of the client's start)",
                actual={**watch.summary(), "client": client.control.state().get("events", [])[-5:]})
    first = rejected[0]
    cf.history.observe("reset_push", first)
    cf.check(first.get("body", {}).get("serverIp") in (None, ""),
             expected="the over-limit reset carries no redirect address", actual=first.get("body"))
    reset_id, close_ms = first["connectionId"], RESET_ANSWER_TIMEOUT_MS + 1000 + TOLERANCE_MS

    def closed() -> bool:
        watch.sample()
        return reset_id not in {t["id"] for t in server.admin.transports()}

    try:
        waited = eventually(closed, timeout_ms=close_ms, what=f"transport {reset_id} closed", interval_ms=POLL_MS)
    except WaitTimeout:
        cf.fail(expected=f"the rejected transport {reset_id} closed within {close_ms} ms of its reset",
                actual={"open transports": server.admin.transports()},
                hint="the server reset the connection but left its transport open")
    cf.history.observe("rejected_transport_closed", {"id": reset_id, "after_ms": round(waited.elapsed_ms)})
    return rejected


def watch_for(watch: LimitWatch, window_ms: float) -> None:
    """Sample the watch for ``window_ms`` (a server without extensions: the client must at
    least never show up in its ``current``)."""
    started = now_ms()
    eventually(lambda: (watch.sample(), now_ms() - started >= window_ms)[1], timeout_ms=window_ms + 1000,
               what="observation window", interval_ms=POLL_MS)


def expect_landed(cf, client: NacosClientHandle, spare: NacosServerHandle, watch: LimitWatch, *,
                  timeout_ms: float) -> Any:
    """The client ends up RUNNING and registered on its other server (its id re-read on every
    probe: it may switch once more on its way). Returns the wait's result."""
    def on_spare() -> dict[str, Any]:
        watch.sample()
        state = client.control.state()
        ids = spare.admin.current()
        cid = state.get("connection_id")
        return {"status": state.get("status"), "server": state.get("server"), "connection_id": cid,
                "registered on B": (cid in ids) if cid else len(ids) == 1}

    try:
        landed = eventually(on_spare, timeout_ms=timeout_ms, what=f"{client.name} RUNNING on B",
                            accept=lambda s: s["status"] == "RUNNING" and s["server"] == spare.main_address
                            and s["registered on B"], interval_ms=POLL_MS)
    except WaitTimeout as exc:
        cf.fail(expected=f"{client.name} RUNNING and registered on its other server {spare.main_address} "
                         f"within {timeout_ms:.0f} ms of its return", actual=exc.last)
        raise
    cf.history.observe("landed", {**landed.value, "after_ms": round(landed.elapsed_ms)})
    return landed


def expect_other_ip_registers(cf, stack: ExitStack, server: NacosServerHandle, other_ip: str) -> None:
    """A connection reporting another IP registers (the limit is per IP); it stays open until
    the case's stack closes."""
    other = stack.enter_context(RawNacosConnection(server.host, server.proxied_grpc_port, client_ip=other_ip))
    other_id = other.server_check().body.get("connectionId")
    other.setup()
    try:
        wait_registered(cf.history, server, timeout_ms=1000 + TOLERANCE_MS, connection_id=other_id)
    except WaitTimeout as exc:
        cf.fail(expected=f"a connection reporting {other_ip} registers on A (other IPs unaffected)",
                actual=sorted(exc.last or {}))


def peak_live_from_events(filled: Filled) -> int:
    """The IP's most live registrations by the server's events log (exact where sampling is not),
    starting from the n probes."""
    watch = filled.watch
    live = peak = watch.limit
    for e in watch.server.admin.events(filled.event_seq):
        if e.get("clientIp") == watch.ip:
            live += 1 if e["event"] == "connected" else -1
            peak = max(peak, live)
    return peak


def settle_ms(client_peer: PeerManifest, knobs: dict[str, Any]) -> float:
    """How long the client may take to give up a rejected connection and land on its other
    server: a health check failing through all its attempts, a backoff, a connect, and the wait
    for the reset's answer."""
    return HealthBound.of(client_peer, knobs).bound_ms + reconnect_ms(client_peer, knobs) + RESET_ANSWER_TIMEOUT_MS


def reset_guard_ms(client_peer: PeerManifest, knobs: dict[str, Any]) -> float:
    """Hang guard for the reset on the limited server: two ServerCheck timeouts, a backoff, then
    the settle time."""
    return (client_peer.timer("server_check_timeout_ms", knobs) * 2 + client_peer.timer("backoff_cap_ms", knobs)
            + settle_ms(client_peer, knobs))


def expect_ip_held(cf, filled: Filled, final: dict[str, Any], counts: dict[str, int] | None, *,
                   other_ip: str) -> dict[str, Any]:
    """After it all: the IP never above its limit by the events log (where there is one), and at
    exactly the limit (the probes) in ``current`` and its per-IP count; the other IP at 1.
    Returns the events-log balance for the OK message."""
    watch, ip, limit = filled.watch, filled.watch.ip, filled.watch.limit
    balance = {"peak live registrations of the IP (events log)": peak_live_from_events(filled)} \
        if watch.has_events else {}
    cf.check(not balance or balance["peak live registrations of the IP (events log)"] <= limit,
             expected=f"{ip} never has more than {limit} live registrations (events log)", actual=balance)
    cf.check(watch.held and sorted(final["ids"]) == sorted(filled.probe_ids) and final["counter"] == limit
             and (counts is None or counts == {ip: limit, other_ip: 1}),
             expected=f"after it all: {ip} at {limit} (the probes) in current and per-IP count; "
                      f"{{{ip}: {limit}, {other_ip}: 1}}",
             actual={**watch.summary(), "final": final, "clientIpCounts": counts})
    return balance
