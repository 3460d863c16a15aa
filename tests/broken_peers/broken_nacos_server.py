"""Deliberately broken reference servers: each overrides ONE step of the reference server, so
a case can be shown to FAIL against it (a check that cannot fail is a defect). These live in
the tests, never in the product peer's code paths.

    python -m tests.broken_peers.broken_nacos_server --variant NAME <reference server flags>
"""

from __future__ import annotations

import sys
from typing import Any

from harness.protocol.nacos import codec
from harness.reference.nacos import server
from harness.reference.nacos.server import NacosRefServer
from tests.broken_peers.variants import run_variant


class SharedIdServer(NacosRefServer):
    """SR-01: every transport gets the same connectionId."""

    def server_check(self, t: Any) -> Any:
        return codec.server_check_response("0_127.0.0.1_0")


class RegisterOnServerCheck(NacosRefServer):
    """SR-02: registers the transport at ServerCheck, before any ConnectionSetup."""

    def server_check(self, t: Any) -> Any:
        if t is not None and self.connections.get(t.id) is None:
            self.register_connection(self.build_connection(t, None, None))
        return super().server_check(t)


class TcpPeerAsClientIp(NacosRefServer):
    """SR-03: takes clientIp from the TCP peer instead of metadata.clientIp."""

    def build_connection(self, t: Any, channel: Any, msg: Any) -> Any:
        conn = super().build_connection(t, channel, msg)
        conn.meta.client_ip = t.peer_ip
        return conn


VARIANTS = {
    "shared-id": SharedIdServer,
    "register-on-server-check": RegisterOnServerCheck,
    "tcp-peer-as-client-ip": TcpPeerAsClientIp,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: server.main(flags, server_cls=cls), "server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
