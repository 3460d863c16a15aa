"""PL — the TIME_WAIT surge: how many client-side TIME_WAIT sockets one burst leaves, by burst
width and idle cap (SPEC §5 PL-16; research/http-pools.md §1.4 "Consequence for TIME_WAIT",
§5, §6.1 G1, §7; golang/go#13801).

A burst of B concurrent requests opens B connections; when they finish, a pool that may keep
only ``cap`` idle connections closes the other B − cap itself, and the closer keeps each socket
in TIME_WAIT for 60 s (Linux ``TCP_TIMEWAIT_LEN``). So the client-side TIME_WAIT count after one
burst is the surge this case records, for B ∈ {4, 16, 64} × cap ∈ {2, B}, plus PL-02's 20-wide
burst at the stack's default cap (Go's ``DefaultTransport``: 20 → 18, research §6.1 G1).

Every point has its own ledger and proxy (fresh ports: earlier TIME_WAIT sockets would count;
a proxy port that still carries TIME_WAIT from another process's run is passed over) and its own
agent run: burst (each request held 500 ms by the server, so all B are in flight
together), then idle. While the agent idles, the harness waits until the server answered all B
and the socket table and ledger stop changing, then counts client-side TIME_WAIT: sockets whose
remote address is the point's proxy (ip and port: behind Toxiproxy the client's peer is the proxy).
The ledger's count of connections the client closed is recorded beside it as a cross-check.
All points run at once (each on its own ports, so they cannot disturb each other's counts).

The idle-cap knob is ``max_idle_per_host``, else the pool-wide ``max_idle_total`` (httpx,
java.net.http; one host per run, so it is the per-host cap). aiohttp has no idle cap: its points
are the default only. The result is a table and a plot beside the case's history
(``timewait.json``, ``timewait.png``), linked from the result's detail.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from fixtures.case import case
from harness.report.artifacts import line_plot_png, report_relative, write_artifact
from harness.scenarios import timewait


@case("PL-16", "INFO", timeout_s=150)
def test_timewait_surge_curve(cf, topology, peer_registry, http_client_peer):
    """TIME_WAIT surge curve: burst width B ∈ {4, 16, 64} × idle cap ∈ {2, B} → client TIME_WAIT per burst; rendered as a table and a plot in the report.

    Plus the 20-wide burst at the stack's default idle cap (PL-02's numbers: Go 18, requests 10,
    urllib3 19, JDK 15, httpx/aiohttp/java.net.http 0). Recorded per point: client-side TIME_WAIT
    toward the point's proxy address, the connections the ledger saw the client close, how many stayed
    open (idle), how many the burst opened, and what the idle cap alone predicts (B − cap).
    Written as ``timewait.json`` and ``timewait.png`` in the case's folder, beside its history.
    """
    knob, points = timewait.plan_points(http_client_peer)
    dflt = timewait.default_cap(http_client_peer, knob)
    ledger = peer_registry.get("http-server", "ledger")
    servers = timewait.fresh_servers(cf, topology, ledger, len(points))
    cf.history.note(f"idle-cap knob: {knob or 'none'}; default cap {dflt}; points: {[p.key for p in points]}")
    with ThreadPoolExecutor(max_workers=min(timewait.PARALLEL_POINTS, len(points)), thread_name_prefix="pl16") as pool:
        futures = [pool.submit(timewait.measure, topology, http_client_peer, srv, point, knob)
                   for srv, point in zip(servers, points, strict=True)]
        rows = [f.result() for f in futures]
    for row, point in zip(rows, points, strict=True):
        row["expected_by_cap"] = timewait.expected_by_cap(point, dflt)
        cf.history.observe("timewait_point", row)

    table = {"case": cf.spec.id, "peer": cf.peers, "cap_knob": knob, "default_cap": dflt,
             "hold_ms": timewait.HOLD_MS, "columns": {
                 "client_time_wait": "TIME_WAIT sockets whose remote address is the point's proxy ip:port (client side)",
                 "closed_by_client": "connections the ledger saw the client close",
                 "kept_idle": "connections still open (idle in the pool) when counted",
                 "expected_by_cap": "B - cap: what the idle cap alone predicts"},
             "points": rows}
    write_artifact(cf.outdir, timewait.TABLE_NAME, json.dumps(table, indent=1))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        label = {"2": f"idle cap {timewait.SMALL_CAP}", "B": "idle cap = B"}.get(row["cap"], f"idle cap {row['cap']}")
        series.setdefault(label, []).append((row["width"], row["client_time_wait"]))
    line_plot_png(cf.outdir / timewait.PLOT_NAME, series, log_x=True,
                  title=f"PL-16 TIME_WAIT surge: {http_client_peer.label} (one burst of B, each request held {timewait.HOLD_MS} ms)",
                  xlabel="burst width B (concurrent requests)", ylabel="client-side TIME_WAIT after the burst")

    cells = "; ".join(f"B={r['width']} cap {r['cap']}: {r['client_time_wait']}" for r in rows)
    headline = next(r for r in rows if r["width"] == timewait.DEFAULT_WIDTH)
    table_rel, plot_rel = report_relative(cf.outdir / timewait.TABLE_NAME), report_relative(cf.outdir / timewait.PLOT_NAME)
    detail = (f"client TIME_WAIT per burst — {cells}. {timewait.DEFAULT_WIDTH}-wide burst at the default cap: "
              f"{headline['client_time_wait']} (cap model {headline['expected_by_cap']}). "
              f"Table: {table_rel}; plot: {plot_rel} (beside this case's history).")
    cf.ok(detail, expected={"model": "B - cap closed by the client",
                            "points": {f"B={r['width']} cap {r['cap']}": r["expected_by_cap"] for r in rows}},
          actual={f"B={r['width']} cap {r['cap']}": r["client_time_wait"] for r in rows})
    cf.informational(detail, table=rows, artifacts={"table": table_rel, "plot": plot_rel})
