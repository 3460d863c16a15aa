"""Bad input gets one clear line (hardening): a bad --toxiproxy-url is a usage error before
collection, not an ERROR per case; a SetupError shows its message, with the long chained
traceback kept in a file beside the case; a manifest's readiness bound is the one waited."""

from __future__ import annotations

import time

import pytest

SUITE = '''
from fixtures.case import case
from harness.errors import SetupError


@case("SR-81", "MUST")
def test_setup_trouble(cf):
    """The environment is not as needed."""
    try:
        raise OSError("address already in use")
    except OSError as exc:
        raise SetupError("peer server-0 not ready after 5000 ms: GET http://127.0.0.11:1/x refused; "
                         "what to do: check the manifest's {host}") from exc
'''


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:99999", "*--toxiproxy-url http://127.0.0.1:99999*port must be 1..65535*"),
    ("http://127.evil.example.com:8474", "*--toxiproxy-url*never resolves names*"),
    ("http://192.0.2.1:8474", "*--toxiproxy-url*outside 127.0.0.0/8*"),
])
def test_a_bad_toxiproxy_url_is_one_usage_error(pytester: pytest.Pytester, url: str, words: str) -> None:
    pytester.makepyfile(test_cases=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--toxiproxy-url", url)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([words])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.timeout(60)
def test_a_setup_error_reads_as_its_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=SUITE)
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", str(report))
    out = result.stdout.str()
    assert "SetupError: peer server-0 not ready after 5000 ms" in out
    assert "full traceback:" in out
    assert "OSError: address already in use" not in out  # the chained cause stays in the file
    saved = next(report.glob("cases/SR-81/*/traceback-call.txt"))
    assert "OSError: address already in use" in saved.read_text()


NEVER_READY = '''
[peer]
name = "never"
role = "nacos-server"
capabilities = []
[process]
command = ["{python}", "-c", "import time; time.sleep(60)", "{host}", "{main_port}", "{grpc_port}"]
[readiness]
port = "{host}:{main_port}"
timeout_ms = 3000
'''

CASE_NEEDING_A_SERVER = '''
from fixtures.case import case


@case("SR-82", "MUST")
def test_start(cf, topology, nacos_server_peer):
    """Start a server."""
    topology.nacos_servers(1, peer=nacos_server_peer)
'''


@pytest.mark.timeout(90)
def test_the_manifest_readiness_bound_is_honoured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=CASE_NEEDING_A_SERVER)
    manifest = pytester.path / "never.toml"
    manifest.write_text(NEVER_READY)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--peers-file", str(manifest),
                                           "--peer", "nacos-server=never", "--report-dir", str(pytester.path / "r"))
    elapsed = time.monotonic() - started
    result.stdout.fnmatch_lines(["*not ready after 3000 ms*"])
    assert elapsed < 15, f"waited {elapsed:.1f} s for a 3000 ms readiness bound"
