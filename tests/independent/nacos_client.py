"""A minimal Nacos 2.x client agent written from docs/roles/nacos-client.md and the wire notes alone.

    python -m tests.independent.nacos_client --servers ip:port,... --control-port N [--client-ip IP] [--app-name A]

The client: ServerCheck (unary) on ``main + 1000``, then ``ConnectionSetupRequest`` as the first
message of the bi-stream, a 100 ms wait, RUNNING; a HealthCheck every 5 s (one failure moves it to
the next server); a ``ConnectResetRequest`` is answered with the same requestId, then it moves to
the named server when that one is in its list, else to the next; a stream the server ends moves it
too; failed attempts back off 100 ms more each pass, capped at 5 s. The agent: ``GET /state``,
``POST /request`` (one HealthCheck), ``POST /shutdown`` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from tests.independent import nacos_wire as wire

VERSION = "Independent-Client:v0.1"
HEALTH_INTERVAL_S = 5.0
REQUEST_TIMEOUT_S = 3.0
SETUP_WAIT_S = 0.1
BACKOFF_STEP_S = 0.1
BACKOFF_CAP_S = 5.0
_END = object()


def _ms() -> float:
    return time.time() * 1000.0


class Client:
    def __init__(self, servers: list[tuple[str, int]], client_ip: str, app_name: str) -> None:
        self.servers = servers
        self.client_ip = client_ip
        self.labels = {"source": "sdk", "module": "naming", "AppName": app_name}
        self.lock = threading.Lock()
        self.status = "STARTING"
        self.server: str | None = None
        self.connection_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.wake = threading.Event()  # a reset arrived or the stream ended: move
        self.next_target: int | None = None
        self.channel: grpc.Channel | None = None
        self.unary = None

    # -- what the agent reports -------------------------------------------------------------
    def record(self, kind: str, **detail: Any) -> None:
        with self.lock:
            self.events.append({"t_ms": _ms(), "kind": kind, "server": self.server, "detail": detail})

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"status": self.status, "server": self.server, "connection_id": self.connection_id,
                    "events": list(self.events), "events_total": len(self.events),
                    "meta": {"client_ip": self.client_ip, "client_version": VERSION, "labels": self.labels,
                             "tenant": None}}

    # -- the connection ----------------------------------------------------------------------
    def call(self, type_name: str, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[str, dict[str, Any]]:
        unary = self.unary
        if unary is None:
            raise ConnectionError("not connected")
        answer = unary(wire.encode(type_name, {"headers": {}, "module": "internal"}, self.client_ip), timeout=timeout_s)
        type_got, _, body = wire.decode(answer)
        return type_got, body or {}

    def connect(self, index: int) -> bool:
        ip, port = self.servers[index]
        address = f"{ip}:{port}"
        channel = grpc.insecure_channel(f"{ip}:{port + 1000}")
        self.channel, self.unary = channel, channel.unary_unary(wire.REQUEST_METHOD, wire.identity, wire.identity)
        try:
            type_got, body = self.call("ServerCheckRequest")
            if type_got != "ServerCheckResponse" or not body.get("connectionId"):
                raise ConnectionError(f"ServerCheck answered {type_got} {body}")
        except (grpc.RpcError, ConnectionError) as exc:
            channel.close()
            self.channel = self.unary = None
            self.record("connect_failed", what="connect attempt failed", target=address, reason=str(exc)[:200])
            return False
        outbound: queue.Queue = queue.Queue()
        self.wake = wake = threading.Event()  # this connection's own: a late end of the last one is not news
        stream = channel.stream_stream(wire.BI_STREAM_METHOD, wire.identity, wire.identity)(iter(outbound.get, _END))
        outbound.put(wire.encode("ConnectionSetupRequest", {
            "headers": {}, "module": "internal", "clientVersion": VERSION, "labels": self.labels}, self.client_ip))
        threading.Thread(target=self.read_pushes, args=(stream, outbound, wake), daemon=True).start()
        self.stopping.wait(SETUP_WAIT_S)  # Java's post-setup wait: no acknowledgement in 2.2.x
        with self.lock:
            self.status, self.server, self.connection_id = "RUNNING", address, body["connectionId"]
        self.outbound = outbound
        self.record("connected", connection_id=body["connectionId"])
        return True

    def read_pushes(self, stream, outbound: queue.Queue, wake: threading.Event) -> None:
        try:
            for data in stream:
                type_got, _, body = wire.decode(data)
                body = body or {}
                if type_got == "ConnectResetRequest":
                    self.record("reset_received", request_id=body.get("requestId"),
                                server_ip=body.get("serverIp"), server_port=body.get("serverPort"))
                    outbound.put(wire.encode("ConnectResetResponse", {
                        "resultCode": 200, "errorCode": 0, "success": True, "requestId": body.get("requestId")}))
                    target = f"{body.get('serverIp')}:{body.get('serverPort')}"
                    listed = [f"{ip}:{port}" for ip, port in self.servers]
                    self.next_target = listed.index(target) if target in listed else None
                    wake.set()
                elif type_got == "ClientDetectionRequest":
                    outbound.put(wire.encode("ClientDetectionResponse", {
                        "resultCode": 200, "errorCode": 0, "success": True, "requestId": body.get("requestId")}))
        except grpc.RpcError:
            pass
        wake.set()  # the stream ended

    def leave(self, reason: str) -> grpc.Channel | None:
        """Stop using the current connection; the caller closes the returned channel once the next
        connection was tried, so an answer just queued on it (a reset's) still goes out."""
        self.record("switching", reason=reason)
        old, old_id = self.channel, self.connection_id
        with self.lock:
            self.status, self.server, self.connection_id = "UNHEALTHY", None, None
        self.channel = self.unary = None
        outbound = getattr(self, "outbound", None)
        if outbound is not None:
            outbound.put(_END)
        self.record("disconnected", connection_id=old_id)
        return old

    def run(self) -> None:
        index, failures = 0, 0
        old: grpc.Channel | None = None
        while not self.stopping.is_set():
            connected = self.connect(index)
            if old is not None:
                old.close()
                old = None
            if not connected:
                failures += 1
                index = (index + 1) % len(self.servers)
                passes = failures // len(self.servers) + 1
                self.stopping.wait(min(BACKOFF_STEP_S * passes, BACKOFF_CAP_S))
                continue
            failures = 0
            reason = self.watch()
            if self.stopping.is_set():
                break
            redirect, self.next_target = self.next_target, None
            old = self.leave(reason)
            index = redirect if redirect is not None else (index + 1) % len(self.servers)

    def watch(self) -> str:
        """Until something says move: a reset, the stream's end, a failed HealthCheck."""
        while not self.stopping.is_set():
            if self.wake.wait(HEALTH_INTERVAL_S):
                return "reset or stream ended"
            try:
                type_got, body = self.call("HealthCheckRequest")
                if type_got != "HealthCheckResponse" or body.get("resultCode") != 200:
                    return f"health check answered {type_got} {body.get('errorCode')}"
            except grpc.RpcError as exc:
                return f"health check failed: {exc.code()}"
        return "shutdown"


def control_handler(client: Client, done: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.split("?")[0] == "/state":
                self._send(client.state())
            else:
                self._send({"error": "not found"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path == "/request":
                started = time.monotonic()
                try:
                    type_got, body = client.call("HealthCheckRequest")
                    ok = type_got == "HealthCheckResponse" and body.get("resultCode") == 200
                    answer = {"ok": ok, "error_code": None if ok else body.get("errorCode")}
                except (grpc.RpcError, ConnectionError) as exc:
                    answer = {"ok": False, "error_code": None, "error": str(exc)[:200]}
                self._send({**answer, "ms": (time.monotonic() - started) * 1000.0})
            elif self.path == "/shutdown":
                self._send({"ok": True})
                done.set()
            else:
                self._send({"error": "not found"}, 404)

        def _send(self, payload: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    return Control


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--client-ip", default="127.0.0.1")
    parser.add_argument("--app-name", default="unknown")
    args = parser.parse_args(argv)
    servers = [(host, int(port)) for host, _, port in (s.rpartition(":") for s in args.servers.split(","))]
    client = Client(servers, args.client_ip, args.app_name)
    done = threading.Event()
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), control_handler(client, done))
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    runner = threading.Thread(target=client.run, daemon=True)
    runner.start()
    done.wait()
    client.stopping.set()
    client.wake.set()
    runner.join(timeout=5)
    if client.channel is not None:
        client.channel.close()
    with client.lock:
        client.status = "SHUTDOWN"
    control.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
