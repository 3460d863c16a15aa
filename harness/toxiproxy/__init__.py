"""The fault layer: the real Toxiproxy server, an instance-scoped API client and typed toxics.

with ToxiproxyServer() as server, server.client() as tp:
    proxy = tp.create_proxy("db", upstream="127.0.0.1:5432")
    with proxy.toxic(LatencyToxic(latency_ms=200)):
        ...  # clients dial 127.0.0.1:<proxy.listen_port>
"""

from harness.toxiproxy.client import (
    BadRequest,
    Conflict,
    EventCallback,
    NotFound,
    Proxy,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnavailable,
)
from harness.toxiproxy.server import ToxiproxyServer
from harness.toxiproxy.toxics import (
    STREAMS,
    TOXICS,
    BandwidthToxic,
    LatencyToxic,
    LimitDataToxic,
    NoopToxic,
    ResetPeerToxic,
    SlicerToxic,
    SlowCloseToxic,
    Stream,
    TimeoutToxic,
    Toxic,
    toxic_from_api,
)

__all__ = [
    "STREAMS",
    "TOXICS",
    "BadRequest",
    "BandwidthToxic",
    "Conflict",
    "EventCallback",
    "LatencyToxic",
    "LimitDataToxic",
    "NoopToxic",
    "NotFound",
    "Proxy",
    "ResetPeerToxic",
    "SlicerToxic",
    "SlowCloseToxic",
    "Stream",
    "TimeoutToxic",
    "Toxic",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyServer",
    "ToxiproxyUnavailable",
    "toxic_from_api",
]
