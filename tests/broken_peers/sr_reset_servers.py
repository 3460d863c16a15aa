"""Deliberately broken reference servers for the rebalancing cases (SR-12, SR-13): each
overrides ONE step of ``NacosRefServer`` so a case can be shown to FAIL. They live in the
tests, never in the product peer.

    python -m tests.broken_peers.sr_reset_servers --variant NAME <reference server flags>

Variants:

- ``load-count-noop``: ``loadCount`` remembers nothing, so ``reloadCurrent`` and
  ``smartReloadCluster`` (whose ``ServerReload`` ends in ``loadCount``) answer as usual and
  never reset a connection: the Nacos 2.2.0-2.2.4 behaviour (research §3, alibaba/nacos#10761).
"""

from __future__ import annotations

import logging
import sys

from harness.reference.nacos import server
from harness.reference.nacos.server import NacosRefServer
from tests.broken_peers.variants import run_variant

log = logging.getLogger("nacos-ref.broken")


class LoadCountNoop(NacosRefServer):
    """``loadCount`` is stored nowhere: the ejector never sees a reload request."""

    def load_count(self, count: int, redirect_address: str | None) -> None:
        log.info("loadCount count=%d redirect=%s ignored (broken: 2.2.x behaviour)", count, redirect_address or "-")


VARIANTS: dict[str, type[NacosRefServer]] = {
    "load-count-noop": LoadCountNoop,
}


def main(argv: list[str]) -> int:
    return run_variant(argv, VARIANTS, lambda flags, cls: server.main(flags, server_cls=cls), "reference server flags")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
