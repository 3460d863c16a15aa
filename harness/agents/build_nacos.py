"""Setup steps for the real Java and Go Nacos clients' agents, registered with ``harness.toolchain``.

| step              | does                                                                           |
|-------------------|--------------------------------------------------------------------------------|
| java-nacos-agents | per pinned nacos-client version: ``mvn dependency:copy-dependencies`` of        |
|                   | harness/agents/java/nacos/pom.xml (``-Dnacos.version=V``) into ``lib/``, then   |
|                   | ``javac`` NacosClientAgent.java against it into ``classes/``, and write         |
|                   | ``agent.argfile`` (``-cp "<classes>:<lib>/*"``), all under                      |
|                   | ``<cache>/agents/java-nacos/<V>/``                                              |
| go-nacos-agents   | per pinned nacos-sdk-go version: ``go build -modfile=<its go.mod>`` of          |
|                   | harness/agents/go/nacosagent -> ``<cache>/agents/go-nacos/<V>/nacosagent``      |

Pinned versions: Java 2.2.4 (the seed's), 2.5.1 (the newest 2.x on Maven Central) and 3.1.1 (the
newest 3.x whose jars resolve here); Go v2.3.5 (the newest v2 release the module proxy serves,
``go.mod``) and v2.2.7 (the 2.2 line, ``go-v2.2.7.mod``). Each output is
keyed by a hash of its sources and its version, written next to it: an unchanged source is never
rebuilt, a changed one always is. The manifests ``harness/peers/builtin/nacos-client-{java,go}-*.toml``
name these outputs through ``{cache}``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.agents.buildkit import agents_cache, build_maven_java, is_fresh, run_build, sources_hash, stamp
from harness.errors import SetupError
from harness.toolchain import Progress, Step, check_go, register_step

__all__ = [
    "GO_NACOS_SRC",
    "GO_NACOS_VERSIONS",
    "JAVA_NACOS_SRC",
    "JAVA_NACOS_VERSIONS",
    "go_nacos_agent_binary",
    "java_nacos_agent_argfile",
    "java_nacos_agent_dir",
]

AGENTS_DIR = Path(__file__).resolve().parent
JAVA_NACOS_SRC = AGENTS_DIR / "java" / "nacos"
GO_NACOS_SRC = AGENTS_DIR / "go" / "nacosagent"

# nacos-client versions (Maven Central com.alibaba.nacos:nacos-client), oldest first.
# 3.1.1: the newest whose jars resolve here (3.2.x/3.3.0 lack nacos-client-basic on this mirror).
JAVA_NACOS_VERSIONS: tuple[str, ...] = ("2.2.4", "2.5.1", "3.1.1")
# nacos-sdk-go versions -> the module file in GO_NACOS_SRC that pins it (its .sum beside it).
GO_NACOS_VERSIONS: dict[str, str] = {"v2.2.7": "go-v2.2.7.mod", "v2.3.5": "go.mod"}

_GO_BUILD_TIMEOUT_S = 900.0


# --- where things go --------------------------------------------------------------------------


def java_nacos_agent_dir(version: str) -> Path:
    """``<cache>/agents/java-nacos/<version>``: ``classes/``, ``lib/``, ``agent.argfile``."""
    return agents_cache() / "java-nacos" / version


def java_nacos_agent_argfile(version: str) -> Path:
    """``java @<this> NacosClientAgent ...``: holds ``-cp "<classes>:<lib>/*"``."""
    return java_nacos_agent_dir(version) / "agent.argfile"


def go_nacos_agent_binary(version: str) -> Path:
    return agents_cache() / "go-nacos" / version / "nacosagent"


# --- java-nacos-agents --------------------------------------------------------------------------


def _java_sources() -> list[Path]:
    return [JAVA_NACOS_SRC / "NacosClientAgent.java", JAVA_NACOS_SRC / "pom.xml"]


def _java_key(version: str) -> str:
    return sources_hash(_java_sources(), [f"nacos-client {version}"])


def _java_done() -> bool:
    return all(is_fresh(java_nacos_agent_dir(v), _java_key(v)) and java_nacos_agent_argfile(v).is_file()
               for v in JAVA_NACOS_VERSIONS)


def _build_java_version(version: str, progress: Progress) -> None:
    jars = build_maven_java("java-nacos-agents", JAVA_NACOS_SRC / "pom.xml", [JAVA_NACOS_SRC / "NacosClientAgent.java"],
                            java_nacos_agent_dir(version), progress, mvn_args=[f"-Dnacos.version={version}"],
                            key=_java_key(version))
    if not any(j.name == f"nacos-client-{version}.jar" for j in jars):
        shutil.rmtree(java_nacos_agent_dir(version), ignore_errors=True)
        raise SetupError(f"java-nacos-agents: Maven copied no nacos-client-{version}.jar "
                         f"(got: {', '.join(j.name for j in jars) or 'nothing'})")


def _build_java(progress: Progress) -> None:
    for version in JAVA_NACOS_VERSIONS:
        if is_fresh(java_nacos_agent_dir(version), _java_key(version)) and java_nacos_agent_argfile(version).is_file():
            progress(f"[setup] java-nacos-agents: nacos-client {version} already built")
            continue
        _build_java_version(version, progress)


register_step(Step(
    name="java-nacos-agents",
    description=f"build the Java Nacos client agent for nacos-client {', '.join(JAVA_NACOS_VERSIONS)} "
                "(Maven dependencies + javac)",
    is_done=_java_done,
    run=_build_java,
))


# --- go-nacos-agents ----------------------------------------------------------------------------


def _go_sources(version: str) -> list[Path]:
    modfile = GO_NACOS_SRC / GO_NACOS_VERSIONS[version]
    return [GO_NACOS_SRC / "main.go", modfile, modfile.with_suffix(".sum")]


def _go_key(version: str) -> str:
    return sources_hash(_go_sources(version), [f"nacos-sdk-go {version}"])


def _go_done() -> bool:
    return all(is_fresh(go_nacos_agent_binary(v), _go_key(v)) for v in GO_NACOS_VERSIONS)


def _build_go(progress: Progress) -> None:
    go, go_version = check_go()
    env = {**os.environ, "GOFLAGS": "", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    for version, modfile in GO_NACOS_VERSIONS.items():
        output = go_nacos_agent_binary(version)
        if is_fresh(output, _go_key(version)):
            progress(f"[setup] go-nacos-agents: nacos-sdk-go {version} already built")
            continue
        output.parent.mkdir(parents=True, exist_ok=True)
        progress(f"[setup] go-nacos-agents: go{'.'.join(map(str, go_version))} build -modfile={modfile} "
                 f"(nacos-sdk-go {version}) -o {output}")
        tmp = output.with_name(output.name + ".tmp")
        run_build([go, "build", "-mod=readonly", f"-modfile={modfile}", "-trimpath", "-buildvcs=false", "-o", str(tmp), "."],
                  what=f"go-nacos-agents ({version})", timeout_s=_GO_BUILD_TIMEOUT_S, env=env, cwd=GO_NACOS_SRC,
                  fix="Check access to the Go module proxy, then rerun `connformance setup --only go-nacos-agents`.")
        tmp.replace(output)  # never leave a half-written binary under the real name
        stamp(output).write_text(_go_key(version) + "\n")


register_step(Step(
    name="go-nacos-agents",
    description=f"build the Go Nacos client agent for nacos-sdk-go {', '.join(GO_NACOS_VERSIONS)} (`go build`)",
    is_done=_go_done,
    run=_build_go,
))
