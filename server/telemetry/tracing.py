"""Spans for sampled Predict/PredictStream calls, exported over OTLP/gRPC: a :class:`CallObserver`.

Per sampled call: a SERVER span continuing the caller's W3C trace (``traceparent``/``tracestate`` from the
gRPC metadata; ``baggage`` entries become ``baggage.*`` attributes) with ``queue`` (enqueue → engine
start) and ``compute`` (the engine execution) children. Per engine execution that served at least one
sampled call: one ``batch`` span, the root of its own trace, *linked* to each sampled member's server span
(and each member's ``compute`` span links back to it). A batch serves many traces at once, so it belongs
to none of them: links, as OpenTelemetry models batch processing, rather than a parent chosen at random.

Unsampled calls build nothing: :class:`~server.telemetry.trace_context.SamplingDecider` decides from the
raw metadata, and ``record.trace`` stays None, so ``batch`` and ``end`` return at once.

Spans are built with the SDK (its own provider, never the global one: tests run many servers in one
process) whose sampler is always-on, since the decision has been made; a root span takes the trace id the
decision drew (:class:`_DrawnIds`), so a ratio sampler downstream agrees with ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.telemetry.calls import BatchInfo, CallRecord
from server.telemetry.trace_context import PAIRS_GETTER, SamplingDecider
from server.telemetry.tracing_options import TracingConfigError, TracingOptions

__all__ = ["Tracing", "TracingConfigError", "TracingOptions"]

log = logging.getLogger("inferd.telemetry")

SERVICE = "inferd.v1.InferenceService"
#: gRPC status names → codes, for ``rpc.grpc.status_code``
_STATUS_CODES = {code.name: code.value[0] for code in grpc.StatusCode}


class _DrawnIds(RandomIdGenerator):
    """Random ids, except that the next root span takes the trace id the sampling decision drew."""

    def __init__(self) -> None:
        self.drawn = 0

    def generate_trace_id(self) -> int:
        drawn, self.drawn = self.drawn, 0
        return drawn or super().generate_trace_id()


@dataclass(slots=True, eq=False)
class _Traced:
    """A sampled call's tracing state (``record.trace``)."""

    span: trace.Span
    #: the span context of the ``batch`` span of its engine execution, once there was one
    batch: trace.SpanContext | None = None


def _exporters(options: TracingOptions) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    if "otlp" in options.exporters:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(
            OTLPSpanExporter(
                endpoint=options.endpoint,
                insecure=options.plaintext,
                headers=options.headers or None,
                timeout=options.timeout_s,
                compression=grpc.Compression.Gzip if options.compression == "gzip" else grpc.Compression.NoCompression,
            )
        )
    if "console" in options.exporters:
        exporters.append(ConsoleSpanExporter())
    return exporters


def _peer_attributes(peer: str) -> dict[str, Any]:
    """``ipv4:10.0.0.1:5000`` / ``ipv6:[::1]:5000`` → network.peer.address and .port."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {"network.peer.address": peer} if peer else {}
    host, _, port = address.rpartition(":")
    attributes: dict[str, Any] = {"network.peer.address": host.strip("[]")}
    if port.isdigit():
        attributes["network.peer.port"] = int(port)
    return attributes


class Tracing:
    """The tracing :class:`~server.telemetry.calls.CallObserver`; ``close()`` flushes and stops the export."""

    def __init__(self, options: TracingOptions, resource: Resource) -> None:
        self.options = options
        self._decider = SamplingDecider(options.sampler, options.sampler_arg)
        self._ids = _DrawnIds()
        self._provider = TracerProvider(
            sampler=ALWAYS_ON, resource=resource, id_generator=self._ids, shutdown_on_exit=False
        )
        for exporter in _exporters(options):
            self._provider.add_span_processor(
                BatchSpanProcessor(
                    exporter,
                    max_queue_size=options.max_queue_size,
                    schedule_delay_millis=options.schedule_delay_ms,
                    max_export_batch_size=options.max_export_batch_size,
                    export_timeout_millis=options.timeout_s * 1000,
                )
            )
        self._tracer = self._provider.get_tracer("inferd")
        self._propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

    def begin(self, record: CallRecord) -> bool:
        """Start the server span of a sampled call; an unsampled one needs no record at all (False)."""
        drawn = self._decider.decide(record.metadata)
        if drawn is None:
            return False  # not sampled: nothing is built
        parent = self._propagator.extract(record.metadata, Context(), PAIRS_GETTER)
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": record.method}
        attributes.update(_peer_attributes(record.peer))
        for key, value in baggage.get_all(parent).items():
            attributes[f"baggage.{key}"] = str(value)
        self._ids.drawn = drawn
        span = self._tracer.start_span(
            f"{SERVICE}/{record.method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=record.started_unix_ns,
        )
        self._ids.drawn = 0
        record.trace = _Traced(span)
        return True

    def batch(self, batch: BatchInfo) -> None:
        traced = [member.trace for member in batch.members if member.trace is not None]
        if not traced:
            return
        first = batch.members[0]
        span = self._tracer.start_span(
            "batch",
            context=Context(),  # a root: the batch belongs to every linked trace, not to one
            kind=SpanKind.INTERNAL,
            links=[Link(state.span.get_span_context()) for state in traced],
            attributes={
                "inferd.batch_id": batch.id,
                "inferd.batch_rows": batch.rows,
                "inferd.batch_requests": len(batch.members),
                "inferd.model": first.model,
                "inferd.version": first.version,
            },
            start_time=batch.started_unix_ns,
        )
        span.end(batch.ended_unix_ns)
        context = span.get_span_context()
        for state in traced:
            state.batch = context

    def end(self, record: CallRecord) -> None:
        state: _Traced | None = record.trace
        if state is None:
            return
        span = state.span
        if record.model:
            span.set_attribute("inferd.model", record.model)
        if record.version:
            span.set_attribute("inferd.version", record.version)
        if record.request_id:
            span.set_attribute("inferd.request_id", record.request_id)
        span.set_attribute("rpc.grpc.status_code", _STATUS_CODES.get(record.code, 2))
        if record.code != "OK":
            span.set_status(Status(StatusCode.ERROR, f"{record.code}: {record.message}"))
        batch = record.batch
        if batch is not None:
            span.set_attribute("inferd.batch_id", batch.id)
            self._children(span, record, batch, state.batch)
        span.end(record.started_unix_ns + record.duration_ns)

    def _children(
        self, span: trace.Span, record: CallRecord, batch: BatchInfo, batch_span: trace.SpanContext | None
    ) -> None:
        parent = trace.set_span_in_context(span, Context())
        queue = self._tracer.start_span("queue", context=parent, start_time=batch.started_unix_ns - record.queue_ns)
        queue.end(batch.started_unix_ns)
        compute = self._tracer.start_span(
            "compute",
            context=parent,
            links=[Link(batch_span)] if batch_span is not None else None,
            attributes={"inferd.batch_id": batch.id, "inferd.batch_rows": batch.rows},
            start_time=batch.started_unix_ns,
        )
        compute.end(batch.ended_unix_ns)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export every ended span now (tests; shutdown does it too)."""
        return self._provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        """Flush what is queued and stop the exporter (its own thread; called off the event loop)."""
        self._provider.force_flush(int(self.options.timeout_s * 1000))
        self._provider.shutdown()
