"""How a client pool closes a connection it keeps idle (PL-04): the per-stack band from the
research note (``IDLE_REAPERS``), else from the peer's manifest ``[timers]``."""

from __future__ import annotations

from dataclasses import dataclass

from harness.peers import PeerManifest
from harness.scenarios.bounds import TOLERANCE_MS
from harness.scenarios.pools import stack_of

WINDOW_MARGIN_MS = 750  # the idle window outlasts the band's end by this before the next request


@dataclass(frozen=True)
class IdleReaper:
    """How a stack closes an idle connection after timeout T: in [T − early, T + late], or
    ``lazy``: not before T, and at the latest when the pool is next used."""

    how: str
    early_ms: int = 0
    late_ms: int = 0
    lazy: bool = False
    source: str = ""

    def band(self, timeout_ms: int) -> tuple[int, int | None]:
        """(earliest, latest) close after idle, without tolerance; latest None = next use."""
        return max(0, timeout_ms - self.early_ms), (None if self.lazy else timeout_ms + self.late_ms)

    def window_ms(self, timeout_ms: int) -> int:
        """How long the plan stays idle before its next request."""
        if self.lazy:
            return 2 * timeout_ms  # well past T: an expired connection waits for the next use
        return timeout_ms + self.late_ms + TOLERANCE_MS + WINDOW_MARGIN_MS


def idle_reaper(peer: PeerManifest, timeout_ms: int) -> IdleReaper:
    """The per-stack expectation (research/http-pools.md), else the manifest's ``[timers]``."""
    stack = stack_of(peer) or peer.name
    if stack == "go-net-http":
        return IdleReaper("a time.AfterFunc per idle connection: on time", 0, 0,
                          source="research §1.4, §6.1 G4 (IdleConnTimeout=1s -> closed 1.0 s after idle)")
    if stack == "jdk-httpurlconnection":
        return IdleReaper("the Keep-Alive-Timer thread sweeps every 5 s", 0, 5000,
                          source="research §2.1 (KeepAliveCache.run, LIFETIME 5000), §6.2 J3")
    if stack == "jdk-httpclient":
        return IdleReaper("ExpiryList truncates 'now' to whole seconds and the SelectorManager purges only when "
                          "it wakes, up to NODEADLINE = 3000 ms later: closes in (T - 1 s, T + 3 s]", 1000, 3000,
                          source="JDK 17.0.21 ConnectionPool.ExpiryList.add, HttpClientImpl.SelectorManager.run "
                                 "(DEF_NODEADLINE); research §2.2, §6.2 J12")
    if stack == "aiohttp":
        ceil_ms = 1000 if timeout_ms >= 5000 else 0  # timeout_ceil_threshold rounds T >= 5 s up
        return IdleReaper("_cleanup re-arms every keepalive_timeout: closes in [T, 2T]", 0, timeout_ms + ceil_ms,
                          source="research §4.4, §6.4 A2 (T=1 s -> 1.4 s)")
    if stack == "apache-httpclient5":
        return IdleReaper("IdleConnectionEvictor wakes every T and closes what idled longer than T: closes in "
                          "[T, 2T]", 0, timeout_ms,
                          source="httpclient5 HttpClientBuilder.build: new IdleConnectionEvictor(cm, maxIdleTime, "
                                 "maxIdleTime) (sleep time = the idle time)")
    if stack == "httpx":
        return IdleReaper("no reaper: an expired connection is closed when the pool is next used", lazy=True,
                          source="research §4.3, §6.4 X3")
    early = peer.timer("idle_close_early_ms", default=0)
    late = peer.timer("idle_sweep_interval_ms", default=0)
    return IdleReaper(f"manifest [timers]: idle_close_early_ms={early}, idle_sweep_interval_ms={late}",
                      early, late, source=str(peer.source))
