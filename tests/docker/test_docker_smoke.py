"""A few SR, TC and PL cells run end to end under ``--runtime docker`` (real suites, real images,
Toxiproxy in its container) and get the verdicts they get under the process runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import run_suite

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SMOKE = [  # (case, --peer arguments, column, verdict under the process runtime)
    ("SR-01", ["nacos-client=ref"], "nacos-client=ref nacos-server=ref", "OK"),
    ("SR-06", ["nacos-client=go-v2.3.5"], "nacos-client=go-v2.3.5 nacos-server=ref", "FAILED"),
    ("TC-02", ["nacos-client=java-2.2.4"], "nacos-client=java-2.2.4 nacos-server=ref", "OK"),
    ("TC-09", ["nacos-client=ref"], "nacos-client=ref nacos-server=ref", "OK"),
    ("PL-01", ["http-client=go-net-http"], "http-client=go-net-http", "OK"),
    ("PL-05", ["http-client=aiohttp"], "http-client=aiohttp", "OK"),
    ("TC-11", ["http-server=tomcat"], "http-server=tomcat", "OK"),
]


@pytest.mark.parametrize(("case_id", "peers", "column", "verdict"), SMOKE, ids=[f"{c}-{col}" for c, _, col, _ in SMOKE])
def test_cell_under_docker(docker_engine, tmp_path: Path, case_id: str, peers: list[str], column: str,
                           verdict: str) -> None:
    results = run_suite(case_id, tmp_path / "report", peers=peers, extra_args=["--runtime", "docker"])
    assert column in results, f"{case_id}: no cell {column!r}; got {sorted(results)}"
    got = results[column]
    assert got["verdict"] == verdict, (f"{case_id} {column} under docker: expected {verdict} (as under the process "
                                       f"runtime), got {got['verdict']}: {got.get('actual') or got['detail'][:1500]}")
