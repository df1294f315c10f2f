"""The model name of a request that reaches its handler as raw bytes (Predict, PredictStream, OIP ModelInfer),
read from the wire without parsing the message.

In all of them the model name is top-level field 1 (``PredictRequest.model_name``,
``PredictStreamRequest.model_name``, ``ModelInferRequest.model_name``). The walk skips each other top-level
field by its length, so a 60 MB tensor costs one varint, and — as protobuf keeps the last value of a repeated
scalar field — it reads them all and keeps the last field 1, so it sees what the servicer's parser will see.
"""

from __future__ import annotations

from server.api.wire import LEN, Unusual, fields

MODEL_FIELD = 1
#: top-level fields walked at most (a request with more is not plain: the walk gives up and says so)
MAX_FIELDS = 4096


class MalformedRequest(ValueError):
    """The bytes are not a protobuf message this walk can read."""


def wire_model_name(data: bytes) -> str:
    """Top-level field 1 as text ("" when absent); :class:`MalformedRequest` if the bytes are not protobuf.

    The walk is server/api/wire.py's (the one that lifts raw payloads out of large requests)."""
    found: bytes | None = None
    try:
        for field, wire, _, value, end in fields(data, 0, len(data), [MAX_FIELDS]):
            if field == MODEL_FIELD and wire == LEN:
                found = data[value:end]
    except Unusual:
        raise MalformedRequest("the bytes are not a plain protobuf message (cut short, bad varint or field)") from None
    if found is None:
        return ""
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the model name is not UTF-8") from None
