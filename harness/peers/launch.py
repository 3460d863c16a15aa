"""Rendering a peer manifest into a launch: placeholders filled (``{host}``, ``{main_port}``,
``{scratch}``, the built-in ones), knob values turned into flags, environment and JVM system
properties, readiness probes built; for the process or the docker runtime.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.paths import PROJECT_ROOT, cache_dir
from harness.peers.manifest import (
    JVM_PROPS,
    KNOB_ARGS,
    RUNTIMES,
    DockerSection,
    PeerManifest,
    UnsupportedRuntime,
)
from harness.runtime.base import LaunchSpec, Readiness
from harness.runtime.readiness import HttpReady, LogLineReady, PortReady

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
