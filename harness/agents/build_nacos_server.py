"""Setup steps for the real Nacos servers, registered with ``harness.toolchain``.

| step          | does                                                                              |
|---------------|-----------------------------------------------------------------------------------|
| nacos-servers | per pinned server: ``mvn dependency:copy-dependencies`` of the republished server   |
|               | modules (harness/agents/java/nacos_server/pom.xml) into ``lib/``, ``javac`` of our |
|               | launcher where the republish has no console main class, and ``server.argfile``     |
|               | (the classpath, in an order that works), under ``<cache>/servers/nacos-<V>/``      |
| rnacos        | ``cargo install rnacos --version 0.8.8 --locked`` into ``<cache>/servers/rnacos-0.8.8`` |
|               | (≈ 400 crates: minutes on two cores; runs beside the other steps)                  |

The classpath order matters (research/real-servers-and-audit.md §1): ``com.alipay.sofa:hessian``
3.3.6 and ``com.caucho:hessian`` 4.0.63 both define ``com.caucho.hessian.io.SerializerFactory``;
with 3.3.6 first Nacos fails to start (``NoSuchMethodError ... getClassFactory``), without it
``reloadClient`` answers 500 (its ``ConcurrentLinkedHashMap$Builder`` is only in 3.3.6). So every
jar is listed by name, 3.3.6 last.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.agents.buildkit import (
    MAVEN_DEPENDENCY_PLUGIN,
    compile_java,
    is_fresh,
    mvn,
    run_build,
    sources_hash,
    stamp,
)
from harness.errors import SetupError
from harness.paths import cache_dir
from harness.toolchain import Progress, Step, register_step

__all__ = ["NACOS_SERVERS", "RNACOS_VERSION", "nacos_server_argfile", "nacos_server_dir", "rnacos_binary"]

SERVER_SRC = Path(__file__).resolve().parent / "java" / "nacos_server"
RNACOS_VERSION = "0.8.8"
_MVN_TIMEOUT_S = 900.0
_CARGO_TIMEOUT_S = 3600.0
_LAST_ON_CLASSPATH = "hessian-3.3.6.jar"


@dataclass(frozen=True)
class NacosServerBuild:
    """Where one pinned Nacos server comes from, and how it starts."""

    version: str
    group: str
    module: str
    launcher: bool  # True: our NacosServerLauncher (no console module published); else the console's main


NACOS_SERVERS: dict[str, NacosServerBuild] = {
    # The seed's server: the only republish of 2.2.4's modules (no console).
    "2.2.4": NacosServerBuild("2.2.4", "io.springboot.nacos", "nacos-naming", launcher=True),
    # The newest republish found that resolves with its console (2.3.0 brought back the eject probe,
    # alibaba/nacos#10509, and working reloadCurrent/smartReloadCluster, #10761).
    "2.3.2": NacosServerBuild("2.3.2", "org.jeecgframework.nacos", "nacos-console", launcher=False),
}


def _servers_cache() -> Path:
    return cache_dir() / "servers"


def nacos_server_dir(version: str) -> Path:
    return _servers_cache() / f"nacos-{version}"


def nacos_server_argfile(version: str) -> Path:
    """``java @<this> <main class>``: holds ``-cp "..."`` with every jar in a working order."""
    return nacos_server_dir(version) / "server.argfile"


def rnacos_binary() -> Path:
    return _servers_cache() / f"rnacos-{RNACOS_VERSION}" / "bin" / "rnacos"


# --- nacos-servers ------------------------------------------------------------------------------


def _key(build: NacosServerBuild) -> str:
    sources = [SERVER_SRC / "pom.xml"] + ([SERVER_SRC / "NacosServerLauncher.java"] if build.launcher else [])
    return sources_hash(sources, [f"{build.group}:{build.module}:{build.version}"])


def _fresh(build: NacosServerBuild) -> bool:
    return is_fresh(nacos_server_dir(build.version), _key(build)) and nacos_server_argfile(build.version).is_file()


def _classpath(lib: Path, final_lib: Path, classes: Path | None) -> str:
    jars = sorted(p.name for p in lib.glob("*.jar"))
    ordered = [j for j in jars if j != _LAST_ON_CLASSPATH] + [j for j in jars if j == _LAST_ON_CLASSPATH]
    entries = ([str(classes)] if classes else []) + [str(final_lib / j) for j in ordered]
    return os.pathsep.join(entries)


def _build_server(build: NacosServerBuild, progress: Progress) -> None:
    output = nacos_server_dir(build.version)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lib = tmp / "lib"
    lib.mkdir(parents=True)
    progress(f"[setup] nacos-servers: mvn copy-dependencies {build.group}:{build.module}:{build.version} -> {output}/lib")
    run_build([mvn("nacos-servers", "the Nacos server jars"), "-B", "-q", "-f", str(SERVER_SRC / "pom.xml"), f"-Dnacos.group={build.group}",
               f"-Dnacos.module={build.module}", f"-Dnacos.version={build.version}",
               f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
              what="nacos-servers", timeout_s=_MVN_TIMEOUT_S, cwd=SERVER_SRC,
              fix="Check access to Maven Central, then rerun `connformance setup --only nacos-servers`.")
    jars = sorted(lib.glob("*.jar"))
    if not any(j.name == f"nacos-core-{build.version}.jar" for j in jars):
        raise SetupError(f"nacos-servers: Maven copied no nacos-core-{build.version}.jar into {lib} "
                         f"(got {len(jars)} jars)")
    classes = None
    if build.launcher:
        compile_java([SERVER_SRC / "NacosServerLauncher.java"], tmp / "classes", jars, f"nacos-servers ({build.version})",
                     progress)
        classes = output / "classes"
    (tmp / "server.argfile").write_text(f'-cp "{_classpath(lib, output / "lib", classes)}"\n')
    shutil.rmtree(output, ignore_errors=True)
    tmp.replace(output)
    stamp(output).write_text(_key(build) + "\n")


def _build_servers(progress: Progress) -> None:
    for build in NACOS_SERVERS.values():
        if _fresh(build):
            progress(f"[setup] nacos-servers: nacos {build.version} already built")
            continue
        _build_server(build, progress)


register_step(Step(
    name="nacos-servers",
    description=f"the real Nacos servers {', '.join(NACOS_SERVERS)} from Maven Central (server modules + launcher)",
    is_done=lambda: all(_fresh(b) for b in NACOS_SERVERS.values()),
    run=_build_servers,
))


# --- rnacos -------------------------------------------------------------------------------------


def _rnacos_key() -> str:
    return f"rnacos {RNACOS_VERSION} --locked"


def _rnacos_done() -> bool:
    return is_fresh(rnacos_binary(), _rnacos_key())


def _build_rnacos(progress: Progress) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SetupError("rnacos: `cargo` not found on PATH; r-nacos is built from crates.io with Rust's cargo. "
                         "Install Rust (rustup), then rerun `connformance setup --only rnacos`.")
    root = rnacos_binary().parent.parent
    target = _servers_cache() / "cargo-target"  # kept: a rebuild after a version bump is incremental
    progress(f"[setup] rnacos: cargo install rnacos --version {RNACOS_VERSION} --locked --root {root} "
             "(several minutes on two cores)")
    env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
    run_build([cargo, "install", "rnacos", "--version", RNACOS_VERSION, "--locked", "--root", str(root), "--force"],
              what="rnacos", timeout_s=_CARGO_TIMEOUT_S, env=env,
              fix="Check access to crates.io, then rerun `connformance setup --only rnacos`.")
    if not rnacos_binary().is_file():
        raise SetupError(f"rnacos: cargo install finished but {rnacos_binary()} is missing")
    stamp(rnacos_binary()).write_text(_rnacos_key() + "\n")


register_step(Step(
    name="rnacos",
    description=f"r-nacos {RNACOS_VERSION} (a Nacos 2.x server in Rust) from crates.io (`cargo install`)",
    is_done=_rnacos_done,
    run=_build_rnacos,
    background=True,
))
