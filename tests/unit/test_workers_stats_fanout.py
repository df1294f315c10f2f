"""The supervisor's statistics fan-out combine (server/workers/stats_fanout.py): pure, fed fake replies.

A worker that does not answer is left out and counted in ``answered/total``; UNAVAILABLE only when none
answered; a worker without the model (NOT_FOUND) adds nothing when another has it; replies that cannot be
summed (different bucket layouts) are FAILED_PRECONDITION, never INTERNAL.
"""

from __future__ import annotations

import grpc
import pytest

from inferd.oip.v2 import grpc_service_pb2 as oip
from inferd.v1 import inference_pb2 as pb
from server.workers.control_fanout import Failure
from server.workers.control_log import OIP_STATISTICS_METHOD, STATISTICS_METHOD
from server.workers.stats_fanout import STATISTICS_TIMEOUT_S, WORKERS_HEADER, combine, per_worker_timeout

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def v1(success: int, bounds: tuple[int, ...] = (100, 1000)) -> bytes:
    buckets = [pb.LatencyBucket(le_microseconds=b, count=success) for b in bounds]
    stats = pb.VersionStatistics(name="m", version=1, success_count=success, latency_buckets=buckets)
    return bytes(pb.ModelStatisticsResponse(statistics=[stats]).SerializeToString())


def oip_reply(success: int) -> bytes:
    stats = oip.ModelStatistics(
        name="m",
        version="1",
        inference_count=success,
        inference_stats=oip.InferStatistics(success=oip.StatisticDuration(count=success, ns=10 * success)),
    )
    return bytes(oip.ModelStatisticsResponse(model_stats=[stats]).SerializeToString())


def v1_successes(reply: bytes | None) -> int:
    assert reply is not None
    return sum(s.success_count for s in pb.ModelStatisticsResponse.FromString(reply).statistics)


def test_every_worker_answered_sums_and_says_so() -> None:
    combined = combine(STATISTICS_METHOD, [v1(3), v1(4)], [], total=2)
    assert v1_successes(combined.reply) == 7
    assert combined.code == grpc.StatusCode.OK
    assert combined.trailer == ((WORKERS_HEADER, "2/2"),)


def test_the_oip_reply_is_summed_in_its_own_format() -> None:
    combined = combine(OIP_STATISTICS_METHOD, [oip_reply(3), oip_reply(4)], [], total=2)
    assert combined.reply is not None
    (stats,) = oip.ModelStatisticsResponse.FromString(combined.reply).model_stats
    assert (stats.inference_stats.success.count, stats.inference_stats.success.ns) == (7, 70)
    assert stats.inference_count == 7


@pytest.mark.parametrize("code", [UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED])
def test_a_worker_that_does_not_answer_is_left_out_and_counted(code: grpc.StatusCode) -> None:
    combined = combine(STATISTICS_METHOD, [v1(5)], [Failure(1, code, "restarting")], total=2)
    assert v1_successes(combined.reply) == 5
    assert combined.trailer == ((WORKERS_HEADER, "1/2"),)


def test_workers_not_asked_count_in_the_total() -> None:
    combined = combine(STATISTICS_METHOD, [v1(5)], [], total=3)  # two restarting workers were not asked
    assert combined.trailer == ((WORKERS_HEADER, "1/3"),)


def test_unavailable_only_when_no_worker_answered() -> None:
    failures = [Failure(0, UNAVAILABLE, "gone"), Failure(1, grpc.StatusCode.DEADLINE_EXCEEDED, "hung")]
    combined = combine(STATISTICS_METHOD, [], failures, total=2)
    assert combined.reply is None
    assert combined.code == UNAVAILABLE
    assert "no worker answered" in combined.details and "worker 1: DEADLINE_EXCEEDED: hung" in combined.details
    assert combined.trailer == ((WORKERS_HEADER, "0/2"),)
    nobody = combine(STATISTICS_METHOD, [], [], total=2)  # every worker restarting: none was asked
    assert (nobody.code, nobody.trailer) == (UNAVAILABLE, ((WORKERS_HEADER, "0/2"),))
    assert "every worker is restarting" in nobody.details


def test_a_worker_without_the_model_adds_nothing_but_not_found_everywhere_is_not_found() -> None:
    absent = Failure(1, grpc.StatusCode.NOT_FOUND, "no model m")
    partial = combine(STATISTICS_METHOD, [v1(5)], [absent], total=2)
    assert v1_successes(partial.reply) == 5
    assert partial.trailer == ((WORKERS_HEADER, "2/2"),)
    nowhere = combine(STATISTICS_METHOD, [], [Failure(0, grpc.StatusCode.NOT_FOUND, "no model m"), absent], total=2)
    assert nowhere.code == grpc.StatusCode.NOT_FOUND
    assert nowhere.details == "worker 0: NOT_FOUND: no model m; worker 1: NOT_FOUND: no model m"


def test_a_refused_request_keeps_its_status() -> None:
    refused = Failure(0, grpc.StatusCode.INVALID_ARGUMENT, "bad version")
    combined = combine(STATISTICS_METHOD, [], [refused, Failure(1, UNAVAILABLE, "gone")], total=2)
    assert (combined.code, combined.details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "worker 0: INVALID_ARGUMENT: bad version",
    )
    assert combined.trailer == ((WORKERS_HEADER, "1/2"),)


def test_different_bucket_layouts_are_failed_precondition_not_internal() -> None:
    combined = combine(STATISTICS_METHOD, [v1(1), v1(1, bounds=(100, 1000, 5000))], [], total=2)
    assert combined.reply is None
    assert combined.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "bucket bounds differ" in combined.details and "different inferd builds" in combined.details


def test_a_reply_that_is_not_statistics_is_failed_precondition() -> None:
    combined = combine(STATISTICS_METHOD, [v1(1), b"\xff\xff\xff"], [], total=2)
    assert combined.code == grpc.StatusCode.FAILED_PRECONDITION


def test_each_worker_gets_at_most_the_statistics_timeout_and_less_than_the_callers_deadline() -> None:
    assert per_worker_timeout(None) == STATISTICS_TIMEOUT_S
    assert per_worker_timeout(60.0) == STATISTICS_TIMEOUT_S
    assert per_worker_timeout(1.0) == pytest.approx(0.8)
    assert per_worker_timeout(-1.0) == 0.0
