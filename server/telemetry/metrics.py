"""The metrics inferd exports, as OpenTelemetry metric data built at collection time from the live counters.

Nothing here runs per request: the request path only bumps :class:`~server.telemetry.stats.VersionStats`
(integers and :class:`~server.telemetry.stats.Histogram` buckets), and a scrape (or an OTLP push) turns a
snapshot of them into OTel ``Metric`` objects that the SDK's exporters (Prometheus, OTLP) write out.

Label values only ever come from versions the server knows (their model and version, the states of a
version, the outputs of a model's signature) and from gRPC status names, so no client can create series:
a call naming an unknown model is counted in ``inferd_unrouted_requests_total{code}`` and nowhere else.

The names, labels and meanings are listed in docs/operations.md ("Observing inferd"); a unit test keeps
that table and :data:`METRICS` equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from server.core.types import SlotState
from server.telemetry.stats import Histogram as CountHistogram
from server.telemetry.stats import VersionStats

_CUMULATIVE = AggregationTemporality.CUMULATIVE
_STATES = tuple(SlotState)


class ObservedVersion(Protocol):
    """What the exporter reads of one model version (a :class:`~server.models.slot.Slot`)."""

    model: str
    version: int
    state: SlotState
    stats: VersionStats
    in_flight: int
    load_seconds: float

    @property
    def queued(self) -> int: ...

    @property
    def queue_capacity(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One exported metric: its OTel name and unit (the Prometheus name is ``prometheus``), kind, labels."""

    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    labels: tuple[str, ...]
    description: str

    @property
    def prometheus(self) -> str:
        """The name in Prometheus' exposition format, as the OTel Prometheus exporter writes it."""
        suffix = {"s": "_seconds", "By": "_bytes", "": ""}[self.unit]
        base = self.name + suffix
        return base + "_total" if self.kind == "counter" else base


_MV = ("model", "version")
#: a shadow version's comparisons, per primary version and output
_SHADOW = (*_MV, "primary_version", "output")


def _m(name: str, kind: str, unit: str, labels: tuple[str, ...], description: str) -> MetricInfo:
    return MetricInfo(name, kind, unit, labels, description)


#: Every metric built here, in exposition order.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        _m("inferd_requests", "counter", "", (*_MV, "code"), "Predict and PredictStream calls by gRPC status name"),
        _m(
            "inferd_unrouted_requests",
            "counter",
            "",
            ("code",),
            "calls that failed before reaching a model version (unknown model or version, malformed request)",
        ),
        _m("inferd_request_duration", "histogram", "s", _MV, "unary Predict calls, arrival to reply, any outcome"),
        _m("inferd_queue_duration", "histogram", "s", _MV, "time each request waited in the batch queue"),
        _m("inferd_compute_duration", "histogram", "s", _MV, "engine executions (one per batch)"),
        _m("inferd_batch_size", "histogram", "", _MV, "rows per engine execution"),
        _m("inferd_engine_executions", "counter", "", _MV, "engine executions (batches, lone requests, reruns)"),
        _m("inferd_batch_reruns", "counter", "", _MV, "members of failed batches rerun alone to find the bad one"),
        _m("inferd_requests_expired_before_run", "counter", "", _MV, "requests whose deadline passed before a run"),
        _m("inferd_requests_cancelled_before_run", "counter", "", _MV, "requests cancelled by their client first"),
        _m("inferd_queue_depth", "gauge", "", _MV, "requests waiting in the batch queue now"),
        _m("inferd_queue_capacity", "gauge", "", _MV, "requests the batch queue holds at most (max_queue_size)"),
        _m("inferd_in_flight_requests", "gauge", "", _MV, "requests and open streams being served now"),
        _m("inferd_model_version_state", "gauge", "", (*_MV, "state"), "1 for the version's current state, else 0"),
        _m("inferd_model_load_duration", "gauge", "s", _MV, "how long the version's load and warm-up took"),
        _m("inferd_model_load_failures", "counter", "", ("model",), "version loads that ended FAILED"),
        _m("inferd_shadow_comparisons", "counter", "", _SHADOW, "shadow outputs compared with the primary's"),
        _m("inferd_shadow_argmax_agreement_ratio", "gauge", "", _SHADOW, "rows whose argmax agrees (share)"),
        _m("inferd_shadow_mean_abs_diff", "gauge", "", _SHADOW, "mean absolute difference from the primary's"),
        _m("inferd_time_to_first_token", "histogram", "s", _MV, "stream opened to first token produced"),
        _m("inferd_inter_token_latency", "histogram", "s", _MV, "time between two tokens of one stream"),
        _m("inferd_generated_tokens", "counter", "", _MV, "tokens (or generator items) produced"),
        _m("inferd_prompt_tokens", "counter", "", _MV, "prompt tokens of generative streams"),
        _m("inferd_active_streams", "gauge", "", _MV, "streams generating now"),
        _m("inferd_waiting_streams", "gauge", "", _MV, "streams waiting for a place"),
        _m("inferd_kv_cache", "gauge", "By", _MV, "bytes held by generation caches"),
        _m("inferd_drift_psi", "gauge", "", (*_MV, "tensor", "feature"), "PSI of a live input feature vs reference"),
        _m("inferd_drifting", "gauge", "", _MV, "1 while any tracked feature's PSI is over its threshold"),
        _m("inferd_feedback_scored_rows", "counter", "", _MV, "prediction rows scored against Feedback's truth"),
        _m("inferd_feedback_correct_rows", "counter", "", _MV, "scored rows whose argmax was the true class"),
        _m("inferd_feedback_squared_error_sum", "counter", "", _MV, "sum of scored rows' mean squared error"),
        _m("inferd_feedback_unmatched", "counter", "", ("model", "reason"), "Feedback for unknown or expired ids"),
        _m("inferd_access_log_dropped_lines", "counter", "", (), "access-log lines lost (queue full, write error)"),
    )
}


class _Builder:
    """Data points per metric for one collection, all stamped with the same time."""

    def __init__(self) -> None:
        self.now = time.time_ns()
        self._points: dict[str, list[NumberDataPoint | HistogramDataPoint]] = {name: [] for name in METRICS}

    def number(self, name: str, labels: Mapping[str, str | int], value: float, start: int) -> None:
        self._points[name].append(NumberDataPoint(dict(labels), start, self.now, value))

    def histogram(self, name: str, labels: Mapping[str, str | int], h: CountHistogram, start: int, per: int) -> None:
        """``per``: units of the histogram's values in one exported unit (1e9 for ns → s; divided, so that a
        bound like 7.5 ms exports as 0.0075, not 0.007500000000000001)."""
        counts = list(h.counts)  # copied first: a consistent count even if a request lands meanwhile
        self._points[name].append(
            HistogramDataPoint(
                attributes=dict(labels),
                start_time_unix_nano=start,
                time_unix_nano=self.now,
                count=sum(counts),
                sum=h.sum / per,
                bucket_counts=counts,
                explicit_bounds=[b / per for b in h.bounds],
                min=h.min / per,
                max=h.max / per,
            )
        )

    def metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for name, info in METRICS.items():
            points = self._points[name]
            if not points:
                continue
            data: Sum | Gauge | Histogram
            if info.kind == "counter":
                data = Sum(points, _CUMULATIVE, True)  # type: ignore[arg-type]
            elif info.kind == "gauge":
                data = Gauge(points)  # type: ignore[arg-type]
            else:
                data = Histogram(points, _CUMULATIVE)  # type: ignore[arg-type]
            out.append(Metric(name, info.description, info.unit, data))
        return out


_NS = 1_000_000_000


def _version_points(b: _Builder, slot: ObservedVersion) -> None:
    stats = slot.stats
    start = stats.created_unix_ns
    labels = {"model": slot.model, "version": str(slot.version)}
    b.number("inferd_requests", {**labels, "code": "OK"}, stats.success, start)  # 0 from the start: rate() works
    for code, count in list(stats.failed.items()):
        b.number("inferd_requests", {**labels, "code": code}, count, start)
    b.histogram("inferd_request_duration", labels, stats.request_duration, start, _NS)
    b.histogram("inferd_queue_duration", labels, stats.queue_duration, start, _NS)
    b.histogram("inferd_compute_duration", labels, stats.compute_duration, start, _NS)
    b.histogram("inferd_batch_size", labels, stats.batch_rows, start, 1)
    b.number("inferd_engine_executions", labels, stats.batches, start)
    b.number("inferd_batch_reruns", labels, stats.batch_reruns, start)
    b.number("inferd_requests_expired_before_run", labels, stats.expired_before_run, start)
    b.number("inferd_requests_cancelled_before_run", labels, stats.cancelled_before_run, start)
    b.number("inferd_queue_depth", labels, slot.queued, start)
    if slot.queue_capacity:
        b.number("inferd_queue_capacity", labels, slot.queue_capacity, start)
    b.number("inferd_in_flight_requests", labels, slot.in_flight, start)
    for state in _STATES:
        b.number("inferd_model_version_state", {**labels, "state": state.value}, int(slot.state is state), start)
    if slot.load_seconds:
        b.number("inferd_model_load_duration", labels, slot.load_seconds, start)
    for (primary, output), agreement in list(stats.shadow.items()):
        shadow = {**labels, "primary_version": str(primary), "output": output}
        b.number("inferd_shadow_comparisons", shadow, agreement.compared, start)
        if agreement.rows:
            b.number(
                "inferd_shadow_argmax_agreement_ratio", shadow, agreement.argmax_agree_rows / agreement.rows, start
            )
        if agreement.elements:
            b.number("inferd_shadow_mean_abs_diff", shadow, agreement.mean_abs_diff, start)
    _drift_points(b, slot, labels, start)
    _feedback_points(b, slot, labels, start)
    streaming = stats.streaming
    if streaming.streams_started or streaming.waiting_streams:
        b.histogram("inferd_time_to_first_token", labels, streaming.tokens.time_to_first_token, start, _NS)
        b.histogram("inferd_inter_token_latency", labels, streaming.tokens.inter_token, start, _NS)
        b.number("inferd_generated_tokens", labels, streaming.generated_tokens, start)
        b.number("inferd_prompt_tokens", labels, streaming.prompt_tokens, start)
        b.number("inferd_active_streams", labels, streaming.active_streams, start)
        b.number("inferd_waiting_streams", labels, streaming.waiting_streams, start)
        b.number("inferd_kv_cache", labels, streaming.cache_bytes, start)


def _drift_points(b: _Builder, slot: ObservedVersion, labels: Mapping[str, str], start: int) -> None:
    """A version's drift monitor (server/quality/drift.py), read by duck type: telemetry sits below quality.
    ``feature`` is the column index of a 2-D input, or "all" for a whole tensor."""
    drift = getattr(slot, "drift", None)
    if drift is None or not drift.reference:
        return
    b.number("inferd_drifting", labels, int(drift.drifting), start)
    for state in list(drift.features):
        column = state.profile.column
        feature = {**labels, "tensor": state.profile.tensor, "feature": "all" if column < 0 else str(column)}
        b.number("inferd_drift_psi", feature, state.psi, start)


def _feedback_points(b: _Builder, slot: ObservedVersion, labels: Mapping[str, str], start: int) -> None:
    """A version's feedback scores (server/quality/feedback.py), read by duck type like drift."""
    scores = getattr(slot, "feedback", None)
    if scores is None:
        return
    b.number("inferd_feedback_scored_rows", labels, scores.scored, start)
    if scores.kind == "classification":
        b.number("inferd_feedback_correct_rows", labels, scores.correct, start)
    else:
        b.number("inferd_feedback_squared_error_sum", labels, scores.squared_error_sum, start)


class MetricsSource:
    """Builds the server's metrics from what it knows at the moment of a collection.

    ``versions`` lists every model version the registry holds (loading, serving, draining or failed);
    ``unrouted`` and ``load_failures`` are the servicer's and the manager's counters. Call :meth:`collect`
    on the event loop's thread (the exporter does, see setup.py), so the snapshot is consistent.
    """

    def __init__(
        self,
        versions: Callable[[], Iterable[ObservedVersion]],
        unrouted: Mapping[str, int],
        load_failures: Mapping[str, int],
        access_log_dropped: Callable[[], int] | None = None,
        feedback_unmatched: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._versions = versions
        self._unrouted = unrouted
        self._load_failures = load_failures
        self._access_log_dropped = access_log_dropped
        #: (model, reason) → Feedback calls whose id matched no live record (server/quality/feedback.py)
        self._feedback_unmatched = feedback_unmatched or {}
        self._started = time.time_ns()

    def collect(self) -> list[Metric]:
        b = _Builder()
        for slot in self._versions():
            _version_points(b, slot)
        for code, count in list(self._unrouted.items()):
            b.number("inferd_unrouted_requests", {"code": code}, count, self._started)
        for model, count in list(self._load_failures.items()):
            b.number("inferd_model_load_failures", {"model": model}, count, self._started)
        for (model, reason), count in list(self._feedback_unmatched.items()):
            b.number("inferd_feedback_unmatched", {"model": model, "reason": reason}, count, self._started)
        if self._access_log_dropped is not None:
            b.number("inferd_access_log_dropped_lines", {}, self._access_log_dropped(), self._started)
        return b.metrics()
