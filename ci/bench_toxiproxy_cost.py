"""Benchmark: what the Toxiproxy in front of every peer costs, beside a direct connection in the
same run (Toxiproxy's own claim: under 100 µs added per request).

    python ci/bench_toxiproxy_cost.py                  # 3 rounds of 2,000 requests + 40 bursts of 32, each way
    python ci/bench_toxiproxy_cost.py --requests 5000 --rounds 5

One Go net/http server (the go-net-http-server peer) and one Toxiproxy proxy in front of it (no
toxic), both on loopback. The client is the Go net/http agent (the go-net-http peer), so both
ends are compiled code and the figure is the proxy's, not a Python client's:

- latency: ``--requests`` sequential keep-alive GETs on one connection; the agent times each
  request (epoch ms, µs resolution); p50 and p99, direct and through the proxy, and the
  difference;
- throughput: ``--bursts`` bursts of ``--width`` concurrent GETs (idle cap raised to the width,
  so connections are reused); requests per second over the bursts' wall time; proxied ÷ direct.

Direct and proxied runs alternate for ``--rounds`` rounds, so the machine's noise falls on both;
each figure is the median over rounds. The figures are printed last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.http_plan import MAX_N as PHASE_MAX  # noqa: E402
from harness.http_run import AgentRun, run_http_agent  # noqa: E402
from harness.peers import PeerRegistry, render  # noqa: E402
from harness.ports import free_port, http_server_host  # noqa: E402
from harness.runtime import ProcessRuntime  # noqa: E402
from harness.toxiproxy.server import ToxiproxyServer  # noqa: E402

AGENT_TIMEOUT_MS = 120_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies_ms(run: AgentRun) -> list[float]:
    bad = run.failed
    if bad:
        raise SystemExit(f"{len(bad)} request(s) failed, e.g. {bad[0]}: the benchmark needs every request answered")
    return [r.end_ms - r.start_ms for r in run.records]


def throughput_rps(run: AgentRun, bursts: int) -> float:
    latencies_ms(run)  # every request answered
    wall_ms = sum(run.span_ms(i) for i in range(bursts))
    return len(run.records) / (wall_ms / 1000.0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per latency run")
    parser.add_argument("--bursts", type=int, default=40, help="bursts per throughput run")
    parser.add_argument("--width", type=int, default=32, help="concurrent requests per burst")
    parser.add_argument("--rounds", type=int, default=3, help="direct/proxied alternations")
    args = parser.parse_args(argv)
    registry = PeerRegistry()
    registry.load_builtin()
    client = registry.get("http-client", "go-net-http")
    # A plan phase holds at most PHASE_MAX requests: the sequence is split, still on one connection.
    chunks = [min(PHASE_MAX, args.requests - i) for i in range(0, args.requests, PHASE_MAX)]
    latency_plan = {"knobs": {}, "phases": [{"op": "sequential", "n": n, "path": "/", "method": "GET"} for n in chunks]}
    burst = {"op": "burst", "n": args.width, "path": "/", "method": "GET"}
    throughput_plan = {"knobs": {"max_idle_per_host": args.width}, "phases": [burst] * args.bursts}
    figures: dict[str, dict[str, list[float]]] = {"direct": {}, "proxied": {}}
    with tempfile.TemporaryDirectory(prefix="cf-bench-toxiproxy-") as tmp, ProcessRuntime() as runtime, \
            ToxiproxyServer(log_path=Path(tmp) / "toxiproxy.log") as toxiproxy:
        host = http_server_host(0)
        port = free_port(host=host)
        spec, ready = render(registry.get("http-server", "go-net-http-server"),
                             placeholders={"host": host, "port": port}, name="bench-go-server")
        runtime.start(spec, ready, timeout_ms=20_000)
        proxy = toxiproxy.client().create_proxy("bench", listen=f"{host}:{free_port(host=host)}",
                                                upstream=f"{host}:{port}")
        urls = {"direct": f"http://{host}:{port}", "proxied": f"http://{proxy.listen_host}:{proxy.listen_port}"}
        for round_no in range(1, args.rounds + 1):
            for way, url in urls.items():
                lat = latencies_ms(run_http_agent(runtime, client, urls=[url], plan=latency_plan, workdir=Path(tmp),
                                                  timeout_ms=AGENT_TIMEOUT_MS))
                rps = throughput_rps(run_http_agent(runtime, client, urls=[url], plan=throughput_plan,
                                                    workdir=Path(tmp), timeout_ms=AGENT_TIMEOUT_MS), args.bursts)
                row = figures[way]
                row.setdefault("p50_ms", []).append(percentile(lat, 0.50))
                row.setdefault("p99_ms", []).append(percentile(lat, 0.99))
                row.setdefault("rps", []).append(rps)
                print(f"round {round_no} {way:>7}: p50 {row['p50_ms'][-1] * 1000:.0f} µs, p99 "
                      f"{row['p99_ms'][-1] * 1000:.0f} µs, {rps:,.0f} requests/s", flush=True)
    med = {way: {k: statistics.median(v) for k, v in row.items()} for way, row in figures.items()}
    d, p = med["direct"], med["proxied"]
    print()
    print(f"TOXIPROXY ADDED LATENCY p50: {(p['p50_ms'] - d['p50_ms']) * 1000:.0f} µs "
          f"({d['p50_ms'] * 1000:.0f} -> {p['p50_ms'] * 1000:.0f} µs per request)")
    print(f"TOXIPROXY ADDED LATENCY p99: {(p['p99_ms'] - d['p99_ms']) * 1000:.0f} µs "
          f"({d['p99_ms'] * 1000:.0f} -> {p['p99_ms'] * 1000:.0f} µs per request)")
    print(f"TOXIPROXY THROUGHPUT RATIO (proxied / direct): {p['rps'] / d['rps']:.2f} "
          f"({d['rps']:,.0f} -> {p['rps']:,.0f} requests/s, {args.width} concurrent)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
