"""The ledger's command line: knobs (flags) into a ``LedgerConfig``. The knobs' meaning is
documented in ``harness.reference.http.ledger``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from harness.ports import check_loopback

__all__ = ["TOMCAT_CLOSE_ON_STATUS", "LedgerConfig", "parse_args"]

TOMCAT_CLOSE_ON_STATUS = (400, 408, 411, 413, 414, 500, 501, 503)


@dataclass(frozen=True)
class LedgerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    keepalive_timeout_ms: int = 20000
    max_keepalive_requests: int = 100
    keepalive_header: str | None = None
    max_connections: int = -1
    close_on_status: tuple[int, ...] = TOMCAT_CLOSE_ON_STATUS
    rst_on_idle: bool = False


def _status_list(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated status codes, got {text!r}") from None
    if any(not 100 <= c <= 599 for c in codes):
        raise argparse.ArgumentTypeError(f"status codes are 100..599, got {text!r}")
    return codes


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_args(argv: Sequence[str] | None = None) -> LedgerConfig:
    p = argparse.ArgumentParser(prog="python -m harness.reference.http.ledger", description="the ledger http-server (SPEC §4.5)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keepalive-timeout-ms", type=int, default=20000)
    p.add_argument("--max-keepalive-requests", type=int, default=100)
    p.add_argument("--keepalive-header", default=None, help="e.g. 'timeout=5, max=100'")
    p.add_argument("--max-connections", type=int, default=-1)
    p.add_argument("--close-on-status", type=_status_list, default=TOMCAT_CLOSE_ON_STATUS)
    # A bare --rst-on-idle turns it on; the manifest passes "--rst-on-idle true|false".
    p.add_argument("--rst-on-idle", type=_bool, nargs="?", const=True, default=False)
    a = p.parse_args(argv)
    try:
        check_loopback(a.host, namespaced=True)  # a bind: only our namespaces have such addresses
    except ValueError as exc:
        p.error(str(exc))
    if a.max_connections == 0 or a.max_connections < -1:
        p.error(f"--max-connections is -1 (unlimited) or >= 1, got {a.max_connections}")
    if a.keepalive_header is not None and ("\r" in a.keepalive_header or "\n" in a.keepalive_header):
        p.error("--keepalive-header must be one line")
    return LedgerConfig(
        host=a.host, port=a.port, keepalive_timeout_ms=a.keepalive_timeout_ms,
        max_keepalive_requests=a.max_keepalive_requests, keepalive_header=a.keepalive_header or None,
        max_connections=a.max_connections, close_on_status=a.close_on_status, rst_on_idle=a.rst_on_idle,
    )
