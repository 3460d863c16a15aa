"""The TC-08 soak must FAIL against servers whose bookkeeping breaks under transport faults, each
for the exact check it breaks (tests/broken_peers/soak_servers.py), and be OK against the
reference server with the same seed (the broken runs fail for their bug, not for the storm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

BROKEN = BROKEN_DIR / "soak-servers.toml"
SEED = "1234"  # its schedule kills transports on both servers (pinned in tests/unit/test_soak_schedule.py)

# broken server -> words of the expectation it must miss
VARIANTS = {
    "soak-forgets-unregister": "union of current == live clients' connection ids",
    "soak-ip-count-drift": "per server, per client IP",
    "soak-double-disconnect": "connected == 1, disconnected == (0 if still registered else 1)",
}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("server", "missed"), sorted(VARIANTS.items()))
def test_soak_fails_against_broken_server(server: str, missed: str, tmp_path: Path) -> None:
    results = run_suite("TC-08", tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"nacos-server={server}", "nacos-client=ref"], extra_args=["--chaos-seed", SEED])
    assert_all(results, "FAILED", expect_words=missed)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_is_ok_against_the_reference_server_with_the_same_seed(tmp_path: Path) -> None:
    results = run_suite("TC-08", tmp_path / "report", peers=["nacos-server=ref", "nacos-client=ref"],
                        extra_args=["--chaos-seed", SEED])
    assert_all(results, "OK")
