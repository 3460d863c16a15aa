"""HTTP servers closing what they should, as steps (TC-11..TC-14): a raw HTTP/1.1 client driven by
hand so the server's FIN can be timed (``RawHttp``), the server's own sockets on its real port,
and one client run whose second request the ledger drops unanswered."""

from __future__ import annotations

import http.client
import select
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.observe.sockets import close_wait_on, established_between, local_sockets, owners
from harness.wait import WaitTimeout, eventually, now_ms

IO_TIMEOUT_S = 5.0  # one request/response on loopback: a bound, not an expectation
CLIENT_RUN_MS = 15_000
DROP_PATH = "/drop-nth?n=2"  # the ledger reads the 2nd request on a connection and closes unanswered
POST_BODY = "connformance-tc14"
CLIENT_EXIT_MS = 3000


@dataclass
class Answer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str] = field(default_factory=dict)
    done_ms: float = 0.0  # monotonic, when the response (or the close) was read

    @property
    def connection(self) -> str:
        return self.headers.get("connection", "")


class RawHttp:
    """One HTTP/1.1 connection to ``host:port``, driven by hand so the server's FIN can be timed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.closed_ms: float | None = None  # monotonic, when EOF or RST was read
        self.unsolicited = b""

    def exchange(self, path: str, method: str = "GET") -> Answer:
        request = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: keep-alive\r\n"
        self.sock.sendall((request + ("Content-Length: 0\r\n" if method == "POST" else "") + "\r\n").encode())
        response = http.client.HTTPResponse(self.sock, method=method)
        try:
            response.begin()
            response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
            self.closed_ms = now_ms()
            return Answer(None, {}, self.closed_ms)
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, now_ms())

    def poll_closed(self) -> bool:
        """Non-blocking: has the server closed (EOF or RST)? Unsolicited bytes are kept aside."""
        if self.closed_ms is not None:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            data = b""
        if data:
            self.unsolicited += data
            return False
        self.closed_ms = now_ms()
        return True

    def close(self) -> None:
        self.sock.close()


def wait_closed(conns: list[RawHttp], *, until_ms: float, done: Callable[[], bool]) -> None:
    """Watch ``conns`` for the server's FIN until ``done()`` or the monotonic deadline ``until_ms``."""
    while not done() and now_ms() < until_ms:
        live = [c.sock for c in conns if c.closed_ms is None]
        if not live:
            return
        # Blocks until a socket is readable or 20 ms pass: a bounded wait on the sockets themselves.
        select.select(live, [], [], min(0.02, max(0.0, (until_ms - now_ms()) / 1000.0)))
        for c in conns:
            c.poll_closed()


def proxy_address(srv) -> tuple[str, int]:
    """Where a raw client dials: the server's proxy."""
    host, _, port = srv.proxy.listen.rpartition(":")
    return host, int(port)


def server_side_states(srv) -> dict[str, int]:
    """Server-side socket states on the server's real address (LISTEN left out)."""
    states: dict[str, int] = {}
    for e in local_sockets(srv.host, srv.port):
        if e.state != "LISTEN":
            states[e.state] = states.get(e.state, 0) + 1
    return states


# ---- TC-11: closes after error statuses --------------------------------------------------------

@dataclass
class StatusRun:
    answers: dict[int, Answer]
    conns: dict[int, RawHttp]
    follow_up: dict[int, Answer]  # the next GET / on connections still open after the watch


def status_then_watch(cf, srv, codes: Iterable[int], *, closers: Iterable[int], keepers: Iterable[int],
                      band_ms: float, late_ms: float) -> StatusRun:
    """One raw connection per status through the proxy: a keep-alive ``GET /`` (200: the baseline,
    a used pooled connection), then ``GET /status/<code>``; every connection watched for the
    server's FIN until the ``closers`` all got one (bounded by ``late_ms``) and the rest were
    watched through ``band_ms``; then one more ``GET /`` on the ``keepers`` still open."""
    host, port = proxy_address(srv)
    conns: dict[int, RawHttp] = {}
    answers: dict[int, Answer] = {}
    try:
        for code in codes:
            conn = conns[code] = RawHttp(host, port)
            baseline = conn.exchange("/")
            cf.baseline(baseline.status == 200 and conn.closed_ms is None,
                        expected=f"GET / through the proxy answers 200 and keeps the connection (before /status/{code})",
                        actual={"status": baseline.status, "connection": baseline.connection},
                        hint="the server or the proxy path is not working")
            answers[code] = conn.exchange(f"/status/{code}")
        last_ms = max(a.done_ms for a in answers.values())
        closing = [conns[c] for c in closers]
        wait_closed(list(conns.values()), until_ms=last_ms + late_ms,
                    done=lambda: all(c.closed_ms is not None for c in closing) and now_ms() >= last_ms + band_ms)
        follow_up = {code: conns[code].exchange("/") for code in keepers if conns[code].closed_ms is None}
    finally:
        for conn in conns.values():
            conn.close()
    return StatusRun(answers, conns, follow_up)


def fin_per_status(run: StatusRun) -> dict[str, dict[str, Any]]:
    """Per status: the answer's status and Connection header, the FIN's delay after the response,
    and the follow-up GET's status where there was one."""
    observed: dict[str, Any] = {}
    for code, a in run.answers.items():
        c = run.conns[code]
        fin_ms = None if c.closed_ms is None else round(max(0.0, c.closed_ms - a.done_ms), 1)
        observed[str(code)] = {"status": a.status, "Connection": a.connection or None, "FIN after ms": fin_ms}
        if code in run.follow_up:
            observed[str(code)]["next GET /"] = run.follow_up[code].status
    return observed


# ---- TC-13: the server's side after the client closes -----------------------------------------

def server_held(srv) -> int:
    return sum(1 for p in established_between(local_sockets(srv.host, srv.port), srv.port) if p.server is not None)


def held_connections(cf, srv, shapes: Iterable[tuple[str, int]]) -> list[RawHttp]:
    """One raw connection per shape (how many ``GET /`` it made), all held by the server: its
    ESTABLISHED sockets on its real port (the baseline, through the proxy)."""
    host, port = proxy_address(srv)
    conns: list[RawHttp] = []
    shapes = list(shapes)
    try:
        for shape, requests in shapes:
            conn = RawHttp(host, port)
            conns.append(conn)
            for _ in range(requests):
                answer = conn.exchange("/")
                cf.baseline(answer.status == 200 and conn.closed_ms is None,
                            expected=f"GET / answers 200 on a kept connection ({shape})",
                            actual={"status": answer.status, "connection": answer.connection})
        try:
            eventually(lambda: server_held(srv), timeout_ms=2000, what="the server holds the connections",
                       accept=lambda n: n >= len(shapes), interval_ms=20)
        except WaitTimeout as exc:
            cf.baseline(False, expected=f"{len(shapes)} server-side ESTABLISHED sockets on {srv.host}:{srv.port} "
                                        "(one per client connection, through the proxy)",
                        actual={"server-side ESTABLISHED": exc.last, "states": server_side_states(srv)},
                        hint="the proxy's upstream connections do not reach the server's port")
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


def stuck_sockets(srv) -> dict[str, Any]:
    """The server-side sockets still CLOSE_WAIT or ESTABLISHED on its port, with their owners
    (one read of every fd link: only on failure)."""
    stuck = [e for e in local_sockets(srv.host, srv.port) if e.state in ("CLOSE_WAIT", "ESTABLISHED")]
    return {"sockets": [f"{e.state} {e.local_ip}:{e.local_port} <- {e.remote_ip}:{e.remote_port}" for e in stuck],
            "owner pid by inode": owners(stuck), "CLOSE_WAIT": len(close_wait_on(stuck, srv.port))}


# ---- TC-14: a request dropped on a reused connection -------------------------------------------

def drop_run(cf, topology, client_peer, srv, method: str) -> dict[str, Any]:
    """One client run: two sequential requests on one connection, the 2nd dropped unanswered."""
    srv.ledger.reset()
    phase: dict[str, Any] = {"op": "sequential", "n": 2, "path": DROP_PATH, "method": method}
    if method == "POST":
        phase["body"] = POST_BODY
    run = topology.run_http_client(peer=client_peer, servers=[srv], plan={"knobs": {}, "phases": [phase]},
                                   timeout_ms=CLIENT_RUN_MS)
    try:  # the client exited: its connections are closed; the ledger records that as it reads EOF
        ledger = eventually(srv.ledger.ledger, timeout_ms=CLIENT_EXIT_MS, what="ledger: no open connection",
                            accept=lambda v: v["open"] == 0, interval_ms=20).value
    except WaitTimeout as exc:
        ledger = exc.last or srv.ledger.ledger()
    conns = [c for c in ledger["connections"] if any(r["path"] == DROP_PATH for r in c["request_log"])]
    seen = sum(1 for c in conns for r in c["request_log"] if r["method"] == method and r["path"] == DROP_PATH)
    dropped_on_reused = any(c["closed_by"] == "server-drop" and c["requests"] >= 2 for c in conns)
    records = run.phase(0)
    second = records[1] if len(records) > 1 else None
    outcome = ("ok " + str(second.status)) if second is not None and second.ok else \
        f"error: {second.error if second is not None else 'no record'}"
    result = {
        "client outcome of the dropped request": outcome,
        "server saw requests": seen,
        "re-sent by the client": max(0, seen - 2),
        "connections": len(conns),
        "dropped on a reused connection": dropped_on_reused,
    }
    cf.history.observe(f"tc14_{method.lower()}", {**result, "ledger": [
        {k: c[k] for k in ("id", "closed_by", "requests")} for c in conns]})
    return result
