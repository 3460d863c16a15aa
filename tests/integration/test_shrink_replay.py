"""Shrink and replay, end to end as a user runs them: a 20-fault `up` soak against a deliberately
broken server (tests/broken_peers/soak_servers.py `forgets-unregister`) fails; `connformance
shrink` finds a schedule of at most 3 faults that still fails the same way; the one-line command it
prints reproduces the failure 3 times in 3; nothing of any of it is left running."""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import pytest

from harness.faults import Schedule
from tests.support.marked import end_run, processes_with_marker, run_cli
from tests.support.run_suite import BROKEN_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One server and only the proxy faults: whether a fault cuts a live transport is then decided by
# the schedule alone (every client is on that server once the baseline holds), so the shrunk
# schedule fails every time. A pause, or a second server the clients pick at random, would make
# its hit depend on timing or on the clients' draws: shrink's confirmations catch such a schedule,
# but this test must not depend on its luck.
SOAK = ["--servers", "1", "--clients", "ref:3", "--server-peer", "soak-forgets-unregister",
        "--peers-file", str(BROKEN_DIR / "soak-servers.toml"), "--scaled-timers",
        "--fault-kinds", "proxy_down,blackhole,reset_peer"]
SEED = "7"


@pytest.mark.timeout(900)
def test_a_failing_soak_shrinks_to_three_faults_that_replay_the_failure(tmp_path: Path) -> None:
    marker = f"shrink-{uuid.uuid4().hex[:8]}"
    try:
        # 1. The 20-fault session fails: registrations outlive their transports.
        code, out = run_cli(["up", *SOAK, "--faults", "20", "--window-ms", "10000", "--chaos-seed", SEED,
                             "--workdir", str(tmp_path / "soak")], marker, timeout_s=180)
        assert code == 3, out
        assert "membership: FAILED" in out, out
        history = tmp_path / "soak" / "history.jsonl"
        assert f"connformance shrink {history}" in out, out

        # 2. Shrinking keeps a schedule of at most 3 faults that fails alike, confirmed 3 times more.
        code, out = run_cli(["shrink", str(history), "--budget-s", "420"], marker, timeout_s=600)
        assert code == 0, out
        command = re.search(r"^\[shrink\] replay: (.+)$", out, re.M)
        assert command, out
        argv = shlex.split(command.group(1))
        schedule = Schedule.from_json(argv[argv.index("--schedule") + 1])
        assert 1 <= len(schedule.events) <= 3, out
        assert "failed alike in 3 more replay(s)" in out, out
        assert (history.parent / "shrink" / "replay.txt").read_text().strip() == command.group(1)

        # 3. The printed command, as printed, reproduces the failure 3 times in 3.
        assert argv[:2] == ["connformance", "up"]
        for n in range(3):
            code, replay = run_cli([*argv[1:], "--workdir", str(tmp_path / f"replay-{n}")], marker, timeout_s=180)
            assert code == 3, replay
            assert "membership: FAILED" in replay, replay
        assert not processes_with_marker(marker)
    finally:
        end_run(None, marker)
