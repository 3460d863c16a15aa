"""PL-01, PL-02, PL-03, PL-05, PL-06, PL-07, PL-09, PL-10 and PL-18 must FAIL against deliberately broken
http-client agents, each for the intended reason, before their OK against the real stacks is
trusted (tests/broken_peers/pl_broken_agents.py, tests/broken_peers/pl-broken-agents.toml), and so
must TC-20 against the agent that hands out connections the server closed, TC-21 (as root:
the ledger in a namespace) against the agent that drops a request's timeout, and PL-19 (as root)
against the agent whose requests to every host share one lock; TC-19,
a SHOULD, must come out NON-STRICT against the agent that re-sends POSTs and OK against urllib3.

Each run is the real suite in a subprocess (``run_suite``) with only the broken client(s)
selected; the server is the ledger, fixed by the cases. The reason is read from the case's
reported expectation and actual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, run_suite

BROKEN = BROKEN_DIR / "pl-broken-agents.toml"

# (case, clients) -> {matrix column: (words of the expectation missed, words of the actual)}
RUNS = [
    ("PL-01", ["broken-fresh-pool"], {
        "http-client=broken-fresh-pool": ("never more than 3 simultaneous connections", "'max_simultaneous': 20"),
    }),
    ("PL-02", ["broken-keeps-idle"], {
        "http-client=broken-keeps-idle": ("'stay open': 1", "'open': 20"),
    }),
    ("PL-03", ["broken-fresh-pool"], {
        "http-client=broken-fresh-pool": ("20 connections stay open through", "'still open at the second burst': 0"),
    }),
    ("PL-05", ["broken-ignores-keepalive"], {
        "http-client=broken-ignores-keepalive": ("one connection per request", "'connections': 1"),
    }),
    ("PL-06", ["broken-fresh-pool"], {
        "http-client=broken-fresh-pool": ("≤ 3 simultaneous connections per host", "'max_simultaneous': 12"),
    }),
    ("PL-07", ["broken-jdk-keeps-idle"], {
        "http-client=broken-jdk-keeps-idle": ("'stay open': 5", "'open': 10"),
    }),
    ("PL-09", ["broken-fresh-pool", "broken-keeps-idle"], {
        "http-client=broken-fresh-pool": ("pool_block=True: never more than 3", "'max_simultaneous': 20"),
        "http-client=broken-keeps-idle": ("extra connections discarded after use", "'discarded right after use': 0"),
    }),
    ("TC-20", ["broken-hands-out-closed"], {
        "http-client=broken-hands-out-closed": ("no error surfaced", "Connection aborted"),
    }),
    ("TC-21", ["broken-ignores-timeout"], {
        "http-client=broken-ignores-timeout": ("one 2000 ms timeout at most", "'recovered_after_ms'"),
    }),
    ("PL-19", ["broken-serial-requests"], {
        "http-client=broken-serial-requests": ("answered within", "'live host during the stuck connects'"),
    }),
    ("PL-18", ["broken-leaks-slot-on-cancel"], {
        "http-client=broken-leaks-slot-on-cancel": ("normal requests after the canceled waves complete", "'agent': "),
    }),
    ("PL-10", ["broken-httpx-no-limit"], {
        "http-client=broken-httpx-no-limit": ("Limits(max_connections=3): ≤ 3 simultaneous", "'max_simultaneous': 20"),
    }),
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "clients", "reasons"), RUNS, ids=[f"{r[0]}-{'+'.join(r[1])}" for r in RUNS])
def test_case_fails_against_broken_agent(case_id: str, clients: list[str], reasons: dict[str, tuple[str, str]],
                                         tmp_path: Path) -> None:
    results = run_suite(case_id, tmp_path / "report", peers_files=[BROKEN],
                        peers=[f"http-client={c}" for c in clients])
    assert sorted(results) == sorted(reasons), f"columns {sorted(results)}, expected {sorted(reasons)}"
    for column, (missed, actual_words) in reasons.items():
        result = results[column]
        assert result["verdict"] == "FAILED", f"{column}: expected FAILED, got {result['verdict']}: {result['detail'][:1500]}"
        assert missed in str(result["expected"]), f"{column}: FAILED for another reason: expected={result['expected']!r}"
        assert actual_words in str(result["actual"]), f"{column}: FAILED for another reason: actual={result['actual']!r}"


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_tc19_flags_a_silently_resent_post(tmp_path: Path) -> None:
    results = run_suite("TC-19", tmp_path / "report", peers_files=[BROKEN],
                        peers=["http-client=broken-retries-post", "http-client=urllib3"])
    broken, real = results["http-client=broken-retries-post"], results["http-client=urllib3"]
    assert broken["verdict"] == "NON-STRICT", f"expected NON-STRICT, got {broken['verdict']}: {broken['detail'][:1500]}"
    assert "SHOULD NOT retry" in str(broken["expected"]), broken["expected"]
    assert "'re-sent by the client': 1" in str(broken["actual"]), broken["actual"]
    assert real["verdict"] == "OK", f"urllib3 (same agent, default Retry): {real['verdict']}: {real['detail'][:1500]}"
