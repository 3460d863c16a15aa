"""A deliberately broken reference Nacos server for the PL-13 self-test: it overrides ONE step of
``ConnectionManager`` so the case can be shown to FAIL for the intended reason (the per-IP counter
drifts from ``current`` under churn). It lives in the tests, never in the product peer.

    python -m tests.broken_peers.pl_nacos_servers --variant NAME <reference server flags>

Variants:

- ``counter-counts-rejected`` (PL-13): ``register`` bumps the per-client-IP counter before it
  knows the setup is admitted and never takes the bump back when the limit denies it (a
  check-then-act slip). A quiet server never notices; under churn every rejected setup leaves
  the counter one above ``current``, and the limit starts refusing connections it should admit.
"""

from __future__ import annotations

import logging
import sys

from harness.reference.nacos import server
from harness.reference.nacos.connections import Connection, ConnectionManager
from harness.reference.nacos.server import NacosRefServer
from tests.broken_peers.variants import run_variant

log = logging.getLogger("nacos-ref.broken")


class _CountsRejected(ConnectionManager):
    def register(self, conn: Connection) -> bool:
        if not conn.is_connected():
            return False
        if conn.id in self.current:
            return True
        verdict = self.check_limit(conn)  # decided on the counter before the bump ...
        self._increment_client_ip(conn.meta.client_ip)  # ... which is never rolled back (broken)
        if not verdict:
            log.warning("limit denies %s (clientIp=%s): %s; per-IP counter left at %s (broken)", conn.id,
                        conn.meta.client_ip, verdict.detail, self.client_ip_counts.get(conn.meta.client_ip))
            return False
        conn.traced = self.rule.traced(conn.meta.client_ip)
        self.current[conn.id] = conn
        self.events.append(event="connected", connectionId=conn.id, clientIp=conn.meta.client_ip)
        self._notify("connected", conn)
        return True


class CounterCountsRejected(NacosRefServer):
    """Rejected setups leave the per-IP counter one higher each."""

    connection_manager_class = _CountsRejected


VARIANTS: dict[str, type[NacosRefServer]] = {
    "counter-counts-rejected": CounterCountsRejected,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: server.main(flags, server_cls=cls), "reference server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
