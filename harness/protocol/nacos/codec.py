"""JSON bodies of the connection-layer messages (research/nacos-protocol.md §1.2–§1.5).

A body is UTF-8 JSON in ``Payload.body.value`` with an empty ``type_url``; ``metadata.type``
is the Java simple class name. Responses carry ``success`` derived from ``resultCode == 200``
(Go clients judge health by it, SPEC SR-20); server pushes carry ``"headers": {}``,
``"module": "internal"`` and a decimal ``requestId``. Readers ignore unknown fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness import strict
from harness.protocol.nacos.wire import Metadata, Payload

# Error codes (api/exception/NacosException.java), carried by ErrorResponse.errorCode.
INVALID_SERVER_STATUS = 300  # "Server is starting,please try later."
UN_REGISTER = 301  # "Connection is unregistered."
NO_HANDLER = 302  # "RequestHandler Not Found"
SERVER_ERROR = 500
BAD_GATEWAY = 502  # parse error / "Invalid request"
OVER_THRESHOLD = 503

MESSAGES = {
    INVALID_SERVER_STATUS: "Server is starting,please try later.",
    UN_REGISTER: "Connection is unregistered.",
    NO_HANDLER: "RequestHandler Not Found",
    BAD_GATEWAY: "Invalid request",
}

LOADER_FACTOR = 0.1  # smartReloadCluster's default (RemoteUtils.LOADER_FACTOR)
INTERNAL_MODULE = "internal"

# ConnectionSetup labels: an application's SDK connection (counted by the connection limits) and a
# cluster member's (exempt from them).
SDK_LABELS = {"source": "sdk", "module": "naming"}
CLUSTER_LABELS = {"source": "cluster", "module": "naming"}

# Types the reference server and client know. Anything else on the unary path is NO_HANDLER.
SERVER_CHECK_REQUEST = "ServerCheckRequest"
SERVER_CHECK_RESPONSE = "ServerCheckResponse"
CONNECTION_SETUP_REQUEST = "ConnectionSetupRequest"
HEALTH_CHECK_REQUEST = "HealthCheckRequest"
HEALTH_CHECK_RESPONSE = "HealthCheckResponse"
CONNECT_RESET_REQUEST = "ConnectResetRequest"
CONNECT_RESET_RESPONSE = "ConnectResetResponse"
CLIENT_DETECTION_REQUEST = "ClientDetectionRequest"
CLIENT_DETECTION_RESPONSE = "ClientDetectionResponse"
ERROR_RESPONSE = "ErrorResponse"
SETUP_ACK_REQUEST = "SetupAckRequest"


class BadBody(ValueError):
    """The body is not a JSON object (the server answers 502)."""


@dataclass
class Message:
    """A decoded payload: its type, JSON body, and metadata."""

    type: str
    body: dict[str, Any]
    client_ip: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        rid = self.body.get("requestId")
        return str(rid) if rid not in (None, "") else None

    @property
    def is_response(self) -> bool:
        return self.type.endswith("Response")

    @property
    def result_code(self) -> int | None:
        return strict.ascii_int(self.body.get("resultCode"))

    @property
    def error_code(self) -> int:
        return strict.ascii_int(self.body.get("errorCode", 0)) or 0


def encode(type_name: str, body: dict[str, Any], *, client_ip: str = "", headers: dict[str, str] | None = None):
    """Build a Payload; the body is compact JSON (Jackson NON_NULL: drop None values)."""
    clean = {k: v for k, v in body.items() if v is not None}
    payload = Payload(metadata=Metadata(type=type_name, clientIp=client_ip, headers=headers or {}))
    payload.body.value = strict.dumps(clean, separators=(",", ":")).encode("utf-8")
    return payload


def decode(payload) -> Message:
    """Read a Payload. Raises BadBody when the body is not a JSON object."""
    raw = bytes(payload.body.value)
    try:
        body = strict.loads(raw) if raw else {}
    except strict.StrictError as exc:
        raise BadBody(f"body of {payload.metadata.type or '<no type>'} is not acceptable JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadBody(f"body of {payload.metadata.type or '<no type>'} is not a JSON object")
    return Message(
        type=payload.metadata.type,
        body=body,
        client_ip=payload.metadata.clientIp,
        headers=dict(payload.metadata.headers),
    )


# ---- responses -------------------------------------------------------------------------

def response_body(result_code: int = 200, error_code: int = 0, message: str | None = None,
                  request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resultCode": result_code, "errorCode": error_code}
    if message is not None:
        body["message"] = message
    if request_id is not None:
        body["requestId"] = request_id
    body.update(extra)
    body["success"] = result_code == 200  # derived, as Jackson serialises isSuccess()
    return body


def error_response(error_code: int, message: str | None = None) -> Any:
    """ErrorResponse.build(code, msg): resultCode 500, errorCode = code, success false."""
    return encode(ERROR_RESPONSE, response_body(500, error_code, message or MESSAGES.get(error_code, "")))


def server_check_response(connection_id: str) -> Any:
    return encode(SERVER_CHECK_RESPONSE, response_body(connectionId=connection_id))


def health_check_response() -> Any:
    return encode(HEALTH_CHECK_RESPONSE, response_body())


# ---- requests ----------------------------------------------------------------------------

def server_check_request(*, client_ip: str = "") -> Any:
    return encode(SERVER_CHECK_REQUEST, {"headers": {}, "module": INTERNAL_MODULE}, client_ip=client_ip)


def health_check_request(*, client_ip: str = "") -> Any:
    return encode(HEALTH_CHECK_REQUEST, {"headers": {}, "module": INTERNAL_MODULE}, client_ip=client_ip)


def connection_setup_request(*, client_version: str, labels: dict[str, str], tenant: str | None = None,
                             client_ip: str = "") -> Any:
    body = {"headers": {}, "module": INTERNAL_MODULE, "clientVersion": client_version,
            "labels": labels, "tenant": tenant}
    return encode(CONNECTION_SETUP_REQUEST, body, client_ip=client_ip)


def server_push(type_name: str, request_id: str, **fields: Any) -> Any:
    """A server->client request: headers {}, module internal, decimal requestId (SPEC SR-20)."""
    body = {"headers": {}, "requestId": request_id, "module": INTERNAL_MODULE, **fields}
    return encode(type_name, body)


def connect_reset_request(request_id: str, server_ip: str | None = None, server_port: str | None = None) -> Any:
    return server_push(CONNECT_RESET_REQUEST, request_id, serverIp=server_ip, serverPort=server_port)


def client_detection_request(request_id: str) -> Any:
    return server_push(CLIENT_DETECTION_REQUEST, request_id)


def push_response(type_name: str, request_id: str | None) -> Any:
    """A client's answer to a server push, requestId echoed."""
    return encode(type_name, response_body(request_id=request_id))
