"""inferd.v1.InferenceService: Predict, PredictStream, ModelMetadata, ListModels, ServerMetadata.

Predict and PredictStream take the request as bytes and serialise their replies themselves, so that
the size limits can be enforced with messages that name the limit and the flag that sets it.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from inferd.v1 import inference_pb2
from server.api.codec import (
    RequestIds,
    decode_request,
    encode_outputs,
    encode_parameter,
    encode_response,
    parse_request,
)
from server.api.connection_limits import ConnectionStreams
from server.api.feedback import feedback as score_feedback
from server.api.inputs import DEFAULT_MAX_REQUEST_ELEMENTS, InputDecoder
from server.api.interceptors import current_request_id
from server.api.outcomes import CallOutcome
from server.api.shutdown_gate import ShutdownGate
from server.api.views import model_metadata, model_statistics, model_status
from server.core.deadlines import outcome_code
from server.core.errors import InvalidArgument, ResourceExhausted
from server.core.types import InferRequest
from server.models import gpu
from server.models.registry import Registry
from server.models.shadow import ShadowMirror
from server.models.slot import Slot
from server.quality.feedback import FeedbackBook
from server.telemetry.calls import CallObservers, CallRecord

SERVICE_NAME = "inferd.v1.InferenceService"
_M = TypeVar("_M")
_P = TypeVar("_P")
#: parses and decodes one protocol's request bytes: (message, raw payloads, routing and options)
RequestReader = Callable[[bytes, grpc.aio.ServicerContext], tuple[_M, _P, InferRequest]]
#: gRPC metadata that makes traffic-split assignment sticky (same as PredictRequest.routing_key).
ROUTING_KEY_HEADER = "x-inferd-routing-key"
_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Our own request/response limits; gRPC's transport limits are set above them (see app.py)."""

    max_receive_bytes: int = 64 * _MiB
    max_send_bytes: int = 64 * _MiB
    #: elements a request's inputs may hold (--max-request-elements; see codec.InputDecoder)
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    version: str
    engines: tuple[str, ...]
    extensions: tuple[str, ...]
    started: float
    #: the GPU memory budget model loads are held to (reported per device in ServerMetadata)
    gpu_memory_fraction: float = 0.0


def _slice_rows(inputs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: array[start:stop] for name, array in inputs.items()}


class InferenceServicer:
    def __init__(
        self,
        registry: Registry,
        limits: MessageLimits,
        info: ServerInfo,
        shadow: ShadowMirror | None = None,
        *,
        max_predict_streams_per_connection: int = 0,
        observers: CallObservers | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self._info = info
        #: checks input tensors against the routed model's signature, then decodes them
        self.inputs = InputDecoder(limits.max_request_elements)
        self.shadow = shadow or ShadowMirror()
        #: recent predictions of models with `feedback {}`, scored by Feedback (server/api/feedback.py)
        self.feedback = FeedbackBook()
        self.shadow.feedback = self.feedback
        self.ids = RequestIds()
        #: closed once the server's drain window has ended: new calls get UNAVAILABLE before the port closes
        self.gate = ShutdownGate()
        #: open PredictStreams per connection, capped (server/api/connection_limits.py; 0 = no cap)
        self.connection_streams = ConnectionStreams(max_predict_streams_per_connection)
        #: tracing and the access log (server/telemetry/calls.py); empty: no per-call record is made
        self.observers = observers or CallObservers()
        #: a plain bool: the per-call check costs nothing when nothing observes
        self._observed = bool(self.observers)
        #: Predict(Stream) calls that failed before reaching a model version, by status name: a bounded
        #: label set, so that requests naming unknown models add no metric series
        self.unrouted: Counter[str] = Counter()

    def route(self, request: InferRequest, context: grpc.aio.ServicerContext) -> Slot:
        """Pick the slot; the routing key header is only read for models with a traffic split."""
        key = request.routing_key
        if not key and not request.version and not request.label and self.registry.has_split(request.model):
            for name, value in context.invocation_metadata() or ():
                if name == ROUTING_KEY_HEADER:
                    key = value if isinstance(value, str) else value.decode()
                    break
        return self.registry.route(request.model, request.version, request.label, key)

    def check_request_size(self, data: bytes) -> None:
        if len(data) > self.limits.max_receive_bytes:
            raise ResourceExhausted(
                f"request of {len(data)} bytes exceeds the {self.limits.max_receive_bytes // _MiB} MiB limit "
                "set by --max-receive-message-mb"
            )

    def serialise(self, message: Message) -> bytes:
        data: bytes = message.SerializeToString()
        if len(data) > self.limits.max_send_bytes:
            raise ResourceExhausted(
                f"response of {len(data)} bytes exceeds the {self.limits.max_send_bytes // _MiB} MiB limit "
                "set by --max-send-message-mb; ask for fewer rows or use PredictStream with chunk_rows"
            )
        return data

    def _read_predict(self, data: bytes, context: grpc.aio.ServicerContext) -> tuple[Any, Any, InferRequest]:
        message, payloads = parse_request(inference_pb2.PredictRequest, data)
        return message, payloads, decode_request(self.ids, message, context.time_remaining())

    def _read_predict_stream(self, data: bytes, context: grpc.aio.ServicerContext) -> tuple[Any, Any, InferRequest]:
        message, payloads = parse_request(inference_pb2.PredictStreamRequest, data)
        return message, payloads, decode_request(self.ids, message, context.time_remaining())

    async def predict(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not self._observed:
            return await self._predict(data, context, None)
        observers = self.observers
        record = observers.begin("Predict", context, len(data))
        if record is None:
            return await self._predict(data, context, None)
        try:
            reply = await self._predict(data, context, record)
        except BaseException as exc:
            observers.end(record, exc)
            raise
        record.bytes_out = len(reply)
        observers.end(record, None)
        return reply

    def accept(
        self, read: RequestReader[_M, _P], data: bytes, context: grpc.aio.ServicerContext, record: CallRecord | None
    ) -> tuple[_M, _P, InferRequest, Slot]:
        """Gate, size limit, parsing and decoding (``read``: one per protocol) and routing, for every
        inference call of every protocol. A call that fails here never reached a version: it is counted in
        ``unrouted`` by status name only."""
        try:
            if self.gate.closed:
                raise self.gate.refuse()
            self.check_request_size(data)
            message, payloads, request = read(data, context)
            current_request_id.set(request.id)
            if record is not None:
                record.decoded(request.id, request.model, request.deadline)
            slot = self.route(request, context)
        except Exception as exc:
            self.unrouted[outcome_code(exc, None)] += 1
            raise
        if record is not None:
            record.version = slot.version
        return message, payloads, request, slot

    def served(self, request: InferRequest, slot: Slot, rows: int, outputs: Mapping[str, np.ndarray]) -> None:
        """After a unary answer, whatever the protocol: keep it for Feedback, mirror it to a shadow."""
        if slot.feedback is not None and slot.spec.feedback is not None:
            self.feedback.record(request.model, slot.spec.feedback, request.id, slot.version, outputs)
        shadow = self.registry.shadow_for(request.model, slot)
        if shadow is not None:
            self.shadow.mirror(shadow, slot.version, request.inputs, rows, outputs, request.id)

    async def _predict(self, data: bytes, context: grpc.aio.ServicerContext, record: CallRecord | None = None) -> bytes:
        started = time.perf_counter_ns()
        message, payloads, request, slot = self.accept(self._read_predict, data, context, record)
        with CallOutcome(slot.stats, request.deadline, started):
            request, rows = await self.inputs.decode(message, request, slot.validator, payloads)
            outputs = await slot.infer(request.inputs, request.deadline, rows, request.parameters)
            data = self.serialise(encode_response(request, slot.version, outputs, slot.validator.output_names))
        self.served(request, slot, rows, outputs)
        return data

    async def predict_stream(self, data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """Tokens of a generative model, items of a python generator, or chunks of an ordinary model's rows.

        Messages carry sequence_index 0, 1, 2, ... and final=true on the last only (docs/streaming.md);
        the slot counts the whole stream as in flight, so a drain waits for it. Every kind of stream is
        counted in the version's statistics like a Predict call (its latency is not: see CallOutcome).
        """
        observers = self.observers
        record = None
        if self._observed:
            record = observers.begin("PredictStream", context, len(data))
        try:
            async for message in self._predict_stream(data, context, record):
                if record is not None:
                    record.bytes_out += len(message)
                yield message
        except BaseException as exc:
            if record is not None:
                observers.end(record, exc)
            raise
        if record is not None:
            observers.end(record, None)

    async def _predict_stream(
        self, data: bytes, context: grpc.aio.ServicerContext, record: CallRecord | None
    ) -> AsyncIterator[bytes]:
        stream_message, payloads, request, slot = self.accept(self._read_predict_stream, data, context, record)
        with CallOutcome(slot.stats, request.deadline), self.connection_streams.hold(context.peer()):
            request, rows = await self.inputs.decode(
                stream_message, request, slot.validator, payloads, enforce_max_batch=False
            )
            if slot.streams is not None and request.chunk_rows:
                raise InvalidArgument(f"model '{request.model}' streams as it generates, so chunk_rows cannot apply")
            with slot.busy():
                if slot.streams is not None:
                    messages = self._stream_session(request, slot)
                else:
                    messages = self._chunks(request, slot, rows)
                # closed here, not by the garbage collector: the stream ends before the slot stops counting it
                async with contextlib.aclosing(messages):
                    async for message in messages:
                        yield message

    async def _stream_session(self, request: InferRequest, slot: Slot) -> AsyncGenerator[bytes, None]:
        """A generative or generator stream: each part as it is produced."""
        assert slot.streams is not None
        typed = request.output_encoding == "typed"
        order = request.requested_outputs or slot.validator.output_names
        session = slot.streams.session(request.inputs, request.parameters, request.deadline)
        async with contextlib.aclosing(session) as parts:
            index = 0
            async for part in parts:
                message = inference_pb2.PredictStreamResponse(
                    model_name=request.model,
                    model_version=slot.version,
                    id=request.id,
                    sequence_index=index,
                    final=part.final,
                    outputs=encode_outputs(part.outputs, [n for n in order if n in part.outputs], (), typed=typed),
                )
                for key, value in part.parameters.items():
                    message.parameters[key].CopyFrom(encode_parameter(value))
                index += 1
                yield self.serialise(message)

    async def _chunks(self, request: InferRequest, slot: Slot, rows: int) -> AsyncGenerator[bytes, None]:
        """Chunked outputs of an ordinary model: ``chunk_rows`` rows per message, final=true on the last."""
        spec = slot.spec
        chunk = request.chunk_rows or spec.streaming.chunk_rows or spec.max_batch_size or rows
        if spec.max_batch_size > 0:
            chunk = min(chunk, spec.max_batch_size)
        else:
            if request.chunk_rows:
                raise InvalidArgument(f"model '{request.model}' has no batch dimension, so chunk_rows cannot apply")
            chunk = rows
        typed = request.output_encoding == "typed"
        starts = range(0, rows, chunk)
        for index, start in enumerate(starts):
            part = _slice_rows(request.inputs, start, start + chunk) if spec.max_batch_size > 0 else request.inputs
            outputs = await slot.infer(part, request.deadline, min(chunk, rows - start), request.parameters)
            message = inference_pb2.PredictStreamResponse(
                model_name=request.model,
                model_version=slot.version,
                id=request.id,
                sequence_index=index,
                final=index == len(starts) - 1,
                outputs=encode_outputs(outputs, request.requested_outputs, slot.validator.output_names, typed=typed),
            )
            yield self.serialise(message)

    async def model_metadata(
        self, request: inference_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelMetadataResponse:
        return model_metadata(self.registry, request)

    async def list_models(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=[model_status(e) for e in self.registry.models()])

    async def server_metadata(
        self, request: inference_pb2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ServerMetadataResponse:
        info = self._info
        return inference_pb2.ServerMetadataResponse(
            name=info.name,
            version=info.version,
            engines=info.engines,
            extensions=info.extensions,
            uptime_seconds=time.monotonic() - info.started,
            devices=[
                inference_pb2.DeviceMemory(
                    index=d.index,
                    name=d.name,
                    compute_capability=d.compute_capability,
                    total_bytes=d.total_bytes,
                    free_bytes=d.free_bytes,
                    used_bytes=d.used_bytes,
                    memory_fraction=info.gpu_memory_fraction,
                )
                for d in gpu.query_devices()
            ],
        )

    async def model_statistics(
        self, request: inference_pb2.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelStatisticsResponse:
        return model_statistics(self.registry, request)

    async def feedback_call(
        self, request: inference_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.FeedbackResponse:
        return score_feedback(self.registry, self.feedback, request)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method handlers (Predict and PredictStream take and return bytes)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                # nothing observes calls: gRPC calls the body itself (one coroutine less per call)
                "Predict": grpc.unary_unary_rpc_method_handler(self.predict if self._observed else self._predict),
                "PredictStream": grpc.unary_stream_rpc_method_handler(self.predict_stream),
                "ModelMetadata": grpc.unary_unary_rpc_method_handler(
                    self.model_metadata,
                    request_deserializer=inference_pb2.ModelMetadataRequest.FromString,
                    response_serializer=inference_pb2.ModelMetadataResponse.SerializeToString,
                ),
                "ListModels": grpc.unary_unary_rpc_method_handler(
                    self.list_models,
                    request_deserializer=inference_pb2.ListModelsRequest.FromString,
                    response_serializer=inference_pb2.ListModelsResponse.SerializeToString,
                ),
                "ServerMetadata": grpc.unary_unary_rpc_method_handler(
                    self.server_metadata,
                    request_deserializer=inference_pb2.ServerMetadataRequest.FromString,
                    response_serializer=inference_pb2.ServerMetadataResponse.SerializeToString,
                ),
                "ModelStatistics": grpc.unary_unary_rpc_method_handler(
                    self.model_statistics,
                    request_deserializer=inference_pb2.ModelStatisticsRequest.FromString,
                    response_serializer=inference_pb2.ModelStatisticsResponse.SerializeToString,
                ),
                "Feedback": grpc.unary_unary_rpc_method_handler(
                    self.feedback_call,
                    request_deserializer=inference_pb2.FeedbackRequest.FromString,
                    response_serializer=inference_pb2.FeedbackResponse.SerializeToString,
                ),
            },
        )
