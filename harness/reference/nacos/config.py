"""The reference server's knobs and command line.

Flag names are a contract: the built-in peer manifest maps harness knobs onto them.
Times are milliseconds and say so in their names.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.ports import check_loopback

from .limits import LimitRule

__all__ = ["ServerConfig", "build_parser", "parse_args"]

DEFAULT_MAX_INBOUND_BYTES = 10 * 1024 * 1024  # nacos.remote.server.grpc.sdk.max-inbound-message-size


@dataclass
class ServerConfig:
    main_port: int
    grpc_port: int
    host: str = "127.0.0.1"
    startup_delay_ms: int = 0
    eject_interval_ms: int = 3000  # 0: no ejector at all (Nacos 2.2.0-2.2.4)
    idle_threshold_ms: int = 20000  # RuntimeConnectionEjector.KEEP_ALIVE_TIME
    probe_timeout_ms: int = 5000  # ClientDetectionRequest timeout (2.3+)
    reset_timeout_ms: int = 3000  # ConnectResetRequest wait (loadSingle, rejected setup)
    max_inbound_message_bytes: int = DEFAULT_MAX_INBOUND_BYTES
    limits: LimitRule = field(default_factory=LimitRule)
    members: list[str] = field(default_factory=list)  # cluster members' main addresses, self included
    server_address: str = ""  # this server's own main address

    def __post_init__(self) -> None:
        check_loopback(self.host, namespaced=True)  # a bind: only our namespaces have such addresses
        if not self.server_address:
            self.server_address = f"{self.host}:{self.main_port}"
        if self.server_address not in self.members:
            self.members = [*self.members, self.server_address]
        for member in self.members:
            check_loopback(member.rsplit(":", 1)[0])


def _json_map(text: str) -> dict[str, int]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise argparse.ArgumentTypeError('expected a JSON object of integers, e.g. {"10.0.0.1": 2}')
    return {str(k): int(v) for k, v in value.items()}


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.reference.nacos.server",
                                description="connformance reference Nacos 2.x server (the spec made executable)")
    p.add_argument("--main-port", type=int, required=True, help="admin HTTP port (the Nacos main port)")
    p.add_argument("--grpc-port", type=int, required=True, help="public gRPC port (a proxy usually sits at main+1000)")
    p.add_argument("--host", default="127.0.0.1", help="bind address, inside 127.0.0.0/8")
    p.add_argument("--startup-delay-ms", type=int, default=0, help="answer 300 and reject SDK setups this long")
    p.add_argument("--count-limit", type=int, default=-1, help="total SDK connections (<=0: unlimited)")
    p.add_argument("--count-limit-per-client-ip-default", type=int, default=-1,
                   help="per reported client IP unless mapped (<=0: unlimited)")
    p.add_argument("--count-limit-per-client-ip", type=_json_map, default={}, help='JSON {"ip": n}')
    p.add_argument("--count-limit-per-client-app", type=_json_map, default={}, help='JSON {"appName": n}')
    p.add_argument("--monitor-ip-list", type=_csv, default=[], help="csv of client IPs marked traced")
    p.add_argument("--eject-interval-ms", type=int, default=3000, help="ejector period; 0 disables it (2.2.4)")
    p.add_argument("--idle-threshold-ms", type=int, default=20000, help="idle time before a ClientDetection probe")
    p.add_argument("--probe-timeout-ms", type=int, default=5000, help="ClientDetection answer timeout")
    p.add_argument("--members", type=_csv, default=[], help="csv of cluster members' main addresses ip:port")
    p.add_argument("--server-address", default="", help="own main address (default host:main-port)")
    p.add_argument("--max-inbound-message-bytes", type=int, default=DEFAULT_MAX_INBOUND_BYTES)
    return p


def parse_args(argv: Sequence[str] | None = None) -> ServerConfig:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ServerConfig(
            main_port=ns.main_port,
            grpc_port=ns.grpc_port,
            host=ns.host,
            startup_delay_ms=ns.startup_delay_ms,
            eject_interval_ms=ns.eject_interval_ms,
            idle_threshold_ms=ns.idle_threshold_ms,
            probe_timeout_ms=ns.probe_timeout_ms,
            max_inbound_message_bytes=ns.max_inbound_message_bytes,
            limits=LimitRule(
                count_limit=ns.count_limit,
                count_limit_per_client_ip_default=ns.count_limit_per_client_ip_default,
                count_limit_per_client_ip=ns.count_limit_per_client_ip,
                count_limit_per_client_app=ns.count_limit_per_client_app,
                monitor_ip_list=frozenset(ns.monitor_ip_list),
            ),
            members=list(ns.members),
            server_address=ns.server_address,
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: error() exits
