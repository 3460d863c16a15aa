"""The pure parts of the reference Nacos client: address parsing, rotation, the redirect rule
and the reconnect pacing (research/nacos-protocol.md §4.4). No sockets."""

from __future__ import annotations

import random

import pytest

from harness.reference.nacos.client_logic import (
    ReconnectPacer,
    RefClientConfig,
    ServerAddress,
    ServerList,
    backoff_ms,
    parse_server_list,
    sleep_schedule_ms,
)

pytestmark = pytest.mark.timeout(10)

A = ServerAddress("127.0.0.2", 20001)
B = ServerAddress("127.0.0.3", 20002)
C = ServerAddress("127.0.0.4", 20003)


class FixedRandom(random.Random):
    """randrange returns a chosen start index."""

    def __init__(self, start: int) -> None:
        super().__init__(0)
        self.start = start

    def randrange(self, *args, **kwargs) -> int:  # type: ignore[override]
        return self.start


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8848", ServerAddress("127.0.0.1", 8848)),
    (" http://127.0.0.1:9000/ ", ServerAddress("127.0.0.1", 9000)),
    ("127.0.0.5", ServerAddress("127.0.0.5", 8848)),
])
def test_parse_address(text: str, expected: ServerAddress) -> None:
    assert ServerAddress.parse(text) == expected


def test_grpc_port_is_main_plus_offset() -> None:
    assert A.grpc_port() == 21001
    assert A.grpc_port(10) == 20011


@pytest.mark.parametrize("text", ["", "127.0.0.1:abc", ":8848"])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the input; any ValueError
        parse_server_list(text)


def test_server_list_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="outside 127.0.0.0/8"):
        parse_server_list("127.0.0.1:8848,10.1.2.3:8848")


def test_rotation_advances_before_use_from_the_random_start() -> None:
    servers = ServerList([A, B, C], rng=FixedRandom(1))
    assert [servers.next() for _ in range(5)] == [C, A, B, C, A]


def test_rotation_start_is_random() -> None:
    firsts = {ServerList([A, B, C], rng=random.Random(seed)).next() for seed in range(40)}
    assert firsts == {A, B, C}


def test_single_server_list_always_returns_it() -> None:
    servers = ServerList([A])
    assert [servers.next() for _ in range(3)] == [A, A, A]


def test_empty_server_list_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ServerList([])


def test_redirect_in_list_takes_the_lists_port() -> None:
    servers = ServerList([A, B, C])
    assert servers.resolve_recommended(ServerAddress(B.ip, 1)) == B
    assert servers.resolve_recommended(C) == C


def test_redirect_out_of_list_is_dropped() -> None:
    servers = ServerList([A, B])
    assert servers.resolve_recommended(ServerAddress("127.0.0.9", A.port)) is None


def test_redirect_matches_on_ip_only_so_same_ip_servers_collapse_to_the_first() -> None:
    # Java's rule: on one loopback IP every redirect lands on the first entry with that IP.
    first, second = ServerAddress("127.0.0.1", 20001), ServerAddress("127.0.0.1", 20002)
    servers = ServerList([first, second])
    assert servers.resolve_recommended(second) == first


def test_backoff_grows_per_turn_and_is_capped() -> None:
    assert [backoff_ms(t, step_ms=100, cap_ms=5000) for t in (0, 1, 2, 48, 49, 50, 1000)] == [
        100, 200, 300, 4900, 5000, 5000, 5000]
    assert backoff_ms(10, step_ms=100, cap_ms=700) == 700


def test_sleep_schedule_two_servers() -> None:
    # 100 ms between servers in the first pass, 200 ms in the second, ...
    assert sleep_schedule_ms(2, 7, step_ms=100, cap_ms=5000) == [100, 100, 200, 200, 300, 300, 400]


def test_sleep_schedule_one_server_grows_every_attempt_after_the_first() -> None:
    assert sleep_schedule_ms(1, 4, step_ms=100, cap_ms=5000) == [100, 200, 300, 400]


def test_sleep_schedule_reaches_the_cap() -> None:
    schedule = sleep_schedule_ms(3, 200, step_ms=100, cap_ms=5000)
    assert max(schedule) == 5000
    assert schedule == sorted(schedule)
    assert schedule[-1] == 5000


def test_pacer_counts_turns_per_full_pass() -> None:
    pacer = ReconnectPacer(3)
    assert [pacer.after_failed_attempt() for _ in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert pacer.reconnect_times == 7


def test_config_labels_are_the_java_naming_labels() -> None:
    cfg = RefClientConfig(servers=[A], app_name="app-x")
    assert cfg.labels() == {"source": "sdk", "module": "naming", "AppName": "app-x"}
    assert (cfg.health_interval_ms, cfg.health_timeout_ms, cfg.health_retry, cfg.setup_wait_ms) == (5000, 3000, 3, 100)
    assert (cfg.retry_times, cfg.backoff_step_ms, cfg.backoff_cap_ms) == (3, 100, 5000)
