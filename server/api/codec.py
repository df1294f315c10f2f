"""PredictRequest/PredictResponse ⇄ internal requests and numpy outputs.

Protobuf stops here. Inputs in raw_contents become zero-copy numpy views; outputs are written as raw
bytes unless the caller wrote typed tensors (a person with grpcurl) or asked for typed ones.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from inferd.tensors import TensorError, from_numpy, to_numpy
from inferd.v1 import inference_pb2, tensor_pb2
from server.core.errors import InvalidArgument
from server.core.types import InferRequest, ParamValue

AnyPredictRequest = inference_pb2.PredictRequest | inference_pb2.PredictStreamRequest

_RAW = tensor_pb2.TENSOR_ENCODING_RAW
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
            raise InvalidArgument(f"parameter '{key}' has no value")
        out[key] = getattr(param, which)
    return out


def encode_parameter(value: ParamValue) -> tensor_pb2.Parameter:
    if isinstance(value, bool):
        return tensor_pb2.Parameter(bool_param=value)
    if isinstance(value, int):
        return tensor_pb2.Parameter(int64_param=value)
    if isinstance(value, float):
        return tensor_pb2.Parameter(double_param=value)
    return tensor_pb2.Parameter(string_param=str(value))


def decode_request(new_id: Callable[[], str], message: AnyPredictRequest, time_remaining: float | None) -> InferRequest:
    """Turn a Predict(Stream)Request into an InferRequest; malformed tensors → INVALID_ARGUMENT."""
    if not message.model_name:
        raise InvalidArgument("model_name is empty")
    if message.model_version < 0:
        raise InvalidArgument(f"model_version {message.model_version} is negative")
    inputs: dict[str, np.ndarray] = {}
    typed = True
    for tensor in message.inputs:
        if tensor.name in inputs:
            raise InvalidArgument(f"input '{tensor.name}' is sent twice")
        if tensor.raw_contents:
            typed = False
        try:
            inputs[tensor.name] = to_numpy(tensor)
        except TensorError as exc:
            raise InvalidArgument(f"input {exc}") from None
    encoding = message.output_encoding
    typed_out = encoding == _TYPED or (encoding != _RAW and typed and bool(inputs))
    chunk_rows = message.chunk_rows if isinstance(message, inference_pb2.PredictStreamRequest) else 0
    if chunk_rows < 0:
        raise InvalidArgument(f"chunk_rows {chunk_rows} is negative")
    return InferRequest(
        model=message.model_name,
        inputs=inputs,
        id=message.id or new_id(),
        version=message.model_version or None,
        label=message.version_label or None,
        requested_outputs=tuple(message.requested_outputs),
        parameters=decode_parameters(message.parameters) if message.parameters else {},
        deadline=None if time_remaining is None else time.monotonic() + time_remaining,
        output_encoding="typed" if typed_out else "raw",
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
    return inference_pb2.PredictResponse(
        model_name=request.model,
        model_version=version,
        id=request.id,
        outputs=encode_outputs(
            outputs, request.requested_outputs, output_order, typed=request.output_encoding == "typed"
        ),
    )
