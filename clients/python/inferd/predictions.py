"""Prediction results and the request/response conversions that Client and AsyncClient share.

Requests are built straight into the protobuf message (tensors filled in place, never appended) and
responses decode raw outputs as zero-copy, read-only numpy views.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from inferd.tensors import fill_tensor, to_numpy
from inferd.v1 import inference_pb2, tensor_pb2

__all__ = ["ParameterValue", "Prediction", "StreamChunk"]

ParameterValue: TypeAlias = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Prediction:
    """A unary answer: the outputs plus which model version actually served them."""

    model: str
    version: int
    outputs: dict[str, np.ndarray]
    id: str
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One message of a PredictStream: a chunk of rows, or the next tokens; ``final`` marks the last."""

    sequence_index: int
    final: bool
    outputs: dict[str, np.ndarray]
    version: int
    model: str
    id: str = ""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


_RAW = tensor_pb2.TENSOR_ENCODING_RAW


def build_predict_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    request_id: str | None,
    parameters: Mapping[str, ParameterValue] | None,
    routing_key: str | None,
) -> inference_pb2.PredictRequest:
    # RAW explicitly: "mirror the request" would pick typed outputs for a request with no inputs.
    request = inference_pb2.PredictRequest(model_name=model, output_encoding=_RAW)
    _fill_common(request, inputs, version, label, outputs, request_id, parameters, routing_key)
    return request


def build_stream_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    request_id: str | None,
    parameters: Mapping[str, ParameterValue] | None,
    routing_key: str | None,
    chunk_rows: int | None,
) -> inference_pb2.PredictStreamRequest:
    request = inference_pb2.PredictStreamRequest(model_name=model, output_encoding=_RAW)
    _fill_common(request, inputs, version, label, outputs, request_id, parameters, routing_key)
    if chunk_rows:
        request.chunk_rows = chunk_rows
    return request


def _fill_common(
    request: inference_pb2.PredictRequest | inference_pb2.PredictStreamRequest,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    request_id: str | None,
    parameters: Mapping[str, ParameterValue] | None,
    routing_key: str | None,
) -> None:
    if version:
        request.model_version = version
    if label:
        request.version_label = label
    if outputs:
        request.requested_outputs.extend(outputs)
    if request_id:
        request.id = request_id
    if routing_key:
        request.routing_key = routing_key
    if parameters:
        set_parameters(request.parameters, parameters)
    add = request.inputs.add
    for name, value in inputs.items():
        fill_tensor(add(), name, value)


def set_parameters(target: Any, parameters: Mapping[str, ParameterValue]) -> None:
    """Fill a ``map<string, Parameter>``; bool is tested before int because bool is an int."""
    for key, value in parameters.items():
        param = target[key]
        if isinstance(value, (bool, np.bool_)):
            param.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            param.int64_param = int(value)
        elif isinstance(value, (float, np.floating)):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        else:
            raise TypeError(f"parameter '{key}' must be bool, int, float or str, not {type(value).__name__}")


def get_parameters(source: Any) -> dict[str, ParameterValue]:
    result: dict[str, ParameterValue] = {}
    for key, param in source.items():
        kind = param.WhichOneof("value")
        if kind is not None:
            result[key] = getattr(param, kind)
    return result


def prompt_inputs(prompt: str | bytes, input_name: str) -> dict[str, np.ndarray]:
    """A generative model's input: one prompt as a BYTES tensor of shape [1] (UTF-8 for str)."""
    array = np.empty(1, dtype=object)
    array[0] = prompt.encode("utf-8") if isinstance(prompt, str) else bytes(prompt)
    return {input_name: array}


def generation_parameters(parameters: Mapping[str, Any]) -> dict[str, ParameterValue]:
    """Generation keyword arguments as request parameters: None dropped, ``stop`` may be a list of strings
    (sent as ``stop``, ``stop.1``, ``stop.2``, … because a Parameter holds one value).
    """
    out: dict[str, ParameterValue] = {}
    for key, value in parameters.items():
        if value is None:
            continue
        if key == "stop" and not isinstance(value, str):
            for i, stop in enumerate(value):
                out["stop" if i == 0 else f"stop.{i}"] = stop
            continue
        out[key] = value
    return out


def _text_of(chunk: StreamChunk) -> bytes:
    text = chunk.outputs.get("text")
    return b"" if text is None else b"".join(bytes(t) for t in text.reshape(-1))


def texts(chunks: Iterator[StreamChunk]) -> Iterator[str]:
    """The ``text`` output of each chunk as str pieces (an incremental UTF-8 decoder joins split characters)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        for chunk in chunks:
            piece = decoder.decode(_text_of(chunk))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # cancels the call when the caller stops early


async def atexts(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[str]:
    """The asyncio twin of :func:`texts`."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        async for chunk in chunks:
            piece = decoder.decode(_text_of(chunk))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def decode_outputs(tensors: Sequence[tensor_pb2.Tensor]) -> dict[str, np.ndarray]:
    return {tensor.name: to_numpy(tensor) for tensor in tensors}


def to_prediction(response: inference_pb2.PredictResponse) -> Prediction:
    return Prediction(
        model=response.model_name,
        version=response.model_version,
        outputs=decode_outputs(response.outputs),
        id=response.id,
        parameters=get_parameters(response.parameters) if response.parameters else {},
    )


def to_chunk(response: inference_pb2.PredictStreamResponse) -> StreamChunk:
    return StreamChunk(
        sequence_index=response.sequence_index,
        final=response.final,
        outputs=decode_outputs(response.outputs),
        version=response.model_version,
        model=response.model_name,
        id=response.id,
        parameters=get_parameters(response.parameters) if response.parameters else {},
    )
