"""PredictRequest/PredictResponse ⇄ internal requests and numpy outputs.

Protobuf stops here. A request is read in two steps: its routing and options first, its input tensors
only once the model is known and what they declare fits its signature (server/api/inputs.py). Inputs
in raw_contents become zero-copy numpy views (of the request itself when it is large: wire.py);
outputs are written as raw bytes unless the caller wrote typed tensors (a person with grpcurl) or
asked for typed ones.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from inferd.tensors import fill_tensor, from_numpy
from inferd.v1 import inference_pb2, tensor_pb2
from server.api.wire import MIN_BYTES, split_payloads
from server.core.echo import echo
from server.core.errors import InvalidArgument
from server.core.types import InferRequest, ParamValue

AnyPredictRequest = inference_pb2.PredictRequest | inference_pb2.PredictStreamRequest
_Req = TypeVar("_Req", inference_pb2.PredictRequest, inference_pb2.PredictStreamRequest)
_P = TypeVar("_P")

_TYPED = tensor_pb2.TENSOR_ENCODING_TYPED


class RequestIds:
    """Ids for requests that carry none: a random per-server prefix and a counter (cheaper than uuid4)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


def decode_parameters(params: Mapping[str, tensor_pb2.Parameter]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, param in params.items():
        which = param.WhichOneof("value")
        if which is None:
            raise InvalidArgument(f"parameter {echo(key)} has no value")
        out[key] = getattr(param, which)
    return out


def encode_parameter(value: ParamValue) -> tensor_pb2.Parameter:
    return fill_parameter(tensor_pb2.Parameter(), value)


def fill_parameter(param: _P, value: ParamValue) -> _P:
    """Set ``value`` in the matching field of a parameter message: inferd.v1's Parameter and OIP's
    InferParameter name their fields alike (bool_param, int64_param, double_param, string_param)."""
    if isinstance(value, bool):
        param.bool_param = value  # type: ignore[attr-defined]
    elif isinstance(value, int):
        param.int64_param = value  # type: ignore[attr-defined]
    elif isinstance(value, float):
        param.double_param = value  # type: ignore[attr-defined]
    else:
        param.string_param = str(value)  # type: ignore[attr-defined]
    return param


def parse_request(cls: type[_Req], data: bytes) -> tuple[_Req, list[memoryview] | None]:
    """The message, and for a large request each input's raw_contents as a zero-copy view of ``data``
    (server/api/wire.py: the message then holds none); None when the message holds them."""
    payloads: list[memoryview] | None = None
    if len(data) >= MIN_BYTES:
        split = split_payloads(data)
        if split is not None:
            data, payloads = split
    try:
        return cls.FromString(data), payloads
    except DecodeError:
        raise InvalidArgument(f"the request is not a valid {cls.DESCRIPTOR.full_name}") from None


def decode_request(new_id: Callable[[], str], message: AnyPredictRequest, time_remaining: float | None) -> InferRequest:
    """The request's routing and options. Its input tensors are decoded later, by
    server/api/inputs.py, once the model's signature is known (so a tensor the model cannot take is
    never decoded); that also settles an unspecified output encoding."""
    if not message.model_name:
        raise InvalidArgument("model_name is empty")
    if message.model_version < 0:
        raise InvalidArgument(f"model_version {message.model_version} is negative")
    chunk_rows = message.chunk_rows if isinstance(message, inference_pb2.PredictStreamRequest) else 0
    if chunk_rows < 0:
        raise InvalidArgument(f"chunk_rows {chunk_rows} is negative")
    return InferRequest(
        model=message.model_name,
        inputs={},
        id=message.id or new_id(),
        version=message.model_version or None,
        label=message.version_label or None,
        requested_outputs=tuple(message.requested_outputs),
        parameters=decode_parameters(message.parameters) if message.parameters else {},
        deadline=None if time_remaining is None else time.monotonic() + time_remaining,
        output_encoding="typed" if message.output_encoding == _TYPED else "raw",
        routing_key=message.routing_key,
        chunk_rows=chunk_rows,
    )


def encode_outputs(
    outputs: Mapping[str, np.ndarray], requested: Sequence[str], output_order: Sequence[str], *, typed: bool
) -> list[tensor_pb2.Tensor]:
    names = requested or output_order
    return [from_numpy(name, outputs[name], raw=not typed) for name in names]


def encode_response(
    request: InferRequest, version: int, outputs: Mapping[str, np.ndarray], output_order: Sequence[str]
) -> inference_pb2.PredictResponse:
    response = inference_pb2.PredictResponse(model_name=request.model, model_version=version, id=request.id)
    raw = request.output_encoding != "typed"
    add = response.outputs.add  # filled in place: appending a finished Tensor would copy it
    for name in request.requested_outputs or output_order:
        fill_tensor(add(), name, outputs[name], raw=raw)
    return response
