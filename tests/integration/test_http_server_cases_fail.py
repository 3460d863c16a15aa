"""PL-12, PL-13, TC-11, TC-12 and TC-13 must each FAIL against a deliberately broken server, for
the intended reason, before their OK is trusted (tests/broken_peers/http_broken_servers.py with
http-broken-servers.toml; tests/broken_peers/pl_nacos_servers.py with pl-nacos-servers.toml).
TC-14 is INFO: it must record numbers that tell Go's net/http and the JDK's HttpURLConnection
apart for a POST dropped on a reused connection (research/http-pools.md §6.1 G8, §6.2 J9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.run_suite import BROKEN_DIR, assert_all, run_suite

HTTP_BROKEN = BROKEN_DIR / "http-broken-servers.toml"
NACOS_BROKEN = BROKEN_DIR / "pl-nacos-servers.toml"

# (case, --peer, manifest, words of the expectation it must miss)
CASES = [
    ("PL-12", "http-server=broken-http-ignores-max-connections", HTTP_BROKEN, "one connection at a time"),
    ("TC-11", "http-server=broken-http-never-closes-on-500", HTTP_BROKEN, "closes after"),
    ("TC-12", "http-server=broken-http-keepalive-never-fires", HTTP_BROKEN, "server FIN at T"),
    ("TC-13", "http-server=broken-http-close-wait-leak", HTTP_BROKEN, "no server-side CLOSE_WAIT left"),
    ("PL-13", "nacos-server=broken-pl-counter-counts-rejected", NACOS_BROKEN, "per-IP counter equals"),
]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("case_id", "peer", "manifest", "missed"), CASES,
                         ids=[f"{c}-{p.split('=', 1)[1]}" for c, p, _, _ in CASES])
def test_case_fails_against_broken_server(case_id: str, peer: str, manifest: Path, missed: str,
                                          tmp_path: Path) -> None:
    results = run_suite(case_id, tmp_path / "report", peers_files=[manifest], peers=[peer])
    assert_all(results, "FAILED", expect_words=missed)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_tc14_records_go_and_jdk_apart_for_post(tmp_path: Path) -> None:
    go, jdk = "http-client=go-net-http", "http-client=jdk-httpurlconnection"
    results = run_suite("TC-14", tmp_path / "report", peers=[go, jdk])
    assert_all(results, "INFORMATIONAL", columns=2)
    post = {peer: results[peer]["actual"]["POST"] for peer in (go, jdk)}
    assert all(p["dropped on a reused connection"] for p in post.values()), post
    assert post[go]["server saw requests"] != post[jdk]["server saw requests"], post
    # Go: a POST is not replayable, the application sees EOF (G8); the JDK re-sends it (J9).
    assert post[go]["re-sent by the client"] == 0, post
    assert post[go]["client outcome of the dropped request"].startswith("error"), post
    assert post[jdk]["re-sent by the client"] == 1, post
    assert post[jdk]["client outcome of the dropped request"] == "ok 200", post
    get = {peer: results[peer]["actual"]["GET"] for peer in (go, jdk)}
    assert all(g["re-sent by the client"] == 1 for g in get.values()), get  # both retry an idempotent GET
