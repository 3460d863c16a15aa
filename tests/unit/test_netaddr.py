"""Loopback checks that cannot be fooled (hardening): literals only, parsed with ipaddress,
never resolved; IPv6 loopback and IPv4-mapped loopback handled on purpose."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.netaddr import check_host, is_loopback
from harness.toxiproxy.client import normalise_toxiproxy_url


@pytest.mark.parametrize("host", ["127.0.0.1", "127.100.0.11", "127.255.255.254", "::1", "[::1]",
                                  "::ffff:127.0.0.1"])
def test_loopback_literals_pass(host: str) -> None:
    assert is_loopback(check_host(host))


def test_localhost_means_127_0_0_1_without_a_resolver() -> None:
    assert check_host("localhost") == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.evil.example.com", "127.0.0.1.nip.io", "example.com", "", "127.1",
                                  "10.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1", "198.18.0.5"])
def test_everything_else_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="connformance never resolves names|outside 127.0.0.0/8"):
        check_host(host)


def test_a_namespace_address_passes_only_when_vouched_for() -> None:
    assert check_host("198.18.3.2", namespaced=True) == "198.18.3.2"
    with pytest.raises(ValueError, match="outside"):
        check_host("198.20.0.1", namespaced=True)  # outside 198.18.0.0/15


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.evil.example.com:8474", "never resolves names"),
    ("http://127.0.0.1:99999", "port must be 1..65535"),
    ("http://10.0.0.1:8474", "outside 127.0.0.0/8"),
    ("https://127.0.0.1:8474", "must look like"),
])
def test_toxiproxy_urls_are_checked_once_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(HarnessError, match=words):
        normalise_toxiproxy_url(url)
