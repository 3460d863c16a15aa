"""Declaring more of what a server really has never judges less. The reference server is run
three times under other names: with none of the extensions (only what every Nacos server
exposes), with ``events`` alone, and with every extension. A cell judged (not UNIMPLEMENTED) with
fewer capabilities is judged with more, to the same verdict; more capabilities may only turn an
UNIMPLEMENTED into a verdict (the issue: 7 OK with ``events`` declared vs 11 without)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT
from tests.support.run_suite import run_cases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REF = (PROJECT_ROOT / "harness" / "peers" / "builtin" / "nacos-server-ref.toml").read_text()
EXTENSIONS = ("events", "pushes", "transports", "client_ip_counts")
PUBLIC = ["limits", "eject", "loader", "startup_delay", "cluster"]
CASES = ["SR-06", "SR-07", "SR-20", "TC-01", "TC-02", "TC-07", "TC-10"]


def _variant(tmp_path: Path, name: str, capabilities: list[str]) -> Path:
    text = REF.replace('name = "ref"', f'name = "{name}"', 1)
    line = next(ln for ln in text.splitlines() if ln.startswith("capabilities = "))
    text = text.replace(line, "capabilities = [" + ", ".join(f'"{c}"' for c in capabilities) + "]", 1)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_more_capabilities_never_judge_less(tmp_path: Path) -> None:
    variants = {"bare": PUBLIC, "events-only": ["events", *PUBLIC], "every-extension": [*EXTENSIONS, *PUBLIC]}
    verdicts: dict[str, dict[str, str]] = {}
    for name, capabilities in variants.items():
        results = run_cases(CASES, tmp_path / name, peers_files=[_variant(tmp_path, name, capabilities)],
                            peers=[f"nacos-server={name}", "nacos-client=ref"], timeout_s=560)
        verdicts[name] = {case: r["verdict"] for (case, _), r in results.items()}
    order = list(variants)
    for fewer, more in zip(order, order[1:], strict=False):
        for case in CASES:
            before, after = verdicts[fewer].get(case), verdicts[more].get(case)
            if before != "UNIMPLEMENTED":
                assert after == before, f"{case}: {before} with {fewer}, {after} with {more}: {verdicts}"
    judged = {name: sum(v != "UNIMPLEMENTED" for v in per.values()) for name, per in verdicts.items()}
    assert judged["bare"] <= judged["events-only"] <= judged["every-extension"], (judged, verdicts)
    assert all(v in ("OK", "UNIMPLEMENTED") for per in verdicts.values() for v in per.values()), verdicts
