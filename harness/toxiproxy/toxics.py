"""Typed Toxiproxy toxics: frozen dataclasses with units in their field names.

Toxiproxy keeps units only in comments (``latency`` ms, ``rate`` KB/s with KB = 1000 bytes,
slicer ``delay`` µs); here every field says its unit and ``ATTRIBUTES`` maps it to the API name.
Semantics per toxic: research §A3 (read from Shopify/toxiproxy v2.12.0 ``toxics/*.go``).

All toxics are small (a type name, a field map, a check), so they share this module rather than
one module each; the explicit registry ``TOXICS`` (type name -> class) plays the role of
Toxiproxy's ``toxics.Register``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from harness.errors import HarnessError

__all__ = [
    "STREAMS",
    "TOXICS",
    "BandwidthToxic",
    "LimitDataToxic",
    "LatencyToxic",
    "NoopToxic",
    "ResetPeerToxic",
    "SlowCloseToxic",
    "SlicerToxic",
    "Stream",
    "TimeoutToxic",
    "Toxic",
    "toxic_from_api",
]

Stream = Literal["downstream", "upstream"]
# downstream = upstream server -> client, upstream = client -> upstream server (Toxiproxy's terms)
STREAMS: tuple[str, ...] = ("downstream", "upstream")


@dataclass(frozen=True, kw_only=True)
class Toxic:
    """Base of every toxic. Subclasses set ``TYPE`` and ``ATTRIBUTES`` (field -> API attribute).

    ``name`` defaults to ``<type>_<stream>`` as in Toxiproxy, so two unnamed toxics of one type
    on one stream collide (409); give one a ``name`` to stack them.
    """

    TYPE: ClassVar[str] = ""
    ATTRIBUTES: ClassVar[dict[str, str]] = {}

    stream: Stream = "downstream"
    toxicity: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise HarnessError(f"{type(self).__name__}: stream must be one of {STREAMS}, got {self.stream!r}")
        if isinstance(self.toxicity, bool) or not isinstance(self.toxicity, (int, float)):
            raise HarnessError(
                f"{type(self).__name__}: toxicity must be a number in [0, 1], got {self.toxicity!r}"
            )
        # Toxiproxy accepts any float (7.5 included) without complaint; refuse nonsense here.
        if not 0.0 <= self.toxicity <= 1.0:
            raise HarnessError(f"{type(self).__name__}: toxicity must be in [0, 1], got {self.toxicity!r}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise HarnessError(
                f"{type(self).__name__}: name must be non-empty and contain no '/', got {self.name!r}"
            )
        for field in self.ATTRIBUTES:
            value = getattr(self, field)
            # The server decodes these as Go ints: a float would be a 400, a negative one can panic.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise HarnessError(f"{type(self).__name__}: {field} must be an int >= 0, got {value!r}")
        self._check()

    def _check(self) -> None:
        """Extra per-type checks (override)."""

    @property
    def toxic_name(self) -> str:
        """The name the toxic gets on the server: ``name`` or ``<type>_<stream>``."""
        return self.name or f"{self.TYPE}_{self.stream}"

    def attributes(self) -> dict[str, int]:
        """Toxiproxy's ``attributes`` object for this toxic."""
        return {api: getattr(self, field) for field, api in self.ATTRIBUTES.items()}

    def to_api(self) -> dict[str, Any]:
        """Body for ``POST /proxies/{proxy}/toxics``."""
        return {
            "name": self.toxic_name,
            "type": self.TYPE,
            "stream": self.stream,
            "toxicity": float(self.toxicity),
            "attributes": self.attributes(),
        }

    def with_fields(self, **changes: Any) -> Toxic:
        """A copy with some fields changed (validated like a new toxic)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise HarnessError(
                f"{type(self).__name__} has no field(s) {sorted(unknown)}; "
                f"known: {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LatencyToxic(Toxic):
    """Delay every chunk by ``latency_ms`` ± ``jitter_ms`` (uniform), measured from when it was read."""

    TYPE: ClassVar[str] = "latency"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"latency_ms": "latency", "jitter_ms": "jitter"}

    latency_ms: int
    jitter_ms: int = 0


@dataclass(frozen=True)
class TimeoutToxic(Toxic):
    """Drop all data; close after ``timeout_ms`` with no data (0 = blackhole forever).

    Each dropped chunk restarts the timer, and removing the toxic closes the affected connections.
    """

    TYPE: ClassVar[str] = "timeout"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"timeout_ms": "timeout"}

    timeout_ms: int


@dataclass(frozen=True)
class ResetPeerToxic(Toxic):
    """Close ``timeout_ms`` after the first chunk in its direction; an RST only on connections
    opened while the toxic was installed (linger 0 is set at connect), a FIN on older ones."""

    TYPE: ClassVar[str] = "reset_peer"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"timeout_ms": "timeout"}

    timeout_ms: int = 0


@dataclass(frozen=True)
class BandwidthToxic(Toxic):
    """Limit each connection's direction to ``rate_kbps`` kilobytes/s, KB = 1000 bytes.

    ``rate_kbps=0`` holds data (not drops it) until the toxic is removed: the "connection cut" idiom.
    """

    TYPE: ClassVar[str] = "bandwidth"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"rate_kbps": "rate"}

    rate_kbps: int


@dataclass(frozen=True)
class SlowCloseToxic(Toxic):
    """On EOF in this direction, wait ``delay_ms`` before closing the other side."""

    TYPE: ClassVar[str] = "slow_close"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"delay_ms": "delay"}

    delay_ms: int


@dataclass(frozen=True)
class SlicerToxic(Toxic):
    """Split chunks into ~``average_size_bytes`` ± ``size_variation_bytes`` pieces, ``delay_us`` apart."""

    TYPE: ClassVar[str] = "slicer"
    ATTRIBUTES: ClassVar[dict[str, str]] = {
        "average_size_bytes": "average_size",
        "size_variation_bytes": "size_variation",
        "delay_us": "delay",
    }

    average_size_bytes: int
    size_variation_bytes: int = 0
    delay_us: int = 0

    def _check(self) -> None:
        # average 0 recurses forever in the server; variation must stay below the average.
        if self.average_size_bytes < 1 or self.size_variation_bytes >= self.average_size_bytes:
            raise HarnessError(
                "Slicer: need average_size_bytes >= 1 and size_variation_bytes < average_size_bytes, "
                f"got average_size_bytes={self.average_size_bytes}, size_variation_bytes={self.size_variation_bytes}"
            )


@dataclass(frozen=True)
class LimitDataToxic(Toxic):
    """Forward at most ``bytes`` in this direction per connection, then close it."""

    TYPE: ClassVar[str] = "limit_data"
    ATTRIBUTES: ClassVar[dict[str, str]] = {"bytes": "bytes"}

    bytes: int


@dataclass(frozen=True)
class NoopToxic(Toxic):
    """Does nothing (Toxiproxy's own registered type); handy as a marker or in tests."""

    TYPE: ClassVar[str] = "noop"


TOXICS: dict[str, type[Toxic]] = {
    cls.TYPE: cls for cls in (LatencyToxic, TimeoutToxic, ResetPeerToxic, BandwidthToxic, SlowCloseToxic, SlicerToxic,
                              LimitDataToxic, NoopToxic)
}


def toxic_from_api(data: dict[str, Any]) -> Toxic:
    """Build the typed toxic from a Toxiproxy toxic object (``GET .../toxics`` item)."""
    type_name = data.get("type")
    cls = TOXICS.get(type_name)  # type: ignore[arg-type]
    if cls is None:
        raise HarnessError(f"unknown toxic type {type_name!r} from Toxiproxy; known: {sorted(TOXICS)}")
    attrs = data.get("attributes") or {}
    # Fields the server omits keep our defaults; unknown attribute keys are ignored like the server does.
    fields = {field: attrs[api] for field, api in cls.ATTRIBUTES.items() if api in attrs}
    return cls(
        stream=data.get("stream", "downstream"),
        toxicity=float(data.get("toxicity", 1.0)),
        name=data.get("name"),
        **fields,
    )
