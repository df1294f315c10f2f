"""Per-call outcome accounting: every Predict and PredictStream call is counted once in its version's
statistics, as a success or as a failure under its status name.

One helper for the three kinds of call (Predict, a generative or generator stream, a chunked stream),
so they cannot drift apart; the status name of a failure is :func:`server.core.deadlines.outcome_code`'s
(a cancel at the deadline counts as DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import time
from types import TracebackType

from server.core.deadlines import outcome_code
from server.telemetry.stats import VersionStats


class CallOutcome:
    """``with CallOutcome(stats, deadline): ...`` counts the block's outcome (it may span a stream's yields:
    a stream closed by gRPC ends the block with GeneratorExit or CancelledError, counted as the client's
    cancel or as expiry).

    ``started_ns`` (``time.perf_counter_ns()`` when the call arrived) also records the call's duration
    (every outcome, for the request-duration metric; successes again for ModelStatistics' latency
    histogram, and its sum for OIP's ``success.ns``); only unary calls pass it, since a stream's length
    follows how fast its client reads. Every call stamps ``last_inference_ns`` (OIP's ``last_inference``).
    A plain class rather than ``contextlib.contextmanager``: it sits on the Predict hot path.
    """

    __slots__ = ("_deadline", "_started_ns", "_stats")

    def __init__(self, stats: VersionStats, deadline: float | None, started_ns: int | None = None) -> None:
        self._stats = stats
        self._deadline = deadline
        self._started_ns = started_ns

    def __enter__(self) -> CallOutcome:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stats = self._stats
        started = self._started_ns
        elapsed = 0
        stats.last_inference_ns = time.time_ns()
        if started is not None:
            elapsed = time.perf_counter_ns() - started
            stats.request_duration.observe(elapsed)
        if exc is not None:
            stats.failed[outcome_code(exc, self._deadline)] += 1
            return
        stats.success += 1
        if started is not None:
            stats.success_ns += elapsed
            stats.record_latency(elapsed)
