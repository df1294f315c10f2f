"""AsyncClient: the asyncio twin of :class:`inferd.client.Client` (grpc.aio): numpy in, numpy out.

Same constructor and methods as Client; the unary ones are coroutines and ``predict_stream`` returns an
async iterator. What each call sends and how its answer is decoded is :mod:`inferd.requests`' (shared
with Client), so the twins differ only in how they wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
from numpy.typing import ArrayLike

from inferd import requests as rpc
from inferd.connection import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, Connection, MetadataLike
from inferd.errors import from_rpc_error
from inferd.feedback import FeedbackResult
from inferd.health import HealthStatus
from inferd.predictions import ParameterValue, Prediction, StreamChunk, atexts, build_stream_request, to_chunk
from inferd.statistics import WORKERS_HEADER
from inferd.tls import TlsLike
from inferd.trace_context import with_trace_context
from inferd.v1 import inference_pb2

__all__ = ["AsyncClient"]

R = TypeVar("R")


class AsyncClient(Connection):
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
        tls: TlsLike = None,
        token: str | None = None,
    ) -> None:
        super().__init__(
            grpc.aio, target, timeout, max_message_bytes, channel, metadata, credentials, options, tls=tls, token=token
        )

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
        call = rpc.predict(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        return await self._run(call, timeout)

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
        call = rpc.predict_response(model, inputs, version, label, outputs, request_id, parameters, routing_key)
        return await self._run(call, timeout)

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
    ) -> AsyncIterator[str]:
        """Generate from a generative model (``async for``): text pieces as the server produces them.

        Same parameters as :meth:`Client.generate`; ``aclose()`` cancels the generation on the server.
        """
        request = rpc.generate(model, prompt, input_name, version, label, request_id, parameters)
        return atexts(self._chunks(request, timeout))

    async def metadata(
        self, model: str, version: int | None = None, label: str | None = None, *, timeout: float | None = None
    ) -> inference_pb2.ModelMetadataResponse:
        """The signature of the version that would serve (model, version, label)."""
        return await self._run(rpc.metadata(model, version, label), timeout)

    async def list_models(self, *, timeout: float | None = None) -> list[inference_pb2.ModelStatus]:
        return await self._run(rpc.list_models(), timeout)

    async def server_metadata(self, *, timeout: float | None = None) -> inference_pb2.ServerMetadataResponse:
        return await self._run(rpc.server_metadata(), timeout)

    async def statistics(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> list[inference_pb2.VersionStatistics]:
        """Per-version counters (requests, batches, batch sizes, queue and compute time); "" = every model."""
        return await self._run(rpc.statistics(model, version), timeout)

    async def statistics_and_workers(
        self, model: str = "", version: int | None = None, *, timeout: float | None = None
    ) -> tuple[list[inference_pb2.VersionStatistics], str]:
        """:meth:`statistics`, and how many worker processes the reply covers: "answered/total" from a server
        run with ``--workers`` (its trailer ``x-inferd-workers``), "" from a single process."""
        call = rpc.statistics(model, version)
        try:
            pending = self._stub.ModelStatistics(
                call.request, timeout=self._timeout(timeout), metadata=with_trace_context(self._metadata)
            )
            reply = await pending
            trailers = await pending.trailing_metadata()
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return call.decode(reply), str(dict(trailers or ()).get(WORKERS_HEADER, ""))

    async def feedback(
        self, model: str, request_id: str, target: Any, *, timeout: float | None = None
    ) -> FeedbackResult:
        """The truth for the prediction ``request_id``; see :meth:`Client.feedback`."""
        return await self._run(rpc.feedback(model, request_id, target), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> HealthStatus:
        """grpc.health.v1 status of the server ("") or a service; an unknown service is "SERVICE_UNKNOWN"."""
        try:
            status: HealthStatus = await self._health_check(
                service, timeout=self._timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as err:
            return rpc.health_status_of(err)
        return status

    async def model_health(self, name: str, *, timeout: float | None = None) -> HealthStatus:
        """SERVING when some version of the model is READY."""
        return await self.health(f"model/{name}", timeout=timeout)

    async def wait_until_ready(self, timeout: float = 30.0, *, service: str = "") -> None:
        """Wait until health(service) is SERVING, through connection failures.

        Raises DeadlineExceeded after ``timeout`` seconds, naming the last status seen.
        """
        poll = rpc.Readiness(self.target, service, timeout)
        while (remaining := poll.remaining()) > 0:
            try:
                check = self._health_check(service, timeout=remaining, metadata=self._metadata, wait_for_ready=True)
                if poll.serving(await check):
                    return
            except grpc.RpcError as err:
                poll.failed(err)
            await asyncio.sleep(poll.pause())
        raise poll.expired()

    async def _run(self, call: rpc.Call[R], timeout: float | None) -> R:
        return call.decode(await self._unary(getattr(self._stub, call.method), call.request, timeout))

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        """The one place a unary call gets its timeout, metadata and typed errors (AsyncModelControl uses it too)."""
        try:
            return await method(request, timeout=self._timeout(timeout), metadata=with_trace_context(self._metadata))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _chunks(
        self, request: inference_pb2.PredictStreamRequest, timeout: float | None
    ) -> AsyncGenerator[StreamChunk, None]:
        call = self._predict_stream(
            request, timeout=self._timeout(timeout), metadata=with_trace_context(self._metadata)
        )
        try:
            async for response in call:
                yield to_chunk(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op once the stream has ended
