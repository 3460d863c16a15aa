"""Setup steps for the non-Python HTTP peers (and the Rust Nacos client agent), registered with ``harness.toolchain``.

| step               | does                                                                       |
|--------------------|----------------------------------------------------------------------------|
| go-http-agent      | ``go build`` harness/agents/go/httpagent -> ``<cache>/agents/go/httpagent`` |
| go-http-server     | ``go build`` harness/agents/go/httpserver -> ``<cache>/agents/go/httpserver`` |
| java-http-agents   | ``javac`` the two JDK client agents -> ``<cache>/agents/java/classes``      |
| java-pool-agents   | ``mvn copy-dependencies`` of harness/agents/java/pools/pom.xml (OkHttp,     |
|                    | Apache HttpClient 5) into ``<cache>/agents/java-pools/lib``, ``javac`` their |
|                    | agents with the JDK agents' kit, write ``.../java-pools/agent.argfile``     |
| jetty-launcher     | ``mvn copy-dependencies`` of harness/agents/java/jetty/pom.xml (Jetty 12)   |
|                    | into ``<cache>/agents/jetty/lib``, ``javac`` JettyLauncher.java, write      |
|                    | ``.../jetty/agent.argfile``                                                 |
| tomcat-launcher    | find Tomcat 10.1 embed (Debian ``libtomcat10-embed-java``; installed with   |
|                    | apt-get when root, else copied from Maven Central), ``javac`` the launcher, |
|                    | write ``<cache>/agents/java/tomcat.argfile`` (the launcher's ``-cp``)       |
| rust-http-agent    | ``cargo build --release --locked`` harness/agents/rust/reqwest-agent ->       |
|                    | ``<cache>/agents/rust/reqwest-agent`` (crates.io; a minute or two cold)     |
| rust-nacos-agent   | the same for harness/agents/rust/nacos-agent (the Rust nacos-sdk client,    |
|                    | a nacos-client peer) -> ``<cache>/agents/rust/nacos-agent``                 |
| nginx              | ``apt-get install nginx-light`` when ``nginx`` is missing and we are root   |
| node               | ``apt-get install nodejs`` when ``node`` is missing and we are root (the     |
|                    | Node http.Agent agent is a script: nothing to build)                        |

Builds are keyed by a hash of their sources (and, for Tomcat, the jar's path and size) written
next to the output: an unchanged source is never rebuilt, a changed one always is. The peers'
manifests (``harness/peers/builtin/http-*.toml``) name these outputs through ``{cache}``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.agents.buildkit import (
    MAVEN_DEPENDENCY_PLUGIN,
    agents_cache,
    apt_install,
    build_maven_java,
    compile_java,
    is_fresh,
    is_root,
    run_build,
    sources_hash,
    stamp,
)
from harness.errors import SetupError
from harness.toolchain import Progress, Step, check_go, register_step

__all__ = [
    "GO_HTTP_AGENT_SRC",
    "JAVA_SRC",
    "NGINX_BIN_ENV",
    "NGINX_PACKAGE",
    "TOMCAT_DEBIAN_JAR",
    "TOMCAT_MAVEN_VERSION",
    "find_nginx",
    "go_http_agent_binary",
    "go_http_server_binary",
    "java_agent_classes",
    "java_pool_agents_argfile",
    "jetty_dir",
    "reqwest_agent_binary",
    "rust_nacos_agent_binary",
    "tomcat_argfile",
]

AGENTS_DIR = Path(__file__).resolve().parent
GO_HTTP_AGENT_SRC = AGENTS_DIR / "go" / "httpagent"
GO_HTTP_SERVER_SRC = AGENTS_DIR / "go" / "httpserver"
JAVA_SRC = AGENTS_DIR / "java"
JAVA_HTTP_AGENT_SOURCES = ("HttpUrlConnectionAgent.java", "JavaHttpClientAgent.java")
JAVA_POOLS_SRC = JAVA_SRC / "pools"
JAVA_POOL_AGENT_SOURCES = ("OkHttpAgent.java", "ApacheHttpClient5Agent.java")
JETTY_SRC = JAVA_SRC / "jetty"
REQWEST_AGENT_SRC = AGENTS_DIR / "rust" / "reqwest-agent"
RUST_NACOS_AGENT_SRC = AGENTS_DIR / "rust" / "nacos-agent"
TOMCAT_LAUNCHER_SOURCE = "TomcatLauncher.java"

TOMCAT_DEBIAN_PACKAGE = "libtomcat10-embed-java"
TOMCAT_DEBIAN_JAR = Path("/usr/share/java/tomcat10-embed-core.jar")
# Maven Central fallback when Debian's package cannot be installed (not root): the same
# 10.1 release as Debian bookworm's security update, and like Debian's jar without the
# annotations API (the launcher does no annotation scanning).
TOMCAT_MAVEN_VERSION = "10.1.60"
TOMCAT_MAVEN_ARTIFACTS = (f"org.apache.tomcat.embed:tomcat-embed-core:{TOMCAT_MAVEN_VERSION}",)
# nginx-light depends on libnginx-mod-http-echo: echo_sleep / echo_duplicate give /sleep and /bytes.
NGINX_PACKAGE = "nginx-light"
NGINX_BIN_ENV = "CONNFORMANCE_NGINX_BIN"
NGINX_PATHS = (Path("/usr/sbin/nginx"), Path("/usr/local/sbin/nginx"), Path("/usr/local/nginx/sbin/nginx"))

_GO_BUILD_TIMEOUT_S = 600.0
_MVN_TIMEOUT_S = 900.0
_CARGO_TIMEOUT_S = 1800.0


# --- where things go --------------------------------------------------------------------------


def go_http_agent_binary() -> Path:
    """The built Go net/http agent (``connformance setup --only go-http-agent``)."""
    return agents_cache() / "go" / "httpagent"


def java_agent_classes() -> Path:
    """The compiled JDK client agents: ``java -cp <this> HttpUrlConnectionAgent ...``."""
    return agents_cache() / "java" / "classes"


def java_pool_agents_dir() -> Path:
    """``<cache>/agents/java-pools``: ``classes/``, ``lib/``, ``agent.argfile``."""
    return agents_cache() / "java-pools"


def java_pool_agents_argfile() -> Path:
    """``java @<this> OkHttpAgent ...``: holds ``-cp "<classes>:<lib>/*"``."""
    return java_pool_agents_dir() / "agent.argfile"


def reqwest_agent_binary() -> Path:
    """The built reqwest agent (``connformance setup --only rust-http-agent``)."""
    return agents_cache() / "rust" / "reqwest-agent"


def rust_nacos_agent_binary() -> Path:
    """The built Rust nacos-sdk agent (``connformance setup --only rust-nacos-agent``)."""
    return agents_cache() / "rust" / "nacos-agent"


def jetty_dir() -> Path:
    """``<cache>/agents/jetty``: ``classes/``, ``lib/``, ``agent.argfile`` (``java @<it> JettyLauncher``)."""
    return agents_cache() / "jetty"


def tomcat_classes() -> Path:
    return agents_cache() / "java" / "tomcat-classes"


def tomcat_argfile() -> Path:
    """``java @<this> TomcatLauncher ...``: holds ``-cp <launcher classes>:<tomcat jars>``."""
    return agents_cache() / "java" / "tomcat.argfile"


# --- go-http-agent ------------------------------------------------------------------------------


def go_http_server_binary() -> Path:
    """The built Go net/http server launcher (``connformance setup --only go-http-server``)."""
    return agents_cache() / "go" / "httpserver"


def _go_sources(src: Path) -> list[Path]:
    return sorted(src.glob("*.go")) + [src / "go.mod"]


def _go_step(name: str, src: Path, output: Callable[[], Path], what: str) -> Step:
    """A step that ``go build``s the standard-library-only program in ``src`` into ``output()``."""

    def done() -> bool:
        return is_fresh(output(), sources_hash(_go_sources(src)))

    def build(progress: Progress) -> None:
        go, version = check_go()
        binary = output()
        binary.parent.mkdir(parents=True, exist_ok=True)
        progress(f"[setup] {name}: go{'.'.join(map(str, version))} build -o {binary}")
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
        tmp = binary.with_name(binary.name + ".tmp")
        run_build([go, "build", "-o", str(tmp), "."], what=name, timeout_s=_GO_BUILD_TIMEOUT_S, env=env, cwd=src)
        tmp.replace(binary)  # never leave a half-written binary under the real name
        stamp(binary).write_text(sources_hash(_go_sources(src)) + "\n")

    return Step(name=name, description=f"build {what} ({src.relative_to(AGENTS_DIR.parent.parent)}) with `go build`",
                is_done=done, run=build)


register_step(_go_step("go-http-agent", GO_HTTP_AGENT_SRC, go_http_agent_binary, "the Go net/http client agent"))
register_step(_go_step("go-http-server", GO_HTTP_SERVER_SRC, go_http_server_binary, "the Go net/http server launcher"))


# --- java-http-agents ---------------------------------------------------------------------------


def _java_agent_sources() -> list[Path]:
    return [JAVA_SRC / name for name in JAVA_HTTP_AGENT_SOURCES]


def _java_agents_done() -> bool:
    return is_fresh(java_agent_classes(), sources_hash(_java_agent_sources()))


def _build_java_agents(progress: Progress) -> None:
    output = java_agent_classes()
    compile_java(_java_agent_sources(), output, (), "java-http-agents", progress)
    stamp(output).write_text(sources_hash(_java_agent_sources()) + "\n")


register_step(Step(
    name="java-http-agents",
    description="compile the JDK HttpURLConnection and java.net.http agents with `javac`",
    is_done=_java_agents_done,
    run=_build_java_agents,
))


# --- java-pool-agents, jetty-launcher ------------------------------------------------------------


def _maven_java_step(name: str, description: str, pom: Path, java_sources: Sequence[Path],
                     output: Callable[[], Path]) -> Step:
    """A step that builds Java programs over Maven Central jars (``build_maven_java``) into ``output()``."""

    def key() -> str:
        return sources_hash([*java_sources, pom])

    def done() -> bool:
        return is_fresh(output(), key()) and (output() / "agent.argfile").is_file()

    def build(progress: Progress) -> None:
        build_maven_java(name, pom, java_sources, output(), progress, key=key())

    return Step(name=name, description=description, is_done=done, run=build)


register_step(_maven_java_step(
    "java-pool-agents", "build the OkHttp and Apache HttpClient 5 agents (Maven dependencies + javac)",
    JAVA_POOLS_SRC / "pom.xml", [JAVA_SRC / "HttpUrlConnectionAgent.java", *(JAVA_POOLS_SRC / n for n in JAVA_POOL_AGENT_SOURCES)],
    java_pool_agents_dir))
register_step(_maven_java_step(
    "jetty-launcher", "get Jetty 12 from Maven Central and compile the Jetty launcher",
    JETTY_SRC / "pom.xml", [JETTY_SRC / "JettyLauncher.java"], jetty_dir))


# --- tomcat-launcher ----------------------------------------------------------------------------


def _maven_tomcat_dir() -> Path:
    return agents_cache() / "java" / f"tomcat-{TOMCAT_MAVEN_VERSION}"


def _tomcat_jars() -> list[Path]:
    """Tomcat embed jars to compile and run against: Debian's, else the Maven copy; [] if none."""
    if TOMCAT_DEBIAN_JAR.is_file():
        return [TOMCAT_DEBIAN_JAR]
    maven = [_maven_tomcat_dir() / f"{a.split(':')[1]}-{TOMCAT_MAVEN_VERSION}.jar" for a in TOMCAT_MAVEN_ARTIFACTS]
    return maven if all(j.is_file() for j in maven) else []


def _tomcat_key(jars: Sequence[Path]) -> str:
    extra = [f"{j}:{j.stat().st_size}" for j in jars]
    return sources_hash([JAVA_SRC / TOMCAT_LAUNCHER_SOURCE], extra)


def _tomcat_done() -> bool:
    jars = _tomcat_jars()
    return bool(jars) and tomcat_argfile().is_file() and is_fresh(tomcat_classes(), _tomcat_key(jars))


def _fetch_tomcat_from_maven(progress: Progress) -> None:
    maven = shutil.which("mvn")
    if maven is None:
        raise SetupError(
            f"tomcat-launcher: Tomcat embed is not installed ({TOMCAT_DEBIAN_JAR} is missing), we are not root "
            f"(so no apt-get install {TOMCAT_DEBIAN_PACKAGE}) and `mvn` is not on PATH. Either run "
            f"`sudo apt-get install {TOMCAT_DEBIAN_PACKAGE}` or install Maven, then rerun `connformance setup`."
        )
    target = _maven_tomcat_dir()
    target.mkdir(parents=True, exist_ok=True)
    for artifact in TOMCAT_MAVEN_ARTIFACTS:
        progress(f"[setup] tomcat-launcher: mvn dependency:copy {artifact} -> {target}")
        run_build([maven, "-q", "-B", f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                   f"-Dartifact={artifact}", f"-DoutputDirectory={target}"],
                  what="tomcat-launcher", timeout_s=_MVN_TIMEOUT_S,
                  fix="Check access to Maven Central (or install Debian's libtomcat10-embed-java as root).")


def _build_tomcat_launcher(progress: Progress) -> None:
    if not _tomcat_jars():
        if is_root():
            apt_install([TOMCAT_DEBIAN_PACKAGE], progress, "tomcat-launcher")
        else:
            _fetch_tomcat_from_maven(progress)
    jars = _tomcat_jars()
    if not jars:
        raise SetupError(f"tomcat-launcher: Tomcat embed jars still missing after installing "
                         f"({TOMCAT_DEBIAN_JAR} or {_maven_tomcat_dir()})")
    progress(f"[setup] tomcat-launcher: Tomcat embed from {', '.join(map(str, jars))}")
    output = tomcat_classes()
    compile_java([JAVA_SRC / TOMCAT_LAUNCHER_SOURCE], output, jars, "tomcat-launcher", progress)
    classpath = os.pathsep.join(str(p) for p in [output, *jars])
    tomcat_argfile().write_text(f'-cp "{classpath}"\n')
    stamp(output).write_text(_tomcat_key(jars) + "\n")


register_step(Step(
    name="tomcat-launcher",
    description="get Tomcat 10.1 embed (Debian or Maven Central) and compile the Tomcat launcher",
    is_done=_tomcat_done,
    run=_build_tomcat_launcher,
))


# --- rust-http-agent, rust-nacos-agent ----------------------------------------------------------


def _cargo_step(name: str, src: Path, binary: Callable[[], Path], description: str) -> Step:
    """``cargo build --release --locked`` of the crate in ``src``, its binary copied to ``binary()``.
    One target dir for the Rust agents: a rebuild after a source change is incremental."""

    def sources() -> list[Path]:
        return [src / "Cargo.toml", src / "Cargo.lock", *sorted((src / "src").glob("*.rs"))]

    def build(progress: Progress) -> None:
        cargo = shutil.which("cargo")
        if cargo is None:
            raise SetupError(f"{name}: `cargo` not found on PATH; the agent is built from crates.io with Rust's "
                             f"cargo. Install Rust (rustup), then rerun `connformance setup --only {name}`.")
        target = agents_cache() / "rust" / "target"
        progress(f"[setup] {name}: cargo build --release --locked ({src.name}) -> {binary()}")
        run_build([cargo, "build", "--release", "--locked", "--manifest-path", str(src / "Cargo.toml")],
                  what=name, timeout_s=_CARGO_TIMEOUT_S, env={**os.environ, "CARGO_TARGET_DIR": str(target)},
                  fix=f"Check access to crates.io, then rerun `connformance setup --only {name}`.")
        binary().parent.mkdir(parents=True, exist_ok=True)
        tmp = binary().with_name(binary().name + ".tmp")
        shutil.copy2(target / "release" / src.name, tmp)
        tmp.replace(binary())
        stamp(binary()).write_text(sources_hash(sources()) + "\n")

    return Step(name=name, description=description, is_done=lambda: is_fresh(binary(), sources_hash(sources())),
                run=build)


register_step(_cargo_step("rust-http-agent", REQWEST_AGENT_SRC, reqwest_agent_binary,
                          "build the reqwest agent (harness/agents/rust/reqwest-agent) with `cargo build`"))
register_step(_cargo_step("rust-nacos-agent", RUST_NACOS_AGENT_SRC, rust_nacos_agent_binary,
                          "build the Rust nacos-sdk agent (harness/agents/rust/nacos-agent) with `cargo build`"))


# --- nginx --------------------------------------------------------------------------------------


def find_nginx() -> Path | None:
    """The nginx binary: ``$CONNFORMANCE_NGINX_BIN``, PATH, then the usual sbin places; None if none."""
    env = os.environ.get(NGINX_BIN_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("nginx")
    if found:
        return Path(found)
    return next((p for p in NGINX_PATHS if p.is_file() and os.access(p, os.X_OK)), None)


def _nginx_done() -> bool:
    return find_nginx() is not None


def _install_nginx(progress: Progress) -> None:
    if os.environ.get(NGINX_BIN_ENV):
        raise SetupError(f"nginx: {NGINX_BIN_ENV}={os.environ[NGINX_BIN_ENV]!r} is not an executable file; fix or unset it")
    if not is_root():
        raise SetupError(
            f"nginx: not installed and we are not root, so setup cannot install it. Run "
            f"`sudo apt-get install {NGINX_PACKAGE}` (its echo module gives nginx /sleep and /bytes), or point "
            "CONNFORMANCE_NGINX_BIN at an nginx binary, then rerun `connformance setup`."
        )
    # A Debian install may start the packaged nginx service on port 80 where policy-rc.d allows it;
    # the peer never uses it (it runs its own nginx with its own config on loopback).
    apt_install([NGINX_PACKAGE], progress, "nginx")


register_step(Step(
    name="nginx",
    description=f"install nginx from Debian (apt-get install {NGINX_PACKAGE}) when missing",
    is_done=_nginx_done,
    run=_install_nginx,
))


# --- browser (group "browser": `connformance setup --browser`) ------------------------------------------
# Headless Chromium from Debian, only for the self-test that loads `up --ui`'s page in a real
# browser (tests/integration/test_live_view.py); no case and no session needs it.

BROWSER_PACKAGE = "chromium-headless-shell"
BROWSER_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser")


def find_browser() -> Path | None:
    """A headless-capable Chromium on PATH, or None."""
    found = next((shutil.which(name) for name in BROWSER_NAMES if shutil.which(name)), None)
    return Path(found) if found else None


def _install_browser(progress: Progress) -> None:
    if not is_root():
        raise SetupError(f"browser: no Chromium and we are not root, so setup cannot install it. Run "
                         f"`sudo apt-get install {BROWSER_PACKAGE}`, then rerun `connformance setup --browser`.")
    apt_install([BROWSER_PACKAGE], progress, "browser")


register_step(Step(
    name="browser",
    description=f"install headless Chromium from Debian (apt-get install {BROWSER_PACKAGE}) for the live view's browser test",
    is_done=lambda: find_browser() is not None,
    run=_install_browser,
    group="browser",
))


# --- node ---------------------------------------------------------------------------------------
# harness/agents/node/http_agent.js runs on the machine's Node (no npm packages).


def _install_node(progress: Progress) -> None:
    if not is_root():
        raise SetupError("node: not installed and we are not root, so setup cannot install it. Install Node.js "
                         "(Debian: sudo apt-get install nodejs), then rerun `connformance setup`.")
    apt_install(["nodejs"], progress, "node")


register_step(Step(
    name="node",
    description="install Node.js from Debian (apt-get install nodejs) when `node` is missing",
    is_done=lambda: shutil.which("node") is not None,
    run=_install_node,
))


# --- netfilter ----------------------------------------------------------------------------------
# iptables inside the peers' network namespaces carries the packet-level faults (harness.faults.packet).
# Only root can make namespaces, so only root needs it; elsewhere the step is done (the L3 cases are
# UNIMPLEMENTED there, saying why).

IPTABLES_PACKAGE = "iptables"


def _netfilter_done() -> bool:
    return not is_root() or shutil.which("iptables") is not None


def _install_netfilter(progress: Progress) -> None:
    apt_install([IPTABLES_PACKAGE], progress, "netfilter")


register_step(Step(
    name="netfilter",
    description=f"install iptables from Debian (apt-get install {IPTABLES_PACKAGE}) for packet-level faults, as root",
    is_done=_netfilter_done,
    run=_install_netfilter,
))
