"""Peer manifests: parsing, validation errors, rendering into a LaunchSpec, and the registry."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import HarnessError, Unimplemented
from harness.paths import PROJECT_ROOT
from harness.peers import (
    BUILTIN_DIR,
    PeerRegistry,
    UnsupportedCapability,
    UnsupportedKnob,
    UnsupportedRuntime,
    load_manifests,
    render,
)
from harness.runtime import HttpReady, LogLineReady, PortReady

pytestmark = pytest.mark.timeout(10)

MINIMAL = """
[peer]
name = "mine"
role = "nacos-client"
description = "a user's client"
capabilities = ["reset", "tenant"]

[process]
command = ["{python}", "{manifest_dir}/agent.py", "--servers", "{server_list}", "{knob_args}", "--verbose"]
env = { MODE = "test-{control_port}" }
cwd = "{manifest_dir}"

[readiness]
http = "http://127.0.0.1:{control_port}/state"
port = "{control_port}"
log = 'agent ready on \\d{{2,5}}|ready at \\d{2,5}'
timeout_ms = 7000

[knobs]
client_ip = { env = "NACOS_CLIENT_IP" }
app_name = { flag = "--app-name" }
keepalive = { flag = "--keepalive", format = "bool" }
limits = { flag = "--limits", format = "json" }
members = { flag = "--members", format = "csv" }
retries = { flag = "--retries", format = "int" }
"""

PLACEHOLDERS = {"server_list": "127.0.0.1:8848", "control_port": 23456}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNFORMANCE_CACHE", str(tmp_path / "cache"))


def write(tmp_path: Path, text: str, name: str = "peer.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_one(tmp_path: Path, text: str = MINIMAL, name: str = "peer.toml"):
    [manifest] = load_manifests(write(tmp_path, text, name))
    return manifest


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(HarnessError) as info:
        load_manifests(path)
    message = str(info.value)
    assert str(path) in message, "every manifest error names its file"
    return message


# --- parsing --------------------------------------------------------------------------------


def test_parses_the_peer_table_and_keeps_its_source(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    assert (manifest.name, manifest.role, manifest.label) == ("mine", "nacos-client", "nacos-client/mine")
    assert manifest.description == "a user's client"
    assert manifest.source == tmp_path / "peer.toml"
    assert manifest.runtimes == ("process",)
    assert manifest.readiness_timeout_ms == 7000
    assert manifest.has_capability("tenant")
    assert not manifest.has_capability("events")
    assert manifest.supports("client_ip")
    assert not manifest.supports("max_conns_per_host")


def test_defaults_when_optional_tables_are_absent(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path, '[peer]\nname = "x"\nrole = "http-client"\n[process]\ncommand = ["agent"]\n'
    )
    assert manifest.capabilities == frozenset()
    assert dict(manifest.knobs) == {}
    assert manifest.readiness_timeout_ms == 15000
    spec, readiness = render(manifest)
    assert spec.argv == ["agent"]
    assert readiness == []


def test_docker_table_is_parsed_and_rendered_with_its_image(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        MINIMAL + '\n[docker]\nimage = "me/agent:1"\ncommand = ["--servers", "{server_list}"]\n',
    )
    assert manifest.runtimes == ("process", "docker")
    spec, _ = render(manifest, "docker", placeholders=PLACEHOLDERS, knobs={"app_name": "a"})
    assert spec.image == "me/agent:1"
    assert spec.argv == ["--servers", "127.0.0.1:8848", "--app-name", "a"]
    assert spec.labels == {"connformance.peer": "mine", "connformance.role": "nacos-client"}


def test_docker_without_a_command_runs_the_process_command_with_the_images_paths(tmp_path: Path) -> None:
    manifest = load_one(tmp_path, MINIMAL + '\n[docker]\nimage = "python"\n')
    plan = tmp_path / "run" / "agent.plan.json"
    plan.parent.mkdir()
    plan.write_text("{}")
    spec, _ = render(manifest, "docker", placeholders={**PLACEHOLDERS, "plan": plan}, knobs={"app_name": "a"})
    assert spec.image == "python"
    assert spec.argv[0] == "/opt/venv/bin/python", "{python} is the image's interpreter, not the host's"
    assert spec.argv[2:] == ["--servers", "127.0.0.1:8848", "--app-name", "a", "--verbose"]
    assert spec.env == {"MODE": "test-23456"}, "env falls back to [process] env"
    assert spec.mounts == (plan.parent,), "a placeholder naming a host file mounts its directory"
    process_spec, _ = render(manifest, "process", placeholders={**PLACEHOLDERS, "plan": plan})
    assert process_spec.mounts == () and process_spec.argv[0] == sys.executable


def test_a_runtime_without_its_table_is_unimplemented(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    with pytest.raises(UnsupportedRuntime, match=r"no \[docker\] table") as info:
        render(manifest, "docker", placeholders=PLACEHOLDERS)
    assert isinstance(info.value, Unimplemented)
    with pytest.raises(HarnessError, match="unknown runtime 'podman'"):
        render(manifest, "podman", placeholders=PLACEHOLDERS)


# --- placeholders ---------------------------------------------------------------------------


def test_builtin_and_caller_placeholders_are_filled(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    spec, _ = render(manifest, placeholders=PLACEHOLDERS, name="client-0", log_path=tmp_path / "c.log")
    assert spec.name == "client-0"
    assert spec.log_path == tmp_path / "c.log"
    assert spec.argv == [sys.executable, f"{tmp_path}/agent.py", "--servers", "127.0.0.1:8848", "--verbose"]
    assert spec.cwd == tmp_path
    assert spec.env == {"MODE": "test-23456"}


def test_project_root_and_cache_placeholders(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["{project_root}", "{cache}"]\n',
    )
    spec, _ = render(manifest)
    assert spec.argv == [str(PROJECT_ROOT), str(tmp_path / "cache")]


def test_default_instance_name_is_role_and_peer(tmp_path: Path) -> None:
    spec, _ = render(load_one(tmp_path), placeholders=PLACEHOLDERS)
    assert spec.name == "nacos-client-mine"


def test_a_missing_placeholder_names_manifest_key_and_the_available_ones(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    with pytest.raises(HarnessError) as info:
        render(manifest, placeholders={"control_port": 1})
    message = str(info.value)
    assert str(manifest.source) in message
    assert "process.command[3]" in message
    assert "{server_list}" in message
    assert "available: cache, control_port, manifest_dir, project_root, python" in message


def test_readiness_probes_are_rendered_and_regex_braces_survive(tmp_path: Path) -> None:
    _, readiness = render(load_one(tmp_path), placeholders=PLACEHOLDERS)
    port, http, log = readiness
    assert isinstance(port, PortReady)
    assert (port.host, port.port) == ("127.0.0.1", 23456)
    assert isinstance(http, HttpReady)
    assert http.url == "http://127.0.0.1:23456/state"
    assert http.expect_status == 200
    assert isinstance(log, LogLineReady)
    # "{{2,5}}" and "{2,5}" are not identifiers, so they are regex text, not placeholders
    assert log.pattern == r"agent ready on \d{{2,5}}|ready at \d{2,5}"
    assert log.regex.search("ready at 8848")


def test_readiness_lists_host_port_and_http_status(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["srv"]\n'
        '[readiness]\nport = ["127.0.0.2:{p}", "{q}"]\nhttp = ["http://127.0.0.1:{p}/health"]\nhttp_status = 204\n',
    )
    _, readiness = render(manifest, placeholders={"p": 1000, "q": 1001})
    assert [(r.host, r.port) for r in readiness[:2]] == [("127.0.0.2", 1000), ("127.0.0.1", 1001)]
    assert readiness[2].expect_status == 204


def test_a_non_loopback_readiness_probe_is_refused_naming_the_key(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["srv"]\n[readiness]\nport = "10.0.0.1:80"\n',
    )
    with pytest.raises(HarnessError, match=r"readiness\.port\[0\].*outside 127\.0\.0\.0/8"):
        render(manifest)


# --- knobs ----------------------------------------------------------------------------------


def test_flag_knobs_expand_in_place_of_knob_args_and_env_knobs_go_to_env(tmp_path: Path) -> None:
    knobs = {
        "app_name": "shop",
        "client_ip": "127.0.0.9",
        "keepalive": False,
        "limits": {"127.0.0.1": 2, "127.0.0.2": 1},
        "members": ["127.0.0.1:1", "127.0.0.1:2"],
        "retries": 3,
    }
    spec, _ = render(load_one(tmp_path), placeholders=PLACEHOLDERS, knobs=knobs)
    flag_args = spec.argv[4:-1]
    assert spec.argv[-1] == "--verbose", "flags replace {knob_args}, the rest of argv stays after them"
    assert flag_args == [
        "--app-name", "shop",
        "--keepalive", "false",
        "--limits", '{"127.0.0.1":2,"127.0.0.2":1}',
        "--members", "127.0.0.1:1,127.0.0.1:2",
        "--retries", "3",
    ]  # fmt: skip
    assert spec.env == {"MODE": "test-23456", "NACOS_CLIENT_IP": "127.0.0.9"}


def test_flag_knobs_are_appended_when_there_is_no_knob_args(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["srv", "--port", "{port}"]\n'
        '[knobs]\nmax_connections = { flag = "--max-connections" }\nrst_on_idle = { flag = "--rst" }\n',
    )
    spec, _ = render(manifest, placeholders={"port": 80}, knobs={"max_connections": 4, "rst_on_idle": True})
    assert spec.argv == ["srv", "--port", "80", "--max-connections", "4", "--rst", "true"]


def test_knobs_set_to_none_are_left_out_and_need_no_support(tmp_path: Path) -> None:
    spec, _ = render(
        load_one(tmp_path), placeholders=PLACEHOLDERS, knobs={"app_name": None, "undeclared": None}
    )
    assert "--app-name" not in spec.argv


def test_sysprop_knobs_become_jvm_props(tmp_path: Path) -> None:
    manifest = load_one(
        tmp_path,
        """
        [peer]
        name = "java"
        role = "nacos-client"
        [process]
        command = ["java", "{jvm_props}", "-jar", "{cache}/agent.jar", "{knob_args}"]
        [knobs]
        health_interval_ms = { sysprop = "nacos.remote.client.grpc.connect.keep.alive" }
        app_name = { flag = "--app-name" }
        """,
    )
    spec, _ = render(manifest, knobs={"health_interval_ms": 500, "app_name": "a"})
    cache = str(tmp_path / "cache")
    assert spec.argv == [
        "java", "-Dnacos.remote.client.grpc.connect.keep.alive=500", "-jar", f"{cache}/agent.jar", "--app-name", "a",
    ]  # fmt: skip
    spec, _ = render(manifest)
    assert spec.argv == ["java", "-jar", f"{cache}/agent.jar"]


def test_sysprop_knobs_without_jvm_props_element_are_rejected_at_load(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        '[peer]\nname = "j"\nrole = "nacos-client"\n[process]\ncommand = ["java", "-jar", "a.jar"]\n'
        '[knobs]\nhealth_interval_ms = { sysprop = "a.b" }\n',
    )
    assert "process.command" in message
    assert "{jvm_props}" in message


def test_special_elements_must_stand_alone(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        '[peer]\nname = "j"\nrole = "nacos-client"\n[process]\ncommand = ["agent", "--x={knob_args}"]\n',
    )
    assert "process.command" in message
    assert "whole argv element" in message


def test_undeclared_knob_is_unimplemented_naming_the_missing_ones(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    with pytest.raises(UnsupportedKnob) as info:
        render(
            manifest,
            placeholders=PLACEHOLDERS,
            knobs={"app_name": "a", "health_interval_ms": 5, "tenant": "t"},
        )
    error = info.value
    assert isinstance(error, Unimplemented)
    assert error.peer == "nacos-client/mine"
    assert error.missing == ["health_interval_ms", "tenant"]
    assert "app_name" in error.declared
    assert str(manifest.source) in str(error)


def test_require_capabilities_is_unimplemented_when_missing(tmp_path: Path) -> None:
    manifest = load_one(tmp_path)
    manifest.require_capabilities(["reset"])
    with pytest.raises(UnsupportedCapability, match="events"):
        manifest.require_capabilities(["reset", "events"])


@pytest.mark.parametrize(
    ("knob", "value"),
    [("retries", "3"), ("retries", True), ("keepalive", "yes")],
)
def test_a_value_of_the_wrong_type_for_its_format_is_a_harness_error(
    tmp_path: Path, knob: str, value: object
) -> None:
    with pytest.raises(HarnessError, match=f"knob {knob}: format"):
        render(load_one(tmp_path), placeholders=PLACEHOLDERS, knobs={knob: value})


# --- validation errors name the file and the key ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[peer]\nname = "x"\nrole = "dns-server"\n[process]\ncommand = ["a"]\n',
            r"peer\.role: unknown role 'dns-server'.*nacos-server",
        ),
        ('[peer]\nrole = "http-server"\n[process]\ncommand = ["a"]\n', r"peer\.name: missing"),
        (
            '[peer]\nname = "x y"\nrole = "http-server"\n[process]\ncommand = ["a"]\n',
            r"peer\.name: 'x y' is not a valid peer name",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n',
            r"process: missing: no \[process\] or \[docker\] table",
        ),
        ('[peer]\nname = "x"\nrole = "http-server"\n[process]\nenv = {}\n', r"process\.command: missing"),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = []\n',
            r"process\.command: is empty",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = "srv --port 1"\n',
            r"process\.command: expected a list of strings",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\nenv = { N = 1 }\n',
            r"process\.env\.N: expected a string.*quote it",
        ),
        ('[peer]\nname = "x"\nrole = "http-server"\n[docker]\ncommand = ["a"]\n', r"docker\.image: missing"),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nk = { flag = "--k", env = "K" }\n',
            r"knobs\.k: expected exactly one of flag, env, sysprop",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nk = { flag = "k" }\n',
            r"knobs\.k\.flag: a flag starts with '-'",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nk = { env = "A-B" }\n',
            r"knobs\.k\.env: 'A-B' is not an environment variable name",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nk = { flag = "--k", format = "yaml" }\n',
            r"knobs\.k\.format: unknown format 'yaml'.*int, str, bool, json, csv",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nk = "--k"\n',
            r"knobs\.k: expected a table",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[knobs]\nMaxConns = { flag = "--k" }\n',
            r"knobs\.MaxConns: knob names are lower_snake_case",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[readiness]\ntimeout_ms = 0\n',
            r"readiness\.timeout_ms: expected a positive integer",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\n[readines]\nport = "1"\n',
            r"readines: unknown key.*known keys here",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncomand = ["a"]\n',
            r"process\.command: missing",
        ),
        (
            '[peer]\nname = "x"\nrole = "http-server"\n[process]\ncommand = ["a"]\ncomand = ["b"]\n',
            r"process\.comand: unknown key",
        ),
        ('[peer\nname = "x"\n', r"not valid TOML"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text)
    assert re.search(expected, message), message


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist; check the --peers-file path"):
        load_manifests(tmp_path / "nope.toml")


# --- several peers in one file ----------------------------------------------------------------

MULTI = """
[[peers]]
[peers.peer]
name = "one"
role = "http-client"
[peers.process]
command = ["{manifest_dir}/one", "--url", "{url}", "--plan", "{plan}"]
[peers.knobs]
max_conns_per_host = { flag = "--max-conns" }

[[peers]]
peer = { name = "two", role = "http-client", capabilities = ["reused"] }
process = { command = ["two", "{url}"] }
"""


def test_peers_array_of_tables_holds_several_peers(tmp_path: Path) -> None:
    one, two = load_manifests(write(tmp_path, MULTI))
    assert (one.name, two.name) == ("one", "two")
    assert two.has_capability("reused")
    spec, _ = render(
        one, placeholders={"url": "http://127.0.0.1:1/", "plan": "p.json"}, knobs={"max_conns_per_host": 3}
    )
    assert spec.argv == [
        f"{tmp_path}/one",
        "--url",
        "http://127.0.0.1:1/",
        "--plan",
        "p.json",
        "--max-conns",
        "3",
    ]


def test_errors_in_the_peers_array_name_the_entry(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, MULTI.replace('role = "http-client", capabilities', 'role = "pop3", capabilities')
    )
    assert "peers#2.peer.role: unknown role 'pop3'" in message


def test_peer_and_peers_together_are_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, MULTI + '\n[peer]\nname = "x"\nrole = "http-client"\n')
    assert "both [peer] and [[peers]]" in message


# --- the registry --------------------------------------------------------------------------------


def test_every_builtin_manifest_loads_and_renders(tmp_path: Path) -> None:
    files = sorted(BUILTIN_DIR.glob("*.toml"))
    assert {f.name for f in files} >= {
        "nacos-server-ref.toml",
        "nacos-client-ref.toml",
        "nacos-client-nacos-sdk-python.toml",
    }
    registry = PeerRegistry()
    loaded = registry.load_builtin()
    assert len(loaded) >= len(files)
    placeholders = {
        "main_port": 8848,
        "host": "127.0.0.11",
        "grpc_port": 9848,
        "scratch": "/tmp/scratch",
        "aux_port": 8849,
        "address": "127.0.0.11:8848",
        "server_list": "127.0.0.1:8848",
        "control_port": 1,
        "url": "u",
        "plan": "p",
        "port": 8080,
    }
    for manifest in loaded:
        spec, readiness = render(manifest, placeholders=placeholders)
        assert spec.argv, manifest.label
        # http-client agents are one-shot programs: no readiness, the harness waits for exit.
        assert readiness or manifest.role == "http-client", manifest.label
        assert registry.is_builtin(manifest.role, manifest.name)


def test_builtin_reference_server_maps_its_knobs(tmp_path: Path) -> None:
    server = PeerRegistry.default().get("nacos-server", "ref")
    assert server.capabilities >= {"events", "limits", "eject", "loader", "startup_delay", "cluster"}
    spec, [ready] = render(
        server,
        placeholders={"main_port": 8848, "grpc_port": 9848, "host": "127.0.0.11"},
        knobs={
            "count_limit_per_client_ip": {"127.0.0.1": 1},
            "monitor_ip_list": ["127.0.0.1"],
            "startup_delay_ms": 200,
        },
    )
    assert spec.argv[1:] == [
        "-m", "harness.reference.nacos.server", "--host", "127.0.0.11", "--main-port", "8848", "--grpc-port", "9848",
        "--count-limit-per-client-ip", '{"127.0.0.1":1}', "--monitor-ip-list", "127.0.0.1", "--startup-delay-ms", "200",
    ]  # fmt: skip
    assert isinstance(ready, HttpReady)
    assert ready.url == "http://127.0.0.11:8848/nacos/v2/core/loader/current"


def test_builtin_sdk_client_lacks_client_ip(tmp_path: Path) -> None:
    sdk = PeerRegistry.default().get("nacos-client", "nacos-sdk-python")
    with pytest.raises(UnsupportedKnob, match="client_ip"):
        render(sdk, placeholders={"server_list": "s", "control_port": 1}, knobs={"client_ip": "127.0.0.2"})


def test_a_user_peer_replaces_the_builtin_of_the_same_role_and_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('name = "mine"', 'name = "ref"'), "my-ref.toml")
    registry = PeerRegistry.default([path])
    assert registry.get("nacos-client", "ref").source == path
    assert not registry.is_builtin("nacos-client", "ref")
    assert registry.is_builtin("nacos-server", "ref")
    described = registry.describe()
    assert f"{path} (replaces the built-in ref)" in described
    assert "nacos-client/ref: a user's client" in described


def test_by_role_and_describe_list_user_peers(tmp_path: Path) -> None:
    registry = PeerRegistry.default([write(tmp_path, MINIMAL)])
    names = [m.name for m in registry.by_role("nacos-client")]
    # built-ins may grow; the user's peer is listed among them, in name order
    assert "mine" in names and {"nacos-sdk-python", "ref"} <= set(names) and names == sorted(names)
    described = registry.describe()
    assert "nacos-client  mine" in described
    assert re.search(r"^    client_ip +env NACOS_CLIENT_IP$", described, re.MULTILINE), described


def test_the_same_peer_in_two_user_files_is_an_error(tmp_path: Path) -> None:
    registry = PeerRegistry()
    registry.add_file(write(tmp_path, MINIMAL, "a.toml"))
    registry.add_file(tmp_path / "a.toml")  # the same file again is harmless
    with pytest.raises(HarnessError, match="defined in both .*a.toml and .*b.toml"):
        registry.add_file(write(tmp_path, MINIMAL, "b.toml"))


def test_get_unknown_peer_or_role_lists_what_is_known(tmp_path: Path) -> None:
    registry = PeerRegistry.default()
    with pytest.raises(
        HarnessError,
        match=r"no nacos-client peer named 'nope'; known nacos-client peers: (\S+, )*nacos-sdk-python, ref",
    ):
        registry.get("nacos-client", "nope")
    with pytest.raises(HarnessError, match="unknown role 'nacos'; roles are nacos-server, nacos-client"):
        registry.by_role("nacos")


def test_lacks_gives_the_reason_in_the_unimplemented_verdict(tmp_path: Path) -> None:
    path = tmp_path / "real.toml"
    path.write_text(textwrap.dedent('''
        [peer]
        name = "real"
        role = "nacos-server"
        capabilities = ["loader"]
        [process]
        command = ["server"]
        [lacks]
        limits = "its default control manager never limits"
        count_limit = "no limits at all"
    '''))
    (peer,) = load_manifests(path)
    with pytest.raises(Unimplemented, match="lacks capability limits: its default control manager never limits; cluster"):
        peer.require_capabilities(["limits", "cluster"])
    with pytest.raises(Unimplemented, match="has no knob count_limit: no limits at all"):
        peer.require_knobs(["count_limit"])
    with pytest.raises(Unimplemented, match=r"lacks capability\(ies\) cluster; it has: loader"):
        peer.require_capabilities(["cluster"])


def test_lacks_entries_are_strings(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[peer]\nname = "bad"\nrole = "nacos-server"\n[process]\ncommand = ["x"]\n[lacks]\nlimits = 1\n')
    with pytest.raises(HarnessError, match="lacks.limits"):
        load_manifests(path)


def test_a_peer_says_its_version_and_peers_lists_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('name = "mine"', 'name = "mine"\nversion = "1.2.3"'))
    registry = PeerRegistry.default([path])
    assert registry.get("nacos-client", "mine").version == "1.2.3"
    row = next(line for line in registry.describe().splitlines() if line.split()[1:2] == ["mine"])
    assert row.split()[2] == "1.2.3"
    builtin = registry.get("http-client", "okhttp")
    assert builtin.version == "5.5.1", "a built-in real implementation names the version it pins"


def test_a_version_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="version"):
        load_one(tmp_path, MINIMAL.replace('name = "mine"', 'name = "mine"\nversion = 3'))
