"""A minimal HTTP/1.1 client agent written from docs/roles/http-client.md alone: a pool of the
stdlib's ``http.client`` connections, per host, with two knobs read from the plan.

    python -m tests.independent.http_client --url U[,U2] --plan PLAN.json

Knobs: ``max_conns_per_host`` (requests beyond it wait for a connection) and ``keepalive``
(false: ``Connection: close``, one connection per request). Any other knob in the plan: exit 3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import urlparse

SUPPORTED = {"max_conns_per_host", "keepalive"}


class HostPool:
    def __init__(self, base_url: str, max_conns: int | None, keepalive: bool) -> None:
        url = urlparse(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.slots = threading.BoundedSemaphore(max_conns) if max_conns else None
        self.keepalive = keepalive
        self.idle: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def request(self, method: str, path: str) -> dict[str, Any]:
        if self.slots is not None:
            self.slots.acquire()
        try:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.connect()
            local_port = conn.sock.getsockname()[1] if conn.sock else None
            headers = {} if self.keepalive else {"Connection": "close"}
            try:
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                raise
            if self.keepalive and not response.will_close:
                with self.lock:
                    self.idle.append(conn)
            else:
                conn.close()
            return {"status": response.status, "reused": reused, "local_port": local_port}
        finally:
            if self.slots is not None:
                self.slots.release()


def run(plan: dict[str, Any], urls: list[str]) -> int:
    knobs = plan.get("knobs") or {}
    unsupported = sorted(set(knobs) - SUPPORTED)
    if unsupported:
        print(json.dumps({"unsupported": unsupported}), flush=True)
        return 3
    pools = [HostPool(u, knobs.get("max_conns_per_host"), knobs.get("keepalive", True) is not False) for u in urls]
    out_lock = threading.Lock()

    def one(phase: int, i: int, step: dict[str, Any]) -> None:
        start = time.time() * 1000.0
        line: dict[str, Any] = {"phase": phase, "i": i, "start_ms": start}
        try:
            line.update(pools[step.get("target", 0)].request(step.get("method", "GET"), step.get("path", "/")))
            line["error"] = None
        except (OSError, http.client.HTTPException) as exc:
            line.update({"status": None, "error": f"{type(exc).__name__}: {exc}", "reused": None, "local_port": None})
        line["end_ms"] = time.time() * 1000.0
        with out_lock:
            print(json.dumps(line), flush=True)

    for phase, step in enumerate(plan.get("phases") or []):
        op = step.get("op")
        if op == "sleep":
            time.sleep(step["ms"] / 1000.0)  # the plan's idle phase: the agent must stay alive through it
        elif op == "burst":
            threads = [threading.Thread(target=one, args=(phase, i, step)) for i in range(step.get("n", 1))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif op == "sequential":
            for i in range(step.get("n", 1)):
                one(phase, i, step)
        else:
            print(json.dumps({"unsupported": [f"phase {op}"]}), flush=True)
            return 3
    print(json.dumps({"done": True}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True)
    args = parser.parse_args(argv)
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)
    return run(plan, args.url.split(","))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
