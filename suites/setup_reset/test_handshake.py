"""SR — the handshake: ServerCheck, the bi-stream ConnectionSetup, registration
(SPEC §5 SR-01..SR-03; research/nacos-protocol.md §2.1–§2.3).

Each case first proves the baseline (the client under test reaches RUNNING through its proxy),
then probes the server on the same path with a raw wire probe where the case needs steps no
well-behaved client takes.
"""

from __future__ import annotations

from fixtures.case import case
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.dispatch import is_ok_response
from harness.scenarios.nacos import wait_registered
from harness.scenarios.steps import running

# Real libraries connect within a few seconds (ServerCheck 3 s timeout + setup wait).


@case("SR-01", "MUST", subject="both", interop=True)
def test_server_check_mints_one_id_per_transport(cf, topology, nacos_server_peer, nacos_client_peer):
    """ServerCheck on a new transport → resultCode 200, success true, non-empty connectionId; two transports → two different ids."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    state = running(cf, client)

    answers = []
    with RawNacosConnection(server.host, server.proxied_grpc_port) as first, \
            RawNacosConnection(server.host, server.proxied_grpc_port) as second:
        for probe in (first, second):
            cf.history.invoke("probe", "ServerCheck", {"target": probe.target})
            msg = probe.server_check()
            cf.history.ok("probe", "ServerCheck", {"type": msg.type, "body": msg.body})
            answers.append(msg)

    for msg in answers:
        cf.check(msg.type == codec.SERVER_CHECK_RESPONSE and is_ok_response(msg)
                 and bool(msg.body.get("connectionId")),
                 expected="ServerCheckResponse with resultCode 200, success true, non-empty connectionId",
                 actual=f"{msg.type} {msg.body}")
    ids = [m.body["connectionId"] for m in answers]
    cf.check(ids[0] != ids[1], expected="two transports get two different connectionIds", actual=ids)

    client_id = state.get("connection_id")
    if client_id:  # the peer can tell its id: the server must know that transport by it
        snapshot = wait_registered(cf.history, server, connection_id=client_id, timeout_ms=3000)
        cf.check(client_id in snapshot, expected=f"{client.name}'s connectionId {client_id} in current",
                 actual=sorted(snapshot))
    cf.ok(f"ids {ids[0]} / {ids[1]}; {client.name} RUNNING as {client_id or '(id not reported)'}")


@case("SR-02", "MUST", subject="server")
def test_request_before_setup_is_unregistered(cf, topology, nacos_server_peer, nacos_client_peer):
    """A unary request before setup → ErrorResponse errorCode 301; after setup the same request succeeds."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    running(cf, client)

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        check = probe.server_check()
        probe_id = check.body.get("connectionId")
        cf.history.invoke("probe", "HealthCheck", {"phase": "before setup"})
        before = probe.health_check()
        cf.history.ok("probe", "HealthCheck", {"phase": "before setup", "type": before.type, "body": before.body})
        cf.check(before.type == codec.ERROR_RESPONSE and before.error_code == codec.UN_REGISTER,
                 expected="ErrorResponse with errorCode 301 before ConnectionSetup",
                 actual=f"{before.type} {before.body}")

        probe.setup()
        wait_registered(cf.history, server, connection_id=probe_id, timeout_ms=3000)
        cf.history.invoke("probe", "HealthCheck", {"phase": "after setup"})
        after = probe.health_check()
        cf.history.ok("probe", "HealthCheck", {"phase": "after setup", "type": after.type, "body": after.body})
        cf.check(is_ok_response(after), expected="the same request succeeds after setup (resultCode 200, success true)",
                 actual=f"{after.type} {after.body}")

    cf.history.invoke(client.name, "request")
    answer = client.control.request()
    cf.history.ok(client.name, "request", answer)
    cf.check(answer.get("ok") is True, expected=f"{client.name}'s request succeeds once RUNNING", actual=answer)
    cf.ok("301 before setup, 200 after; the client's request succeeded")


@case("SR-03", "MUST", subject="both", interop=True)
def test_setup_registers_reported_metadata(cf, topology, nacos_server_peer, nacos_client_peer):
    """Setup registers: `current` shows the id with clientIp = reported IP, version, labels, appName (default `-`), tenant."""
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    knobs = {}
    for knob, value in (("client_ip", "127.0.0.23"), ("app_name", "connformance-sr03"), ("tenant", "sr03-tenant")):
        if nacos_client_peer.supports(knob):
            knobs[knob] = value
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server], knobs=knobs)
    state = running(cf, client)
    meta = state.get("meta") or {}

    client_id = state.get("connection_id")
    snapshot = wait_registered(cf.history, server, timeout_ms=3000, connection_id=client_id,
                               count=None if client_id else 1)
    entry = snapshot[client_id] if client_id else next(iter(snapshot.values()))
    info = entry.get("metaInfo", {})
    cf.history.observe("registration", entry)
    if not info:
        cf.unimplemented(f"{nacos_server_peer.label} lists its registrations as ids only (no metaInfo): what a "
                         f"setup registered cannot be read (registered as {client_id or next(iter(snapshot))})")

    expected_ip = knobs.get("client_ip") or meta.get("client_ip")
    labels = meta.get("labels") or {}
    # appName: the AppName label the client says it sent (``meta``, optional in the contract: a
    # knob may not reach the wire, the Python naming client sends no AppName), else the app_name
    # the harness set, else Nacos's default "-".
    # Without ``meta.labels`` what the client sent is unknown: appName is then not judged (a knob
    # the library takes may not reach its setup; the Go naming client sends no AppName label).
    expected_app = (labels.get("AppName") or "-") if meta.get("labels") is not None else None
    expected_tenant = knobs.get("tenant") if "tenant" in knobs else meta.get("tenant")
    expected = {
        "clientIp": expected_ip,
        "version": meta.get("client_version"),
        "appName": expected_app,
        "tenant": expected_tenant or "",
        "labels ⊇": labels,
    }
    actual = {
        "clientIp": info.get("clientIp"),
        "version": info.get("version"),
        "appName": info.get("appName"),
        "tenant": info.get("tenant") or "",
        "labels ⊇": info.get("labels"),
    }
    problems = []
    if expected_ip is None:
        problems.append("the peer reports no client IP (agent meta.client_ip is null)")
    elif info.get("clientIp") != expected_ip:
        problems.append("clientIp")
    if meta.get("client_version") and info.get("version") != meta.get("client_version"):
        problems.append("version")
    if expected_app is not None and info.get("appName") != expected_app:
        problems.append("appName")
    if (info.get("tenant") or "") != (expected_tenant or ""):
        problems.append("tenant")
    registered_labels = info.get("labels") or entry.get("labels") or {}
    if any(registered_labels.get(k) != v for k, v in labels.items()):
        problems.append("labels")
    cf.check(not problems, expected=expected, actual={**actual, "mismatched": problems})
    cf.ok(f"registered {client_id or '(single entry)'} with {actual}", expected=expected, actual=actual)
