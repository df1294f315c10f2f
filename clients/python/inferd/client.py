"""Client (blocking) for an inferd server: numpy in, numpy out; AsyncClient (asyncio) is its twin in
:mod:`inferd.async_client`, re-exported here.

Both wrap one gRPC channel and turn every ``grpc.RpcError`` into an :mod:`inferd.errors` exception.
What each call sends and how its answer is decoded is :mod:`inferd.requests`' (shared), so the twins
differ only in how they wait: each method builds its call there and runs it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from numpy.typing import ArrayLike

from inferd import requests as rpc
from inferd.async_client import AsyncClient
from inferd.connection import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, Connection, MetadataLike
from inferd.errors import from_rpc_error
from inferd.feedback import FeedbackResult
from inferd.health import HealthStatus
from inferd.predictions import ParameterValue, Prediction, StreamChunk, build_stream_request, texts, to_chunk
from inferd.statistics import WORKERS_HEADER
from inferd.tls import TlsLike
from inferd.trace_context import with_trace_context
from inferd.v1 import inference_pb2

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TARGET", "AsyncClient", "Client"]

R = TypeVar("R")


class Client(Connection):
    """A blocking client over one gRPC channel; thread-safe, meant to be shared and reused.

    ``timeout`` is the default per-call timeout in seconds (None = no deadline); every method also
    takes its own. ``metadata`` is sent with every call (e.g. an authorization header). Pass
    ``channel`` to use your own channel (its settings win, and ``close`` leaves it open). Under a current
    OpenTelemetry span, calls carry its W3C trace context (:mod:`inferd.trace_context`). ``tls=True`` (the
    system's CAs) or ``tls=TlsFiles(ca=..., cert=..., key=...)`` (mTLS) encrypts the channel; ``token`` is sent
    as ``authorization: Bearer`` on every call (:mod:`inferd.tls`).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
        metadata: MetadataLike | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        tls: TlsLike = None,
        token: str | None = None,
    ) -> None:
        super().__init__(
            grpc, target, timeout, max_message_bytes, channel, metadata, credentials, options, tls=tls, token=token
        )

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def predict(
        self,
        model: str,
        inputs: Mapping[str, ArrayLike],
        *,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        routing_key: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one prediction; returns outputs by name as read-only arrays (``.copy()`` to modify)."""
        call = rpc.predict(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        return self._run(call, timeout)

    def predict_response(
        self,
        model: str,
        inputs: Mapping[str, ArrayLike],
        *,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        routing_key: str | None = None,
    ) -> Prediction:
        """Like predict, but also says which model version served and echoes the request id."""
        call = rpc.predict_response(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        return self._run(call, timeout)

    def predict_stream(
        self,
        model: str,
        inputs: Mapping[str, ArrayLike],
        *,
        chunk_rows: int | None = None,
        version: int | None = None,
        label: str | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        routing_key: str | None = None,
    ) -> Generator[StreamChunk, None, None]:
        """Stream the answer chunk by chunk. The call starts on the first ``next()``; closing the iterator
        (``close()``, ``contextlib.closing``, or dropping it after ``break``) cancels it on the server.
        """
        args = (model, inputs, version, label, outputs, request_id, parameters, routing_key, chunk_rows)
        return self._chunks(build_stream_request(*args), timeout)

    def generate(
        self,
        model: str,
        prompt: str | bytes,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        input_name: str = "prompt",
        **parameters: Any,
    ) -> Iterator[str]:
        """Generate from a generative model: yields text pieces as the server produces them.

        ``parameters`` are generation parameters: max_tokens, temperature (0 = greedy), top_k, top_p, seed,
        stop (a string or a list of strings), ignore_eos. Closing the iterator (or ``break``) cancels the
        generation on the server. Use ``predict_stream`` for token ids and the final finish_reason.
        """
        request = rpc.generate(model, prompt, input_name, version, label, request_id, parameters)
        return texts(self._chunks(request, timeout))

    def metadata(
        self, model: str, version: int | None = None, label: str | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelMetadataResponse:
        """The signature of the version that would serve (model, version, label)."""
        return self._run(rpc.metadata(model, version, label), timeout)

    def list_models(self, *, timeout: float | None = None) -> list[inference_pb2.ModelStatus]:
        return self._run(rpc.list_models(), timeout)

    def server_metadata(self, *, timeout: float | None = None) -> inference_pb2.ServerMetadataResponse:
        return self._run(rpc.server_metadata(), timeout)

    def statistics(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> list[inference_pb2.VersionStatistics]:
        """Per-version counters (requests, batches, batch sizes, queue and compute time); "" = every model."""
        return self._run(rpc.statistics(model, version), timeout)

    def statistics_and_workers(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> tuple[list[inference_pb2.VersionStatistics], str]:
        """:meth:`statistics`, and how many worker processes the reply covers: "answered/total" from a server
        run with ``--workers`` (its trailer ``x-inferd-workers``), "" from a single process."""
        call = rpc.statistics(model, version)
        method = self._stub.ModelStatistics.with_call
        reply, rpc_call = self._unary(method, call.request, timeout)
        return call.decode(reply), str(dict(rpc_call.trailing_metadata() or ()).get(WORKERS_HEADER, ""))

    def feedback(self, model: str, request_id: str, target: Any, *, timeout: float | None = None) -> FeedbackResult:
        """The truth for the prediction ``request_id`` (Prediction.id): class indices [rows] or values shaped like
        the output. Unknown or expired ids come back as that outcome, not as an error; a second feedback for
        one id raises inferd.errors.AlreadyExists (an id is scored once)."""
        return self._run(rpc.feedback(model, request_id, target), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """grpc.health.v1 status of the server ("") or a service; an unknown service is "SERVICE_UNKNOWN"."""
        try:
            status: HealthStatus = self._health_check(service, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            return rpc.health_status_of(err)
        return status

    def model_health(self, name: str, *, timeout: float | None = None) -> HealthStatus:
        """SERVING when some version of the model is READY."""
        return self.health(f"model/{name}", timeout=timeout)

    def wait_until_ready(self, timeout: float = 30.0, *, service: str = "") -> None:
        """Block until health(service) is SERVING, waiting through connection failures.

        Raises DeadlineExceeded after ``timeout`` seconds, naming the last status seen.
        """
        poll = rpc.Readiness(self.target, service, timeout)
        while (remaining := poll.remaining()) > 0:
            try:
                # wait_for_ready: wait for the connection rather than fail fast while the server starts.
                check = self._health_check(service, timeout=remaining, metadata=self._metadata, wait_for_ready=True)
                if poll.serving(check):
                    return
            except grpc.RpcError as err:
                poll.failed(err)
            time.sleep(poll.pause())
        raise poll.expired()

    def _run(self, call: rpc.Call[R], timeout: float | None) -> R:
        return call.decode(self._unary(getattr(self._stub, call.method), call.request, timeout))

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        """The one place a unary call gets its timeout, metadata and typed errors (ModelControl uses it too)."""
        try:
            return method(request, timeout=self._timeout(timeout), metadata=with_trace_context(self._metadata))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _chunks(
        self, request: inference_pb2.PredictStreamRequest, timeout: float | None
    ) -> Generator[StreamChunk, None, None]:
        call = self._predict_stream(
            request, timeout=self._timeout(timeout), metadata=with_trace_context(self._metadata)
        )
        try:
            for response in call:
                yield to_chunk(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended
