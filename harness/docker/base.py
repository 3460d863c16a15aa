"""The Debian base image, built without a registry: ``debootstrap`` a minimal rootfs from the
machine's configured Debian mirror with the runtimes the peers need, ``tar`` it and
``docker import`` it as ``connformance/base:<hash>``.

The hash covers the suite, the mirror and the package list, so the base is rebuilt only when
one of them changes. ``CONNFORMANCE_DOCKER_BASE`` skips all of this (``harness.docker.images``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import SetupError
from harness.paths import cache_dir

__all__ = ["BASE_PACKAGES", "SUITE", "base_image_ref", "build_base", "debian_mirror"]

SUITE = "bookworm"
MIRROR_ENV = "CONNFORMANCE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "python3", "python3-venv",  # the python image's venv (3.11, as on the host)
    "openjdk-17-jre-headless",  # the JDK agents are compiled for 17 on the host
    "libtomcat10-embed-java",  # Tomcat 10 embedded, as on the host (/usr/share/java)
    "nginx-light", "libnginx-mod-http-echo",  # the nginx peer (echo_sleep for /sleep)
)
DEBOOTSTRAP_TIMEOUT_S = 900
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def debian_mirror() -> str:
    """``$CONNFORMANCE_DEBIAN_MIRROR``, else the first mirror apt is configured with for the suite."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override.rstrip("/")
    for path in SOURCES:
        try:
            text = path.read_text()
        except OSError:
            continue
        # deb822: a stanza with "URIs:" and a "Suites:" naming the suite itself
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
        for line in text.splitlines():  # one-line format: deb URI SUITE COMPONENTS
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1].rstrip("/")
    return DEFAULT_MIRROR


def _digest() -> str:
    text = f"{SUITE}\n{debian_mirror()}\n{' '.join(sorted(BASE_PACKAGES))}\nminbase\n"
    return hashlib.sha256(text.encode()).hexdigest()


def base_image_ref() -> str:
    return f"connformance/base:{_digest()[:12]}"


def _debootstrap(progress: Callable[[str], None]) -> str:
    found = shutil.which("debootstrap")
    if found is None:
        from harness.agents.buildkit import apt_install

        apt_install(["debootstrap"], progress, "docker-base")
        found = shutil.which("debootstrap")
    if found is None:
        raise SetupError("debootstrap is not on PATH after installing it; install it by hand and rerun")
    return found


def build_base(client, progress: Callable[[str], None] = print) -> float:
    """Build and import the base unless the engine has it; seconds spent (0 when it was there)."""
    from docker.errors import ImageNotFound

    ref = base_image_ref()
    try:
        client.images.get(ref)
        progress(f"[docker] base {ref}: up to date")
        return 0.0
    except ImageNotFound:
        pass
    if os.geteuid() != 0:
        raise SetupError(f"building {ref} runs debootstrap, which needs root; run as root, or set "
                         "CONNFORMANCE_DOCKER_BASE to a Debian image from your registry")
    debootstrap = _debootstrap(progress)
    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="base-", dir=cache_dir() / "docker"))
    rootfs = work / "rootfs"
    try:
        argv = [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs),
                debian_mirror()]
        progress(f"[docker] base {ref}: {' '.join(argv)}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S)
        if proc.returncode != 0:
            raise SetupError(f"debootstrap failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
                             f"\nwhat to do: check access to {debian_mirror()} ({MIRROR_ENV} overrides it)")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # downloaded .debs and indexes
            shutil.rmtree(rootfs / junk, ignore_errors=True)
            (rootfs / junk).mkdir(parents=True, exist_ok=True)
        progress(f"[docker] base {ref}: importing the rootfs")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                tar.stdout, repository="connformance/base", tag=ref.rpartition(":")[2],
                changes=[f'LABEL connformance.image=base connformance.content={_digest()}',
                         'ENV LANG=C.UTF-8', 'CMD ["/bin/bash"]'])
        finally:
            tar.stdout.close()
            tar.wait(timeout=60)
        if tar.returncode != 0:
            raise SetupError(f"tar of {rootfs} failed (exit {tar.returncode})")
        client.images.get(ref)  # the import took
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.monotonic() - start
