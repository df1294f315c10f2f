"""One ModelStatistics reply summed over the worker processes of ``inferd serve --workers N``.

Each worker counts only the calls it served, so the supervisor asks every worker and combines the
replies here, field by field, by the field's meaning. The walk is generic — a numeric field nobody
classified is summed, a nested message is walked, a map sums per key — so a counter added to the proto
later is summed without touching this module. What is *not* a plain sum (keys, maxima, means, flags,
strings, gauges with a non-additive meaning) is spelled out in :data:`RULES`; every field of every
message reachable from ``VersionStatistics`` must appear there (tests/unit/test_workers_aggregate_stats.py
fails when a new one does not), so each new field gets a deliberate decision. The OIP reply (Triton's
format) is summed the same way by :func:`sum_oip_statistics`, with :data:`OIP_RULES`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from inferd.oip.v2 import grpc_service_pb2 as oip
from inferd.v1 import inference_pb2

#: protobuf's descriptor classes (pure-Python or upb: typed loosely, as the stubs type them as a union)
Descriptor = Any
Field = Any


class Rule(enum.Enum):
    """How one field of several workers' replies becomes one value."""

    #: identifies the element (name and version; a histogram bucket's bound): equal by construction
    KEY = "key"
    #: a counter, a sum of times or values, or a gauge that means "now, in all processes together"
    SUM = "sum"
    #: the largest value any worker saw (a maximum, a worst case)
    MAX = "max"
    #: true when any worker says so (drifting)
    ANY = "any"
    #: strings that should agree: kept when they do, else the sorted distinct non-empty values joined by ","
    AGREE = "agree"
    #: a nested message: walked with its own rules
    MESSAGE = "message"
    #: repeated messages matched by their KEY fields; matched elements are merged, others appended
    KEYED = "keyed"
    #: histogram buckets: the layout (bounds, in order) must be the same in every reply; counts add
    BUCKETS = "buckets"
    #: a mean weighted by the message's ``rows`` (see :data:`MEAN_WEIGHT`)
    MEAN = "mean"


_VS = "inferd.v1.VersionStatistics"

#: every field of every message reachable from VersionStatistics, classified (the unit test checks it)
RULES: dict[str, dict[str, Rule]] = {
    _VS: {
        "name": Rule.KEY,
        "version": Rule.KEY,
        "success_count": Rule.SUM,
        "failure_count": Rule.SUM,  # map: per status name
        "inference_count": Rule.SUM,
        "execution_count": Rule.SUM,
        "batch_sizes": Rule.KEYED,
        "queue_time_ns": Rule.SUM,
        "compute_time_ns": Rule.SUM,
        "expired_before_run": Rule.SUM,
        "cancelled_before_run": Rule.SUM,
        "queue_depth": Rule.SUM,  # a gauge, "waiting now": the processes' queues together
        "shadow": Rule.KEYED,
        "warmup_count": Rule.SUM,
        "streaming": Rule.MESSAGE,
        "engine": Rule.AGREE,
        "latency_buckets": Rule.BUCKETS,
        "drift": Rule.MESSAGE,
        "feedback": Rule.MESSAGE,
    },
    "inferd.v1.BatchSizeCount": {"batch_size": Rule.KEY, "count": Rule.SUM},
    "inferd.v1.LatencyBucket": {"le_microseconds": Rule.KEY, "count": Rule.SUM},
    "inferd.v1.ShadowComparison": {
        "primary_version": Rule.KEY,
        "output": Rule.KEY,
        "compared": Rule.SUM,
        "max_abs_diff": Rule.MAX,
        # the exact weight (compared elements) is not in the reply; rows is proportional to it for a fixed
        # output shape per row, which is what a shadow compares
        "mean_abs_diff": Rule.MEAN,
        "argmax_agree_rows": Rule.SUM,
        "rows": Rule.SUM,
        "errors": Rule.SUM,
        "dropped": Rule.SUM,
    },
    "inferd.v1.StreamStatistics": {
        # gauges ("now"): the processes' streams together
        "active_streams": Rule.SUM,
        "waiting_streams": Rule.SUM,
        "paused_streams": Rule.SUM,
        "cache_bytes": Rule.SUM,
        "buffered_outputs": Rule.SUM,
        # counters
        "streams_started": Rule.SUM,
        "streams_completed": Rule.SUM,
        "streams_cancelled": Rule.SUM,
        "streams_expired": Rule.SUM,
        "streams_rejected": Rule.SUM,
        "streams_failed": Rule.SUM,
        "steps": Rule.SUM,
        "step_streams": Rule.SUM,
        "prompt_tokens": Rule.SUM,
        "generated_tokens": Rule.SUM,
        "caches_freed": Rule.SUM,
        # "the most one stream ever held": a maximum, not a count
        "max_buffered_outputs": Rule.MAX,
    },
    "inferd.v1.DriftStatistics": {
        "drifting": Rule.ANY,  # the worst: drifting if any worker's window drifts
        "reference": Rule.AGREE,
        "window_rows": Rule.SUM,
        "features": Rule.KEYED,
    },
    "inferd.v1.FeatureDrift": {
        "tensor": Rule.KEY,
        "column": Rule.KEY,
        "psi": Rule.MAX,  # the worst window
        "threshold": Rule.MAX,  # the same config everywhere; MAX only settles a reload caught mid-way
        "drifting": Rule.ANY,
    },
    "inferd.v1.FeedbackStatistics": {
        "kind": Rule.AGREE,
        "scored": Rule.SUM,
        "correct": Rule.SUM,
        "log_loss_sum": Rule.SUM,
        "abs_error_sum": Rule.SUM,
        "squared_error_sum": Rule.SUM,
        "squared_error_sq_sum": Rule.SUM,
    },
}

_DURATION = {"count": Rule.SUM, "ns": Rule.SUM}
_OIP = "inference."
#: the Open Inference Protocol's ModelStatistics (Triton's format; server/api/oip/statistics.py): all counts
#: and summed durations except the keys and the time of the last inference
OIP_RULES: dict[str, dict[str, Rule]] = {
    _OIP + "ModelStatistics": {
        "name": Rule.KEY,
        "version": Rule.KEY,
        "last_inference": Rule.MAX,  # milliseconds since the epoch: the latest of any worker
        "inference_count": Rule.SUM,
        "execution_count": Rule.SUM,
        "inference_stats": Rule.MESSAGE,
        "batch_stats": Rule.KEYED,
        "memory_usage": Rule.KEYED,
        "response_stats": Rule.SUM,  # map: per key, each value walked
    },
    _OIP + "InferStatistics": {
        name: Rule.MESSAGE
        for name in (
            "success",
            "fail",
            "queue",
            "compute_input",
            "compute_infer",
            "compute_output",
            "cache_hit",
            "cache_miss",
        )
    },
    _OIP + "StatisticDuration": _DURATION,
    _OIP + "InferBatchStatistics": {
        "batch_size": Rule.KEY,
        "compute_input": Rule.MESSAGE,
        "compute_infer": Rule.MESSAGE,
        "compute_output": Rule.MESSAGE,
    },
    # each process holds its own copy of a model: memory adds
    _OIP + "MemoryUsage": {"type": Rule.KEY, "id": Rule.KEY, "byte_size": Rule.SUM},
    _OIP + "InferResponseStatistics": {
        name: Rule.MESSAGE
        for name in ("compute_infer", "compute_output", "success", "fail", "empty_response", "cancel")
    },
}
RULES.update(OIP_RULES)

#: the field a MEAN field is weighted by, per message
MEAN_WEIGHT = {"inferd.v1.ShadowComparison": "rows"}

_NUMBERS = {
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_FLOAT,
}


class BucketLayoutError(ValueError):
    """Two workers' latency histograms have different bucket bounds (they run different builds)."""


def _merge_by_version(entries: Iterable[Any]) -> list[Any]:
    """Entries (VersionStatistics or OIP ModelStatistics) merged per (name, version), sorted."""
    merged: dict[tuple[str, Any], Any] = {}
    for stats in entries:
        key = (stats.name, stats.version)
        if key in merged:
            merge_into(merged[key], stats)
        else:
            merged[key] = _copy(stats)
    return [merged[k] for k in sorted(merged)]


def sum_statistics(
    replies: Sequence[inference_pb2.ModelStatisticsResponse],
) -> inference_pb2.ModelStatisticsResponse:
    """One VersionStatistics per (name, version) present in any reply, sorted by name then version."""
    entries = (stats for reply in replies for stats in reply.statistics)
    return inference_pb2.ModelStatisticsResponse(statistics=_merge_by_version(entries))


def sum_oip_statistics(replies: Sequence[Any]) -> Any:
    """The same for OIP ``inference.ModelStatisticsResponse`` replies (one ModelStatistics per name, version)."""
    return oip.ModelStatisticsResponse(model_stats=_merge_by_version(s for r in replies for s in r.model_stats))


def rule_for(descriptor: Descriptor, field: Field) -> Rule:
    """The table's rule, or the default for the field's type (a number adds; see the module docstring)."""
    table = RULES.get(descriptor.full_name, {})
    if field.name in table:
        return table[field.name]
    if field.message_type is not None and not _is_map(field):
        return Rule.KEYED if field.is_repeated else Rule.MESSAGE
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return Rule.ANY
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return Rule.AGREE
    return Rule.SUM  # numbers, maps of numbers, enums (kept when equal; see _combine_scalar)


def merge_into(target: Message, source: Message) -> None:
    """Fold ``source`` (one worker's message) into ``target`` (the sum so far), field by field."""
    descriptor = target.DESCRIPTOR
    # weighted means first: they read both sides' weights before SUM adds them
    means = {
        field.name: _weighted_mean(target, source, descriptor, field)
        for field in descriptor.fields
        if rule_for(descriptor, field) is Rule.MEAN
    }
    for field in descriptor.fields:
        rule = rule_for(descriptor, field)
        name = field.name
        if rule is Rule.KEY or rule is Rule.MEAN:
            continue
        if _is_map(field):
            _merge_map(getattr(target, name), getattr(source, name), field)
        elif rule is Rule.MESSAGE:
            if source.HasField(name):
                if target.HasField(name):
                    merge_into(getattr(target, name), getattr(source, name))
                else:
                    getattr(target, name).CopyFrom(getattr(source, name))
        elif rule is Rule.KEYED:
            _merge_keyed(getattr(target, name), getattr(source, name))
        elif rule is Rule.BUCKETS:
            _merge_buckets(getattr(target, name), getattr(source, name), f"{descriptor.name}.{name}")
        elif field.is_repeated:  # a repeated scalar nobody classified: keep each distinct value once
            values = getattr(target, name)
            values.extend(v for v in getattr(source, name) if v not in values)
        else:
            setattr(target, name, _combine_scalar(rule, field, getattr(target, name), getattr(source, name)))
    for name, value in means.items():
        setattr(target, name, value)


def _combine_scalar(rule: Rule, field: Field, mine: Any, theirs: Any) -> Any:
    if rule is Rule.MAX:
        return max(mine, theirs)
    if rule is Rule.ANY:
        return bool(mine or theirs)
    if rule is Rule.AGREE:
        return _agree([mine, theirs])
    if field.cpp_type in _NUMBERS:
        return mine + theirs
    return mine or theirs  # an enum: the first worker's unless it says nothing


def _agree(values: Iterable[str]) -> str:
    """ "a" + "a" → "a"; "b" + "a,c" → "a,b,c"; "" + "a" → "a" (a worker still collecting says nothing)."""
    distinct = {part for value in values for part in value.split(",") if part}
    return ",".join(sorted(distinct))


def _weighted_mean(target: Message, source: Message, descriptor: Descriptor, field: Field) -> float:
    weight = MEAN_WEIGHT[descriptor.full_name]
    w_target, w_source = getattr(target, weight), getattr(source, weight)
    m_target, m_source = getattr(target, field.name), getattr(source, field.name)
    if w_target + w_source == 0:
        return float(max(m_target, m_source))
    return float((m_target * w_target + m_source * w_source) / (w_target + w_source))


def _key(message: Message) -> tuple[Any, ...]:
    descriptor = message.DESCRIPTOR
    table = RULES.get(descriptor.full_name, {})
    return tuple(getattr(message, f.name) for f in descriptor.fields if table.get(f.name) is Rule.KEY)


def _merge_keyed(target: Any, source: Any) -> None:
    """Repeated messages matched by their KEY fields (none declared: every element is its own)."""
    index = {_key(element): element for element in target}
    for element in source:
        key = _key(element)
        if key and key in index:
            merge_into(index[key], element)
        else:
            added = target.add()
            added.CopyFrom(element)
            index[key] = added
    if target and all(_key(e) for e in target):
        ordered = sorted((_copy(e) for e in target), key=_key)
        del target[:]
        target.extend(ordered)


def _merge_buckets(target: Any, source: Any, where: str) -> None:
    if not source:
        return
    if not target:
        target.extend(_copy(b) for b in source)
        return
    mine, theirs = [_key(b) for b in target], [_key(b) for b in source]
    if mine != theirs:
        raise BucketLayoutError(f"{where}: the workers' bucket bounds differ ({len(mine)} vs {len(theirs)} buckets)")
    for bucket, other in zip(target, source, strict=True):
        merge_into(bucket, other)


def _merge_map(target: Any, source: Any, field: Field) -> None:
    value_field = field.message_type.fields_by_name["value"]
    for key, value in source.items():
        if value_field.message_type is not None:
            if key in target:
                merge_into(target[key], value)
            else:
                target[key].CopyFrom(value)
        elif key in target:
            target[key] = _combine_scalar(Rule.SUM, value_field, target[key], value)
        else:
            target[key] = value


def _is_map(field: Field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _copy(message: Any) -> Any:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
