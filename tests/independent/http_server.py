"""A minimal HTTP/1.1 server written from docs/roles/http-server.md alone (the stdlib's server).

    python -m tests.independent.http_server --host H --port P [--keepalive-timeout-ms T]

Serves ``GET /`` (200), ``/sleep?ms=N``, ``/status/<code>``, ``/bytes?n=N`` and ``/drop-nth?n=N`` with keep-alive;
an idle connection is closed after the keep-alive timeout (the stdlib's per-connection socket
timeout). No ledger, no other knob.
"""

from __future__ import annotations

import argparse
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def handler(keepalive_timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = keepalive_timeout_s  # idle between requests: the socket read times out, the connection closes

        def setup(self) -> None:
            super().setup()
            self.served = 0

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except TimeoutError:
                self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.served += 1
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/":
                self._send(200, b"ok")
            elif url.path == "/sleep":
                time.sleep(int(query.get("ms", "0")) / 1000.0)  # the request's own work, not a wait on a condition
                self._send(200, b"slept")
            elif url.path.startswith("/status/"):
                self._send(int(url.path.rsplit("/", 1)[1]), b"status")
            elif url.path == "/bytes":
                self._send(200, b"x" * int(query.get("n", "0")))
            elif url.path == "/drop-nth":
                if self.served == int(query.get("n", "1")):
                    self.close_connection = True  # close without answering
                    return
                self._send(200, b"kept")
            else:
                self._send(404, b"not found")

        do_POST = do_GET  # noqa: N815

        def _send(self, status: int, body: bytes) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive-timeout-ms", type=int, default=20000)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), handler(args.keepalive_timeout_ms / 1000.0))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
