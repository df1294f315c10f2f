"""The model name of a request that reaches its handler as raw bytes (Predict, PredictStream, OIP ModelInfer),
read from the wire without parsing the message.

In all of them the model name is top-level field 1 (``PredictRequest.model_name``,
``PredictStreamRequest.model_name``, ``ModelInferRequest.model_name``). The walk skips each other top-level
field by its length, so a 60 MB tensor costs one varint, and — as protobuf keeps the last value of a repeated
scalar field — it reads them all and keeps the last field 1, so it sees what the servicer's parser will see.
"""

from __future__ import annotations

MODEL_FIELD = 1
#: top-level fields walked at most (a request with more is not plain: the walk gives up and says so)
MAX_FIELDS = 4096


class MalformedRequest(ValueError):
    """The bytes are not a protobuf message this walk can read."""


def wire_model_name(data: bytes) -> str:
    """Top-level field 1 as text ("" when absent); :class:`MalformedRequest` if the bytes are not protobuf."""
    end = len(data)
    found: bytes | None = None
    pos = 0
    fields = 0
    while pos < end:
        fields += 1
        if fields > MAX_FIELDS:
            raise MalformedRequest("too many top-level fields")
        key, pos = _varint(data, pos, end)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise MalformedRequest("a field runs past the end of the message")
            if key >> 3 == MODEL_FIELD:
                found = data[pos:stop]
            pos = stop
        elif wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise MalformedRequest(f"unsupported wire type {wire}")
        if key >> 3 == 0:
            raise MalformedRequest("field number 0")
    if pos > end:
        raise MalformedRequest("the message is cut short")
    if found is None:
        return ""
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the model name is not UTF-8") from None


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedRequest("a varint is cut short or too long")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
