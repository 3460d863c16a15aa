"""SR — limits at registration: the per-client-IP limit (SPEC §5 SR-10; research/nacos-protocol.md
§2.4, §2.5 — the 2.1.x ``countLimitPerClientIp`` rule, keyed by the client-*reported* IP).

Server A limits the IP the client under test reports to n and is filled to n by raw probes
reporting that IP; the client is given [A, B] with B's proxy down, so its only way in is A, which
must reset it and close its transport while keeping the IP at n. Then B comes back and the client
must end up registered there. Another IP must not be affected.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from fixtures.case import case
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.bounds import POLL_MS, RESET_ANSWER_TIMEOUT_MS, TOLERANCE_MS
from harness.scenarios.nacos import wait_registered
from harness.wait import WaitTimeout, eventually, now_ms

LIMIT = 2  # n
REF_CLIENT_IP = "10.0.10.10"  # what a peer with a client_ip knob is told to report
OTHER_IP = "10.0.10.11"
SCOUT_EXIT_MS = 5000
REF_CLIENT_KNOBS = {"health_interval_ms": 1000, "health_timeout_ms": 500, "backoff_cap_ms": 500,
                    "server_check_timeout_ms": 1000}


class _LimitWatch:
    """Samples server A: the IP's tally in ``current``, its per-IP counter, and every id seen."""

    def __init__(self, cf, server, ip: str, probe_ids: set[str], has_events: bool) -> None:
        self.cf, self.server, self.ip, self.probe_ids, self.has_events = cf, server, ip, probe_ids, has_events
        self.max_tally = 0
        self.max_counter = 0
        self.over: list[dict[str, Any]] = []  # samples above the limit
        self.foreign_ids: set[str] = set()  # ids of that IP registered besides the probes
        self.samples = 0

    def sample(self) -> dict[str, Any]:
        current = self.server.admin.current()
        mine = sorted(cid for cid, e in current.items() if e.get("metaInfo", {}).get("clientIp") == self.ip)
        counter = self.server.admin.client_ip_counts().get(self.ip, 0) if self.has_events else len(mine)
        self.samples += 1
        self.max_tally = max(self.max_tally, len(mine))
        self.max_counter = max(self.max_counter, counter)
        self.foreign_ids.update(cid for cid in mine if cid not in self.probe_ids)
        if len(mine) > LIMIT or counter > LIMIT:
            seen = {"t_ms": round(self.cf.history.elapsed_ms(), 1), "ids": mine, "counter": counter}
            self.over.append(seen)
            self.cf.history.observe("over_limit", seen)
        return {"ids": mine, "counter": counter}

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "max in current": self.max_tally, "max per-IP counter": self.max_counter,
                "ids of the IP besides the probes": sorted(self.foreign_ids)}


def _client_ip(cf, topology, client_peer, spare) -> tuple[str, dict[str, Any]]:
    """The IP the client under test reports: told through its knob, or read from a scout
    instance's ``/state`` meta (nacos-sdk-python reports the host's interface IP)."""
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


@case("SR-10", "MUST", timeout_s=120, subject="server")
def test_per_client_ip_limit_resets_the_extra_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Per-client-IP limit n: the (n+1)-th connection reporting that IP is reset and its transport closed; `current` and the per-IP count stay at n; other IPs unaffected; the client ends up registered elsewhere if it has another server."""
    nacos_server_peer.require_knobs(["count_limit_per_client_ip"])
    nacos_server_peer.require_capabilities(["limits"])
    has_events = nacos_server_peer.has_capability("events")
    (spare,) = topology.nacos_servers(1, peer=nacos_server_peer)  # B: no limit
    ip, knobs = _client_ip(cf, topology, nacos_client_peer, spare)
    (limited,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"count_limit_per_client_ip": {ip: LIMIT}})
    knobs.update({k: v for k, v in REF_CLIENT_KNOBS.items() if nacos_client_peer.supports(k)})
    timer = lambda name: nacos_client_peer.timer(name, knobs)  # noqa: E731
    # How long the client may take to give up a rejected connection and land on B: a health
    # check that fails through all its attempts, a backoff, then a connect attempt.
    settle_ms = (timer("health_interval_ms") + (timer("health_retry") + 1) * timer("health_timeout_ms")
                 + timer("backoff_cap_ms") + timer("server_check_timeout_ms") + timer("setup_wait_ms")
                 + RESET_ANSWER_TIMEOUT_MS + TOLERANCE_MS)

    with ExitStack() as stack:
        probes = [stack.enter_context(RawNacosConnection(limited.host, limited.proxied_grpc_port, client_ip=ip))
                  for _ in range(LIMIT)]
        probe_ids = []
        for probe in probes:
            probe_ids.append(probe.server_check().body.get("connectionId"))
            probe.setup()
        # Baseline: n connections of that IP are allowed, through the proxy.
        try:
            wait_registered(cf.history, limited, timeout_ms=3000, count=LIMIT)
        except WaitTimeout as exc:
            cf.fail(expected=f"baseline: {LIMIT} connections reporting {ip} register (the limit allows n)",
                    actual=sorted(exc.last or {}), hint="the server refuses connections under the limit")
        watch = _LimitWatch(cf, limited, ip, set(probe_ids), has_events)
        baseline = watch.sample()
        cf.check(baseline["counter"] == LIMIT and sorted(baseline["ids"]) == sorted(probe_ids),
                 expected=f"baseline: {ip} has {LIMIT} registered connections and per-IP count {LIMIT}",
                 actual=baseline)
        push_seq = max((p["seq"] for p in limited.admin.pushes()), default=0) if has_events else 0
        event_seq = max((e["seq"] for e in limited.admin.events()), default=0) if has_events else 0

        rejected: list[dict[str, Any]] = []
        with spare.proxy.down():
            client = topology.nacos_client(peer=nacos_client_peer, servers=[limited, spare], knobs=knobs)
            started = now_ms()

            def rejections() -> list[dict[str, Any]]:
                watch.sample()
                if not has_events:
                    return []
                return [p for p in limited.admin.pushes(push_seq)
                        if p["type"] == codec.CONNECT_RESET_REQUEST and p["connectionId"] not in probe_ids]

            guard_ms = timer("server_check_timeout_ms") * 2 + timer("backoff_cap_ms") + settle_ms
            if has_events:
                # Until A resets the client — or lets it in, which ends the wait at once.
                try:
                    rejected = eventually(rejections, timeout_ms=guard_ms, what="A resets the client's connection",
                                          accept=lambda r: bool(r or watch.over or watch.foreign_ids),
                                          interval_ms=POLL_MS).value
                except WaitTimeout:
                    rejected = []
                cf.check(not watch.over and not watch.foreign_ids,
                         expected=f"{ip} never above {LIMIT} in current or the per-IP count on A; "
                                  "the client never registered there",
                         actual={**watch.summary(), "over": watch.over[:5]})
                if not rejected:
                    cf.fail(expected=f"the (n+1)-th connection reporting {ip} gets ConnectResetRequest "
                                     f"(within {guard_ms} ms of the client's start)",
                            actual={**watch.summary(), "client": client.control.state().get("events", [])[-5:]})
                first = rejected[0]
                cf.history.observe("reset_push", first)
                reset_id = first["connectionId"]
                cf.check(first.get("body", {}).get("serverIp") in (None, ""),
                         expected="the over-limit reset carries no redirect address", actual=first.get("body"))

                def closed() -> bool:
                    watch.sample()
                    return reset_id not in {t["id"] for t in limited.admin.transports()}

                close_ms = RESET_ANSWER_TIMEOUT_MS + 1000 + TOLERANCE_MS
                try:
                    waited = eventually(closed, timeout_ms=close_ms, what=f"transport {reset_id} closed",
                                        interval_ms=POLL_MS)
                    cf.history.observe("rejected_transport_closed", {"id": reset_id,
                                                                     "after_ms": round(waited.elapsed_ms)})
                except WaitTimeout:
                    cf.fail(expected=f"the rejected transport {reset_id} closed within {close_ms} ms of its reset",
                            actual={"open transports": limited.admin.transports()},
                            hint="the server reset the connection but left its transport open")
            else:  # no extensions: at least the client must never show up in A's current
                eventually(lambda: (watch.sample(), now_ms() - started >= settle_ms)[1], timeout_ms=settle_ms + 1000,
                           what="observation window", interval_ms=POLL_MS)
            cf.check(not watch.over and not watch.foreign_ids,
                     expected=f"{ip} never above {LIMIT} in current or the per-IP count on A; the client never registered there",
                     actual={**watch.summary(), "over": watch.over[:5]})

        # B is back: the client must end up RUNNING there, and registered (its id re-read on every
        # probe: a client may switch once more on its way).
        def on_spare() -> dict[str, Any]:
            watch.sample()
            state = client.control.state()
            ids = spare.admin.current()
            cid = state.get("connection_id")
            return {"status": state.get("status"), "server": state.get("server"), "connection_id": cid,
                    "registered on B": (cid in ids) if cid else len(ids) == 1}

        try:
            landed = eventually(on_spare, timeout_ms=settle_ms + RESET_ANSWER_TIMEOUT_MS, what=f"{client.name} RUNNING on B",
                                accept=lambda s: s["status"] == "RUNNING" and s["server"] == spare.main_address
                                and s["registered on B"], interval_ms=POLL_MS)
        except WaitTimeout as exc:
            cf.fail(expected=f"{client.name} RUNNING and registered on its other server {spare.main_address} "
                             f"within {settle_ms + RESET_ANSWER_TIMEOUT_MS} ms of its return",
                    actual=exc.last)
            raise
        cf.history.observe("landed", {**landed.value, "after_ms": round(landed.elapsed_ms)})

        # Other IPs are unaffected by the limit on this one.
        with RawNacosConnection(limited.host, limited.proxied_grpc_port, client_ip=OTHER_IP) as other:
            other_id = other.server_check().body.get("connectionId")
            other.setup()
            try:
                wait_registered(cf.history, limited, timeout_ms=1000 + TOLERANCE_MS, connection_id=other_id)
            except WaitTimeout as exc:
                cf.fail(expected=f"a connection reporting {OTHER_IP} registers on A (other IPs unaffected)",
                        actual=sorted(exc.last or {}))
            final = watch.sample()
            counts = limited.admin.client_ip_counts() if has_events else None

    balance = None
    if has_events:
        # The events log is exact where sampling is not: the IP's live registrations never pass n.
        live, peak = LIMIT, LIMIT
        for e in limited.admin.events(event_seq):
            if e.get("clientIp") == ip:
                live += 1 if e["event"] == "connected" else -1
                peak = max(peak, live)
        balance = {"peak live registrations of the IP (events log)": peak}
        cf.check(peak <= LIMIT, expected=f"{ip} never has more than {LIMIT} live registrations (events log)",
                 actual=balance)
    cf.check(not watch.over and not watch.foreign_ids and sorted(final["ids"]) == sorted(probe_ids)
             and final["counter"] == LIMIT and (counts is None or counts == {ip: LIMIT, OTHER_IP: 1}),
             expected=f"after it all: {ip} at {LIMIT} (the probes) in current and per-IP count; "
                      f"{{{ip}: {LIMIT}, {OTHER_IP}: 1}}",
             actual={**watch.summary(), "final": final, "clientIpCounts": counts, "over": watch.over[:5]})
    cf.ok(f"{len(rejected)} reset(s) of the client on A; {ip} held at {LIMIT} over {watch.samples} samples; "
          f"client RUNNING on B after {landed.elapsed_ms:.0f} ms; {OTHER_IP} registered",
          expected=f"reset + close of the (n+1)-th, {ip} at {LIMIT}, client on B, other IP unaffected",
          actual={**watch.summary(), "resets": len(rejected), "clientIpCounts": counts, **(balance or {})})
