"""``wait_client_running``: a client agent that reports SHUTDOWN has stopped for good (the Rust
nacos-sdk's failed ``build()``), so the wait ends there with the state it saw, instead of waiting
out its bound (SR-17's 201 s guard was past the case's 90 s timeout: ERROR, no verdict)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness.observe.history import History
from harness.scenarios.nacos import wait_client_running
from harness.wait import WaitTimeout, now_ms


def _client(states: list[dict[str, Any]]) -> SimpleNamespace:
    """A client handle whose agent answers ``states`` in turn, then the last one for ever."""
    answers = iter(states)
    last: dict[str, Any] = {}

    def state() -> dict[str, Any]:
        nonlocal last
        last = next(answers, last)
        return last

    return SimpleNamespace(name="client-x", control=SimpleNamespace(state=state))


def test_running_is_returned() -> None:
    client = _client([{"status": "STARTING"}, {"status": "RUNNING", "server": "127.0.0.1:1"}])
    assert wait_client_running(History(), client, timeout_ms=5000)["status"] == "RUNNING"


def test_shutdown_ends_the_wait_at_once_with_what_was_seen() -> None:
    client = _client([{"status": "STARTING"}, {"status": "SHUTDOWN", "server": None}])
    started = now_ms()
    with pytest.raises(WaitTimeout, match="it stopped: SHUTDOWN") as caught:
        wait_client_running(History(), client, timeout_ms=60_000)
    assert now_ms() - started < 5000
    assert caught.value.last == {"status": "SHUTDOWN", "server": None}


def test_running_elsewhere_is_not_running_on_the_server_asked_for() -> None:
    client = _client([{"status": "RUNNING", "server": "127.0.0.1:2"}])
    with pytest.raises(WaitTimeout, match="on 127.0.0.1:1"):
        wait_client_running(History(), client, timeout_ms=200, server="127.0.0.1:1")
