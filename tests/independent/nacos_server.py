"""A minimal Nacos 2.x server written from docs/roles/nacos-server.md and the wire notes alone.

    python -m tests.independent.nacos_server --host H --main-port P --grpc-port G

What it does (and no more): the unary dispatch order (ServerCheck → connection id per TCP
transport; unknown type → 302; unregistered transport → 301; bad body → 502), registration on the
bi-stream's first ``ConnectionSetupRequest``, unregistration when that stream ends (the client's
transport died or it closed it), HealthCheck, and the loader API's ``current`` and
``reloadClient`` (a ``ConnectResetRequest`` pushed on the bi-stream; ``success`` once answered or
after 3 s). No limits, no ejector, no extensions: capability ``loader`` only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc

from tests.independent import nacos_wire as wire

RESET_ANSWER_WAIT_S = 3.0
_END = object()


class Connection:
    def __init__(self, connection_id: str, meta: dict[str, Any]) -> None:
        self.id = connection_id
        self.meta = meta
        self.outbound: queue.Queue = queue.Queue()
        self.answers: dict[str, threading.Event] = {}


class Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids_by_peer: dict[str, str] = {}
        self.connections: dict[str, Connection] = {}
        self.request_ids = itertools.count(1)

    def id_for(self, peer: str) -> str:
        """One id per TCP transport: ``<ms>_<ip>_<port>`` of the peer the call came from."""
        with self.lock:
            if peer not in self.ids_by_peer:
                ip, _, port = peer.removeprefix("ipv4:").rpartition(":")
                self.ids_by_peer[peer] = f"{int(time.time() * 1000)}_{ip}_{port}"
            return self.ids_by_peer[peer]

    def forget(self, peer: str, connection_id: str) -> None:
        with self.lock:
            self.connections.pop(connection_id, None)
            if self.ids_by_peer.get(peer) == connection_id:
                del self.ids_by_peer[peer]

    def registered(self, connection_id: str) -> bool:
        with self.lock:
            return connection_id in self.connections

    def current(self) -> dict[str, Any]:
        with self.lock:
            return {cid: {"metaInfo": c.meta} for cid, c in self.connections.items()}

    def reset(self, connection_id: str, redirect: str) -> None:
        with self.lock:
            conn = self.connections.get(connection_id)
        if conn is None:
            return
        request_id = str(next(self.request_ids))
        body: dict[str, Any] = {"headers": {}, "module": "internal", "requestId": request_id}
        if ":" in redirect:
            body["serverIp"], body["serverPort"] = redirect.rsplit(":", 1)
        answered = conn.answers.setdefault(request_id, threading.Event())
        conn.outbound.put(wire.encode("ConnectResetRequest", body))
        answered.wait(RESET_ANSWER_WAIT_S)


def _error(code: int, message: str) -> bytes:
    return wire.encode("ErrorResponse", {"resultCode": 500, "errorCode": code, "message": message, "success": False})


def _ok(type_name: str, **fields: Any) -> bytes:
    return wire.encode(type_name, {"resultCode": 200, "errorCode": 0, "success": True, **fields})


class Handlers:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def unary(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        connection_id = self.registry.id_for(context.peer())
        try:
            type_name, _, body = wire.decode(data)
        except (ValueError, IndexError):
            return _error(502, "Invalid request")
        if type_name == "ServerCheckRequest":
            return _ok("ServerCheckResponse", connectionId=connection_id)
        if type_name != "HealthCheckRequest":
            return _error(302, "RequestHandler Not Found")
        if not self.registry.registered(connection_id):
            return _error(301, "Connection is unregistered.")
        if body is None:
            return _error(502, "Invalid request")
        with self.registry.lock:
            self.registry.connections[connection_id].meta["lastActiveTime"] = int(time.time() * 1000)
        return _ok("HealthCheckResponse")

    def bi_stream(self, requests, context: grpc.ServicerContext):
        peer = context.peer()
        connection_id = self.registry.id_for(peer)
        conn = Connection(connection_id, {})
        context.add_callback(lambda: (self.registry.forget(peer, connection_id), conn.outbound.put(_END)))

        def read() -> None:
            try:
                for data in requests:
                    try:
                        type_name, client_ip, body = wire.decode(data)
                    except (ValueError, IndexError):
                        continue  # a bad message is dropped; the stream stays open
                    if body is None:
                        continue
                    if type_name == "ConnectionSetupRequest":
                        labels = body.get("labels") or {}
                        conn.meta = {"clientIp": client_ip, "version": body.get("clientVersion", ""),
                                     "appName": labels.get("AppName", "-"), "tenant": body.get("tenant"),
                                     "labels": labels, "connectType": "GRPC",
                                     "lastActiveTime": int(time.time() * 1000)}
                        with self.registry.lock:
                            self.registry.connections[connection_id] = conn
                    elif type_name.endswith("Response"):
                        event = conn.answers.get(str(body.get("requestId")))
                        if event is not None:
                            event.set()
            except grpc.RpcError:
                pass
            finally:
                conn.outbound.put(_END)

        threading.Thread(target=read, daemon=True, name=f"read-{connection_id}").start()
        while (item := conn.outbound.get()) is not _END:
            yield item


def admin_handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Admin(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/nacos/v2/core/loader/current":
                self._send(200, json.dumps(registry.current()))
            elif url.path == "/nacos/v2/core/loader/reloadClient":
                registry.reset(query.get("connectionId", ""), query.get("redirectAddress", ""))
                self._send(200, "success")
            else:
                self._send(404, "not found")

        def _send(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    return Admin


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--main-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)

    registry = Registry()
    handlers = Handlers(registry)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("Request", {
        "request": grpc.unary_unary_rpc_method_handler(handlers.unary, wire.identity, wire.identity)})])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("BiRequestStream", {
        "requestBiStream": grpc.stream_stream_rpc_method_handler(handlers.bi_stream, wire.identity, wire.identity)})])
    server.add_insecure_port(f"{args.host}:{args.grpc_port}")
    server.start()
    admin = ThreadingHTTPServer((args.host, args.main_port), admin_handler(registry))
    admin.daemon_threads = True
    try:
        admin.serve_forever()
    finally:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
