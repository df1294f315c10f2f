"""Client (blocking) and AsyncClient (asyncio) for an inferd server: numpy in, numpy out.

Both wrap one gRPC channel, turn every ``grpc.RpcError`` into an :mod:`inferd.errors` exception and
share the request/response conversions of :mod:`inferd.predictions`, so they behave the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
import numpy as np
from numpy.typing import ArrayLike

from inferd import health as _health
from inferd.errors import DeadlineExceeded, from_rpc_error
from inferd.health import HealthStatus
from inferd.predictions import (
    ParameterValue,
    Prediction,
    StreamChunk,
    atexts,
    build_predict_request,
    build_stream_request,
    decode_outputs,
    generation_parameters,
    prompt_inputs,
    texts,
    to_chunk,
    to_prediction,
)
from inferd.v1 import inference_pb2, inference_pb2_grpc

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TARGET", "AsyncClient", "Client"]

DEFAULT_TARGET = "127.0.0.1:8001"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

MetadataLike = Mapping[str, str] | Sequence[tuple[str, str]]

# While waiting for readiness these mean "not yet": no connection, attempt timed out, model not loaded.
_NOT_YET = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND})
_POLL_FIRST_S, _POLL_MAX_S = 0.02, 0.5


class _Base:
    """Settings and channel construction shared by the two clients."""

    def __init__(
        self,
        target: str,
        timeout: float | None,
        metadata: MetadataLike | None,
        channel: Any,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        if metadata is None:
            self._metadata: tuple[tuple[str, str], ...] | None = None
        else:
            pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
            self._metadata = tuple((key, value) for key, value in pairs) or None

    @staticmethod
    def _channel_options(max_message_bytes: int, options: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
        merged = {
            "grpc.max_send_message_length": max_message_bytes,
            "grpc.max_receive_message_length": max_message_bytes,
        }
        merged.update(options or ())
        return list(merged.items())

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _bind(self, channel: Any) -> None:
        self.channel = channel
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        self._predict = stub.Predict
        self._predict_stream = stub.PredictStream
        self._model_metadata = stub.ModelMetadata
        self._list_models = stub.ListModels
        self._server_metadata = stub.ServerMetadata
        self._model_statistics = stub.ModelStatistics
        # Hand-written so the SDK does not need grpcio-health-checking: the "request" is the service name.
        self._health_check = channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.encode_request,
            response_deserializer=_health.decode_response,
        )

    def _not_ready(self, service: str, timeout: float, last: str) -> DeadlineExceeded:
        what = f"service '{service}'" if service else "server"
        return DeadlineExceeded(f"{what} at {self.target} not SERVING after {timeout:g}s (last: {last})")


def _metadata_request(model: str, version: int | None, label: str | None) -> inference_pb2.ModelMetadataRequest:
    return inference_pb2.ModelMetadataRequest(name=model, version=version or 0, version_label=label or "")


def _health_error(err: grpc.RpcError) -> HealthStatus:
    """Check answers NOT_FOUND for a service it does not know; report that as a status, raise the rest."""
    error = from_rpc_error(err)
    if error.code == grpc.StatusCode.NOT_FOUND:
        return "SERVICE_UNKNOWN"
    raise error from None


class Client(_Base):
    """A blocking client over one gRPC channel; thread-safe, meant to be shared and reused.

    ``timeout`` is the default per-call timeout in seconds (None = no deadline); every method also
    takes its own. ``metadata`` is sent with every call (e.g. an authorization header). Pass
    ``channel`` to use your own channel (its settings win, and ``close`` leaves it open).
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
    ) -> None:
        super().__init__(target, timeout, metadata, channel)
        if channel is None:
            opts = self._channel_options(max_message_bytes, options)
            if credentials is None:
                channel = grpc.insecure_channel(target, options=opts)
            else:
                channel = grpc.secure_channel(target, credentials, options=opts)
        self._bind(channel)

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
        request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        response = self._unary(self._predict, request, timeout)
        return decode_outputs(response.outputs)

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
        request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        response = self._unary(self._predict, request, timeout)
        return to_prediction(response)

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
        request = build_stream_request(
            model, inputs, version, label, outputs, request_id, parameters, routing_key, chunk_rows
        )
        return self._chunks(request, self._timeout(timeout))

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
        request = build_stream_request(
            model,
            prompt_inputs(prompt, input_name),
            version,
            label,
            None,
            request_id,
            generation_parameters(parameters),
            None,
            None,
        )
        return texts(self._chunks(request, self._timeout(timeout)))

    def _chunks(
        self, request: inference_pb2.PredictStreamRequest, timeout: float | None
    ) -> Generator[StreamChunk, None, None]:
        call = self._predict_stream(request, timeout=timeout, metadata=self._metadata)
        try:
            for response in call:
                yield to_chunk(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    def metadata(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelMetadataResponse:
        """The signature of the version that would serve (model, version, label)."""
        return self._unary(self._model_metadata, _metadata_request(model, version, label), timeout)

    def list_models(self, *, timeout: float | None = None) -> list[inference_pb2.ModelStatus]:
        return list(self._unary(self._list_models, inference_pb2.ListModelsRequest(), timeout).models)

    def server_metadata(self, *, timeout: float | None = None) -> inference_pb2.ServerMetadataResponse:
        return self._unary(self._server_metadata, inference_pb2.ServerMetadataRequest(), timeout)

    def statistics(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> list[inference_pb2.VersionStatistics]:
        """Per-version counters (requests, batches, batch sizes, queue and compute time); "" = every model."""
        request = inference_pb2.ModelStatisticsRequest(name=model, version=version or 0)
        return list(self._unary(self._model_statistics, request, timeout).statistics)

    def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """grpc.health.v1 status of the server ("") or a service; an unknown service is "SERVICE_UNKNOWN"."""
        try:
            status: HealthStatus = self._health_check(service, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            return _health_error(err)
        return status

    def model_health(self, name: str, *, timeout: float | None = None) -> HealthStatus:
        """SERVING when some version of the model is READY."""
        return self.health(f"model/{name}", timeout=timeout)

    def wait_until_ready(self, timeout: float = 30.0, *, service: str = "") -> None:
        """Block until health(service) is SERVING, waiting through connection failures.

        Raises DeadlineExceeded after ``timeout`` seconds, naming the last status seen.
        """
        deadline = time.monotonic() + timeout
        delay, last = _POLL_FIRST_S, "no answer"
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                # wait_for_ready: wait for the connection rather than fail fast while the server starts.
                status = self._health_check(service, timeout=remaining, metadata=self._metadata, wait_for_ready=True)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if error.code not in _NOT_YET:
                    raise error from None
                last = str(error)
            else:
                if status == "SERVING":
                    return
                last = status
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, _POLL_MAX_S)
        raise self._not_ready(service, timeout, last)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None


class AsyncClient(_Base):
    """The asyncio twin of Client (grpc.aio). Create it inside a running event loop.

    Same constructor and methods; the unary ones are coroutines and ``predict_stream`` returns an
    async iterator.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.aio.Channel | None = None,
        metadata: MetadataLike | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        super().__init__(target, timeout, metadata, channel)
        if channel is None:
            opts = self._channel_options(max_message_bytes, options)
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=opts)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self._bind(channel)

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def predict(
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
        request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        response = await self._unary(self._predict, request, timeout)
        return decode_outputs(response.outputs)

    async def predict_response(
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
        request = build_predict_request(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        response = await self._unary(self._predict, request, timeout)
        return to_prediction(response)

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
    ) -> AsyncGenerator[StreamChunk, None]:
        """Stream the answer chunk by chunk (``async for``). ``aclose()`` (or ``contextlib.aclosing``)
        cancels the call at once; an iterator dropped after ``break`` is cancelled when asyncio finalises it.
        """
        request = build_stream_request(
            model, inputs, version, label, outputs, request_id, parameters, routing_key, chunk_rows
        )
        return self._chunks(request, self._timeout(timeout))

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
    ) -> AsyncIterator[str]:
        """Generate from a generative model (``async for``): text pieces as the server produces them.

        Same parameters as :meth:`Client.generate`; ``aclose()`` cancels the generation on the server.
        """
        request = build_stream_request(
            model,
            prompt_inputs(prompt, input_name),
            version,
            label,
            None,
            request_id,
            generation_parameters(parameters),
            None,
            None,
        )
        return atexts(self._chunks(request, self._timeout(timeout)))

    async def _chunks(
        self, request: inference_pb2.PredictStreamRequest, timeout: float | None
    ) -> AsyncGenerator[StreamChunk, None]:
        call = self._predict_stream(request, timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                yield to_chunk(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    async def metadata(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.ModelMetadataResponse:
        """The signature of the version that would serve (model, version, label)."""
        return await self._unary(self._model_metadata, _metadata_request(model, version, label), timeout)

    async def list_models(self, *, timeout: float | None = None) -> list[inference_pb2.ModelStatus]:
        return list((await self._unary(self._list_models, inference_pb2.ListModelsRequest(), timeout)).models)

    async def server_metadata(self, *, timeout: float | None = None) -> inference_pb2.ServerMetadataResponse:
        return await self._unary(self._server_metadata, inference_pb2.ServerMetadataRequest(), timeout)

    async def statistics(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> list[inference_pb2.VersionStatistics]:
        """Per-version counters (requests, batches, batch sizes, queue and compute time); "" = every model."""
        request = inference_pb2.ModelStatisticsRequest(name=model, version=version or 0)
        return list((await self._unary(self._model_statistics, request, timeout)).statistics)

    async def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """grpc.health.v1 status of the server ("") or a service; an unknown service is "SERVICE_UNKNOWN"."""
        try:
            status: HealthStatus = await self._health_check(
                service, timeout=self._timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            return _health_error(err)
        return status

    async def model_health(self, name: str, *, timeout: float | None = None) -> HealthStatus:
        """SERVING when some version of the model is READY."""
        return await self.health(f"model/{name}", timeout=timeout)

    async def wait_until_ready(self, timeout: float = 30.0, *, service: str = "") -> None:
        """Wait until health(service) is SERVING, through connection failures.

        Raises DeadlineExceeded after ``timeout`` seconds, naming the last status seen.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay, last = _POLL_FIRST_S, "no answer"
        while (remaining := deadline - loop.time()) > 0:
            try:
                status = await self._health_check(
                    service, timeout=remaining, metadata=self._metadata, wait_for_ready=True
                )
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if error.code not in _NOT_YET:
                    raise error from None
                last = str(error)
            else:
                if status == "SERVING":
                    return
                last = status
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
            delay = min(delay * 2, _POLL_MAX_S)
        raise self._not_ready(service, timeout, last)

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
