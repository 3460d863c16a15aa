"""Peer images: one ordinary Dockerfile per image under ``docker/<name>/``, a build context
assembled from the project and its cache, and a tag that is the content hash of that context.

| image      | Dockerfile         | holds                                                      | peers |
|------------|--------------------|------------------------------------------------------------|-------|
| python     | docker/python      | the ``harness`` package + a venv from a host-built wheelhouse | reference server/client, ledger, nginx, nacos-sdk-python, urllib3/requests/httpx/aiohttp agents |
| java       | docker/java        | the compiled JDK agents, Tomcat launcher, Nacos Java agents, OkHttp/HttpClient 5 agents, Jetty launcher | jdk-*, okhttp, apache-httpclient5, tomcat, jetty, java-2.2.4/2.5.1/3.1.1 |
| go         | docker/go          | the static Go agents, ``FROM scratch``                      | go-net-http, go-net-http-server, go-v2.2.7/v2.3.5 |
| toxiproxy  | docker/toxiproxy   | the static toxiproxy-server, ``FROM scratch``               | the fault layer |

``python`` and ``java`` start ``FROM ${BASE}``: by default the project's Debian base built
offline (``harness.docker.base``); ``CONNFORMANCE_DOCKER_BASE=debian:bookworm-slim`` (or any
Debian image) points them at a registry instead, and their ``RUN`` steps install the missing
runtimes with apt. Inside every image the project sits where the manifests' placeholders say
(``IMAGE_PLACEHOLDERS``): ``/opt/connformance`` with its cache at ``.cache/connformance``.

An image is tagged ``connformance/<name>:<first 12 hex of its content hash>`` and labelled
``connformance.content=<hash>``: an unchanged peer is not rebuilt, a changed one gets a new tag.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SetupError
from harness.paths import PROJECT_ROOT, cache_dir

__all__ = [
    "BASE_ENV",
    "IMAGES",
    "IMAGE_PLACEHOLDERS",
    "IMAGE_REPO",
    "ImageSpec",
    "build_images",
    "image_ref",
    "missing_images",
    "missing_refs",
    "resolve_image",
]

IMAGE_REPO = "connformance"
BASE_ENV = "CONNFORMANCE_DOCKER_BASE"
IMAGE_ROOT = "/opt/connformance"
IMAGE_CACHE = f"{IMAGE_ROOT}/.cache/connformance"
IMAGE_PLACEHOLDERS = {  # what {python}, {project_root}, {cache} mean inside the images
    "python": "/opt/venv/bin/python",
    "project_root": IMAGE_ROOT,
    "cache": IMAGE_CACHE,
}
DOCKERFILES = PROJECT_ROOT / "docker"
# Test and report tooling stays on the host; the peers need the rest of the project's pins.
HOST_ONLY_DEPS = ("pytest", "pytest-timeout", "pytest-xdist", "matplotlib", "docker")
BUILD_TIMEOUT_S = 900

Entry = tuple[str, bytes | Path, bool]  # (path in the context, content or a file, executable)


@dataclass(frozen=True)
class ImageSpec:
    name: str
    description: str
    on_base: bool  # FROM ${BASE} (the Debian base), else FROM scratch
    entries: Callable[[], Iterator[Entry]]  # the context, Dockerfile excluded

    @property
    def dockerfile(self) -> Path:
        return DOCKERFILES / self.name / "Dockerfile"


# --- what goes into each context ------------------------------------------------------------


def _tree(src: Path, dest: str, *, skip: Callable[[Path], bool] = lambda p: False) -> Iterator[Entry]:
    if not src.exists():
        raise SetupError(f"{src} is missing; run `connformance setup` first (it builds the agents the images copy)")
    for path in sorted(src.rglob("*")):
        if path.is_file() and not skip(path):
            yield (f"{dest}/{path.relative_to(src).as_posix()}", path, os.access(path, os.X_OK))


def _not_bytecode(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def _rewrite_cache_paths(path: Path) -> bytes:
    """Argfiles name the host cache by absolute path; inside the image it lives at IMAGE_CACHE."""
    return path.read_bytes().replace(str(cache_dir()).encode(), IMAGE_CACHE.encode())


def _peer_requirements() -> list[str]:
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return sorted(d for d in deps if not any(d.startswith(name) and d[len(name):][:1] in "=<>!~ ["
                                              for name in HOST_ONLY_DEPS))


def wheelhouse_dir() -> Path:
    digest = hashlib.sha256("\n".join(_peer_requirements()).encode()).hexdigest()[:12]
    return cache_dir() / "docker" / f"wheelhouse-{digest}"


def _python_entries() -> Iterator[Entry]:
    yield ("requirements.txt", ("\n".join(_peer_requirements()) + "\n").encode(), False)
    wheels = wheelhouse_dir()
    if not (wheels / ".complete").exists():
        raise SetupError(f"the wheelhouse {wheels} is not built; run `connformance setup --docker`")
    yield from _tree(wheels, "wheelhouse", skip=lambda p: p.name == ".complete")
    yield from _tree(PROJECT_ROOT / "harness", "project/harness", skip=_not_bytecode)


def _java_entries() -> Iterator[Entry]:
    agents = cache_dir() / "agents"
    for sub in ("java", "java-nacos", "java-pools", "jetty"):
        for dest, src, exe in _tree(agents / sub, f"cache/agents/{sub}", skip=lambda p: p.suffix == ".sha256"):
            assert isinstance(src, Path)
            yield (dest, _rewrite_cache_paths(src), exe) if dest.endswith(".argfile") else (dest, src, exe)


def _go_entries() -> Iterator[Entry]:
    agents = cache_dir() / "agents"
    yield ("cache/agents/go/httpagent", agents / "go" / "httpagent", True)
    yield ("cache/agents/go/httpserver", agents / "go" / "httpserver", True)
    for version_dir in sorted((agents / "go-nacos").glob("v*")):
        yield (f"cache/agents/go-nacos/{version_dir.name}/nacosagent", version_dir / "nacosagent", True)


def _toxiproxy_entries() -> Iterator[Entry]:
    from harness.toolchain import toxiproxy_binary

    yield ("toxiproxy-server", toxiproxy_binary(), True)


IMAGES: dict[str, ImageSpec] = {spec.name: spec for spec in (
    ImageSpec("python", "the harness package and its pinned Python peers", True, _python_entries),
    ImageSpec("java", "the JDK agents, Tomcat launcher and Nacos Java agents", True, _java_entries),
    ImageSpec("go", "the static Go agents", False, _go_entries),
    ImageSpec("toxiproxy", "the static Toxiproxy server", False, _toxiproxy_entries),
)}


# --- content hash and tags ------------------------------------------------------------------


def _content(entry_src: bytes | Path) -> bytes:
    return entry_src if isinstance(entry_src, bytes) else entry_src.read_bytes()


def content_hash(spec: ImageSpec, base_ref: str | None) -> str:
    """sha256 over the Dockerfile, every context entry (path, mode, bytes) and the base's ref."""
    h = hashlib.sha256()
    h.update(spec.dockerfile.read_bytes())
    h.update(f"\0base={base_ref if spec.on_base else 'scratch'}\0".encode())
    for dest, src, exe in sorted(spec.entries(), key=lambda e: e[0]):
        h.update(f"{dest}\0{int(exe)}\0".encode())
        h.update(hashlib.sha256(_content(src)).digest())
    return h.hexdigest()


def base_ref() -> str:
    """The image ``FROM ${BASE}`` names: the user's setting, or the project's Debian base."""
    override = os.environ.get(BASE_ENV)
    if override:
        return override
    from harness.docker.base import base_image_ref

    return base_image_ref()


def image_ref(name: str) -> str:
    spec = IMAGES[name]
    return f"{IMAGE_REPO}/{name}:{content_hash(spec, base_ref())[:12]}"


def resolve_image(image: str) -> str:
    """A manifest's ``[docker] image``: a built-in image name (``python``) becomes its current
    content tag; anything else (``myorg/peer:1.2``) is the user's own image, used as is."""
    return image_ref(image) if image in IMAGES else image


# --- building -------------------------------------------------------------------------------


def _assemble(spec: ImageSpec, context: Path) -> None:
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    shutil.copyfile(spec.dockerfile, context / "Dockerfile")
    for dest, src, exe in spec.entries():
        target = context / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            target.write_bytes(src)
        else:
            shutil.copyfile(src, target)
        os.chmod(target, 0o755 if exe else 0o644)


def _has_image(client, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def missing_refs(client, refs: list[str]) -> list[str]:
    return [ref for ref in refs if not _has_image(client, ref)]


def missing_images(client, names: list[str] | None = None) -> list[str]:
    """Refs of the built-in images (all, or ``names``) the engine does not have yet."""
    return missing_refs(client, [image_ref(name) for name in (names or list(IMAGES))])


def build_images(client, progress: Callable[[str], None] = print, names: list[str] | None = None) -> dict[str, float]:
    """Build every image that is missing at its content tag; seconds per image (0 = was there)."""
    from docker.errors import APIError, BuildError

    durations: dict[str, float] = {}
    base = base_ref()
    for name in names or list(IMAGES):
        spec = IMAGES[name]
        digest = content_hash(spec, base)
        ref = f"{IMAGE_REPO}/{name}:{digest[:12]}"
        if _has_image(client, ref):
            progress(f"[docker] image {ref}: up to date")
            durations[name] = 0.0
            continue
        context = cache_dir() / "docker" / "contexts" / name
        _assemble(spec, context)
        progress(f"[docker] image {ref}: building ({spec.description}) from {context}")
        start = time.monotonic()
        try:
            client.images.build(path=str(context), tag=ref, rm=True, forcerm=True, network_mode="host",
                                buildargs={"BASE": base} if spec.on_base else None,
                                labels={"connformance.image": name, "connformance.content": digest},
                                timeout=BUILD_TIMEOUT_S)
        except BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            raise SetupError(f"docker build of {ref} failed: {exc.msg}\n{log[-3000:]}") from None
        except APIError as exc:
            raise SetupError(f"docker build of {ref} failed: {exc}") from None
        client.images.get(ref).tag(f"{IMAGE_REPO}/{name}", "latest")
        durations[name] = time.monotonic() - start
        progress(f"[docker] image {ref}: built in {durations[name]:.1f} s")
        shutil.rmtree(context, ignore_errors=True)
        _prune_older(client, name, ref, progress)
    return durations


def _prune_older(client, name: str, current: str, progress: Callable[[str], None]) -> None:
    """Remove this image's earlier content tags (bounded disk; layers shared with the new one stay)."""
    from docker.errors import APIError

    for image in client.images.list(filters={"label": f"connformance.image={name}"}):
        for tag in image.tags:
            if tag.startswith(f"{IMAGE_REPO}/{name}:") and tag not in (current, f"{IMAGE_REPO}/{name}:latest"):
                try:
                    client.images.remove(tag, noprune=False)
                    progress(f"[docker] image {tag}: removed (superseded by {current})")
                except APIError:  # still used by a container of a running harness
                    pass


def build_wheelhouse(progress: Callable[[str], None] = print) -> Path:
    """``pip wheel`` the peers' pinned dependencies on the host (the images install offline)."""
    import subprocess

    target = wheelhouse_dir()
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(target), *_peer_requirements()]
    progress(f"[docker] wheelhouse: {' '.join(argv)}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise SetupError(f"pip wheel failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n"
                         "what to do: check access to PyPI, then rerun `connformance setup --docker`")
    (target / ".complete").write_text("\n".join(_peer_requirements()) + "\n")
    return target
