"""What every setup step that builds an agent shares: where builds go, the source-hash stamps
that make a build happen only when its sources changed, running a build tool with a bounded time
and an error that shows the tool's output, ``javac``, and ``apt-get install`` as root."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness.errors import SetupError
from harness.paths import cache_dir
from harness.toolchain import Progress

__all__ = ["MAVEN_DEPENDENCY_PLUGIN", "agents_cache", "apt_install", "build_maven_java", "compile_java", "is_fresh",
           "is_root", "javac", "mvn", "run_build", "sources_hash", "stamp"]

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

_JAVAC_TIMEOUT_S = 300.0
_MVN_TIMEOUT_S = 900.0
_APT_TIMEOUT_S = 900.0


def agents_cache() -> Path:
    return cache_dir() / "agents"


def stamp(output: Path) -> Path:
    return output.with_name(output.name + ".sha256")


def sources_hash(files: Sequence[Path], extra: Sequence[str] = ()) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    for item in extra:
        h.update(item.encode() + b"\0")
    return h.hexdigest()


def is_fresh(output: Path, digest: str) -> bool:
    stamp_file = stamp(output)
    try:
        return output.exists() and stamp_file.read_text().strip() == digest
    except OSError:
        return False


def run_build(argv: Sequence[str], *, what: str, timeout_s: float, env: dict[str, str] | None = None,
         cwd: Path | None = None, fix: str = "") -> str:
    """Run a build command; SetupError with the output's tail when it fails or hangs."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{what}: `{' '.join(argv)}` did not finish within {timeout_s:.0f} s. {fix}".strip()) from exc
    except OSError as exc:
        raise SetupError(f"{what}: could not run `{argv[0]}`: {exc}. {fix}".strip()) from exc
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
        raise SetupError(f"{what}: `{' '.join(argv)}` failed with exit {out.returncode}:\n{tail}\n{fix}".strip())
    return out.stdout


def javac() -> str:
    javac = shutil.which("javac")
    if javac is None:
        raise SetupError(
            "`javac` not found on PATH; the JDK agents and the Tomcat launcher are compiled with the "
            "machine's JDK (17 or newer). Install one (Debian: apt-get install openjdk-17-jdk-headless)."
        )
    return javac


def mvn(step: str, what: str) -> str:
    """The ``mvn`` on PATH, else a SetupError saying which ``step`` needs it for ``what``."""
    found = shutil.which("mvn")
    if found is None:
        raise SetupError(
            f"{step}: `mvn` not found on PATH; {what} come from Maven Central through Maven. Install it "
            f"(Debian: apt-get install maven), then rerun `connformance setup --only {step}`."
        )
    return found


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(packages: Sequence[str], progress: Progress, what: str) -> None:
    """``apt-get install`` as root, non-interactive; one ``apt-get update`` and retry on failure."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise SetupError(f"{what}: no apt-get on this machine; install {' '.join(packages)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = [apt, "install", "-y", "-q", "--no-install-recommends", *packages]
    progress(f"[setup] {what}: {' '.join(argv)}")
    try:
        run_build(argv, what=what, timeout_s=_APT_TIMEOUT_S, env=env)
    except SetupError:
        progress(f"[setup] {what}: install failed; running apt-get update once and retrying")
        run_build([apt, "update", "-q"], what=what, timeout_s=_APT_TIMEOUT_S, env=env)
        run_build(argv, what=what, timeout_s=_APT_TIMEOUT_S, env=env,
                  fix="Check access to the Debian mirror, then rerun `connformance setup`.")


def compile_java(sources: Sequence[Path], output: Path, classpath: Sequence[Path], what: str, progress: Progress) -> None:
    """javac into a fresh directory, then swap it in (a failed build leaves the old one)."""
    javac_bin = javac()
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    argv = [javac_bin, "--release", "17", "-encoding", "UTF-8", "-d", str(tmp)]
    if classpath:
        argv += ["-cp", os.pathsep.join(str(p) for p in classpath)]
    argv += [str(s) for s in sources]
    progress(f"[setup] {what}: javac -d {output} {' '.join(s.name for s in sources)}")
    run_build(argv, what=what, timeout_s=_JAVAC_TIMEOUT_S)
    shutil.rmtree(output, ignore_errors=True)
    tmp.replace(output)


def build_maven_java(step: str, pom: Path, sources: Sequence[Path], output: Path, progress: Progress, *,
                     mvn_args: Sequence[str] = (), key: str) -> list[Path]:
    """A Java program over Maven Central jars: ``mvn copy-dependencies`` of ``pom`` into
    ``<output>/lib``, ``javac`` of ``sources`` into ``<output>/classes``, and ``<output>/agent.argfile``
    (``-cp "<classes>:<lib>/*"``, for ``java @argfile Main``); built beside and swapped in whole,
    then stamped with ``key``. Returns the jars."""
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lib = tmp / "lib"
    lib.mkdir(parents=True)
    progress(f"[setup] {step}: mvn copy-dependencies -f {pom} {' '.join(mvn_args)}".rstrip() + f" -> {output / 'lib'}")
    run_build([mvn(step, f"{step}'s libraries"), "-B", "-q", "-f", str(pom), *mvn_args,
               f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
              what=step, timeout_s=_MVN_TIMEOUT_S, cwd=pom.parent,
              fix=f"Check access to Maven Central, then rerun `connformance setup --only {step}`.")
    jars = sorted(lib.glob("*.jar"))
    compile_java(sources, tmp / "classes", jars, step, progress)
    final_cp = os.pathsep.join([str(output / "classes"), str(output / "lib" / "*")])
    (tmp / "agent.argfile").write_text(f'-cp "{final_cp}"\n')
    shutil.rmtree(output, ignore_errors=True)
    tmp.replace(output)
    stamp(output).write_text(key + "\n")
    return [output / "lib" / j.name for j in jars]
