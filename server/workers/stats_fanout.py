"""ModelStatistics over the workers (inferd.v1 and OIP): every serving worker asked at once, the answers summed.

A worker that does not answer (restarting, hung, dying) must not cost the whole view: its share is left out,
the reply says how many workers it covers in the trailing metadata ``x-inferd-workers: <answered>/<total>``,
and only a call that no worker answered fails (UNAVAILABLE). Each worker gets at most
:data:`STATISTICS_TIMEOUT_S`, so one hung worker delays the reply by that much, not by the caller's deadline.
A worker that answers NOT_FOUND while another answers OK does not hold the model (a version loaded in only
some workers): it adds nothing. Replies that cannot be summed (histograms with different bucket bounds: the
workers run different builds) are FAILED_PRECONDITION, never INTERNAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from inferd.oip.v2 import grpc_service_pb2 as oip
from inferd.statistics import WORKERS_HEADER
from inferd.v1 import inference_pb2
from server.workers.aggregate_stats import BucketLayoutError, sum_oip_statistics, sum_statistics
from server.workers.control_fanout import Failure, Target, call_all, failure_status
from server.workers.control_log import OIP_STATISTICS_METHOD

#: the longest the supervisor waits for one worker's statistics (as the merged /metrics waits for a scrape)
STATISTICS_TIMEOUT_S = 2.0
#: a worker failing with these did not answer: it is left out of the sum
NOT_ANSWERED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True, slots=True)
class Combined:
    """The supervisor's answer: ``reply`` (serialized), or ``code`` and ``details``; ``answered`` of ``total``."""

    answered: int
    total: int
    reply: bytes | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""

    @property
    def trailer(self) -> tuple[tuple[str, str], ...]:
        return ((WORKERS_HEADER, f"{self.answered}/{self.total}"),)


def sum_serialized(method: str, replies: Sequence[bytes]) -> bytes:
    """inferd.v1 or OIP ModelStatisticsResponse bytes → their sum (aggregate_stats.py). Raises
    BucketLayoutError or DecodeError."""
    if method == OIP_STATISTICS_METHOD:
        oip_replies = [oip.ModelStatisticsResponse.FromString(r) for r in replies]
        return bytes(sum_oip_statistics(oip_replies).SerializeToString())
    parsed = [inference_pb2.ModelStatisticsResponse.FromString(r) for r in replies]
    return bytes(sum_statistics(parsed).SerializeToString())


def combine(method: str, replies: Sequence[bytes], failures: Sequence[Failure], total: int) -> Combined:
    """Pure: the workers' replies and failures (of ``total`` workers; the others were not asked) → one answer."""
    errors = [f for f in failures if f.code not in NOT_ANSWERED]
    answered = len(replies) + len(errors)
    if answered == 0:
        why = "; ".join(str(f) for f in failures) or "every worker is restarting"
        return Combined(0, total, code=grpc.StatusCode.UNAVAILABLE, details=f"no worker answered ({why})")
    absent_only = bool(replies) and all(f.code == grpc.StatusCode.NOT_FOUND for f in errors)
    if errors and not absent_only:
        code, details = failure_status(errors)
        return Combined(answered, total, code=code, details=details)
    try:
        return Combined(answered, total, reply=sum_serialized(method, replies))
    except (BucketLayoutError, DecodeError) as exc:
        details = (
            f"the workers' statistics cannot be combined ({exc}): they run different inferd builds; "
            "restart them on one build (each worker's own statistics are on its private socket)"
        )
        return Combined(answered, total, code=grpc.StatusCode.FAILED_PRECONDITION, details=details)


def per_worker_timeout(remaining: float | None) -> float:
    """:data:`STATISTICS_TIMEOUT_S`, shortened so the sum still reaches a caller with less time left."""
    if remaining is None:
        return STATISTICS_TIMEOUT_S
    return max(0.0, min(STATISTICS_TIMEOUT_S, remaining * 0.8))


async def answer(
    targets: Sequence[Target], total: int, method: str, request: bytes, context: grpc.aio.ServicerContext
) -> bytes:
    """The statistics call on the supervisor: fan out, combine, answer (with the trailer either way)."""
    timeout = per_worker_timeout(context.time_remaining())
    replies, failures = await call_all(targets, method, request, timeout=timeout) if targets else ([], [])
    combined = combine(method, replies, failures, total)
    context.set_trailing_metadata(combined.trailer)
    if combined.reply is None:
        await context.abort(combined.code, combined.details, trailing_metadata=combined.trailer)
    assert combined.reply is not None
    return combined.reply
