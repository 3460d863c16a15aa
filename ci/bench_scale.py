"""Benchmark: thousands of concurrent connections through one Toxiproxy proxy, registered, then all
cut by one fault — and the server's books exactly right afterwards.

    python ci/bench_scale.py                        # 5,000 Nacos connections to the reference server, 1,000 HTTP to the ledger
    python ci/bench_scale.py --nacos 2000 --http 500

Nacos: ``--nacos`` raw transports (grpc.aio, one TCP connection each; ServerCheck, then
ConnectionSetup on the bi-stream, each reporting one of 50 client IPs) to the reference server
through one proxy. Registration is done when the loader API's ``current`` lists every one; then
the proxy is disabled (one fault: Toxiproxy closes both sides of every connection) and cleanup is
done when ``current`` is empty. Checked exactly afterwards: ``current`` empty, the per-IP counter
all zero, and the events: one ``connected`` and one ``disconnected`` per connection id, nothing
else. HTTP: ``--http`` keep-alive connections to the ledger through one proxy, each answering one
GET and held open; registered when the ledger counts them all open, cleaned up when it counts
them all closed after the proxy is disabled.

Printed last: connections per second at registration and at cleanup, and the server's and the
proxy's resident memory per connection (RSS after registration minus before, over the count).
A check that does not hold exits 1 with expected and actual.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.control.nacos_admin import NacosAdmin  # noqa: E402
from harness.http_run import LedgerAdmin  # noqa: E402
from harness.peers import PeerRegistry, render  # noqa: E402
from harness.ports import NACOS_GRPC_OFFSET, free_port, http_server_host, server_host  # noqa: E402
from harness.protocol.nacos import codec, wire  # noqa: E402
from harness.runtime import ProcessRuntime  # noqa: E402
from harness.toxiproxy.server import ToxiproxyServer  # noqa: E402
from harness.wait import eventually  # noqa: E402

CLIENT_IPS = [f"10.0.0.{i}" for i in range(1, 51)]  # reported in the setup metadata, never dialled
OPEN_CONCURRENCY = 200  # handshakes in flight at once
REGISTER_TIMEOUT_MS = 300_000
CLEANUP_TIMEOUT_MS = 120_000
POLL_MS = 200


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


class Meter:
    """The server's and Toxiproxy's RSS before and after registration, and the instants the rates
    are computed from (monotonic ms): start, all registered, the cut (right after), all cleaned."""

    def __init__(self, server_pid: int, proxy_pid: int) -> None:
        self.pids = (server_pid, proxy_pid)
        self.rss_before = [rss_mb(p) for p in self.pids]
        self.start_ms = time.monotonic() * 1000

    def registered(self, at_ms: float) -> None:
        self.registered_ms = at_ms
        self.rss_after = [rss_mb(p) for p in self.pids]
        self.cut_ms = time.monotonic() * 1000  # the caller cuts next

    def figures(self, n: int, cleaned_ms: float) -> dict:
        server_kb, proxy_kb = ((after - before) * 1024 / n
                               for before, after in zip(self.rss_before, self.rss_after, strict=True))
        return {"register_cps": n / ((self.registered_ms - self.start_ms) / 1000),
                "cleanup_cps": n / ((cleaned_ms - self.cut_ms) / 1000), "server_kb": server_kb, "proxy_kb": proxy_kb}


class Failed(Exception):
    def __init__(self, what: str, expected: Any, actual: Any) -> None:
        super().__init__(f"{what}\n  expected: {expected}\n  actual:   {actual}")


# -- Nacos ---------------------------------------------------------------------------------------


async def open_transport(target: str, client_ip: str, gate: asyncio.Semaphore, held: list) -> None:
    async with gate:
        channel = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        held.append(channel)
        unary = channel.unary_unary(wire.UNARY_METHOD, request_serializer=wire.serialize,
                                    response_deserializer=wire.deserialize)
        check = codec.decode(await unary(codec.server_check_request(client_ip=client_ip), timeout=30))
        if check.body.get("resultCode") != 200:
            raise Failed("ServerCheck", "resultCode 200", check.body)
        stream = channel.stream_stream(wire.BISTREAM_METHOD, request_serializer=wire.serialize,
                                       response_deserializer=wire.deserialize)()
        held.append(stream)
        await stream.write(codec.connection_setup_request(client_version="Nacos-Connformance-Bench:v0",
                                                          labels=codec.SDK_LABELS, client_ip=client_ip))


async def nacos_transports(target: str, n: int) -> list:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    held: list = []
    await asyncio.gather(*(open_transport(target, CLIENT_IPS[i % len(CLIENT_IPS)], gate, held) for i in range(n)))
    return held


def wait_count(read, accept, what: str, timeout_ms: int) -> float:
    """Poll ``read`` until ``accept``; the monotonic time it first held."""
    return eventually(read, accept=accept, timeout_ms=timeout_ms, interval_ms=POLL_MS, what=what).at_mono_ms


def bench_nacos(runtime: ProcessRuntime, toxiproxy: ToxiproxyServer, registry: PeerRegistry, n: int) -> dict:
    host = server_host(0)
    main_port = free_port(host=host, also_free_offset=NACOS_GRPC_OFFSET)
    spec, ready = render(registry.get("nacos-server", "ref"), placeholders={
        "host": host, "main_port": main_port, "grpc_port": main_port + NACOS_GRPC_OFFSET}, name="bench-ref-server")
    server = runtime.start(spec, ready, timeout_ms=20_000)
    admin = NacosAdmin(f"{host}:{main_port}")
    proxy = toxiproxy.client().create_proxy("bench-nacos", listen=f"{host}:{free_port(host=host)}",
                                            upstream=f"{host}:{main_port + NACOS_GRPC_OFFSET}")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # grpc.aio binds its objects to the current loop
    meter = Meter(server.pid, toxiproxy.pid)
    held = loop.run_until_complete(nacos_transports(f"{proxy.listen_host}:{proxy.listen_port}", n))
    meter.registered(wait_count(lambda: len(admin.current()), lambda c: c == n, f"{n} registrations in current",
                                REGISTER_TIMEOUT_MS))
    ids = set(admin.current())
    counts = admin.client_ip_counts()
    expected_counts = Counter(CLIENT_IPS[i % len(CLIENT_IPS)] for i in range(n))
    if {ip: c for ip, c in counts.items() if c} != dict(expected_counts):
        raise Failed("per-IP counts once registered", dict(expected_counts), counts)
    proxy.disable()
    cleaned_ms = wait_count(lambda: len(admin.current()), lambda c: c == 0, "current empty after the cut",
                            CLEANUP_TIMEOUT_MS)
    counts = admin.client_ip_counts()
    if any(counts.values()):
        raise Failed("per-IP counts after the cut", "all 0", {ip: c for ip, c in counts.items() if c})
    events = admin.events(0)
    per_id = Counter((e["connectionId"], e["event"]) for e in events)
    wrong = {k: v for k, v in per_id.items() if v != 1 or k[0] not in ids}
    kinds = Counter(e["event"] for e in events)
    if wrong or kinds != Counter({"connected": n, "disconnected": n}):
        raise Failed("events", f"one connected and one disconnected for each of {n} ids",
                     {"by kind": dict(kinds), "ids with another count (first 5)": list(wrong.items())[:5]})
    for item in held:  # the channels and calls the cut left behind
        if isinstance(item, grpc.aio.Channel):
            loop.run_until_complete(item.close())
    loop.close()
    return meter.figures(n, cleaned_ms)


# -- HTTP ----------------------------------------------------------------------------------------


async def keepalive_connection(host: str, port: int, gate: asyncio.Semaphore, held: list) -> None:
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
        held.append(writer)
        writer.write(f"GET /?bench=1 HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)


def bench_http(runtime: ProcessRuntime, toxiproxy: ToxiproxyServer, registry: PeerRegistry, n: int) -> dict:
    host = http_server_host(0)
    port = free_port(host=host)
    spec, ready = render(registry.get("http-server", "ledger"), placeholders={"host": host, "port": port},
                         knobs={"keepalive_timeout_ms": 600_000}, name="bench-ledger")
    server = runtime.start(spec, ready, timeout_ms=20_000)
    ledger = LedgerAdmin(f"http://{host}:{port}")
    proxy = toxiproxy.client().create_proxy("bench-http", listen=f"{host}:{free_port(host=host)}",
                                            upstream=f"{host}:{port}")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    held: list = []
    meter = Meter(server.pid, toxiproxy.pid)
    loop.run_until_complete(asyncio.gather(*(keepalive_connection(proxy.listen_host, proxy.listen_port, gate, held)
                                             for _ in range(n))))
    meter.registered(wait_count(lambda: ledger.ledger()["open"], lambda c: c == n, f"{n} open in the ledger",
                                REGISTER_TIMEOUT_MS))
    proxy.disable()
    closed_ms = wait_count(lambda: ledger.ledger()["open"], lambda c: c == 0, "ledger: none open after the cut",
                           CLEANUP_TIMEOUT_MS)
    view = ledger.ledger()
    if len(view["connections"]) != n or any(c["requests"] != 1 for c in view["connections"]):
        raise Failed("ledger after the cut", f"{n} connections of 1 request each",
                     {"connections": len(view["connections"]),
                      "requests per connection": dict(Counter(c["requests"] for c in view["connections"]))})
    for writer in held:
        writer.close()
    loop.close()
    return meter.figures(n, closed_ms)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nacos", type=int, default=5000, help="Nacos connections (0: skip)")
    parser.add_argument("--http", type=int, default=1000, help="HTTP keep-alive connections (0: skip)")
    args = parser.parse_args(argv)
    registry = PeerRegistry()
    registry.load_builtin()
    figures: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="cf-bench-scale-") as tmp, ProcessRuntime() as runtime, \
                ToxiproxyServer(log_path=Path(tmp) / "toxiproxy.log", log_level="error") as toxiproxy:
            if args.nacos:
                figures[f"{args.nacos} Nacos connections, ref server"] = bench_nacos(runtime, toxiproxy, registry,
                                                                                     args.nacos)
            if args.http:
                figures[f"{args.http} HTTP keep-alive connections, ledger"] = bench_http(runtime, toxiproxy, registry,
                                                                                         args.http)
    except Failed as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    for label, f in figures.items():
        print(f"SCALE {label}: registered at {f['register_cps']:,.0f} conn/s, cleaned up at {f['cleanup_cps']:,.0f} "
              f"conn/s after one cut; RSS per connection: server {f['server_kb']:.1f} KB, Toxiproxy {f['proxy_kb']:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
