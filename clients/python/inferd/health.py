"""The two grpc.health.v1 messages, encoded by hand.

The SDK needs only ``Health/Check`` and must not depend on grpcio-health-checking, so this module
writes and reads the protobuf wire format of ``HealthCheckRequest {string service = 1}`` and
``HealthCheckResponse {ServingStatus status = 1}`` directly (varints and one length-delimited field).
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CHECK_METHOD",
    "STATUS_NAMES",
    "HealthStatus",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

CHECK_METHOD = "/grpc.health.v1.Health/Check"

HealthStatus = Literal["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]

#: HealthCheckResponse.ServingStatus by number.
STATUS_NAMES: dict[int, HealthStatus] = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_STATUS_NUMBERS: dict[str, int] = {name: number for number, name in STATUS_NAMES.items()}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint in health message")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for every field; unknown ones are read past, as protobuf does."""
    fields: list[tuple[int, int, int | bytes]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, offset = _read_varint(data, offset)
        elif wire == _LEN:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise ValueError("truncated field in health message")
            value, offset = data[offset : offset + length], offset + length
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if offset + size > len(data):
                raise ValueError("truncated field in health message")
            value, offset = int.from_bytes(data[offset : offset + size], "little"), offset + size
        else:
            raise ValueError(f"unsupported wire type {wire} in health message")
        fields.append((number, wire, value))
    return fields


def encode_request(service: str) -> bytes:
    """HealthCheckRequest bytes; "" (the whole server) encodes as the empty message."""
    if not service:
        return b""
    name = service.encode()
    return b"\x0a" + _varint(len(name)) + name


def decode_request(data: bytes) -> str:
    service = ""
    for number, wire, value in _fields(data):
        if number == 1 and wire == _LEN and isinstance(value, bytes):
            service = value.decode()
    return service


def encode_response(status: str) -> bytes:
    number = _STATUS_NUMBERS[status]
    return b"\x08" + _varint(number) if number else b""


def decode_response(data: bytes) -> HealthStatus:
    """The status name; numbers this client does not know read as "UNKNOWN"."""
    number = 0
    for field, wire, value in _fields(data):
        if field == 1 and wire == _VARINT and isinstance(value, int):
            number = value
    return STATUS_NAMES.get(number, "UNKNOWN")
