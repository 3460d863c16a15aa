"""`connformance check-peer` (docs/manifest.md): a peer that keeps its role's contract passes with
no problem; one that breaks it gets one line that names the break and what to fix. The real Nacos
server (nacos-2.2.4, in its own network namespace) is checked here too, so the selftest covers the
real-server path from setup to teardown."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.check_peer import check_peer
from harness.peers import PeerRegistry
from harness.placement.netns import available

pytestmark = pytest.mark.integration

REF_SERVER = (Path(__file__).parents[2] / "harness" / "peers" / "builtin" / "nacos-server-ref.toml").read_text()


def _registry_with(tmp_path: Path, name: str, text: str) -> PeerRegistry:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return PeerRegistry.default([path])


def _derived_server(name: str, *, replace: tuple[str, str] | None = None, extra: str = "") -> str:
    text = REF_SERVER.replace('name = "ref"', f'name = "{name}"', 1)
    if replace is not None:
        assert replace[0] in text, f"the ref manifest changed: {replace[0]!r} not in it"
        text = text.replace(*replace, 1)
    return text + extra


@pytest.mark.timeout(120)
def test_the_reference_server_keeps_the_contract() -> None:
    registry = PeerRegistry.default()
    assert check_peer(registry.get("nacos-server", "ref"), registry, echo=lambda _line: None) == []


@pytest.mark.timeout(120)
def test_unreadable_registrations_are_one_line_that_says_what_to_serve(tmp_path: Path) -> None:
    text = _derived_server("no-current", extra='\n[admin]\ncurrent = "/nacos/v2/core/loader/nowhere"\n')
    registry = _registry_with(tmp_path, "no-current", text)
    problems = check_peer(registry.get("nacos-server", "no-current"), registry, echo=lambda _line: None)
    assert len(problems) == 1, problems
    assert problems[0].startswith("nacos-server/no-current: registrations unreadable")
    assert "declare [admin] current" in problems[0]


@pytest.mark.timeout(120)
def test_a_server_that_never_listens_on_its_host_is_named_at_start(tmp_path: Path) -> None:
    # Binds the main port on another loopback address than {host}: readiness would hang for its
    # whole timeout; the placement check says where it listens instead.
    text = _derived_server("elsewhere", replace=('"--host", "{host}"', '"--host", "127.0.0.1"'))
    text = text.replace("timeout_ms = 15000", "timeout_ms = 4000", 1)
    registry = _registry_with(tmp_path, "elsewhere", text)
    problems = check_peer(registry.get("nacos-server", "elsewhere"), registry, echo=lambda _line: None)
    assert problems and problems[0].startswith("nacos-server/elsewhere: start"), problems


@pytest.mark.timeout(240)
@pytest.mark.skipif(available() is not None, reason=f"no network namespaces here: {available()}")
def test_the_real_nacos_server_keeps_the_contract() -> None:
    registry = PeerRegistry.default()
    assert check_peer(registry.get("nacos-server", "nacos-2.2.4"), registry, echo=lambda _line: None) == []
