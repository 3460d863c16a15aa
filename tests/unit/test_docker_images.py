"""Image tags are content hashes of the build context: the same inputs give the same tag, any
change of a file, its mode or the base gives another (so a changed peer is always rebuilt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.docker import base, images

pytestmark = pytest.mark.timeout(10)


def _spec(tmp_path: Path, files: dict[str, tuple[bytes, bool]]) -> images.ImageSpec:
    dockerfile_dir = tmp_path / "docker" / "demo"
    dockerfile_dir.mkdir(parents=True, exist_ok=True)
    (dockerfile_dir / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY . /x\n")

    def entries():
        for dest, (content, exe) in sorted(files.items()):
            yield (dest, content, exe)

    spec = images.ImageSpec("demo", "a test image", True, entries)
    return spec


@pytest.fixture(autouse=True)
def _dockerfiles_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "DOCKERFILES", tmp_path / "docker")


def test_same_context_same_tag_and_every_change_shows(tmp_path: Path) -> None:
    files = {"a.txt": (b"one", False), "bin/tool": (b"\x7fELF", True)}
    first = images.content_hash(_spec(tmp_path, files), "connformance/base:1")
    assert images.content_hash(_spec(tmp_path, dict(files)), "connformance/base:1") == first
    assert images.content_hash(_spec(tmp_path, {**files, "a.txt": (b"two", False)}), "connformance/base:1") != first
    assert images.content_hash(_spec(tmp_path, {**files, "bin/tool": (b"\x7fELF", False)}), "connformance/base:1") != first
    assert images.content_hash(_spec(tmp_path, {**files, "b.txt": (b"", False)}), "connformance/base:1") != first
    assert images.content_hash(_spec(tmp_path, files), "debian:bookworm-slim") != first


def test_a_built_in_image_name_resolves_to_its_tag_and_anything_else_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "image_ref", lambda name: f"connformance/{name}:abc")
    assert images.resolve_image("python") == "connformance/python:abc"
    assert images.resolve_image("registry.example/me/peer:1.4") == "registry.example/me/peer:1.4"


def test_the_base_follows_the_configured_debian_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
                       "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
                       "Suites: bookworm-security\nComponents: main\n")
    monkeypatch.setattr(base, "SOURCES", (sources,))
    monkeypatch.delenv(base.MIRROR_ENV, raising=False)
    assert base.debian_mirror() == "http://mirror.example/debian"
    ref = base.base_image_ref()
    monkeypatch.setenv(base.MIRROR_ENV, "http://other.example/debian")
    assert base.debian_mirror() == "http://other.example/debian"
    assert base.base_image_ref() != ref, "another mirror is another base"


def test_peer_requirements_keep_the_pins_and_leave_test_tooling_on_the_host() -> None:
    reqs = images._peer_requirements()
    assert "grpcio>=1.66.1,<2" in reqs and "nacos-sdk-python==3.2.0" in reqs
    assert not any(r.startswith(("pytest", "matplotlib", "docker")) for r in reqs)
