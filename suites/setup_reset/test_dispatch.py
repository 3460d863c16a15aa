"""SR — unary dispatch and the server's message shapes: error codes for requests the server
cannot serve, and the JSON it pushes and answers with (SPEC §4.2, §5 SR-04, SR-20;
research/nacos-protocol.md §1.2–§1.5, §2.2, §2.3, §5.2).

Both cases prove the baseline first (the client under test RUNNING through its proxy), then
drive a raw wire probe over the same proxy for the steps no well-behaved client takes: a type
nobody handles, a body that is not JSON, an answer to a reset shaped like the Go client's.
"""

from __future__ import annotations

from fixtures.case import case
from harness.probe.nacos_raw import RawNacosConnection
from harness.protocol.nacos import codec
from harness.scenarios.dispatch import (
    MALFORMED_BODIES,
    UNKNOWN_TYPE,
    expect_error,
    expect_go_answer_counted,
    expect_still_usable,
    expect_success,
    probe_id_of,
    reset_answered_go_style,
)
from harness.scenarios.nacos import last_push_seq
from harness.scenarios.steps import probe_registered, request_ok, running

UNKNOWN_BODY = {"headers": {}, "module": "internal"}


@case("SR-04", "MUST", timeout_s=90, subject="server")
def test_unknown_type_and_bad_body_keep_connection_usable(cf, topology, nacos_server_peer, nacos_client_peer):
    """Unknown type → 302, malformed body → 502; the connection stays usable.

    Procedure: the client under test RUNNING (baseline); a raw probe on the same proxy sends an
    unknown type before setup (302: the handler lookup precedes the registration check,
    research §2.2), sets up, sends the unknown type again (302) and a HealthCheckRequest whose
    body is not a JSON object, twice (502 each). Then the probe's transport must be the same
    (ServerCheck gives the same connectionId), still registered, its HealthCheck must succeed and
    its bi-stream must still be open; the client under test stays RUNNING and its request succeeds.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    state = running(cf, client)

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        probe_id = probe_id_of(cf, probe)
        expect_error(cf, probe, f"{UNKNOWN_TYPE} before setup", lambda: probe.send_type(UNKNOWN_TYPE, UNKNOWN_BODY),
                     error_code=codec.NO_HANDLER,
                     expected="ErrorResponse with errorCode 302 for an unknown type before setup "
                              "(handler lookup precedes the registration check: 302, not 301)")
        probe_registered(cf, server, probe, probe_id)
        expect_error(cf, probe, f"{UNKNOWN_TYPE} after setup", lambda: probe.send_type(UNKNOWN_TYPE, UNKNOWN_BODY),
                     error_code=codec.NO_HANDLER,
                     expected="ErrorResponse with errorCode 302 for an unknown type on a registered connection")
        for label, raw in MALFORMED_BODIES.items():
            expect_error(cf, probe, f"HealthCheckRequest with {label}",
                         lambda raw=raw: probe.send_raw_body(codec.HEALTH_CHECK_REQUEST, raw),
                         error_code=codec.BAD_GATEWAY,
                         expected=f"ErrorResponse with errorCode 502 for a malformed body ({label})")
        expect_still_usable(cf, server, probe, probe_id)

    request_ok(cf, client, expected=f"{client.name}'s request succeeds afterwards")
    after = client.control.state()
    cf.check(after.get("status") == "RUNNING" and after.get("connection_id") == state.get("connection_id"),
             expected=f"{client.name} still RUNNING on {state.get('connection_id')}",
             actual={k: after.get(k) for k in ("status", "server", "connection_id")})
    cf.ok(f"302 before and after setup, 502 for {len(MALFORMED_BODIES)} malformed bodies; {probe_id} still "
          f"usable; {client.name}'s request succeeded")


@case("SR-20", "MUST", timeout_s=90, subject="server")
def test_push_shape_and_answer_judging(cf, topology, nacos_server_peer, nacos_client_peer):
    """The server pushes resets with `"headers": {}`, `module` internal and a decimal `requestId`, and judges a client's answer by `resultCode` alone (the Go client answers resets with resultCode 200 and `success: false`); its own responses always carry `"success": true` on success (Go clients reconnect every 5 s otherwise).

    Procedure: the client under test RUNNING (baseline); a raw probe checks that ServerCheck and
    HealthCheck answers carry `"success": true`, then `reloadClient` of the probe's id makes the
    server push a ConnectResetRequest whose JSON is checked; the probe answers it like the Go
    client (resultCode 200, `success: false`) and the server's `pushes` log (capability
    `events`) must count it answered with resultCode 200, not time it out. The client under
    test's request succeeds afterwards.
    """
    (server,) = topology.nacos_servers(1, peer=nacos_server_peer)
    client = topology.nacos_client(peer=nacos_client_peer, servers=[server])
    running(cf, client)
    push_seq = last_push_seq(server)

    with RawNacosConnection(server.host, server.proxied_grpc_port) as probe:
        check = expect_success(cf, probe, "ServerCheck", probe.server_check, response_type=codec.SERVER_CHECK_RESPONSE)
        probe_id = check.body.get("connectionId")
        probe_registered(cf, server, probe, probe_id)
        expect_success(cf, probe, "HealthCheck", probe.health_check, response_type=codec.HEALTH_CHECK_RESPONSE)
        seen = reset_answered_go_style(cf, server, probe, probe_id)
    expect_go_answer_counted(cf, server, push_seq, probe_id, seen)
    request_ok(cf, client, expected=f"{client.name}'s request succeeds (it judges the server's responses as successful)")
    cf.ok(f'ServerCheck/HealthCheck "success": true; reset push headers {{}}, module internal, requestId '
          f'{seen.request_id}; Go-style answer counted answered; {client.name}\'s request succeeded')
