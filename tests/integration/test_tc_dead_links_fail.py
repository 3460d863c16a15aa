"""TC-04, TC-05, TC-06, TC-09 and TC-15..TC-18 must FAIL against deliberately broken peers, each for the
intended reason, before their OK against the reference peers is trusted
(tests/broken_peers/tc_dead_peers.py, tests/broken_peers/tc-dead-peers.toml; TC-18's server that
forgets a dead transport is the soak's, tests/broken_peers/soak-servers.toml).

Each run is the real suite in a subprocess (``run_suite``); a run's matrix is every selected
server × every selected client, so each run pairs the broken peers with the reference peer of
the other role only. The reason is read from the case's reported expectation and actual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.placement.netns import available
from tests.support.run_suite import BROKEN_DIR, run_suite

BROKEN = [BROKEN_DIR / "tc-dead-peers.toml", BROKEN_DIR / "soak-servers.toml"]

# (case, servers, clients) -> {matrix column: (words of the expectation missed, words of the actual)}
RUNS = [
    ("TC-04", ["broken-never-ejects", "broken-ejects-but-keeps-registration"], ["ref"], {
        "nacos-client=ref nacos-server=broken-never-ejects":
            ("ejected within idle", "the dead registration was still held"),
        "nacos-client=ref nacos-server=broken-ejects-but-keeps-registration":
            ("ejected within idle", "its transport closed"),
    }),
    ("TC-05", ["ref"], ["broken-no-health-check", "broken-health-check-never-fails", "broken-stays-on-dead-server"], {
        "nacos-client=broken-no-health-check nacos-server=ref": ("detects the blackhole within", "it never noticed"),
        "nacos-client=broken-health-check-never-fails nacos-server=ref": ("detects the blackhole within", "it never noticed"),
        "nacos-client=broken-stays-on-dead-server nacos-server=ref": ("detects the blackhole within", "it noticed after"),
    }),
    ("TC-06", ["ref"], ["broken-leaks-close-wait", "broken-stays-on-dead-server"], {
        "nacos-client=broken-leaks-close-wait nacos-server=ref": ("no client-side CLOSE_WAIT", "still in CLOSE_WAIT"),
        "nacos-client=broken-stays-on-dead-server nacos-server=ref": ("detects the kill within", "not RUNNING on another server"),
    }),
    ("TC-15", ["broken-never-ejects", "ref"], ["ref"], {
        "nacos-client=ref nacos-server=broken-never-ejects":
            ("half-open connection", "still registered"),
        "nacos-client=ref nacos-server=ref": None,  # the same case, OK on the reference server
    }),
    ("TC-16", ["ref"], ["broken-no-health-check", "broken-spins-while-reconnecting", "broken-leaves-connects-pending"], {
        "nacos-client=broken-no-health-check nacos-server=ref": ("detects the silence within", "it never noticed"),
        "nacos-client=broken-spins-while-reconnecting nacos-server=ref": ("no hot loop", "cpu_fraction"),
        "nacos-client=broken-leaves-connects-pending nacos-server=ref": ("no connect towards the dead server",
                                                                         "SYN_SENT"),
    }),
    ("TC-17", ["ref"], ["broken-no-health-check", "broken-health-check-never-fails", "ref"], {
        "nacos-client=broken-no-health-check nacos-server=ref": ("detects the client→server drop within",
                                                                 "it never noticed"),
        "nacos-client=broken-health-check-never-fails nacos-server=ref": ("detects the client→server drop within",
                                                                          "it never noticed"),
        "nacos-client=ref nacos-server=ref": None,
    }),
    ("TC-18", ["soak-forgets-unregister"], ["ref"], {
        "nacos-client=ref nacos-server=soak-forgets-unregister": ("registered exactly once", "the server still registers"),
    }),
    # A server that ejects idle connections ends a leaked transport itself (the pair recovers):
    # the leak shows beside one that does not.
    ("TC-18", ["broken-never-ejects"], ["broken-keeps-old-transport"], {
        "nacos-client=broken-keeps-old-transport nacos-server=broken-never-ejects":
            ("registered exactly once", "the client's leak"),
    }),
    ("TC-09", ["broken-ejects-but-keeps-registration"], ["ref"], {
        "nacos-client=ref nacos-server=broken-ejects-but-keeps-registration": ("drops", "still holds"),
    }),
    ("TC-09", ["ref"], ["broken-health-check-never-fails"], {
        "nacos-client=broken-health-check-never-fails nacos-server=ref":
            ("detects the SIGSTOP within", "it never noticed"),
    }),
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "servers", "clients", "reasons"), RUNS,
                         ids=[f"{r[0]}-{'+'.join(r[1] + r[2])}" for r in RUNS])
def test_case_fails_against_broken_peer(case_id: str, servers: list[str], clients: list[str],
                                        reasons: dict[str, tuple[str, str] | None], tmp_path: Path) -> None:
    if case_id in ("TC-15", "TC-16", "TC-17", "TC-18") and available() is not None:
        pytest.skip(f"{case_id} needs network namespaces: {available()}")
    peers = [f"nacos-server={s}" for s in servers] + [f"nacos-client={c}" for c in clients]
    results = run_suite(case_id, tmp_path / "report", peers_files=BROKEN, peers=peers)
    assert sorted(results) == sorted(reasons), f"columns {sorted(results)}, expected {sorted(reasons)}"
    for column, why in reasons.items():
        result = results[column]
        if why is None:
            assert result["verdict"] == "OK", f"{column}: expected OK, got {result['verdict']}: {result['detail'][:1500]}"
            continue
        missed, actual_words = why
        assert result["verdict"] == "FAILED", f"{column}: expected FAILED, got {result['verdict']}: {result['detail'][:1500]}"
        assert missed in str(result["expected"]), f"{column}: FAILED for another reason: expected={result['expected']!r}"
        assert actual_words in str(result["actual"]), f"{column}: FAILED for another reason: actual={result['actual']!r}"
