"""Protobuf views of the registry's state: ModelStatus, VersionStatus, VersionStatistics, and the
ModelMetadata and ModelStatistics answers built from them.

Shared by the inference and admin services so both describe models the same way.
"""

from __future__ import annotations

import dataclasses

from inferd.tensors import DTYPE_BY_NAME
from inferd.v1 import inference_pb2, model_config_pb2
from server.core.errors import NotFound, ServingError
from server.core.types import SlotState
from server.models.registry import ModelEntry, Registry
from server.models.slot import Slot
from server.quality.drift import DriftMonitor
from server.quality.feedback import FeedbackScores
from server.telemetry.stats import LATENCY_BOUNDS_US, StreamCounters

STATE_TO_PROTO = {
    SlotState.LOADING: inference_pb2.VERSION_STATE_LOADING,
    SlotState.WARMING: inference_pb2.VERSION_STATE_WARMING,
    SlotState.READY: inference_pb2.VERSION_STATE_READY,
    SlotState.DRAINING: inference_pb2.VERSION_STATE_DRAINING,
    SlotState.UNLOADED: inference_pb2.VERSION_STATE_UNLOADED,
    SlotState.FAILED: inference_pb2.VERSION_STATE_FAILED,
}

#: StreamStatistics' fields (the token-time histograms are exported as metrics only)
_STREAM_COUNTS = [f for f in dataclasses.fields(StreamCounters) if f.name != "tokens"]


def version_status(entry: ModelEntry, slot: Slot) -> inference_pb2.VersionStatus:
    return inference_pb2.VersionStatus(
        version=slot.version,
        state=STATE_TO_PROTO[slot.state],
        reason=slot.reason,
        engine=slot.backend,
        labels=entry.labels_of(slot.version),
        engine_notes=slot.engine_notes,
    )


def model_status(entry: ModelEntry) -> inference_pb2.ModelStatus:
    return inference_pb2.ModelStatus(
        name=entry.name,
        reason=entry.error or entry.note,
        versions=[version_status(entry, entry.slots[v]) for v in sorted(entry.slots)],
        traffic=[model_config_pb2.TrafficWeight(label=label, weight=weight) for label, weight in entry.traffic],
        shadow=model_config_pb2.ShadowPolicy(
            label=entry.shadow.label, version=entry.shadow.version, fraction=entry.shadow.fraction
        )
        if entry.shadow
        else None,
    )


def drift_statistics(drift: DriftMonitor | None) -> inference_pb2.DriftStatistics | None:
    if drift is None:
        return None
    return inference_pb2.DriftStatistics(
        drifting=drift.drifting,
        reference=drift.reference,
        window_rows=drift.window_rows,
        features=[
            inference_pb2.FeatureDrift(
                tensor=s.profile.tensor, column=s.profile.column, psi=s.psi, threshold=s.threshold, drifting=s.drifting
            )
            for s in drift.features
        ],
    )


def feedback_statistics(scores: FeedbackScores | None) -> inference_pb2.FeedbackStatistics | None:
    if scores is None:
        return None
    return inference_pb2.FeedbackStatistics(
        kind=scores.kind,
        scored=scores.scored,
        correct=scores.correct,
        log_loss_sum=scores.log_loss_sum,
        abs_error_sum=scores.abs_error_sum,
        squared_error_sum=scores.squared_error_sum,
        squared_error_sq_sum=scores.squared_error_sq_sum,
    )


def version_statistics(slot: Slot) -> inference_pb2.VersionStatistics:
    stats = slot.stats
    return inference_pb2.VersionStatistics(
        name=slot.model,
        version=slot.version,
        success_count=stats.success,
        failure_count=dict(stats.failed),
        inference_count=stats.rows,
        execution_count=stats.batches,
        batch_sizes=[
            inference_pb2.BatchSizeCount(batch_size=size, count=count)
            for size, count in sorted(stats.batch_sizes.items())
        ],
        queue_time_ns=stats.queue_ns,
        compute_time_ns=stats.compute_ns,
        expired_before_run=stats.expired_before_run,
        cancelled_before_run=stats.cancelled_before_run,
        queue_depth=slot.batcher.queued if slot.batcher else 0,
        warmup_count=stats.warmup_count,
        latency_buckets=[
            inference_pb2.LatencyBucket(le_microseconds=bound, count=count)
            for bound, count in zip(LATENCY_BOUNDS_US, stats.latency_counts, strict=True)
        ],
        streaming=inference_pb2.StreamStatistics(**{f.name: getattr(stats.streaming, f.name) for f in _STREAM_COUNTS}),
        engine=slot.backend,
        drift=drift_statistics(slot.drift),
        feedback=feedback_statistics(slot.feedback),
        shadow=[
            inference_pb2.ShadowComparison(
                primary_version=primary,
                output=output,
                compared=a.compared,
                max_abs_diff=a.max_abs_diff,
                mean_abs_diff=a.mean_abs_diff,
                argmax_agree_rows=a.argmax_agree_rows,
                rows=a.rows,
                errors=a.errors,
                dropped=a.dropped,
            )
            for (primary, output), a in sorted(stats.shadow.items())
        ],
    )


def model_metadata(
    registry: Registry, request: inference_pb2.ModelMetadataRequest
) -> inference_pb2.ModelMetadataResponse:
    """ModelMetadata: a model's versions, and the signature and config of the one asked for (or routed to
    by label, or the default); NOT_FOUND naming the model and the versions it has."""
    entry = registry.entry(request.name)
    if request.version and request.version not in entry.slots:
        have = ", ".join(str(v) for v in sorted(entry.slots)) or "none"
        raise NotFound(f"model '{request.name}' version {request.version} not found (versions: {have})")
    response = inference_pb2.ModelMetadataResponse(
        name=entry.name, versions=[version_status(entry, entry.slots[v]) for v in sorted(entry.slots)]
    )
    if entry.spec is None:
        return response
    spec = entry.spec
    slot: Slot | None
    if request.version:
        slot = entry.slots[request.version]
    else:
        try:
            slot = registry.route(entry.name, None, request.version_label or None, split=False)
        except ServingError:
            slot = None  # no READY version: describe the config alone
    response.version = slot.version if slot else 0
    response.engine = slot.backend if slot else ""
    response.streaming_only = slot is not None and slot.streaming_only
    response.max_batch_size = spec.max_batch_size
    response.config.CopyFrom(spec.proto)
    for sig in spec.signature.inputs:
        response.inputs.add(name=sig.name, data_type=DTYPE_BY_NAME[sig.dtype], shape=sig.dims)
    for sig in spec.signature.outputs:
        response.outputs.add(name=sig.name, data_type=DTYPE_BY_NAME[sig.dtype], shape=sig.dims)
    return response


def model_statistics(
    registry: Registry, request: inference_pb2.ModelStatisticsRequest
) -> inference_pb2.ModelStatisticsResponse:
    """ModelStatistics: every version of one model (or of all), or the one version asked for."""
    entries = [registry.entry(request.name)] if request.name else registry.models()
    response = inference_pb2.ModelStatisticsResponse()
    for entry in entries:
        if request.version and request.version not in entry.slots:
            raise NotFound(f"model '{entry.name}' version {request.version} not found")
        for version, slot in sorted(entry.slots.items()):
            if request.version and version != request.version:
                continue
            response.statistics.append(version_statistics(slot))
    return response
