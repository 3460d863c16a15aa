"""PL — pool limits under trouble: canceled waiters, a slow link, connections reset while idle
(SPEC §5 PL-11, PL-14, PL-15; docs/catalogue.md PL-18; research/http-pools.md §1.3, §1.5, §4.1, §4.3, §4.4, §6.1 G11,
§6.4 X2, §7; research/toxiproxy-and-anchors.md §A3 latency and reset_peer).

Each case runs one http-client agent (the parametrised stack) against the ``ledger`` server behind
its own Toxiproxy proxy. The ledger sees one upstream connection per client connection, so its
connections are the client's.

Counting "at once" from the ledger. The ledger learns of a client's close only when Toxiproxy has
relayed it and its event loop has read it, a fraction of a millisecond to a few ms after the
client's next connect. A pool that closes a connection and opens the next at once — a canceled
request's slot passed on to a waiter — therefore looks like two for a moment: Go's
``MaxConnsPerHost=1`` dialing through a queue of canceled waiters showed 5 "simultaneous"
connections in the ledger while its own dialer (a counting ``DialContext``) never had more than
one open. So the cases count a connection as held from its open until ``RELAY_LAG_MS`` before its
recorded close (``held_at_once``), and report the ledger's raw ``max_simultaneous`` beside it. A
connection that lived less than the lag is not counted; a pool that really grows past its limit
holds the extra connections for whole requests (hundreds of ms here).
"""

from __future__ import annotations

from fixtures.case import case
from harness.errors import SetupError
from harness.faults import Latency, ResetPeer
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS, TOLERANCE_MS
from harness.scenarios.cancel_waves import Waves, expect_no_leaked_slot, run_canceled_waves
from harness.scenarios.pool_faults import (
    connection_brief,
    held_at_once,
    limit_knob,
    reset_idle_pool,
)
from harness.scenarios.pools import LEDGER_QUIET_KEEPALIVE_MS

# -- PL-11, PL-18 ---------------------------------------------------------------------------------
# PL-11: each wave request gives up by its own 100 ms deadline (the library's timeout) or the
# agent's cancel at 1 s (urllib3, whose cancel *is* a deadline); the server holds it 3 s, far
# longer than both, so no answer races them. A leaked slot shows as the normal requests timing
# out after 3 s, not as a hang.
PL11 = Waves(waves=4, wave_n=10, hold_path="/sleep?ms=3000", cancel_after_ms=1000, give_up_ms=100,
             normal_n=10, normal_path="/?pl11=normal", normal_timeout_ms=3000)
# PL-18: the answer (50 ms) and every cancel (50 ms) land together, wave after wave.
PL18 = Waves(waves=8, wave_n=10, hold_path="/sleep?ms=50", cancel_after_ms=50, give_up_ms=None,
             normal_n=10, normal_path="/?pl18=normal", normal_timeout_ms=3000)


@case("PL-11", "MUST", timeout_s=90)
def test_canceled_waiters_do_not_leak_slots(cf, topology, peer_registry, http_client_peer):
    """Canceled waiters do not leak slots: `max_conns_per_host=1`, many requests canceled while queued, then 10 normal → still ≤ 1 simultaneous and the 10 complete.

    Four waves (``cancel_burst``) of 10 requests to a ledger path that holds each request 3 s:
    one request holds the only slot, nine wait for it, and every one gives up — by its own
    100 ms deadline (the library's timeout: Go's context deadline, aiohttp's ``ClientTimeout``,
    httpx's pool/read timeouts), or by the agent's cancel at 1 s (urllib3, whose cancel *is* a
    deadline). Then 10 normal requests (each with a 3 s timeout, so a leaked slot shows as
    timeouts, not a hang). Checked: ≤ 1 connection held at once over the whole run (see the
    module docstring on relay lag) and all 10 normal requests succeed.

    Why deadlines rather than canceling everything at one instant: the outcome must not flip
    between runs. Canceled at one instant, the in-flight request's release hands the slot on at
    the very moment its waiters are canceled, and whether a waiter is canceled just before or
    just after it was given a new connection is a coin toss of the event loop. httpx loses that
    toss about twice in a hundred runs (encode/httpcore#1093: the connection stays CONNECTING
    for ever, every later request gets PoolTimeout). With per-request deadlines, a queued
    waiter's deadline always comes before the holder's (whose read timer starts only once it is
    connected), so the waiters leave the queue well inside their wait, while the slot is still
    held, in every run. httpx has no per-host limit: its pool-wide ``max_connections=1`` is used
    (one host). Stacks that cannot cancel a request (requests, the JDK's HttpURLConnection) or
    have no limit (both JDK clients) are UNIMPLEMENTED.
    """
    knob, server = cancel_setup(cf, topology, peer_registry, http_client_peer)
    outcome = run_canceled_waves(cf, topology, http_client_peer, server, PL11, knob)
    expect_no_leaked_slot(cf, PL11, knob, outcome)
    numbers = outcome.numbers
    cf.ok(f"{numbers['gave_up']} waiting requests gave up in {PL11.waves} waves, then {PL11.normal_n}/{PL11.normal_n} ok; "
          f"held at once {outcome.held} (ledger raw {numbers['ledger_max_simultaneous_raw']}); "
          f"{numbers['connections_opened']} connections opened",
          expected=f"≤ 1 at once; {PL11.normal_n} complete", actual=numbers)


@case("PL-18", "MUST", timeout_s=120)
def test_a_cancellation_storm_leaks_no_slot(cf, topology, peer_registry, http_client_peer):
    """Cancellation storm under pool contention: `max_conns_per_host=1`, eight waves of 10 requests to a path answered after 50 ms, every one canceled 50 ms after it was issued (the holder's answer hands the slot on at the instant its waiters are canceled), then 10 normal → still ≤ 1 simultaneous and the 10 complete. Run it with `--trials N`: the race is a coin toss per wave (encode/httpcore#1093 showed in about 2 % of runs).

    PL-11 with the race left in: PL-11 lets each waiter give up by its own early deadline so its
    outcome never flips; here nothing gives up early and the slot's release, its hand-off to a
    waiter and that waiter's cancel land together, wave after wave. A pool that hands the slot to
    a waiter canceled at that moment and never takes it back has leaked it: every later request
    waits (the normal ones time out after 3 s each). The same checks as PL-11.
    """
    knob, server = cancel_setup(cf, topology, peer_registry, http_client_peer)
    outcome = run_canceled_waves(cf, topology, http_client_peer, server, PL18, knob)
    expect_no_leaked_slot(cf, PL18, knob, outcome)
    numbers = outcome.numbers
    cf.ok(f"{numbers['gave_up']} of {PL18.waves * PL18.wave_n} storm requests canceled "
          f"({numbers['how_they_ended']}), then {PL18.normal_n}/{PL18.normal_n} ok; held at once {outcome.held}",
          expected=f"≤ 1 at once; {PL18.normal_n} complete", actual=numbers)


def cancel_setup(cf, topology, peer_registry, http_client_peer):
    """PL-11's and PL-18's premise: a stack that can cancel and has a limit; one quiet ledger."""
    if not http_client_peer.has_capability("cancel"):
        cf.unimplemented(f"{http_client_peer.label} cannot cancel a request (no capability 'cancel': the agent "
                         "answers cancel_burst with exit 3)")
    knob = limit_knob(cf, http_client_peer)
    (server,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"),
                                      knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS})
    return knob, server


# -- PL-14 -----------------------------------------------------------------------------------------
PL14_LIMIT = 3
PL14_LATENCY_MS = 200
PL14_N = 10
PL14_PATH = "/?pl14=slow-link"


@case("PL-14", "SHOULD", timeout_s=90)
def test_pool_grows_to_its_limit_under_latency(cf, topology, peer_registry, http_client_peer):
    """Under 200 ms link latency the pool grows to its limit and never past it.

    A Toxiproxy ``latency`` toxic (200 ms, downstream: every response chunk is held 200 ms) is
    installed before the client connects; then 10 concurrent requests with a limit of 3. The
    pool should open exactly 3 connections at once (held at once == 3; fewer is NON-STRICT: it
    did not grow). More than 3 is FAILED whatever this case's level: exceeding a configured
    limit is a violation of the limit itself (PL-01's MUST), not a timing miss, and a slow link
    must not excuse it. Requests that fail under the latency are NON-STRICT. httpx has no
    per-host limit: its pool-wide ``max_connections`` is used (one host). The JDK clients have
    no connection limit: UNIMPLEMENTED.
    """
    knob = limit_knob(cf, http_client_peer)
    (server,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"),
                                      knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS})
    plan = {"knobs": {knob: PL14_LIMIT}, "phases": [{"op": "burst", "n": PL14_N, "path": PL14_PATH}]}
    with Latency(server.proxy, latency_ms=PL14_LATENCY_MS, stream="downstream", history=cf.history):
        run = topology.run_http_client(peer=http_client_peer, servers=[server], plan=plan,
                                       timeout_ms=AGENT_RUN_SLACK_MS + PL14_N * PL14_LATENCY_MS)
    view = server.ledger.ledger()
    cf.history.observe("ledger", [connection_brief(c) for c in view["connections"]])
    held, held_at = held_at_once(view["connections"], now_ms_epoch=view["now_ms"])
    slowest_ok = max((r.duration_ms for r in run.records if r.ok), default=0.0)
    numbers = {"limit": f"{knob}={PL14_LIMIT}", "latency_ms": PL14_LATENCY_MS, "held_at_once": held,
               "ledger_max_simultaneous_raw": view["max_simultaneous"], "connections_opened": len(view["connections"]),
               "ok": sum(r.ok for r in run.records), "errors": sorted({r.error or str(r.status) for r in run.failed}),
               "span_ms": round(run.span_ms(0))}
    cf.history.observe("pl14", numbers)
    if slowest_ok and slowest_ok < PL14_LATENCY_MS - TOLERANCE_MS:
        raise SetupError(f"PL-14: no request took the {PL14_LATENCY_MS} ms the latency toxic adds "
                         f"(slowest {slowest_ok:.0f} ms): the toxic is not on the path")
    at_ms = cf.history.relative_ms_from_wall(held_at) if held_at else None
    cf.check(held <= PL14_LIMIT, verdict="FAILED", at_ms=at_ms,
             expected=f"{knob}={PL14_LIMIT}: never more than {PL14_LIMIT} connections at once, latency or not",
             actual={**numbers, "connections": [connection_brief(c) for c in view["connections"]]},
             hint="a limit violation is not a timing miss: FAILED even though PL-14 is a SHOULD")
    cf.check(not run.failed, expected=f"all {PL14_N} requests succeed under {PL14_LATENCY_MS} ms latency",
             actual=numbers)
    cf.check(held == PL14_LIMIT, at_ms=at_ms,
             expected=f"the pool grows to its limit: {PL14_LIMIT} connections at once for {PL14_N} concurrent requests",
             actual=numbers)
    cf.ok(f"{PL14_LIMIT} at once under {PL14_LATENCY_MS} ms latency (ledger raw {view['max_simultaneous']}); "
          f"{PL14_N}/{PL14_N} ok in {numbers['span_ms']} ms over {len(view['connections'])} connections",
          expected=f"exactly {PL14_LIMIT} at once", actual=numbers)


# -- PL-15 -----------------------------------------------------------------------------------------
PL15_BURST_N = 3
PL15_BURST_PATH = "/sleep?ms=200"
PL15_IDLE_MS = 3000  # the agent idles this long; the harness cuts and heals inside it
PL15_SEQ_N = 5
PL15_PATH = "/?pl15=after-reset"


@case("PL-15", "MUST", timeout_s=90)
def test_reset_idle_connections_are_not_handed_out(cf, topology, peer_registry, http_client_peer):
    """reset_peer on idle pooled connections → idempotent requests succeed on fresh connections; the pool does not keep handing out dead connections.

    Toxiproxy's reset_peer makes an RST only on connections opened while it is installed (it
    sets SO_LINGER 0 at connect), and on an idle connection it never fires (it waits for a
    chunk). So a ``reset_peer`` toxic with toxicity 0 is installed before the first burst: it
    never fires, but every connection of the burst gets linger 0. While the client sits idle with
    its pooled connections, the harness disables the proxy — Toxiproxy closes every live
    connection, and with linger 0 each close is an RST to the client — then re-enables it and
    removes the toxic, all before the client's next request. Then 5 GETs one after another: all
    must succeed (on fresh connections: the old ones are dead). Any error surfaced is FAILED
    (counted): the pool handed out a dead connection and did not retry. The cut is checked to
    have been an RST (no proxy-side TIME_WAIT, no client CLOSE_WAIT), else it is a setup error.
    """
    (server,) = topology.http_servers(1, peer=peer_registry.get("http-server", "ledger"),
                                      knobs={"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS})
    linger0 = ResetPeer(server.proxy, timeout_ms=0, stream="upstream", armed=True, history=cf.history)  # never fired
    linger0.apply()
    plan = {"knobs": {},
            "phases": [{"op": "burst", "n": PL15_BURST_N, "path": PL15_BURST_PATH},
                       {"op": "sleep", "ms": PL15_IDLE_MS},
                       {"op": "sequential", "n": PL15_SEQ_N, "path": PL15_PATH},
                       {"op": "sleep", "ms": 200}]}
    cut = reset_idle_pool(cf, topology, http_client_peer, server, plan, linger0, idle_ms=PL15_IDLE_MS,
                          burst_n=PL15_BURST_N, burst_path=PL15_BURST_PATH)
    pooled, pooled_ids, cut_wall_ms, after = cut.pooled, cut.pooled_ids, cut.cut_wall_ms, cut.run.phase(2)
    first_seq_ms = min(r.start_ms for r in after)
    view = server.ledger.ledger()
    cf.history.observe("ledger", [connection_brief(c) for c in view["connections"]])
    closed_by_cut = {c["id"]: c["closed_by"] for c in view["connections"] if c["id"] in pooled_ids}
    fresh = [c for c in view["connections"] if any(r["path"] == PL15_PATH for r in c["request_log"])]
    numbers = {
        "pooled_connections_reset": pooled, "ledger_saw_them_closed_by": closed_by_cut,
        "requests_after_reset": PL15_SEQ_N, "ok": sum(r.ok for r in after),
        "errors_surfaced": [{"i": r.i, "error": r.error, "status": r.status} for r in after if not r.ok],
        "reused_flags": [r.reused for r in after],
        "served_on_connections": [{"id": c["id"], "opened_after_cut_ms": round(c["opened_ms"] - cut_wall_ms),
                                   "requests": sum(1 for r in c["request_log"] if r["path"] == PL15_PATH)}
                                  for c in fresh],
    }
    cf.history.observe("pl15", numbers)
    on_dead = [c for c in fresh if c["id"] in pooled_ids]
    cf.check(not numbers["errors_surfaced"] and not on_dead,
             at_ms=cf.history.relative_ms_from_wall(first_seq_ms),
             expected=f"all {PL15_SEQ_N} GETs after the reset succeed on fresh connections: no error surfaced",
             actual=numbers, hint="the pool handed out a connection the peer had reset, and did not retry")
    cf.ok(f"{pooled} pooled connection(s) reset while idle; {PL15_SEQ_N}/{PL15_SEQ_N} GETs ok on "
          f"{len(fresh)} fresh connection(s), 0 errors surfaced",
          expected=f"{PL15_SEQ_N} GETs succeed, 0 errors", actual=numbers)
