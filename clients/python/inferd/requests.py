"""Every RPC of the SDK once: the request it sends and how its reply becomes the result.

Client and AsyncClient (and ModelControl and its twin) only differ in how they wait; what they send,
how they decode and how they read health and readiness answers lives here, so the twins cannot drift
apart and each of their methods is a line or two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import grpc
import numpy as np

from inferd.errors import DeadlineExceeded, from_rpc_error
from inferd.feedback import FeedbackResult, build_feedback_request, to_feedback_result
from inferd.health import HealthStatus
from inferd.predictions import (
    ParameterValue,
    Prediction,
    build_predict_request,
    build_stream_request,
    decode_outputs,
    generation_parameters,
    prompt_inputs,
    to_prediction,
)
from inferd.v1 import admin_pb2, inference_pb2, model_config_pb2

R = TypeVar("R")

#: While waiting for readiness these mean "not yet": no connection, attempt timed out, model not loaded.
NOT_YET = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND})
POLL_FIRST_S, POLL_MAX_S = 0.02, 0.5


class Call(Generic[R]):
    """One unary RPC: the stub method's name, the request message, and how its reply becomes the result."""

    __slots__ = ("decode", "method", "request")

    def __init__(self, method: str, request: Any, decode: Callable[[Any], R]) -> None:
        self.method = method
        self.request = request
        self.decode = decode


def _outputs(response: inference_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return decode_outputs(response.outputs)


def _same(response: R) -> R:
    return response


def _models(response: inference_pb2.ListModelsResponse) -> list[inference_pb2.ModelStatus]:
    return list(response.models)


def _statistics(response: inference_pb2.ModelStatisticsResponse) -> list[inference_pb2.VersionStatistics]:
    return list(response.statistics)


def _status(response: Any) -> inference_pb2.ModelStatus:
    status: inference_pb2.ModelStatus = response.status
    return status


def _repository(response: admin_pb2.RepositoryIndexResponse) -> list[admin_pb2.RepositoryModel]:
    return list(response.models)


# inferd.v1.InferenceService


def predict(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    request_id: str | None,
    parameters: Mapping[str, ParameterValue] | None,
    routing_key: str | None,
) -> Call[dict[str, np.ndarray]]:
    request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
    return Call("Predict", request, _outputs)


def predict_response(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    outputs: Sequence[str] | None,
    request_id: str | None,
    parameters: Mapping[str, ParameterValue] | None,
    routing_key: str | None,
) -> Call[Prediction]:
    request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
    return Call("Predict", request, to_prediction)


def generate(
    model: str,
    prompt: str | bytes,
    input_name: str,
    version: int | None,
    label: str | None,
    request_id: str | None,
    parameters: Mapping[str, Any],
) -> inference_pb2.PredictStreamRequest:
    """The PredictStream request of ``generate``: one prompt, generation keyword arguments as parameters."""
    inputs = prompt_inputs(prompt, input_name)
    return build_stream_request(
        model, inputs, version, label, None, request_id, generation_parameters(parameters), None, None
    )


def metadata(model: str, version: int | None, label: str | None) -> Call[inference_pb2.ModelMetadataResponse]:
    request = inference_pb2.ModelMetadataRequest(name=model, version=version or 0, version_label=label or "")
    return Call("ModelMetadata", request, _same)


def list_models() -> Call[list[inference_pb2.ModelStatus]]:
    return Call("ListModels", inference_pb2.ListModelsRequest(), _models)


def server_metadata() -> Call[inference_pb2.ServerMetadataResponse]:
    return Call("ServerMetadata", inference_pb2.ServerMetadataRequest(), _same)


def statistics(model: str, version: int | None) -> Call[list[inference_pb2.VersionStatistics]]:
    request = inference_pb2.ModelStatisticsRequest(name=model, version=version or 0)
    return Call("ModelStatistics", request, _statistics)


def feedback(model: str, request_id: str, target: Any) -> Call[FeedbackResult]:
    return Call("Feedback", build_feedback_request(model, request_id, target), to_feedback_result)


# inferd.v1.ModelService


def load(name: str, versions: Sequence[int] | None) -> Call[inference_pb2.ModelStatus]:
    return Call("LoadModel", admin_pb2.LoadModelRequest(name=name, versions=list(versions or ())), _status)


def unload(name: str, version: int | None) -> Call[inference_pb2.ModelStatus]:
    return Call("UnloadModel", admin_pb2.UnloadModelRequest(name=name, version=version or 0), _status)


def set_traffic(
    name: str, labels: Mapping[str, int], weights: Mapping[str, int] | None
) -> Call[inference_pb2.ModelStatus]:
    request = admin_pb2.SetTrafficRequest(
        name=name,
        version_labels=dict(labels),
        traffic=[model_config_pb2.TrafficWeight(label=k, weight=v) for k, v in (weights or {}).items()],
    )
    return Call("SetTraffic", request, _status)


def set_shadow(
    name: str, fraction: float | None, label: str | None, version: int | None
) -> Call[inference_pb2.ModelStatus]:
    """Mirror ``fraction`` of the model's traffic to a label or a version; ``fraction=None`` stops mirroring."""
    if fraction is None:
        request = admin_pb2.SetShadowRequest(name=name, off=True)
    else:
        policy = model_config_pb2.ShadowPolicy(label=label or "", version=version or 0, fraction=fraction)
        request = admin_pb2.SetShadowRequest(name=name, shadow=policy)
    return Call("SetShadow", request, _status)


def repository_index() -> Call[list[admin_pb2.RepositoryModel]]:
    return Call("RepositoryIndex", admin_pb2.RepositoryIndexRequest(), _repository)


def skipped_folders() -> Call[list[admin_pb2.SkippedFolder]]:
    """The repository's folders that are not models, each with its reason (from RepositoryIndex)."""
    return Call("RepositoryIndex", admin_pb2.RepositoryIndexRequest(), lambda response: list(response.skipped))


# grpc.health.v1


def health_status_of(err: grpc.RpcError) -> HealthStatus:
    """Check answers NOT_FOUND for a service it does not know; report that as a status, raise the rest."""
    error = from_rpc_error(err)
    if error.code == grpc.StatusCode.NOT_FOUND:
        return "SERVICE_UNKNOWN"
    raise error from None


class Readiness:
    """The state of one ``wait_until_ready``: its deadline, the next back-off, the last answer seen."""

    def __init__(self, target: str, service: str, timeout: float) -> None:
        self._what = f"service '{service}' at {target}" if service else f"server at {target}"
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._delay = POLL_FIRST_S
        self._last = "no answer"

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def serving(self, status: HealthStatus) -> bool:
        self._last = status
        return status == "SERVING"

    def failed(self, err: grpc.RpcError) -> None:
        """Remember a "not yet" failure; raise any other as its typed error."""
        error = from_rpc_error(err)
        if error.code not in NOT_YET:
            raise error from None
        self._last = str(error)

    def pause(self) -> float:
        """Seconds to wait before the next check (doubling, capped, never past the deadline)."""
        delay = max(0.0, min(self._delay, self.remaining()))
        self._delay = min(self._delay * 2, POLL_MAX_S)
        return delay

    def expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"{self._what} not SERVING after {self._timeout:g}s (last: {self._last})")
