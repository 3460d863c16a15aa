"""Typed toxics: field -> Toxiproxy attribute mapping, default names, validation, registry.

No sockets: the wire format is checked against what Toxiproxy v2.12.0's ``toxics/*.go`` decodes.
"""

from __future__ import annotations

import dataclasses

import pytest

from harness.errors import HarnessError
from harness.toxiproxy import (
    STREAMS,
    TOXICS,
    BandwidthToxic,
    LatencyToxic,
    LimitDataToxic,
    NoopToxic,
    ResetPeerToxic,
    SlicerToxic,
    SlowCloseToxic,
    TimeoutToxic,
    Toxic,
    toxic_from_api,
)

# (toxic, Toxiproxy type, expected attributes) — attribute names as in Toxiproxy's json tags.
CASES = [
    (LatencyToxic(latency_ms=200, jitter_ms=15), "latency", {"latency": 200, "jitter": 15}),
    (LatencyToxic(50), "latency", {"latency": 50, "jitter": 0}),
    (TimeoutToxic(timeout_ms=0), "timeout", {"timeout": 0}),
    (ResetPeerToxic(), "reset_peer", {"timeout": 0}),
    (ResetPeerToxic(timeout_ms=100), "reset_peer", {"timeout": 100}),
    (BandwidthToxic(rate_kbps=64), "bandwidth", {"rate": 64}),
    (BandwidthToxic(rate_kbps=0), "bandwidth", {"rate": 0}),
    (SlowCloseToxic(delay_ms=250), "slow_close", {"delay": 250}),
    (
        SlicerToxic(average_size_bytes=64, size_variation_bytes=8, delay_us=500),
        "slicer",
        {"average_size": 64, "size_variation": 8, "delay": 500},
    ),
    (LimitDataToxic(bytes=1024), "limit_data", {"bytes": 1024}),
    (NoopToxic(), "noop", {}),
]


@pytest.mark.parametrize(("toxic", "type_name", "attributes"), CASES, ids=lambda v: repr(v)[:40])
def test_attributes_map_to_toxiproxy_names(toxic: Toxic, type_name: str, attributes: dict) -> None:
    assert toxic.TYPE == type_name
    assert toxic.attributes() == attributes
    assert toxic.to_api() == {
        "name": f"{type_name}_downstream",
        "type": type_name,
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": attributes,
    }


def test_units_are_in_every_field_name() -> None:
    units = ("_ms", "_us", "_kbps", "_bytes", "bytes")
    for cls in TOXICS.values():
        for field in cls.ATTRIBUTES:
            assert field.endswith(units), f"{cls.__name__}.{field} names no unit"


def test_registry_is_explicit_and_complete() -> None:
    assert set(TOXICS) == {
        "latency",
        "timeout",
        "reset_peer",
        "bandwidth",
        "slow_close",
        "slicer",
        "limit_data",
        "noop",
    }
    for type_name, cls in TOXICS.items():
        assert cls.TYPE == type_name
        # ATTRIBUTES names exactly the dataclass's own fields (besides stream/toxicity/name)
        own = {f.name for f in dataclasses.fields(cls)} - {"stream", "toxicity", "name"}
        assert set(cls.ATTRIBUTES) == own, cls


def test_default_name_is_type_and_stream() -> None:
    assert LatencyToxic(10).toxic_name == "latency_downstream"
    assert LatencyToxic(10, stream="upstream").toxic_name == "latency_upstream"
    assert ResetPeerToxic(stream="upstream").toxic_name == "reset_peer_upstream"
    named = LatencyToxic(10, name="slow-db")
    assert named.toxic_name == "slow-db"
    assert named.to_api()["name"] == "slow-db"


def test_stream_and_toxicity_go_to_the_body() -> None:
    body = BandwidthToxic(rate_kbps=5, stream="upstream", toxicity=0.25).to_api()
    assert (body["stream"], body["toxicity"]) == ("upstream", 0.25)
    assert STREAMS == ("downstream", "upstream")


def test_toxics_are_frozen_and_hashable() -> None:
    toxic = LatencyToxic(100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        toxic.latency_ms = 5  # type: ignore[misc]
    assert len({LatencyToxic(100), LatencyToxic(100), LatencyToxic(101)}) == 2


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: LatencyToxic(-1), "latency_ms must be an int >= 0"),
        (lambda: LatencyToxic(1.5), "latency_ms must be an int"),  # Toxiproxy decodes ints: 1.5 would be a 400
        (lambda: LatencyToxic(True), "latency_ms must be an int"),
        (lambda: BandwidthToxic(rate_kbps=-1), "rate_kbps"),  # negative rate panics the server
        (lambda: LatencyToxic(1, stream="sideways"), "stream must be one of"),
        (lambda: LatencyToxic(1, toxicity=1.5), "toxicity must be in [0, 1]"),
        (lambda: LatencyToxic(1, toxicity="1"), "toxicity must be a number"),
        (lambda: LatencyToxic(1, name=""), "name must be non-empty"),
        (lambda: LatencyToxic(1, name="a/b"), "no '/'"),
        (lambda: SlicerToxic(average_size_bytes=0), "average_size_bytes >= 1"),  # 0 recurses forever server-side
        (
            lambda: SlicerToxic(average_size_bytes=8, size_variation_bytes=8),
            "size_variation_bytes < average_size_bytes",
        ),
    ],
)
def test_invalid_values_are_refused_before_the_api(factory, message: str) -> None:
    with pytest.raises(HarnessError) as info:
        factory()
    assert message in str(info.value)


@pytest.mark.parametrize(("toxic", "_type", "_attrs"), CASES, ids=lambda v: repr(v)[:40])
def test_round_trip_through_api_shape(toxic: Toxic, _type: str, _attrs: dict) -> None:
    assert toxic_from_api(toxic.to_api()) == dataclasses.replace(toxic, name=toxic.toxic_name)


def test_from_api_reads_server_json() -> None:
    # As GET /proxies/{p}/toxics returns it (toxicity is a float32, may come back as 1)
    data = {
        "attributes": {"latency": 300, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    toxic = toxic_from_api(data)
    assert toxic == LatencyToxic(latency_ms=300, name="latency_downstream")
    assert isinstance(toxic.toxicity, float)


def test_from_api_unknown_type() -> None:
    with pytest.raises(HarnessError, match="unknown toxic type 'packet_loss'"):
        toxic_from_api({"type": "packet_loss", "attributes": {}})


def test_with_fields_validates_and_rejects_unknown_fields() -> None:
    assert LatencyToxic(100).with_fields(latency_ms=200) == LatencyToxic(200)
    with pytest.raises(HarnessError, match="no field"):
        LatencyToxic(100).with_fields(rate_kbps=1)
    with pytest.raises(HarnessError, match="latency_ms must be an int >= 0"):
        LatencyToxic(100).with_fields(latency_ms=-5)
