"""sum_statistics: several workers' ModelStatistics replies → one, each field combined by its meaning."""

from __future__ import annotations

import pytest

from inferd.oip.v2 import grpc_service_pb2 as oip
from inferd.v1 import inference_pb2 as pb
from server.telemetry.stats import LATENCY_BOUNDS_US
from server.workers.aggregate_stats import RULES, BucketLayoutError, Rule, sum_oip_statistics, sum_statistics


def _buckets(*counts: int) -> list[pb.LatencyBucket]:
    padded = list(counts) + [0] * (len(LATENCY_BOUNDS_US) - len(counts))
    return [pb.LatencyBucket(le_microseconds=b, count=c) for b, c in zip(LATENCY_BOUNDS_US, padded, strict=True)]


def _worker_a() -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(
        statistics=[
            pb.VersionStatistics(
                name="m",
                version=1,
                success_count=10,
                failure_count={"DEADLINE_EXCEEDED": 2, "INVALID_ARGUMENT": 1},
                inference_count=40,
                execution_count=8,
                batch_sizes=[pb.BatchSizeCount(batch_size=4, count=6), pb.BatchSizeCount(batch_size=8, count=2)],
                queue_time_ns=1000,
                compute_time_ns=5000,
                expired_before_run=1,
                cancelled_before_run=2,
                queue_depth=3,
                warmup_count=1,
                engine="onnxruntime",
                latency_buckets=_buckets(1, 2, 3),
                shadow=[
                    pb.ShadowComparison(
                        primary_version=1,
                        output="y",
                        compared=4,
                        max_abs_diff=0.5,
                        mean_abs_diff=0.1,
                        argmax_agree_rows=3,
                        rows=4,
                        errors=1,
                        dropped=0,
                    )
                ],
                streaming=pb.StreamStatistics(
                    active_streams=2, streams_started=5, generated_tokens=100, max_buffered_outputs=7, cache_bytes=64
                ),
                drift=pb.DriftStatistics(
                    drifting=False,
                    reference="file",
                    window_rows=100,
                    features=[
                        pb.FeatureDrift(tensor="x", column=0, psi=0.05, threshold=0.2, drifting=False),
                        pb.FeatureDrift(tensor="x", column=1, psi=0.30, threshold=0.2, drifting=True),
                    ],
                ),
                feedback=pb.FeedbackStatistics(kind="classification", scored=10, correct=7, log_loss_sum=2.5),
            ),
            pb.VersionStatistics(name="only_a", version=2, success_count=5, engine="python"),
        ]
    )


def _worker_b() -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(
        statistics=[
            pb.VersionStatistics(name="only_b", version=1, success_count=1, engine="python"),
            pb.VersionStatistics(
                name="m",
                version=1,
                success_count=20,
                failure_count={"DEADLINE_EXCEEDED": 3, "UNAVAILABLE": 4},
                inference_count=60,
                execution_count=12,
                batch_sizes=[pb.BatchSizeCount(batch_size=1, count=2), pb.BatchSizeCount(batch_size=4, count=10)],
                queue_time_ns=2000,
                compute_time_ns=7000,
                expired_before_run=3,
                cancelled_before_run=0,
                queue_depth=4,
                warmup_count=1,
                engine="onnxruntime",
                latency_buckets=_buckets(0, 5, 0, 1),
                shadow=[
                    pb.ShadowComparison(
                        primary_version=1,
                        output="y",
                        compared=6,
                        max_abs_diff=0.25,
                        mean_abs_diff=0.2,
                        argmax_agree_rows=6,
                        rows=12,
                        errors=0,
                        dropped=2,
                    ),
                    pb.ShadowComparison(primary_version=1, output="z", compared=1, rows=1, mean_abs_diff=0.4),
                ],
                streaming=pb.StreamStatistics(
                    active_streams=1, streams_started=3, generated_tokens=50, max_buffered_outputs=4, cache_bytes=32
                ),
                drift=pb.DriftStatistics(
                    drifting=True,
                    reference="file",
                    window_rows=50,
                    features=[
                        pb.FeatureDrift(tensor="x", column=0, psi=0.25, threshold=0.2, drifting=True),
                        pb.FeatureDrift(tensor="x", column=1, psi=0.10, threshold=0.2, drifting=False),
                    ],
                ),
                feedback=pb.FeedbackStatistics(kind="classification", scored=5, correct=5, log_loss_sum=0.5),
            ),
        ]
    )


def _summed() -> dict[tuple[str, int], pb.VersionStatistics]:
    reply = sum_statistics([_worker_a(), _worker_b()])
    return {(s.name, s.version): s for s in reply.statistics}


def test_one_entry_per_version_present_in_any_reply_sorted() -> None:
    reply = sum_statistics([_worker_a(), _worker_b()])
    assert [(s.name, s.version) for s in reply.statistics] == [("m", 1), ("only_a", 2), ("only_b", 1)]
    assert reply.statistics[1].success_count == 5 and reply.statistics[2].success_count == 1


def test_counters_times_and_the_queue_gauge_add() -> None:
    m = _summed()[("m", 1)]
    assert (m.success_count, m.inference_count, m.execution_count) == (30, 100, 20)
    assert (m.queue_time_ns, m.compute_time_ns) == (3000, 12000)
    assert (m.expired_before_run, m.cancelled_before_run, m.warmup_count) == (4, 2, 2)
    assert m.queue_depth == 7  # waiting now in both processes
    assert dict(m.failure_count) == {"DEADLINE_EXCEEDED": 5, "INVALID_ARGUMENT": 1, "UNAVAILABLE": 4}
    assert [(b.batch_size, b.count) for b in m.batch_sizes] == [(1, 2), (4, 16), (8, 2)]
    assert [b.count for b in m.latency_buckets][:4] == [1, 7, 3, 1]
    assert [b.le_microseconds for b in m.latency_buckets] == list(LATENCY_BOUNDS_US)
    assert m.engine == "onnxruntime"


def test_streaming_counters_and_gauges_add_but_the_largest_buffer_is_a_max() -> None:
    s = _summed()[("m", 1)].streaming
    assert (s.active_streams, s.streams_started, s.generated_tokens, s.cache_bytes) == (3, 8, 150, 96)
    assert s.max_buffered_outputs == 7


def test_shadow_comparisons_add_per_output_with_the_worst_max_and_a_row_weighted_mean() -> None:
    shadow = {c.output: c for c in _summed()[("m", 1)].shadow}
    y = shadow["y"]
    assert (y.compared, y.argmax_agree_rows, y.rows, y.errors, y.dropped) == (10, 9, 16, 1, 2)
    assert y.max_abs_diff == 0.5
    assert y.mean_abs_diff == pytest.approx((0.1 * 4 + 0.2 * 12) / 16)
    assert shadow["z"].compared == 1 and shadow["z"].mean_abs_diff == pytest.approx(0.4)


def test_drift_keeps_the_worst_and_adds_the_windows() -> None:
    d = _summed()[("m", 1)].drift
    assert d.drifting and d.reference == "file" and d.window_rows == 150
    features = {(f.tensor, f.column): f for f in d.features}
    assert features[("x", 0)].psi == pytest.approx(0.25) and features[("x", 0)].drifting
    assert features[("x", 1)].psi == pytest.approx(0.30) and features[("x", 1)].drifting
    assert features[("x", 0)].threshold == pytest.approx(0.2)


def test_feedback_sums_add_and_the_kind_is_kept() -> None:
    f = _summed()[("m", 1)].feedback
    assert (f.kind, f.scored, f.correct) == ("classification", 15, 12)
    assert f.log_loss_sum == pytest.approx(3.0)


def test_optional_sections_stay_absent_when_no_worker_has_them() -> None:
    only = _summed()[("only_a", 2)]
    assert not only.HasField("drift") and not only.HasField("feedback")


def test_different_engines_are_listed_sorted_and_an_empty_string_says_nothing() -> None:
    replies = [
        pb.ModelStatisticsResponse(statistics=[pb.VersionStatistics(name="m", version=1, engine=e)])
        for e in ("tensorrt", "onnxruntime", "tensorrt", "")
    ]
    assert sum_statistics(replies).statistics[0].engine == "onnxruntime,tensorrt"


def test_a_single_reply_is_returned_unchanged_and_none_gives_an_empty_reply() -> None:
    assert sum_statistics([_worker_a()]).statistics[0] == _worker_a().statistics[0]
    assert list(sum_statistics([]).statistics) == []


def test_different_latency_bucket_layouts_are_refused() -> None:
    other = _worker_b()
    del other.statistics[1].latency_buckets[-1]
    with pytest.raises(BucketLayoutError, match="bucket bounds differ"):
        sum_statistics([_worker_a(), other])


def test_a_numeric_field_missing_from_the_table_is_summed_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RULES["inferd.v1.VersionStatistics"], "success_count")
    monkeypatch.delitem(RULES["inferd.v1.StreamStatistics"], "steps")
    a, b = _worker_a(), _worker_b()
    a.statistics[0].streaming.steps, b.statistics[1].streaming.steps = 2, 3
    m = {(s.name, s.version): s for s in sum_statistics([a, b]).statistics}[("m", 1)]
    assert m.success_count == 30 and m.streaming.steps == 5


def _reachable(descriptor: object, seen: dict[str, object]) -> dict[str, object]:
    name = descriptor.full_name  # type: ignore[attr-defined]
    if name in seen:
        return seen
    seen[name] = descriptor
    for field in descriptor.fields:  # type: ignore[attr-defined]
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:  # the map field is classified; walk its values
            sub = sub.fields_by_name["value"].message_type
        if sub is not None:
            _reachable(sub, seen)
    return seen


def _unclassified(root: object) -> list[str]:
    return [
        f"{name}.{field.name}"
        for name, descriptor in _reachable(root, {}).items()
        for field in descriptor.fields  # type: ignore[attr-defined]
        if field.name not in RULES.get(name, {})
    ]


def test_every_field_reachable_from_version_statistics_is_classified() -> None:
    """A new field in the proto fails here until RULES says how workers' values combine."""
    unclassified = _unclassified(pb.VersionStatistics.DESCRIPTOR) + _unclassified(oip.ModelStatistics.DESCRIPTOR)
    assert unclassified == [], f"classify these in server/workers/aggregate_stats.py RULES: {unclassified}"
    known = _reachable(pb.VersionStatistics.DESCRIPTOR, {}) | _reachable(oip.ModelStatistics.DESCRIPTOR, {})
    stale = [
        f"{name}.{field}"
        for name, table in RULES.items()
        for field in table
        if name not in known or field not in known[name].fields_by_name  # type: ignore[attr-defined]
    ]
    assert stale == []
    assert [f.name for f in pb.ModelStatisticsResponse.DESCRIPTOR.fields] == ["statistics"]
    assert [f.name for f in oip.ModelStatisticsResponse.DESCRIPTOR.fields] == ["model_stats"]
    assert all(isinstance(rule, Rule) for table in RULES.values() for rule in table.values())


def _oip_reply(success: int, last: int, batch: dict[int, int], memory: int) -> oip.ModelStatisticsResponse:
    duration = oip.StatisticDuration
    return oip.ModelStatisticsResponse(
        model_stats=[
            oip.ModelStatistics(
                name="m",
                version="1",
                last_inference=last,
                inference_count=2 * success,
                execution_count=success,
                inference_stats=oip.InferStatistics(
                    success=duration(count=success, ns=100 * success), fail=duration(count=1, ns=7)
                ),
                batch_stats=[
                    oip.InferBatchStatistics(batch_size=size, compute_infer=duration(count=n, ns=10 * n))
                    for size, n in batch.items()
                ],
                memory_usage=[oip.MemoryUsage(type="CPU", id=0, byte_size=memory)],
                response_stats={"0": oip.InferResponseStatistics(success=duration(count=success, ns=1))},
            )
        ]
    )


def test_oip_statistics_add_their_counts_and_durations_and_keep_the_latest_inference() -> None:
    merged = sum_oip_statistics([_oip_reply(3, 1000, {1: 2, 4: 1}, 64), _oip_reply(5, 900, {4: 3}, 64)])
    [m] = merged.model_stats
    assert (m.name, m.version, m.last_inference) == ("m", "1", 1000)
    assert (m.inference_count, m.execution_count) == (16, 8)
    assert (m.inference_stats.success.count, m.inference_stats.success.ns) == (8, 800)
    assert (m.inference_stats.fail.count, m.inference_stats.fail.ns) == (2, 14)
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in m.batch_stats] == [
        (1, 2, 20),
        (4, 4, 40),
    ]
    assert [(u.type, u.byte_size) for u in m.memory_usage] == [("CPU", 128)]
    assert m.response_stats["0"].success.count == 8
