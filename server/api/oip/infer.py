"""ModelInfer: one OIP request through the same gate, routing, validation, batcher and statistics as Predict.

The request arrives as bytes and the answer leaves as bytes, as for Predict, so both size limits are
checked with messages naming their flags.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from server.api.inference import InferenceServicer
from server.api.oip import codec
from server.api.oip.codec import OipMessage
from server.api.outcomes import CallOutcome
from server.core.errors import FailedPrecondition
from server.core.types import InferRequest
from server.models.slot import Slot
from server.telemetry.calls import CallRecord


class OipInference:
    """ModelInfer, and the per-request steps ModelStreamInfer shares with it."""

    def __init__(self, inference: InferenceServicer) -> None:
        self.inference = inference
        self._observed = bool(inference.observers)

    def _read(self, data: bytes, context: grpc.aio.ServicerContext) -> tuple[OipMessage, Any, InferRequest]:
        request, message, payloads = codec.decode(self.inference.ids, codec.parse(data), context.time_remaining())
        return message, payloads, request

    def accept(
        self, data: bytes, context: grpc.aio.ServicerContext, record: CallRecord | None = None
    ) -> tuple[OipMessage, Any, InferRequest, Slot]:
        """Gate, size, parse, decode and route (InferenceServicer.accept with the OIP reader)."""
        return self.inference.accept(self._read, data, context, record)

    async def run(
        self, message: OipMessage, payloads: Any, request: InferRequest, slot: Slot, started: int | None
    ) -> bytes:
        """Decode the inputs against the routed version, infer, encode: the answer's bytes."""
        inference = self.inference
        with CallOutcome(slot.stats, request.deadline, started):
            if slot.streaming_only:
                raise FailedPrecondition(
                    f"model '{request.model}' is decoupled (it answers with a stream of responses): "
                    "call ModelStreamInfer (tritonclient: start_stream + async_stream_infer)"
                )
            request, rows = await inference.inputs.decode(message, request, slot.validator, payloads)  # type: ignore[arg-type]
            outputs = await slot.infer(request.inputs, request.deadline, rows, request.parameters)
            data = inference.serialise(
                codec.encode_response(request, slot.version, outputs, slot.validator.output_names)
            )
        inference.served(request, slot, rows, outputs)
        return data

    async def model_infer(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter_ns()
        if not self._observed:
            message, payloads, request, slot = self.accept(data, context)
            return await self.run(message, payloads, request, slot, started)
        observers = self.inference.observers
        record = observers.begin("ModelInfer", context, len(data))
        try:
            message, payloads, request, slot = self.accept(data, context, record)
            reply = await self.run(message, payloads, request, slot, started)
        except BaseException as exc:
            if record is not None:
                observers.end(record, exc)
            raise
        if record is not None:
            record.bytes_out = len(reply)
            observers.end(record, None)
        return reply
