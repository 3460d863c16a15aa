"""Benchmark: the reference peers' memory under connection churn (hardening: RSS must stay flat).

    python ci/bench_ref_memory.py                 # 10,000 connect/close cycles per peer
    python ci/bench_ref_memory.py --cycles 2000

Starts the reference Nacos server and the ledger as their manifests do (process runtime, behind
nothing: the churn goes straight at their ports), opens and closes connections in rounds of
1,000 (an empty TCP connection, and for Nacos also one that sends the HTTP/2 preface), and
prints the RSS after every round and the growth per 1,000 connections after a warm-up round
(the peer's pools filling once), last. RSS is read after the peer had a moment to see the last
closes and one trim period (the peers give freed heap back every 10 s, ``harness/reference/memory.py``),
so the figure is what stays, not what a burst borrowed.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.peers import PeerRegistry, render  # noqa: E402
from harness.ports import NACOS_GRPC_OFFSET, free_port, http_server_host, server_host  # noqa: E402
from harness.reference.memory import TRIM_INTERVAL_S  # noqa: E402
from harness.runtime import ProcessRuntime  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ROUND = 1000
WARMUP = 1000  # the first connections grow the peer's pools (grpc threads, arenas); not a leak


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def churn(host: str, port: int, count: int, payload: bytes) -> None:
    for _ in range(count):
        with socket.create_connection((host, port), timeout=5) as sock:
            if payload:
                sock.sendall(payload)
        # The peer's close is what we measure; do not wait for it connection by connection.


def settle(pid: int, host: str, port: int) -> None:
    """Let the peer see the last closes (one round trip through a fresh connection), then stay
    idle for one trim period, so the RSS read next is what stays, not what the burst borrowed."""
    with socket.create_connection((host, port), timeout=5):
        pass
    time.sleep(TRIM_INTERVAL_S + 1.0)  # benchmark pacing, not synchronisation: the figure is read after it


def run(name: str, pid: int, host: str, port: int, cycles: int, payload: bytes) -> float:
    settle(pid, host, port)
    print(f"{name}: RSS at start {rss_mb(pid):.1f} MB; {WARMUP} warm-up connections")
    churn(host, port, WARMUP, payload)
    settle(pid, host, port)
    start = rss_mb(pid)
    print(f"{name}: RSS after warm-up {start:.1f} MB")
    done = 0
    while done < cycles:
        n = min(ROUND, cycles - done)
        churn(host, port, n, payload)
        done += n
        settle(pid, host, port)
        print(f"{name}: after {done:>6} connections RSS {rss_mb(pid):.1f} MB")
    end = rss_mb(pid)
    per_thousand = (end - start) / (cycles / 1000)
    return per_thousand


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    args = parser.parse_args(argv)
    registry = PeerRegistry()
    registry.load_builtin()
    figures: dict[str, float] = {}
    with ProcessRuntime() as runtime:
        host = server_host(0)
        main_port = free_port(host=host, also_free_offset=NACOS_GRPC_OFFSET)
        grpc_port = main_port + NACOS_GRPC_OFFSET
        spec, ready = render(registry.get("nacos-server", "ref"), placeholders={
            "host": host, "main_port": main_port, "grpc_port": grpc_port}, name="bench-ref-server")
        server = runtime.start(spec, ready, timeout_ms=20000)
        figures["ref server, empty connections"] = run("ref-server/empty", server.pid, host, grpc_port,
                                                       args.cycles, b"")
        figures["ref server, HTTP/2 preface"] = run("ref-server/preface", server.pid, host, grpc_port,
                                                    args.cycles, PREFACE)
        ledger_host = http_server_host(0)
        ledger_port = free_port(host=ledger_host)
        spec, ready = render(registry.get("http-server", "ledger"), placeholders={
            "host": ledger_host, "port": ledger_port}, name="bench-ledger")
        ledger = runtime.start(spec, ready, timeout_ms=20000)
        figures["ledger, empty connections"] = run("ledger/empty", ledger.pid, ledger_host, ledger_port,
                                                   args.cycles, b"")
    print()
    for label, growth in figures.items():
        print(f"RSS GROWTH PER 1000 CONNECTIONS ({label}): {growth:+.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
