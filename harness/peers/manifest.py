"""Peer manifests: one TOML file says what a peer is, how to start it, when it is ready, and how
harness-level knobs map onto its flags, environment or JVM system properties.

    [peer]        name, role, description, capabilities
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
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, Unimplemented
from harness.paths import PROJECT_ROOT, cache_dir
from harness.runtime.base import LaunchSpec, Readiness
from harness.runtime.readiness import HttpReady, LogLineReady, PortReady

__all__ = [
    "ROLES",
    "KNOB_FORMATS",
    "KnobMapping",
    "PeerManifest",
    "UnsupportedKnob",
    "UnsupportedCapability",
    "UnsupportedRuntime",
    "load_manifests",
    "render",
    "render_template",
]

ROLES = ("nacos-server", "nacos-client", "http-server", "http-client")
RUNTIMES = ("process", "docker")
KNOB_KINDS = ("flag", "env", "sysprop", "plan")  # plan: the agent reads it from its plan file (http-client)
KNOB_FORMATS = ("int", "str", "bool", "json", "csv")
KNOB_ARGS = "{knob_args}"
JVM_PROPS = "{jvm_props}"
DEFAULT_READINESS_TIMEOUT_MS = 15000

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KNOB_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


# --- loading -------------------------------------------------------------------------------


def load_manifests(path: str | Path) -> list[PeerManifest]:
    """Every peer in one manifest file: a single ``[peer]`` or a ``[[peers]]`` array."""
    source = Path(path).resolve()
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise HarnessError(f"peer manifest {source} does not exist; check the --peers-file path") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{source}: not valid TOML: {exc}") from None
    if "peers" in data:
        if "peer" in data:
            raise HarnessError(
                f"{source}: has both [peer] and [[peers]]; use [peer] for one peer or [[peers]] entries for several"
            )
        extra = sorted(set(data) - {"peers"})
        if extra:
            raise HarnessError(
                f"{source}: {extra[0]}: unexpected top-level key next to [[peers]]; put it inside a [[peers]] entry"
            )
        entries = data["peers"]
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise HarnessError(
                f"{source}: 'peers' must be an array of tables ([[peers]] entries), got {entries!r}"
            )
        return [_parse_peer(entry, source, f"peers#{i}.") for i, entry in enumerate(entries, start=1)]
    return [_parse_peer(data, source, "")]


class _Table:
    """One TOML table being validated: remembers its key path and which keys were read."""

    def __init__(self, data: Any, source: Path, path: str):
        self.source, self.path = source, path
        if not isinstance(data, dict):
            raise self.error("", f"expected a table, got {type(data).__name__} {data!r}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}{key}" if key else self.path.rstrip(".")

    def error(self, key: str, problem: str, fix: str = "") -> HarnessError:
        return HarnessError(
            f"{self.source}: {self.key(key) or '(top level)'}: {problem}" + (f"; {fix}" if fix else "")
        )

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def string(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing", f'add {key} = "..."')
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(key, "missing", f'add {key} = ["...", ...]')
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        if required and not value:
            raise self.error(key, "is empty", "give at least one element")
        return tuple(value)

    def string_or_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return (str(value),)
        return self.strings(key)

    def positive_int(self, key: str, *, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.error(key, f"expected a positive integer, got {value!r}")
        return value

    def boolean(self, key: str, *, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key)
        if value is None:
            return {}
        table = _Table(value, self.source, f"{self.key(key)}.")
        for name, item in table.data.items():
            if not isinstance(item, str):
                raise table.error(name, f"expected a string, got {item!r}", f'quote it: {name} = "{item}"')
        return dict(table.data)

    def table(self, key: str) -> _Table | None:
        value = self.get(key)
        return None if value is None else _Table(value, self.source, f"{self.key(key)}.")

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key", f"known keys here: {', '.join(sorted(self.seen))}")


def _parse_peer(data: dict, source: Path, prefix: str) -> PeerManifest:
    top = _Table(data, source, prefix)
    peer = top.table("peer")
    if peer is None:
        raise top.error("peer", "missing [peer] table", "give at least name and role")
    name = peer.string("name", required=True)
    assert name is not None
    if not _PEER_NAME.fullmatch(name):
        raise peer.error("name", f"{name!r} is not a valid peer name", "use letters, digits, '.', '_', '-'")
    role = peer.string("role", required=True)
    if role not in ROLES:
        raise peer.error("role", f"unknown role {role!r}", f"expected one of {', '.join(ROLES)}")
    description = peer.string("description", default="") or ""
    capabilities = frozenset(peer.strings("capabilities"))
    peer.finish()

    process = _parse_process(top.table("process"))
    docker = _parse_docker(top.table("docker"))
    if process is None and docker is None:
        raise top.error(
            "process",
            "missing: no [process] or [docker] table",
            "say how to start the peer: [process] command = [...]",
        )
    readiness = _parse_readiness(top.table("readiness"))
    containment = _parse_containment(top.table("containment"))
    placement = _parse_placement(top.table("placement"))
    witness = _parse_witness(top.table("witness"))
    admin = _parse_admin(top.table("admin"))
    knobs = _parse_knobs(top.table("knobs"))
    timers = _parse_timers(top.table("timers"))
    lacks = top.string_map("lacks")
    top.finish()

    manifest = PeerManifest(
        name=name,
        role=role,
        source=source,
        description=description,
        capabilities=capabilities,
        knobs=knobs,
        process=process,
        docker=docker,
        readiness=readiness,
        containment=containment,
        placement=placement,
        witness=witness,
        admin=admin,
        timers=timers,
        lacks=lacks,
        key_prefix=prefix,
    )
    _check_special_elements(manifest)
    return manifest


def _parse_process(table: _Table | None) -> ProcessSection | None:
    if table is None:
        return None
    section = ProcessSection(
        command=table.strings("command", required=True), env=table.string_map("env"), cwd=table.string("cwd")
    )
    table.finish()
    return section


def _parse_docker(table: _Table | None) -> DockerSection | None:
    if table is None:
        return None
    image = table.string("image", required=True)
    assert image is not None
    section = DockerSection(image=image, command=table.strings("command"),
                            env=table.string_map("env") if "env" in table.data else None, cwd=table.string("cwd"))
    table.finish()
    return section


def _parse_containment(table: _Table | None) -> ContainmentSection:
    if table is None:
        return ContainmentSection()
    section = ContainmentSection(deny_ip_datagram_sockets=table.boolean("deny_ip_datagram_sockets"))
    table.finish()
    return section


def _parse_admin(table: _Table | None) -> AdminSection:
    if table is None:
        return AdminSection()
    shape = table.string("current_shape", default="loader") or "loader"
    if shape not in ("loader", "ids"):
        raise table.error("current_shape", f"unknown shape {shape!r}", 'use "loader" or "ids"')
    section = AdminSection(current=table.string("current", required=True), current_shape=shape)
    table.finish()
    return section


def _parse_witness(table: _Table | None) -> WitnessSection:
    if table is None:
        return WitnessSection()
    patterns = {}
    for key in ("registered", "unregistered"):
        text = table.string(key)
        if text is not None:
            try:
                compiled = re.compile(text)
            except re.error as exc:
                raise table.error(key, f"not a regular expression: {exc}") from None
            if "id" not in compiled.groupindex:
                raise table.error(key, "needs a named group (?P<id>...) for the connection id")
        patterns[key] = text
    section = WitnessSection(log=table.string("log", required=True), **patterns)
    table.finish()
    return section


def _parse_placement(table: _Table | None) -> PlacementSection:
    if table is None:
        return PlacementSection()
    offset = table.get("grpc_port_offset")
    if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool) or not 1 <= offset <= 20000):
        raise table.error("grpc_port_offset", f"expected an integer 1..20000, got {offset!r}", "Nacos's is 1000")
    section = PlacementSection(network_namespace=table.boolean("network_namespace"), grpc_port_offset=offset)
    table.finish()
    return section


def _parse_readiness(table: _Table | None) -> ReadinessSection:
    if table is None:
        return ReadinessSection()
    status = table.get("http_status")
    if status is not None and (
        not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
    ):
        raise table.error("http_status", f"expected an HTTP status code (100-599), got {status!r}")
    section = ReadinessSection(
        http=table.string_or_list("http"),
        http_status=status or 200,
        port=table.string_or_list("port"),
        log=table.string_or_list("log"),
        timeout_ms=table.positive_int("timeout_ms", default=DEFAULT_READINESS_TIMEOUT_MS),
    )
    table.finish()
    return section


def _parse_timers(table: _Table | None) -> dict[str, int]:
    if table is None:
        return {}
    timers: dict[str, int] = {}
    for name in list(table.data):
        value = table.get(name)
        if not _KNOB_NAME.fullmatch(name) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise table.error(name, f"expected a lower_snake_case timer with a whole number >= 0, got {value!r}",
                              "e.g. health_interval_ms = 5000")
        timers[name] = value
    table.finish()
    return timers


def _parse_knobs(table: _Table | None) -> dict[str, KnobMapping]:
    if table is None:
        return {}
    knobs: dict[str, KnobMapping] = {}
    for knob in list(table.data):
        if not _KNOB_NAME.fullmatch(knob):
            raise table.error(
                knob,
                "knob names are lower_snake_case",
                "use the harness's knob name, e.g. max_conns_per_host",
            )
        mapping = table.table(knob)
        assert mapping is not None
        kinds = [k for k in KNOB_KINDS if k in mapping.data]
        if len(kinds) != 1:
            raise mapping.error(
                "",
                f"expected exactly one of {', '.join(KNOB_KINDS)}, got {kinds or 'none'}",
                f'e.g. {knob} = {{ flag = "--{knob.replace("_", "-")}" }}',
            )
        kind = kinds[0]
        if kind == "plan":  # `knob = { plan = true }`: nothing on the command line, the plan carries it
            if mapping.get("plan") is not True:
                raise mapping.error("plan", "expected `plan = true`", "the agent reads this knob from its plan file")
            mapping.finish()
            knobs[knob] = KnobMapping(knob=knob, kind="plan", target="plan")
            continue
        target = mapping.string(kind, required=True)
        assert target is not None
        if kind == "flag" and not target.startswith("-"):
            raise mapping.error(kind, f"a flag starts with '-', got {target!r}")
        if kind == "env" and not _ENV_NAME.fullmatch(target):
            raise mapping.error(kind, f"{target!r} is not an environment variable name")
        fmt = mapping.string("format")
        if fmt is not None and fmt not in KNOB_FORMATS:
            raise mapping.error(
                "format", f"unknown format {fmt!r}", f"expected one of {', '.join(KNOB_FORMATS)}"
            )
        mapping.finish()
        knobs[knob] = KnobMapping(knob=knob, kind=kind, target=target, format=fmt)
    return knobs


def _check_special_elements(manifest: PeerManifest) -> None:
    uses_sysprops = any(m.kind == "sysprop" for m in manifest.knobs.values())
    for runtime, command in _commands(manifest):
        key = f"{manifest.key_prefix}{runtime}.command"
        for special in (KNOB_ARGS, JVM_PROPS):
            if command.count(special) > 1:
                raise HarnessError(f"{manifest.source}: {key}: {special!r} appears more than once")
            if any(special in element and element != special for element in command):
                raise HarnessError(
                    f"{manifest.source}: {key}: {special!r} must be a whole argv element of its own"
                )
        if uses_sysprops and command and JVM_PROPS not in command:
            raise HarnessError(
                f"{manifest.source}: {key}: the manifest maps knobs to system properties but the command has no "
                f'"{JVM_PROPS}" element; put it where -D options belong (before the main class or -jar)'
            )


def _commands(manifest: PeerManifest) -> list[tuple[str, tuple[str, ...]]]:
    found = []
    if manifest.process is not None:
        found.append(("process", manifest.process.command))
    if manifest.docker is not None and manifest.docker.command:
        found.append(("docker", manifest.docker.command))
    return found


# --- rendering a manifest into a launch ----------------------------------------------------


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


def builtin_placeholders(manifest: PeerManifest) -> dict[str, Callable[[], str]]:
    """The placeholders every manifest may use; computed only when a template uses them
    (``cache_dir()`` creates the cache directory)."""
    return {
        "python": lambda: sys.executable,
        "project_root": lambda: str(PROJECT_ROOT),
        "cache": lambda: str(cache_dir()),
        "manifest_dir": lambda: str(manifest.manifest_dir),
    }


def render(
    manifest: PeerManifest,
    runtime: str = "process",
    *,
    placeholders: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Any] | None = None,
    name: str | None = None,
    log_path: Path | None = None,
) -> tuple[LaunchSpec, list[Readiness]]:
    """Fill the manifest's templates for one launch. Knobs whose value is None are left out.

    Raises ``UnsupportedKnob``/``UnsupportedRuntime`` (-> UNIMPLEMENTED) or ``HarnessError``
    (a missing placeholder, a bad template).
    """
    if runtime not in RUNTIMES:
        raise HarnessError(f"unknown runtime {runtime!r}; manifests know {', '.join(RUNTIMES)}")
    section = getattr(manifest, runtime)
    if section is None:
        raise UnsupportedRuntime(
            f"peer {manifest.label} ({manifest.source}) has no [{runtime}] table; it runs on: {', '.join(manifest.runtimes)}"
        )
    requested = {k: v for k, v in (knobs or {}).items() if v is not None}
    manifest.require_knobs(requested)

    values: dict[str, str | Callable[[], str]] = {**builtin_placeholders(manifest)}
    if isinstance(section, DockerSection):
        from harness.docker.images import IMAGE_PLACEHOLDERS

        values.update(IMAGE_PLACEHOLDERS)
        command, env_templates, cwd_template = _docker_templates(manifest, section)
    else:
        command, env_templates, cwd_template = section.command, section.env, section.cwd
    values.update({k: str(v) for k, v in (placeholders or {}).items()})  # the caller's win
    fill = _Filler(manifest, values)
    mapped = [(manifest.knobs[k], v) for k, v in requested.items()]
    flag_args = [arg for m, v in mapped if m.kind == "flag" for arg in (m.target, m.format_value(v))]
    jvm_props = [f"-D{m.target}={m.format_value(v)}" for m, v in mapped if m.kind == "sysprop"]
    env_knobs = {m.target: m.format_value(v) for m, v in mapped if m.kind == "env"}

    command_key = f"{runtime}.command"
    argv: list[str] = []
    for i, element in enumerate(command):
        if element == KNOB_ARGS:
            argv.extend(flag_args)
        elif element == JVM_PROPS:
            argv.extend(jvm_props)
        else:
            argv.append(fill(element, f"{command_key}[{i}]"))
    if KNOB_ARGS not in command:
        argv.extend(flag_args)
    if jvm_props and JVM_PROPS not in command:
        raise HarnessError(
            f"{manifest.source}: {manifest.key_prefix}{command_key}: sysprop knobs {sorted(requested)} need a "
            f'"{JVM_PROPS}" element in the command'
        )

    env = {k: fill(v, f"{runtime}.env.{k}") for k, v in env_templates.items()}
    env.update(env_knobs)
    cwd = fill(cwd_template, f"{runtime}.cwd") if cwd_template else None
    spec = LaunchSpec(
        name=name or f"{manifest.role}-{manifest.name}",
        argv=argv,
        env=env,
        cwd=Path(cwd) if cwd else None,
        log_path=log_path,
        image=section.image if isinstance(section, DockerSection) else None,
        labels={"connformance.peer": manifest.name, "connformance.role": manifest.role},
        mounts=_host_mounts(placeholders or {}) if isinstance(section, DockerSection) else (),
        deny_ip_datagram_sockets=manifest.containment.deny_ip_datagram_sockets,
    )
    return spec, _render_readiness(manifest, fill)


def render_template(manifest: PeerManifest, template: str, key: str, placeholders: Mapping[str, Any]) -> str:
    """One template of the manifest (e.g. ``witness.log``) filled like the command is."""
    values: dict[str, str | Callable[[], str]] = {**builtin_placeholders(manifest)}
    values.update({k: str(v) for k, v in placeholders.items()})
    return _Filler(manifest, values)(template, key)


def _docker_templates(manifest: PeerManifest, section: DockerSection) -> tuple[Sequence[str], Mapping[str, str], str | None]:
    """The docker launch's command, env and cwd: its own, else the [process] table's."""
    process = manifest.process
    command = section.command or (process.command if process else ())
    if not command:
        raise HarnessError(f"{manifest.source}: {manifest.key_prefix}docker.command: no command, and no [process] "
                           "command to fall back on")
    env = section.env if section.env is not None else (process.env if process else {})
    cwd = section.cwd or (process.cwd if process else None)
    return command, env, cwd


def _host_mounts(placeholders: Mapping[str, Any]) -> tuple[Path, ...]:
    """The host directories a docker launch must see at the same path: those of the caller's
    placeholders that name an existing file (its directory) or directory (a plan, a workdir)."""
    mounts: set[Path] = set()
    for value in placeholders.values():
        text = str(value)
        if not text.startswith("/"):
            continue
        path = Path(text)
        if path.is_file():
            mounts.add(path.parent)
        elif path.is_dir():
            mounts.add(path)
    return tuple(sorted(mounts))


def _render_readiness(manifest: PeerManifest, fill: _Filler) -> list[Readiness]:
    section = manifest.readiness
    strategies: list[Readiness] = []
    for i, template in enumerate(section.port):
        key = f"readiness.port[{i}]"
        host, _, port = fill(template, key).rpartition(":")
        if not port.isdigit():
            raise fill.error(key, f"expected a port number or host:port, got {template!r}")
        strategies.append(_probe(fill, key, PortReady, host or "127.0.0.1", int(port)))
    for i, template in enumerate(section.http):
        key = f"readiness.http[{i}]"
        strategies.append(_probe(fill, key, HttpReady, fill(template, key), section.http_status))
    for i, template in enumerate(section.log):
        key = f"readiness.log[{i}]"
        strategies.append(_probe(fill, key, LogLineReady, fill(template, key)))
    return strategies


def _probe(fill: _Filler, key: str, strategy: type, *args: Any) -> Readiness:
    try:
        return strategy(*args)
    except HarnessError as exc:  # say which manifest key produced the bad probe
        raise fill.error(key, str(exc)) from None


class _Filler:
    """Fills ``{placeholder}`` fields of one manifest's templates, naming the key on error."""

    def __init__(self, manifest: PeerManifest, values: Mapping[str, str | Callable[[], str]]):
        self.manifest, self.values = manifest, values

    def error(self, key: str, problem: str) -> HarnessError:
        return HarnessError(f"{self.manifest.source}: {self.manifest.key_prefix}{key}: {problem}")

    def __call__(self, template: str, key: str) -> str:
        def substitute(match: re.Match) -> str:
            placeholder = match.group(1)
            if placeholder in self.values:
                value = self.values[placeholder]
                return value if isinstance(value, str) else value()
            raise self.error(
                key,
                f"placeholder {{{placeholder}}} has no value for peer {self.manifest.label}; "
                f"available: {', '.join(sorted(self.values))}",
            )

        return _PLACEHOLDER.sub(substitute, template)
