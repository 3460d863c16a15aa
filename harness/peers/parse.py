"""Reading peer manifests: a TOML file (one ``[peer]`` or ``[[peers]]`` entries) into
``PeerManifest`` objects, every key checked, each problem one ``HarnessError`` that names the key
and what to write instead. The file format is described in ``harness.peers.manifest``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.peers.manifest import (
    DEFAULT_READINESS_TIMEOUT_MS,
    JVM_PROPS,
    KNOB_ARGS,
    KNOB_FORMATS,
    KNOB_KINDS,
    ROLES,
    AdminSection,
    ContainmentSection,
    DockerSection,
    KnobMapping,
    PeerManifest,
    PlacementSection,
    ProcessSection,
    ReadinessSection,
    WitnessSection,
)

_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KNOB_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    version = peer.string("version", default="") or ""
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
        version=version,
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
