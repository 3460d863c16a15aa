"""The Nacos 2.x gRPC wire, by hand: ``Payload{metadata{type=3, clientIp=8, headers=7}, body=Any{
type_url=1, value=2}}`` with the JSON body in ``Any.value`` (research/nacos-protocol.md §1.1-1.2).
Shared by the independent client and server; no generated code, no harness import."""

from __future__ import annotations

import json
from typing import Any

REQUEST_METHOD = "/Request/request"
BI_STREAM_METHOD = "/BiRequestStream/requestBiStream"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    out: list[tuple[int, bytes | int]] = []
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out.append((number, value))
        elif wire == 2:
            size, i = _read_varint(data, i)
            out.append((number, data[i:i + size]))
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def encode(type_name: str, body: dict[str, Any], client_ip: str = "") -> bytes:
    metadata = _field(3, type_name.encode())
    if client_ip:
        metadata += _field(8, client_ip.encode())
    any_body = _field(2, json.dumps(body).encode())
    return _field(2, metadata) + _field(3, any_body)


def decode(data: bytes) -> tuple[str, str, dict[str, Any] | None]:
    """(type, clientIp, JSON body) of a Payload; the body is None when it is not a JSON object."""
    type_name = client_ip = ""
    body: dict[str, Any] | None = {}
    for number, value in _fields(data):
        if number == 2 and isinstance(value, bytes):
            for n, v in _fields(value):
                if n == 3 and isinstance(v, bytes):
                    type_name = v.decode()
                elif n == 8 and isinstance(v, bytes):
                    client_ip = v.decode()
        elif number == 3 and isinstance(value, bytes):
            for n, v in _fields(value):
                if n == 2 and isinstance(v, bytes) and v:
                    try:
                        body = json.loads(v)
                    except ValueError:
                        body = None
                    if not isinstance(body, dict):
                        body = None
    return type_name, client_ip, body


def identity(data: bytes) -> bytes:
    return data
