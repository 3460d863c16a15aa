"""Peers: manifests (TOML) that describe an implementation in a role (the model in ``manifest``,
read by ``parse``, rendered into a launch by ``launch``), and the registry of them."""

from __future__ import annotations

from harness.peers.launch import render
from harness.peers.manifest import (
    KNOB_FORMATS,
    ROLES,
    KnobMapping,
    PeerManifest,
    UnsupportedCapability,
    UnsupportedKnob,
    UnsupportedRuntime,
)
from harness.peers.parse import load_manifests
from harness.peers.registry import BUILTIN_DIR, PeerRegistry

__all__ = [
    "BUILTIN_DIR",
    "KNOB_FORMATS",
    "ROLES",
    "KnobMapping",
    "PeerManifest",
    "PeerRegistry",
    "UnsupportedCapability",
    "UnsupportedKnob",
    "UnsupportedRuntime",
    "load_manifests",
    "render",
]
