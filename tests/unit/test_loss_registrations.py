"""TC-18's reading of the registrations after a loss heals: exactly once, and whose a stale one is
(from both ends' sockets), without peers."""

from __future__ import annotations

from harness.scenarios.loss import Registrations, whose

RUNNING = {"status": "RUNNING", "server": "198.18.0.2:20000", "connection_id": "2_198.18.0.1_41002"}


def test_exactly_once_needs_the_clients_own_id_alone() -> None:
    assert Registrations(RUNNING, {"a": ["2_198.18.0.1_41002"], "b": []}).exactly_once()
    duplicate = Registrations(RUNNING, {"a": ["1_198.18.0.1_41000", "2_198.18.0.1_41002"], "b": []})
    assert not duplicate.exactly_once()
    assert duplicate.problem().startswith("duplicate registration: 2 ids")
    lost = Registrations(RUNNING, {"a": [], "b": []})
    assert not lost.exactly_once() and lost.problem().startswith("lost registration")
    other = Registrations(RUNNING, {"a": [], "b": ["3_198.18.0.1_41004"]})
    assert not other.exactly_once() and "while the client reports" in other.problem()
    assert not Registrations({**RUNNING, "status": "UNHEALTHY"}, {"a": ["2_198.18.0.1_41002"]}).exactly_once()


def test_whose_reads_the_clients_end() -> None:
    assert "the client's leak" in whose({"x": {"client side": ["ESTABLISHED"], "server side": ["ESTABLISHED"]}})
    assert "(the server's)" in whose({"x": {"client side": ["TIME_WAIT"], "server side": []}})
    assert "(the server's)" in whose({"x": {"client side": [], "server side": ["ESTABLISHED"]}})
    assert "closing" in whose({"x": {"client side": ["FIN_WAIT2"], "server side": ["CLOSE_WAIT"]}})
