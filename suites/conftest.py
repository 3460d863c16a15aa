"""Options of the suites: the size of the TC-08 soak (SPEC §5 TC-08).

    pytest suites -k TC-08 --soak-clients 20 --soak-faults 60 --soak-window-ms 60000
    python3 -m tox run -e conformance -- -k TC-08 --soak-clients 20

This conftest sits at the top of ``suites`` so pytest reads its options whenever ``suites`` or
a folder below it is on the command line. The size can also come from the environment:
``CONNFORMANCE_SOAK_CLIENTS``, ``CONNFORMANCE_SOAK_FAULTS``, ``CONNFORMANCE_SOAK_WINDOW_MS``
(tox passes ``CONNFORMANCE_*`` through). Command-line options win over the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from fixtures.case import spec_of

DEFAULT_CLIENTS = 6
DEFAULT_FAULTS = 8
DEFAULT_WINDOW_MS = 10_000
SOAK_CASE = "TC-08"
_DEFAULT_TIMEOUT_S = 240  # the case's own hang guard at the default size (@case timeout_s)


@dataclass(frozen=True)
class SoakSize:
    clients: int
    faults: int
    window_ms: int

    @property
    def is_default(self) -> bool:
        return (self.clients, self.faults, self.window_ms) == (DEFAULT_CLIENTS, DEFAULT_FAULTS, DEFAULT_WINDOW_MS)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("connformance-soak", "connformance TC-08 soak size")
    group.addoption("--soak-clients", type=int, default=None, dest="soak_clients", metavar="N",
                    help=f"clients of the peer under test (default {DEFAULT_CLIENTS}; env CONNFORMANCE_SOAK_CLIENTS)")
    group.addoption("--soak-faults", type=int, default=None, dest="soak_faults", metavar="M",
                    help=f"random faults in the schedule (default {DEFAULT_FAULTS}; env CONNFORMANCE_SOAK_FAULTS)")
    group.addoption("--soak-window-ms", type=int, default=None, dest="soak_window_ms", metavar="W",
                    help=f"the schedule's window (default {DEFAULT_WINDOW_MS}; env CONNFORMANCE_SOAK_WINDOW_MS)")


def soak_size(config: pytest.Config) -> SoakSize:
    def value(dest: str, env: str, default: int, minimum: int) -> int:
        raw = config.getoption(dest, default=None)
        if raw is None:
            text = os.environ.get(env, "").strip()
            if text:
                try:
                    raw = int(text)
                except ValueError:
                    raise pytest.UsageError(f"{env}={text!r}: expected an integer") from None
        result = default if raw is None else int(raw)
        if result < minimum:
            raise pytest.UsageError(f"--{dest.replace('_', '-')} / {env}: {result} is below {minimum}")
        return result

    return SoakSize(
        clients=value("soak_clients", "CONNFORMANCE_SOAK_CLIENTS", DEFAULT_CLIENTS, 1),
        faults=value("soak_faults", "CONNFORMANCE_SOAK_FAULTS", DEFAULT_FAULTS, 0),
        window_ms=value("soak_window_ms", "CONNFORMANCE_SOAK_WINDOW_MS", DEFAULT_WINDOW_MS, 1000),
    )


@pytest.fixture(name="soak_size")
def soak_size_fixture(request: pytest.FixtureRequest) -> SoakSize:
    """The TC-08 soak's size: options, else environment, else the CI default."""
    return soak_size(request.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A larger soak gets a proportionally larger hang guard (the case's own stays at the default)."""
    size = soak_size(config)
    if size.is_default:
        return
    timeout_s = _DEFAULT_TIMEOUT_S + size.window_ms / 1000 + 5 * size.clients + 2 * size.faults
    for item in items:
        spec = spec_of(getattr(item, "function", None))
        if spec is not None and spec.id == SOAK_CASE:
            item.add_marker(pytest.mark.timeout(timeout_s), append=False)  # closest marker wins
