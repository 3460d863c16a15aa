"""Peer manifests: one TOML file says what a peer is, how to start it, when it is ready, and how
harness-level knobs map onto its flags, environment or JVM system properties.

    [peer]        name, role, description, capabilities, version (of the implementation under test)
    [process]     command (argv template), env, cwd            -- process runtime
    [docker]      image[, command, env, cwd]                   -- docker runtime (the rest defaults
                  to [process]'s, with {python}/{cache}/{project_root} the image's paths)
    [readiness]   http / port / log (a string or a list each), http_status, timeout_ms
    [containment] deny_ip_datagram_sockets = true   -- refuse UDP/IP sockets (a library's stray
                  wildcard listener; see harness/runtime/seccomp.py)
    [admin]       current = "/path", current_shape = "ids" (a server without the loader API:
                  where its registrations are listed)
    [witness]     log = "{scratch}/logs/x.log", registered = regex, unregistered = regex (named
                  group ``id``): a server's own log lines for register/unregister
    [placement]   network_namespace = true (it binds the wildcard: give it a namespace of its own),
                  grpc_port_offset = 1000 (its gRPC port is main + this; it has no setting for it)
    [knobs]       knob = { flag = "--x" | env = "X" | sysprop = "a.b", format = int|str|bool|json|csv }
                  or knob = { plan = true } (an http-client agent that reads it from its plan file)
    [timers]      the peer's own default timers in ms (health_interval_ms = 5000, ...): cases write
                  their expectation bands on these, or on the knob value when a case sets one
    [lacks]       capability_or_knob = "why the implementation has no such thing": said in the
                  UNIMPLEMENTED verdict of every case that needs it

A file holds one peer (the tables above at top level) or several (``[[peers]]`` entries, each
with the same sub-tables). ``{identifier}`` in any template is a placeholder, filled by
``render``; other braces (``\\d{2,5}`` in a regex) are left alone. Two argv elements are
special and must stand alone: ``"{knob_args}"`` (the flag knobs; appended at the end when
absent) and ``"{jvm_props}"`` (``-Dkey=value`` for sysprop knobs; required when any are declared).

The model lives here; ``harness.peers.parse`` reads a file into it and ``harness.peers.launch``
renders it into a launch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Unimplemented

__all__ = [
    "ROLES",
    "KNOB_FORMATS",
    "KnobMapping",
    "PeerManifest",
    "UnsupportedKnob",
    "UnsupportedCapability",
    "UnsupportedRuntime",
    "format_knob_value",
]

ROLES = ("nacos-server", "nacos-client", "http-server", "http-client")
RUNTIMES = ("process", "docker")
KNOB_KINDS = ("flag", "env", "sysprop", "plan")  # plan: the agent reads it from its plan file (http-client)
KNOB_FORMATS = ("int", "str", "bool", "json", "csv")
KNOB_ARGS = "{knob_args}"
JVM_PROPS = "{jvm_props}"
DEFAULT_READINESS_TIMEOUT_MS = 15000



# --- "the peer can't do that" (UNIMPLEMENTED, not a failure) ------------------------------


class UnsupportedKnob(Unimplemented):
    """A case asked for knobs the peer's manifest does not declare."""

    def __init__(
        self, peer: str, missing: Sequence[str], *, declared: Iterable[str] = (), source: Path | None = None,
        lacks: Mapping[str, str] | None = None,
    ):
        self.peer = peer
        self.missing = list(missing)
        self.declared = sorted(declared)
        why = _why_lacking(self.missing, lacks)
        if why:
            super().__init__(f"peer {peer} has no knob {why}")
            return
        where = f" ({source})" if source else ""
        super().__init__(
            f"peer {peer}{where} does not support knob(s) {', '.join(self.missing)}; "
            f"it declares: {', '.join(self.declared) or 'none'}. If the implementation has the setting, "
            "map it in the manifest's [knobs] table."
        )


class UnsupportedCapability(Unimplemented):
    """A case needs capabilities the peer's manifest does not list."""

    def __init__(self, peer: str, missing: Sequence[str], *, declared: Iterable[str] = (),
                 lacks: Mapping[str, str] | None = None):
        self.peer = peer
        self.missing = list(missing)
        why = _why_lacking(self.missing, lacks)
        super().__init__(
            f"peer {peer} lacks capability {why}" if why
            else f"peer {peer} lacks capability(ies) {', '.join(self.missing)}; it has: {', '.join(sorted(declared)) or 'none'}"
        )


def _why_lacking(missing: Sequence[str], lacks: Mapping[str, str] | None) -> str:
    """``name: reason; other`` from the manifest's ``[lacks]``, or "" when it gives no reason."""
    if not lacks or not any(name in lacks for name in missing):
        return ""
    return "; ".join(f"{name}: {lacks[name]}" if name in lacks else name for name in missing)


class UnsupportedRuntime(Unimplemented):
    """The manifest has no section for the chosen runtime (e.g. no [docker] image)."""


# --- the parsed manifest -------------------------------------------------------------------


@dataclass(frozen=True)
class KnobMapping:
    """How one harness-level knob reaches the peer: a flag, an env var, or a JVM system property."""

    knob: str
    kind: str  # flag | env | sysprop
    target: str  # "--count-limit" | "NACOS_CLIENT_IP" | "nacos.remote.client..."
    format: str | None = None  # int | str | bool | json | csv; None infers from the value

    def format_value(self, value: Any) -> str:
        return format_knob_value(value, self.format, knob=self.knob)


@dataclass(frozen=True)
class ProcessSection:
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True)
class DockerSection:
    """``image``: a built-in image name (``python``, ``java``, ``go``) or any image reference.
    ``command``/``env``/``cwd`` default to the [process] table's: with the placeholders
    ``{python}``, ``{project_root}``, ``{cache}`` meaning their paths inside the images."""

    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class ReadinessSection:
    http: tuple[str, ...] = ()
    http_status: int = 200
    port: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    timeout_ms: int = DEFAULT_READINESS_TIMEOUT_MS


@dataclass(frozen=True)
class ContainmentSection:
    """What the runtime takes away from the peer so that nothing it starts listens beyond
    loopback: ``deny_ip_datagram_sockets`` refuses ``socket(AF_INET*, SOCK_DGRAM)`` (a seccomp
    filter, ``harness.runtime.seccomp``) for a library that binds a UDP wildcard it never uses."""

    deny_ip_datagram_sockets: bool = False


@dataclass(frozen=True)
class AdminSection:
    """Where a nacos-server peer shows its registrations when it has no loader API:
    ``current`` (a path on its main port) answering ``{"list": [connection ids]}``
    (``current_shape = "ids"``: ids only, no metadata), instead of ``/nacos/v2/core/loader/current``."""

    current: str | None = None
    current_shape: str = "loader"


@dataclass(frozen=True)
class WitnessSection:
    """A server's own log as the witness of what its API does not show (SPEC §4.2): ``log`` (a
    template: ``{scratch}/logs/x.log``), and regexes with a named group ``id`` for the lines it
    writes when it registers and unregisters a connection (its listeners fire with each)."""

    log: str | None = None
    registered: str | None = None
    unregistered: str | None = None


@dataclass(frozen=True)
class PlacementSection:
    """Where the peer must run. ``network_namespace``: it binds the wildcard address (a real
    server's gRPC or raft port), so it runs in a network namespace of its own, with an address
    from 198.18.0.0/15, reached through its proxy on loopback. ``grpc_port_offset``: it has no
    setting for its gRPC port, which is its main port + this (Nacos: 1000)."""

    network_namespace: bool = False
    grpc_port_offset: int | None = None


@dataclass(frozen=True)
class PeerManifest:
    name: str
    role: str
    source: Path
    description: str = ""
    capabilities: frozenset[str] = frozenset()
    version: str = ""  # the implementation's version ("" = not said), shown by `connformance peers`
    knobs: Mapping[str, KnobMapping] = field(default_factory=dict)
    process: ProcessSection | None = None
    docker: DockerSection | None = None
    readiness: ReadinessSection = ReadinessSection()
    containment: ContainmentSection = ContainmentSection()
    placement: PlacementSection = PlacementSection()
    witness: WitnessSection = WitnessSection()
    admin: AdminSection = AdminSection()
    timers: Mapping[str, int] = field(default_factory=dict)
    lacks: Mapping[str, str] = field(default_factory=dict)  # capability/knob -> why the implementation has none
    key_prefix: str = ""  # "peers#2." for the 2nd [[peers]] entry; used in error messages

    @property
    def label(self) -> str:
        return f"{self.role}/{self.name}"

    @property
    def manifest_dir(self) -> Path:
        return self.source.parent

    @property
    def runtimes(self) -> tuple[str, ...]:
        return tuple(r for r in RUNTIMES if getattr(self, r) is not None)

    @property
    def readiness_timeout_ms(self) -> int:
        return self.readiness.timeout_ms

    def timer(self, name: str, knobs: Mapping[str, Any] | None = None, default: int | None = None) -> int:
        """The peer's effective timer ``name``: the knob value a case set, else the manifest's
        ``[timers]`` default, else ``default``. HarnessError when none is known."""
        if knobs and knobs.get(name) is not None:
            return int(knobs[name])
        if name in self.timers:
            return self.timers[name]
        if default is not None:
            return default
        raise HarnessError(
            f"{self.source}: peer {self.label} declares no timer {name!r}; "
            f"add it under [timers] (known: {', '.join(sorted(self.timers)) or 'none'})"
        )

    def supports(self, knob: str) -> bool:
        return knob in self.knobs

    def has_capability(self, capability: str) -> bool:
        return capability in self.capabilities

    def require_knobs(self, knobs: Iterable[str]) -> None:
        """Raise ``UnsupportedKnob`` unless every knob is declared."""
        missing = [k for k in knobs if k not in self.knobs]
        if missing:
            raise UnsupportedKnob(self.label, missing, declared=self.knobs, source=self.source, lacks=self.lacks)

    def require_capabilities(self, capabilities: Iterable[str]) -> None:
        """Raise ``UnsupportedCapability`` unless every capability is listed."""
        missing = [c for c in capabilities if c not in self.capabilities]
        if missing:
            raise UnsupportedCapability(self.label, missing, declared=self.capabilities, lacks=self.lacks)


def format_knob_value(value: Any, fmt: str | None, *, knob: str = "knob") -> str:
    """A knob value as the peer's command line or environment wants it."""
    if fmt is None:  # infer: the common shapes need no declared format
        if isinstance(value, bool):
            fmt = "bool"
        elif isinstance(value, (list, tuple)):
            fmt = "csv"
        elif isinstance(value, dict):
            fmt = "json"
        else:
            return str(value)
    if fmt == "bool":
        if not isinstance(value, bool):
            raise HarnessError(f"knob {knob}: format bool needs True/False, got {value!r}")
        return "true" if value else "false"
    if fmt == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise HarnessError(f"knob {knob}: format int needs an integer, got {value!r}")
        return str(value)
    if fmt == "json":
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if fmt == "csv":
        return value if isinstance(value, str) else ",".join(str(v) for v in value)
    return str(value)
