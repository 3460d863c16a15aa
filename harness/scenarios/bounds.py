"""Named timing bounds the cases share: the SPEC §5 tolerance, hang guards, poll intervals, the
scaled-down timers a case sets on peers that take them, and a peer's health and eject bounds as
small functions of its timers.

Each number is defined here once. A case that needs a bound of its own (a hold, a settle time
that belongs to its requirement) keeps it beside the case, named for what it bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.control.http import ControlError
from harness.peers import PeerManifest

TOLERANCE_MS = 250  # SPEC §5 preamble: the timing tolerance on a loaded two-core machine
FAIL_FACTOR = 2  # "never": not within FAIL_FACTOR × the bound

# Hang guards (bounds on waits, never requirements).
RUNNING_TIMEOUT_MS = 15_000  # a client RUNNING from a cold start (real libraries: ServerCheck 3 s + setup wait)
CROWD_RUNNING_TIMEOUT_MS = 20_000  # many agents starting at once on 2 cores; one may spend 3 s on a dead server first
REGISTER_TIMEOUT_MS = 3000  # a RUNNING client's connection shows in the server's `current`
AGENT_RUN_TIMEOUT_MS = 30_000  # one HTTP agent run (JVM start + the longest pool plan, ~6 s)
AGENT_RUN_SLACK_MS = 30_000  # an HTTP agent run beyond its plan (JVM start under parallel load)

# Polling: fine enough that two changes never fall into one sample, gentle on /proc/net/tcp.
POLL_MS = 50
FINE_POLL_MS = 25  # where a case times a removal against a 1 s bound

# The reset exchange (research/nacos-protocol.md §2.3, §2.4).
RESET_ANSWER_TIMEOUT_MS = 3000  # loadSingle waits this long for the ConnectResetResponse
ANSWER_MARGIN_MS = 500  # without a pushes log: reloadClient back this long before that wait ends = answered
SWITCH_SLACK_MS = 2000  # a switch's bound: the peer's ServerCheck timeout + setup wait + this

# What a control endpoint raises while a peer is busy, paused or restarting: a poll retries it.
CONTROL_ERRORS = (OSError, ValueError, ControlError)

# Scaled-down timers for peers that take them (server eject 500 / idle 1500 / probe 500; client
# health 1000 / timeout 500 / 1 retry); real libraries keep their defaults.
SCALED_SERVER_EJECT = {"eject_interval_ms": 500, "idle_threshold_ms": 1500, "probe_timeout_ms": 500}
SCALED_CLIENT_HEALTH = {"health_interval_ms": 1000, "health_timeout_ms": 500, "health_retry": 1}
# Where a client's reaction is judged, the server must not eject the connection first (an
# ejection closes the transport, which crosses a blackhole and hands the client a stream end).
QUIET_SERVER = {"idle_threshold_ms": 120_000}

SPEC_IDLE_THRESHOLD_MS, SPEC_EJECT_INTERVAL_MS, SPEC_PROBE_TIMEOUT_MS = 20_000, 3000, 5000  # SPEC §4.2


def supported(peer: PeerManifest, wanted: dict[str, Any]) -> dict[str, Any]:
    """The knobs of ``wanted`` the peer has; the rest keep the peer's defaults."""
    return {k: v for k, v in wanted.items() if peer.supports(k)}


@dataclass(frozen=True)
class HealthBound:
    """A client's dead-link detection bound: ``interval + attempts × timeout (+ jitter) + tolerance``.

    The interval and timeout come from the client's timers (a manifest that lacks them is told to
    declare them); an undeclared ``health_retry`` is a single attempt and an undeclared jitter none.
    ``detect_ms`` is the same sum without the tolerance, for bounds that add it once at the end."""

    interval_ms: int
    timeout_ms: int
    attempts: int
    jitter_ms: int = 0

    @classmethod
    def of(cls, peer: PeerManifest, knobs: Mapping[str, Any]) -> HealthBound:
        return cls(peer.timer("health_interval_ms", knobs), peer.timer("health_timeout_ms", knobs),
                   peer.timer("health_retry", knobs, default=0) + 1, peer.timer("health_jitter_ms", knobs, default=0))

    @property
    def detect_ms(self) -> int:
        return self.interval_ms + self.jitter_ms + self.attempts * self.timeout_ms

    @property
    def bound_ms(self) -> int:
        return self.detect_ms + TOLERANCE_MS

    def __str__(self) -> str:
        jitter = f" + jitter {self.jitter_ms}" if self.jitter_ms else ""
        return (f"interval {self.interval_ms}{jitter} + {self.attempts} × timeout {self.timeout_ms} "
                f"+ {TOLERANCE_MS} = {self.bound_ms} ms")


def reconnect_ms(peer: PeerManifest, knobs: Mapping[str, Any]) -> int:
    """One reconnect after a client gave up its server: its longest backoff, then a connect
    attempt (``backoff_cap + server_check_timeout + setup_wait``), from its timers."""
    return (peer.timer("backoff_cap_ms", knobs) + peer.timer("server_check_timeout_ms", knobs)
            + peer.timer("setup_wait_ms", knobs))


@dataclass(frozen=True)
class EjectBound:
    """A server's dead-connection bound: ``idle_threshold + eject_interval + probe_timeout
    (+ probe_check_granularity) + tolerance``. The granularity is for a server that notices an
    unanswered probe only on its next pass rather than when the probe's timeout fires (from its
    source, in its manifest's ``[timers]``; 0 for Nacos 2.3+, whose probe callback times out on
    its own)."""

    idle_threshold_ms: int
    eject_interval_ms: int
    probe_timeout_ms: int
    probe_check_granularity_ms: int = 0

    @classmethod
    def of(cls, peer: PeerManifest, knobs: Mapping[str, Any]) -> EjectBound:
        """The peer's timers; where it declares none, the spec's 2.3+ numbers (SPEC §4.2): the
        bound the requirement sets, whether or not the server has such a mechanism."""
        return cls(peer.timer("idle_threshold_ms", knobs, default=SPEC_IDLE_THRESHOLD_MS),
                   peer.timer("eject_interval_ms", knobs, default=SPEC_EJECT_INTERVAL_MS),
                   peer.timer("probe_timeout_ms", knobs, default=SPEC_PROBE_TIMEOUT_MS),
                   peer.timer("probe_check_granularity_ms", knobs, default=0))

    @property
    def eject_ms(self) -> int:
        return (self.idle_threshold_ms + self.eject_interval_ms + self.probe_timeout_ms
                + self.probe_check_granularity_ms)

    @property
    def bound_ms(self) -> int:
        return self.eject_ms + TOLERANCE_MS

    def __str__(self) -> str:
        granularity = (f" + probe check granularity {self.probe_check_granularity_ms}"
                       if self.probe_check_granularity_ms else "")
        return (f"idle {self.idle_threshold_ms} + eject interval {self.eject_interval_ms} + probe "
                f"{self.probe_timeout_ms}{granularity} + {TOLERANCE_MS} = {self.bound_ms} ms")
