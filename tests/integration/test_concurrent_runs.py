"""Runs on one machine never collide (hardening): two runs at once, each restarting its servers
round after round, never lose a port to the other, because each run owns its slot's loopback
block (``harness.slots``). The runs are separate processes, as two CI jobs or two xdist workers
are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration

ROUNDS = 12

_RUN = """
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from harness.observe.history import History
from harness.peers import PeerRegistry
from harness.runtime import ProcessRuntime
from harness.slots import current_slot
from harness.topology import Topology
from harness.toxiproxy import ToxiproxyClient, ToxiproxyServer

registry = PeerRegistry()
registry.load_builtin()
work = Path({work!r})
errors, hosts = [], []
with ToxiproxyServer() as tp, ToxiproxyClient(tp.url) as tp_client, ProcessRuntime() as runtime:
    history = History(work / "history.jsonl")
    topo = Topology(runtime=runtime, toxiproxy=tp_client, workdir=work, history=history)
    try:
        servers = topo.nacos_servers(2, peer=registry.get("nacos-server", "ref"))
        hosts = [f"{{s.host}}:{{s.main_port}}" for s in servers]
        for _ in range({rounds}):
            for server in servers:
                try:
                    server.node.restart(timeout_ms=15000)
                except Exception as exc:
                    errors.append(f"{{type(exc).__name__}}: {{exc}}"[:300])
    finally:
        leaks = topo.close()
print(json.dumps({{"slot": current_slot().index, "hosts": hosts, "errors": errors, "leaks": leaks}}))
"""


@pytest.mark.timeout(240)
def test_two_runs_restarting_servers_never_collide(tmp_path: Path) -> None:
    procs = []
    for i in range(2):
        work = tmp_path / f"run-{i}"
        work.mkdir()
        script = _RUN.format(root=str(PROJECT_ROOT), work=str(work), rounds=ROUNDS)
        procs.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    first, second = results
    assert first["slot"] != second["slot"]
    assert not set(first["hosts"]) & set(second["hosts"])
    for result in results:
        assert result["errors"] == [], result["errors"]
        assert result["leaks"] == [], result["leaks"]
