"""The docker runtime keeps the Node contract of the process runtime, on real containers:
readiness, logs, pause (frozen: the kernel still accepts, nothing answers), kill, restart on
the same port, stop removes the container, close removes the run, a crashed run is reaped."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from harness.docker.runtime import LABEL_OWNER, LABEL_RUN, DockerRuntime, owner_label
from harness.errors import SetupError
from harness.peers import PeerRegistry
from harness.peers.launch import render
from harness.ports import free_port, http_server_host

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _ledger_spec(tmp_path: Path):
    peer = PeerRegistry.default().get("http-server", "ledger")
    host = http_server_host(0)
    port = free_port(host=host)
    spec, readiness = render(peer, runtime="docker", placeholders={"host": host, "port": port},
                             name="ledger-under-test", log_path=tmp_path / "ledger.log")
    return spec, readiness, f"http://{host}:{port}"


def _answers(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/", timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def _our_containers(runtime: DockerRuntime) -> list:
    return runtime.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={runtime.run_id}"})


def test_node_contract_on_a_real_container(docker_engine, tmp_path: Path) -> None:
    runtime = DockerRuntime()
    try:
        spec, readiness, url = _ledger_spec(tmp_path)
        assert spec.image == "python" and spec.argv[0] == "/opt/venv/bin/python"
        node = runtime.start(spec, readiness, timeout_ms=30000)
        assert node.alive() and node.pid and Path(f"/proc/{node.pid}").exists(), "pid is a host pid"
        assert _answers(url)
        assert "connformance: start #1" in node.logs() and node.log_path == tmp_path / "ledger.log"

        node.pause()
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=2):  # the kernel still accepts...
            pass
        assert not _answers(url, timeout_s=0.5), "...but a frozen container answers nothing"
        node.resume()
        assert _answers(url)

        node.kill()
        assert not node.alive() and node.exit_code == -9, f"killed: exit code {node.exit_code}"
        assert not _answers(url, timeout_s=0.5)
        node.restart(timeout_ms=30000)
        assert node.alive() and _answers(url), "restarted on the same port"
        assert node.starts == 2 and "connformance: start #2" in node.logs()

        code = node.stop()
        assert code is not None and not node.alive()
        assert not _our_containers(runtime), "stop removes the container"
    finally:
        runtime.close()


def test_close_removes_every_container_of_the_run(docker_engine, tmp_path: Path) -> None:
    runtime = DockerRuntime()
    spec, readiness, _ = _ledger_spec(tmp_path)
    runtime.start(spec, readiness, timeout_ms=30000)
    run_id = runtime.run_id
    runtime.close()
    from harness.docker.engine import engine_client

    client = engine_client(docker_engine)
    try:
        assert not client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    finally:
        client.close()


def test_a_crashed_runs_containers_are_reaped_by_the_next_runtime(docker_engine, tmp_path: Path) -> None:
    from harness.docker.engine import engine_client
    from harness.docker.images import image_ref

    client = engine_client(docker_engine)
    dead_owner = "999999999:1"  # no such process: its run crashed
    try:
        leftover = client.containers.create(image_ref("python"), command=["/opt/venv/bin/python", "-c", "pass"],
                                            labels={LABEL_OWNER: dead_owner, LABEL_RUN: "crashed"},
                                            network_mode="host")
        alive_owner = client.containers.create(image_ref("python"), command=["/opt/venv/bin/python", "-c", "pass"],
                                               labels={LABEL_OWNER: owner_label(), LABEL_RUN: "still-running"},
                                               network_mode="host")
        runtime = DockerRuntime()
        try:
            assert leftover.name in runtime.reaped
            assert alive_owner.name not in runtime.reaped, "a live harness's containers are not touched"
        finally:
            runtime.close()
            alive_owner.remove(force=True)
    finally:
        client.close()


def test_a_missing_image_says_how_to_build_it(docker_engine, tmp_path: Path) -> None:
    from harness.runtime.base import LaunchSpec

    runtime = DockerRuntime()
    try:
        with pytest.raises(SetupError, match="connformance setup --docker"):
            runtime.start(LaunchSpec(name="nope", argv=["/bin/true"], image="connformance/python:000000000000"))
    finally:
        runtime.close()
