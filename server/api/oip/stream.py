"""ModelStreamInfer: many requests in flight on one bidirectional stream, answered as each completes.

Each request is accepted (gate, parse, route) as it is read and then runs as its own task through the
same path as ModelInfer, so streamed requests join the dynamic batcher with everyone else's. Answers go
out in completion order, matched by ``id``. A request that fails is answered with ``error_message`` and
the stream goes on. A decoupled (generative) model answers one request with a response per part, the
last carrying ``triton_final_response: true``, as Triton's decoupled models do.

Flow control: at most ``max_in_flight`` requests per stream are between being read and having their
last response written; while that many are, the stream is not read further, so HTTP/2 flow control
holds back a client that sends faster than the server computes. Parts of decoupled answers wait while
``OUTPUT_HIGH_WATER`` responses are queued for a client that reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from inferd.oip.v2 import grpc_service_pb2 as pb
from server.api.oip import codec
from server.api.oip.codec import OipMessage
from server.api.oip.infer import OipInference
from server.api.outcomes import CallOutcome
from server.core.echo import bounded
from server.core.errors import ServingError
from server.core.types import InferRequest
from server.models.slot import Slot
from server.telemetry.calls import CallRecord

log = logging.getLogger("inferd.oip")

#: requests per stream read but not yet fully answered (the server reads no further while this many are)
MAX_IN_FLIGHT = 256
#: responses queued for a slow reader before decoupled models' parts wait
OUTPUT_HIGH_WATER = 1024


def _wrap(infer_response: bytes) -> bytes:
    """``ModelStreamInferResponse{infer_response: <bytes>}`` without parsing the answer again (field 2, LEN)."""
    size = len(infer_response)
    prefix = bytearray(b"\x12")
    while size > 0x7F:
        prefix.append((size & 0x7F) | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + infer_response


def error_text(exc: BaseException, request_id: str) -> str:
    """What a failed request's ``error_message`` says: the status name and message, as Predict's status would."""
    if isinstance(exc, ServingError):
        return f"{exc.code.name}: {bounded(exc.message)}"
    log.error("unexpected error in ModelStreamInfer (request id %s)", request_id or "unknown", exc_info=exc)
    return f"INTERNAL: internal error (request id {request_id or 'unknown'}); see the server log"


def _error(exc: BaseException, model: str, request_id: str) -> bytes:
    response = pb.ModelStreamInferResponse(
        error_message=error_text(exc, request_id),
        infer_response=pb.ModelInferResponse(model_name=model, id=request_id),
    )
    data: bytes = response.SerializeToString()
    return data


def _names(data: bytes) -> tuple[str, str]:
    """The model name and id of a request that failed before it was decoded, if it parses at all."""
    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return "", ""
    return message.model_name, message.id


class _Session:
    """One open ModelStreamInfer call."""

    def __init__(self, infer: OipInference, context: grpc.aio.ServicerContext, max_in_flight: int) -> None:
        self._infer = infer
        self._context = context
        #: tracing and the access log see each streamed request as its own call (method "ModelStreamInfer")
        self._observers = infer.inference.observers if infer.inference.observers else None
        #: (message bytes, whether it is its request's last)
        self.out: deque[tuple[bytes, bool]] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.room = asyncio.Semaphore(max_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()

    async def read(self, requests: AsyncIterator[bytes]) -> None:
        try:
            async for data in requests:
                await self.room.acquire()
                self._start(data)
        finally:
            self.wake.set()

    def _start(self, data: bytes) -> None:
        started = time.perf_counter_ns()
        observers = self._observers
        record = None if observers is None else observers.begin("ModelStreamInfer", self._context, len(data))
        try:
            message, payloads, request, slot = self._infer.accept(data, self._context, record)
        except Exception as exc:
            model, request_id = _names(data)
            self._put_last(_error(exc, model, request_id), record, exc)
            return
        if slot.streams is not None:
            work = self._generate(message, payloads, request, slot, record)
        else:
            work = self._answer(message, payloads, request, slot, started, record)
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.wake.set()

    def put(self, data: bytes, final: bool) -> None:
        self.out.append((data, final))
        self.wake.set()

    def _put_last(self, data: bytes, record: CallRecord | None, exc: BaseException | None) -> None:
        """A request's last response, and the end of its call record (its outcome for the observers)."""
        self.put(data, True)
        if record is not None and self._observers is not None:
            record.bytes_out += len(data)
            self._observers.end(record, exc)

    def _abandoned(self, record: CallRecord | None, exc: BaseException) -> None:
        if record is not None and self._observers is not None:
            self._observers.end(record, exc)

    async def _answer(
        self,
        message: OipMessage,
        payloads: Any,
        request: InferRequest,
        slot: Slot,
        started: int,
        record: CallRecord | None,
    ) -> None:
        failure: BaseException | None = None
        try:
            data = _wrap(await self._infer.run(message, payloads, request, slot, started))
        except Exception as exc:
            failure = exc
            data = _error(exc, request.model, request.id)
        except BaseException as exc:  # the stream ended (client gone): the call ends with it
            self._abandoned(record, exc)
            raise
        self._put_last(data, record, failure)

    async def _generate(
        self, message: OipMessage, payloads: Any, request: InferRequest, slot: Slot, record: CallRecord | None
    ) -> None:
        """A decoupled model's answer: one response per part, the last with triton_final_response."""
        assert slot.streams is not None
        inference = self._infer.inference
        final_sent = False
        try:
            with CallOutcome(slot.stats, request.deadline), slot.busy():
                request, _ = await inference.inputs.decode(
                    message,  # type: ignore[arg-type]
                    request,
                    slot.validator,
                    payloads,
                    enforce_max_batch=False,
                )
                order = request.requested_outputs or slot.validator.output_names
                session = slot.streams.session(request.inputs, request.parameters, request.deadline)
                async with contextlib.aclosing(session) as parts:
                    async for part in parts:
                        while len(self.out) >= OUTPUT_HIGH_WATER:
                            self.drained.clear()
                            await self.drained.wait()
                        parameters = {**part.parameters, codec.FINAL_RESPONSE: bool(part.final)}
                        response = codec.encode_response(
                            request, slot.version, part.outputs, order, parameters=parameters
                        )
                        data = _wrap(inference.serialise(response))
                        final_sent = bool(part.final)
                        if final_sent:
                            self._put_last(data, record, None)
                        else:
                            self.put(data, False)
                            if record is not None:
                                record.bytes_out += len(data)
        except Exception as exc:
            self._put_last(_error(exc, request.model, request.id), record, exc)
            return
        except BaseException as exc:
            if not final_sent:
                self._abandoned(record, exc)
            raise
        if not final_sent:  # a generator that ended without marking its last part
            response = codec.encode_response(request, slot.version, {}, (), parameters={codec.FINAL_RESPONSE: True})
            self._put_last(_wrap(inference.serialise(response)), record, None)


class OipStreams:
    """The ModelStreamInfer handler (one per server)."""

    def __init__(self, infer: OipInference, max_in_flight: int | None = None) -> None:
        self._infer = infer
        self.max_in_flight = MAX_IN_FLIGHT if max_in_flight is None else max_in_flight

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        session = _Session(self._infer, context, self.max_in_flight)
        reader = asyncio.get_running_loop().create_task(session.read(requests))
        out = session.out
        try:
            while True:
                while out:
                    data, final = out.popleft()
                    if final:
                        session.room.release()
                    if len(out) < OUTPUT_HIGH_WATER:
                        session.drained.set()
                    yield data
                if reader.done() and not session.tasks and not out:
                    reader.result()  # a failed read (not the client's half-close) ends the call with its status
                    return
                session.wake.clear()
                await session.wake.wait()
        finally:
            reader.cancel()
            for task in list(session.tasks):
                task.cancel()
            await asyncio.gather(reader, *session.tasks, return_exceptions=True)
