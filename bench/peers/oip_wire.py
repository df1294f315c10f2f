"""The one OIP v2 request every target gets, and the checks around a measurement.

The request is encoded once (raw_input_contents, little-endian) and h2load sends the same bytes to every
server. Before measuring, each target answers one ModelInfer through grpc, compared with onnxruntime in
the project's venv within 1e-5, so a server that answers errors can never look fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from inferd.oip.v2 import grpc_service_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
INFER_PATH = SERVICE + "ModelInfer"
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
TYPED_FIELDS = {"FP32": ("fp32_contents", "<f4"), "INT64": ("int64_contents", "<i8"), "FP64": ("fp64_contents", "<f8")}
TOLERANCE = 1e-5


def infer_request(model_name: str, input_name: str, x: np.ndarray) -> pb.ModelInferRequest:
    """A ModelInferRequest carrying ``x`` as raw little-endian bytes (what h2load replays)."""
    x = np.ascontiguousarray(x)
    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name=input_name, datatype=DATATYPES[x.dtype], shape=list(x.shape))
    request.raw_input_contents.append(x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes())
    return request


def output_array(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    """One output as numpy, whether the server answered raw bytes (raw_output_contents) or typed contents."""
    for index, output in enumerate(response.outputs):
        if output.name != name:
            continue
        field, dtype = TYPED_FIELDS[output.datatype]
        if response.raw_output_contents:
            data = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
        else:
            data = np.asarray(getattr(output.contents, field), dtype=dtype)
        return data.reshape(tuple(output.shape))
    raise ValueError(f"no output {name!r} in the response (outputs: {[o.name for o in response.outputs]})")


def _call(channel: grpc.Channel, method: str, request: Any, reply: Any, timeout: float) -> Any:
    """A unary OIP call without the generated service stubs (message classes are enough)."""
    stub = channel.unary_unary(
        SERVICE + method, request_serializer=type(request).SerializeToString, response_deserializer=reply.FromString
    )
    return stub(request, timeout=timeout)


class WrongAnswer(RuntimeError):
    """A target answered, but not what onnxruntime computes: it must not be measured."""


def check(address: str, request: pb.ModelInferRequest, output: str, expected: np.ndarray) -> None:
    """One ModelInfer through grpc; raise unless it succeeds and matches ``expected`` within 1e-5."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = _call(channel, "ModelInfer", request, pb.ModelInferResponse, 30)
        except grpc.RpcError as error:
            raise WrongAnswer(f"{address} {request.model_name}: {error.code().name} {error.details()}") from None
    got = output_array(response, output)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=TOLERANCE):
        raise WrongAnswer(f"{address} {request.model_name}: output {output} differs from onnxruntime's")


def wait_ready(address: str, models: list[str], timeout: float, alive: Callable[[], bool] | None = None) -> None:
    """Poll OIP ModelReady for every model until all are ready (a peer may take many seconds to load)."""
    end = time.monotonic() + timeout
    pending = list(models)
    with grpc.insecure_channel(address) as channel:
        while pending and time.monotonic() < end:
            if alive is not None and not alive():
                raise RuntimeError(f"server at {address} exited while loading")
            try:
                if _call(channel, "ModelReady", pb.ModelReadyRequest(name=pending[0]), pb.ModelReadyResponse, 2).ready:
                    pending.pop(0)
                    continue
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    if pending:
        raise RuntimeError(f"server at {address}: models {pending} not ready after {timeout:g} s")


@dataclass(frozen=True, slots=True)
class Counters:
    """A model's OIP ModelStatistics: rows served, engine executions, failed requests."""

    inference_count: int
    execution_count: int
    failures: int


def counters(address: str, model_name: str) -> Counters | None:
    """The model's counters, or None where the server has no statistics extension."""
    with grpc.insecure_channel(address) as channel:
        try:
            request = pb.ModelStatisticsRequest(name=model_name)
            reply = _call(channel, "ModelStatistics", request, pb.ModelStatisticsResponse, 10)
        except grpc.RpcError:
            return None
    if not reply.model_stats:
        return None
    stats = reply.model_stats[0]
    return Counters(stats.inference_count, stats.execution_count, stats.inference_stats.fail.count)
