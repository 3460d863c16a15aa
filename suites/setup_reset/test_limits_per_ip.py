"""SR — limits at registration: the per-client-IP limit (SPEC §5 SR-10; research/nacos-protocol.md
§2.4, §2.5 — the 2.1.x ``countLimitPerClientIp`` rule, keyed by the client-*reported* IP).

Server A limits the IP the client under test reports to n and is filled to n by raw probes
reporting that IP; the client is given [A, B] with B's proxy down, so its only way in is A, which
must reset it and close its transport while keeping the IP at n. Then B comes back and the client
must end up registered there. Another IP must not be affected.
"""

from __future__ import annotations

from contextlib import ExitStack

from fixtures.case import case
from harness.scenarios.bounds import RESET_ANSWER_TIMEOUT_MS, supported
from harness.scenarios.limits import (
    expect_ip_held,
    expect_landed,
    expect_other_ip_registers,
    expect_reset_and_close,
    fill_to_limit,
    reported_client_ip,
    reset_guard_ms,
    settle_ms,
    watch_for,
)

LIMIT = 2  # n
OTHER_IP = "10.0.10.11"
REF_CLIENT_KNOBS = {"health_interval_ms": 1000, "health_timeout_ms": 500, "backoff_cap_ms": 500,
                    "server_check_timeout_ms": 1000}


@case("SR-10", "MUST", timeout_s=120, subject="server")
def test_per_client_ip_limit_resets_the_extra_connection(cf, topology, nacos_server_peer, nacos_client_peer):
    """Per-client-IP limit n: the (n+1)-th connection reporting that IP is reset and its transport closed; `current` and the per-IP count stay at n; other IPs unaffected; the client ends up registered elsewhere if it has another server."""
    nacos_server_peer.require_knobs(["count_limit_per_client_ip"])
    nacos_server_peer.require_capabilities(["limits"])
    has_events = nacos_server_peer.has_capability("events")
    (spare,) = topology.nacos_servers(1, peer=nacos_server_peer)  # B: no limit
    ip, knobs = reported_client_ip(cf, topology, nacos_client_peer, spare)
    (limited,) = topology.nacos_servers(1, peer=nacos_server_peer, knobs={"count_limit_per_client_ip": {ip: LIMIT}})
    knobs.update(supported(nacos_client_peer, REF_CLIENT_KNOBS))
    settle = settle_ms(nacos_client_peer, knobs)
    rejected: list = []

    with ExitStack() as stack:
        filled = fill_to_limit(cf, stack, limited, ip, LIMIT, has_events)
        watch = filled.watch
        with spare.proxy.down():  # the client's only way in is the limited server
            client = topology.nacos_client(peer=nacos_client_peer, servers=[limited, spare], knobs=knobs)
            if has_events:
                rejected = expect_reset_and_close(cf, filled, client, guard_ms=reset_guard_ms(nacos_client_peer, knobs))
            else:
                watch_for(watch, settle)
            watch.check_held()
        landed = expect_landed(cf, client, spare, watch, timeout_ms=settle + RESET_ANSWER_TIMEOUT_MS)
        expect_other_ip_registers(cf, stack, limited, OTHER_IP)
        final = watch.sample()
        counts = limited.admin.client_ip_counts() if has_events else None

    balance = expect_ip_held(cf, filled, final, counts, other_ip=OTHER_IP)
    cf.ok(f"{len(rejected)} reset(s) of the client on A; {ip} held at {LIMIT} over {watch.samples} samples; "
          f"client RUNNING on B after {landed.elapsed_ms:.0f} ms; {OTHER_IP} registered",
          expected=f"reset + close of the (n+1)-th, {ip} at {LIMIT}, client on B, other IP unaffected",
          actual={**watch.summary(), "resets": len(rejected), "clientIpCounts": counts, **balance})
