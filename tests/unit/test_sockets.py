"""Unit tests for the TCP-table observer (harness.observe.sockets): the /proc parser on fixture
text and the pure queries. No sockets, no /proc."""

from __future__ import annotations

import sys

import pytest

from harness.observe import sockets
from harness.observe.history import History
from harness.observe.sockets import (
    SocketSampler,
    TcpEntry,
    TcpPair,
    close_wait_on,
    count,
    established_between,
    parse_proc_net_tcp,
    state_counts,
    time_wait_by_side,
)
from harness.wait import eventually

# The kernel prints each 32-bit address word in host byte order; these fixtures are what a
# little-endian machine (x86, arm64) prints.
pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="fixture text is little-endian /proc output")

# 127.0.0.1:8080 LISTEN; a connection 127.0.0.1:50000 -> 8080 (both sides); a server-side
# CLOSE_WAIT; TIME_WAIT on each side; 127.0.0.11:20001 -> 10.0.0.5:443.
TCP4 = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C351 08 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C352 0100007F:1F90 06 00000000:00000000 03:000010A6 00000000     0        0 0 3 0000000000000000
   5: 0100007F:1F90 0100007F:C353 06 00000000:00000000 03:000010A6 00000000     0        0 0 3 0000000000000000
   6: 0B00007F:4E21 0500000A:01BB 02 00000001:00000000 01:00000064 00000002  1000        0 1005 1 0000000000000000 100 0 0 10 -1
"""

# [::1]:8080 LISTEN; [2001:db8::1]:443 <- [::1]:40000 ESTABLISHED; v4-mapped 127.0.0.1:9000 CLOSE_WAIT
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:9C40 B80D0120000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:2328 0000000000000000FFFF00000100007F:C354 08 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 20 4 30 10 -1
"""


def e(local: tuple[str, int], remote: tuple[str, int], state: str, inode: int = 0) -> TcpEntry:
    return TcpEntry(local[0], local[1], remote[0], remote[1], state, inode)


def test_parses_ipv4_lines_skipping_the_header() -> None:
    entries = parse_proc_net_tcp(TCP4)
    assert len(entries) == 7
    assert entries[0] == e(("127.0.0.1", 8080), ("0.0.0.0", 0), "LISTEN", 1001)
    assert entries[1] == e(("127.0.0.1", 50000), ("127.0.0.1", 8080), "ESTABLISHED", 1002)
    assert entries[4] == e(("127.0.0.1", 50002), ("127.0.0.1", 8080), "TIME_WAIT", 0)  # shorter line
    assert entries[6] == e(("127.0.0.11", 20001), ("10.0.0.5", 443), "SYN_SENT", 1005)


def test_parses_ipv6_and_maps_v4_mapped_addresses_to_v4() -> None:
    entries = parse_proc_net_tcp(TCP6)
    assert entries[0] == e(("::1", 8080), ("::", 0), "LISTEN", 2001)
    assert entries[1] == e(("::1", 40000), ("2001:db8::1", 443), "ESTABLISHED", 2002)
    assert entries[2] == e(("127.0.0.1", 9000), ("127.0.0.1", 50004), "CLOSE_WAIT", 2003)


def test_port_filter_keeps_local_or_remote_matches() -> None:
    entries = parse_proc_net_tcp(TCP4 + TCP6, ports=[8080])
    assert {x.inode for x in entries if x.inode} == {1001, 1002, 1003, 1004, 2001}
    assert len(entries) == 7  # plus the two TIME_WAIT (inode 0)
    assert parse_proc_net_tcp(TCP4, ports=[443]) == [e(("127.0.0.11", 20001), ("10.0.0.5", 443), "SYN_SENT", 1005)]
    assert parse_proc_net_tcp(TCP4, ports=[1]) == []


def test_unknown_state_code_is_kept_visible() -> None:
    line = "   0: 0100007F:1F90 00000000:0000 FF 00000000:00000000 00:00000000 00000000 0 0 7 1 0\n"
    assert parse_proc_net_tcp(line)[0].state == "UNKNOWN_255"


def test_count_filters_on_every_given_criterion() -> None:
    entries = parse_proc_net_tcp(TCP4)
    assert count(entries) == 7
    assert count(entries, state="ESTABLISHED") == 2
    assert count(entries, state="ESTABLISHED", local_port=8080) == 1
    assert count(entries, remote_port=8080) == 2
    assert count(entries, state="TIME_WAIT", remote_port=8080) == 1


def test_close_wait_on_is_the_server_side_only() -> None:
    entries = parse_proc_net_tcp(TCP4 + TCP6)
    assert close_wait_on(entries, 8080) == [e(("127.0.0.1", 8080), ("127.0.0.1", 50001), "CLOSE_WAIT", 1004)]
    assert close_wait_on(entries, 9000)[0].inode == 2003
    assert close_wait_on(entries, 50001) == []  # the client's port: not its CLOSE_WAIT


def test_time_wait_by_side_credits_the_active_closer() -> None:
    entries = parse_proc_net_tcp(TCP4)
    assert time_wait_by_side(entries, server_port=8080) == {"client": 1, "server": 1}
    assert time_wait_by_side(entries, server_port=443) == {"client": 0, "server": 0}


def test_established_between_pairs_both_sides_of_one_connection() -> None:
    entries = parse_proc_net_tcp(TCP4)
    pairs = established_between(entries, 8080)
    assert pairs == [
        TcpPair(
            client=e(("127.0.0.1", 50000), ("127.0.0.1", 8080), "ESTABLISHED", 1002),
            server=e(("127.0.0.1", 8080), ("127.0.0.1", 50000), "ESTABLISHED", 1003),
        )
    ]
    # Only one side visible (the other end in another namespace): still one connection.
    one_sided = [x for x in entries if x.inode != 1003]
    assert established_between(one_sided, 8080) == [TcpPair(pairs[0].client, None)]


def test_state_counts_per_port_and_side() -> None:
    counts = state_counts(parse_proc_net_tcp(TCP4), [8080, 443, 1])
    assert counts[8080] == {
        "server": {"LISTEN": 1, "ESTABLISHED": 1, "CLOSE_WAIT": 1, "TIME_WAIT": 1},
        "client": {"ESTABLISHED": 1, "TIME_WAIT": 1},
    }
    assert counts[443] == {"server": {}, "client": {"SYN_SENT": 1}}
    assert counts[1] == {"server": {}, "client": {}}


def test_sampler_surfaces_thread_errors_on_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error in the sampling thread is raised by stop(), in the test's thread."""
    calls = []

    def flaky_snapshot(ports):
        calls.append(1)
        if len(calls) > 1:
            raise PermissionError("no /proc for you")
        return parse_proc_net_tcp(TCP4, ports)

    monkeypatch.setattr(sockets, "snapshot", flaky_snapshot)
    history = History(None)
    sampler = SocketSampler(history, [8080], interval_ms=5).start()
    assert sampler.last()[8080]["server"]["LISTEN"] == 1
    assert [ev["what"] for ev in history.events("observe")] == ["sockets"]
    eventually(lambda: len(calls) > 1, timeout_ms=2000, what="the sampler's second sample")
    with pytest.raises(RuntimeError, match="no /proc for you"):
        sampler.stop()


def test_sampler_records_only_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = iter([TCP4, TCP4, TCP4 + TCP6])
    last = [TCP4]

    def snapshot(ports):
        last[0] = next(tables, last[0])
        return parse_proc_net_tcp(last[0], ports)

    monkeypatch.setattr(sockets, "snapshot", snapshot)
    history = History(None)
    sampler = SocketSampler(history, [8080, 9000], interval_ms=5)
    sampler._sample()
    sampler._sample()  # unchanged: no event
    sampler._sample()  # 9000 gains a CLOSE_WAIT
    assert len(history.events("observe")) == 2
    assert len(sampler.samples) == 2
    assert sampler.last()[9000]["server"] == {"CLOSE_WAIT": 1}
    assert sampler.max_count(8080, "LISTEN") == 2  # v4 and v6 listeners on 8080
    assert history.events("observe")[-1]["value"]["9000"]["server"] == {"CLOSE_WAIT": 1}  # JSON keys
