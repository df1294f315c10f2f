"""Cheap per-version counters: requests by outcome, batches, batch sizes, queue/compute time, shadow agreement.

Plain integer additions on the event loop thread; read by ModelStatistics, ``inferd stats`` and the metrics
exporter (server/telemetry/metrics.py), which reads them at scrape time. The histograms here are ours, not
the OpenTelemetry SDK's: an SDK ``Histogram.record`` costs ~7 µs on this kind of machine (a counter ~6 µs),
a few percent of a ~250 µs request each, while :meth:`Histogram.observe` costs ~0.2 µs.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Agreement:
    """Running comparison of one output between a primary version and its shadow."""

    compared: int = 0
    max_abs_diff: float = 0.0
    abs_diff_sum: float = 0.0
    elements: int = 0
    argmax_agree_rows: int = 0
    rows: int = 0
    errors: int = 0
    dropped: int = 0

    @property
    def mean_abs_diff(self) -> float:
        return self.abs_diff_sum / self.elements if self.elements else 0.0

    def add(self, primary: np.ndarray, shadow: np.ndarray) -> None:
        if primary.shape != shadow.shape:
            self.errors += 1
            return
        self.compared += 1
        if primary.dtype.kind in "OSU":
            return
        diff = np.abs(primary.astype(np.float64) - shadow.astype(np.float64))
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
            self.abs_diff_sum += float(diff.sum())
            self.elements += diff.size
        if primary.ndim >= 2 and primary.shape[-1] > 1:
            agree = np.argmax(primary, axis=-1) == np.argmax(shadow, axis=-1)
            self.argmax_agree_rows += int(agree.sum())
            self.rows += int(agree.size)


#: Upper bounds (ns) of the duration histograms exported as metrics: 50 µs to 60 s, about 1-2.5-5-7.5 per decade.
DURATION_BOUNDS_NS: tuple[int, ...] = tuple(
    int(ms * 1_000_000)
    for ms in (
        0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 25, 50, 75, 100, 250, 500, 750,
        1_000, 2_500, 5_000, 7_500, 10_000, 30_000, 60_000,
    )
)  # fmt: skip
#: Upper bounds of the batch-size histogram (rows per engine execution).
BATCH_ROWS_BOUNDS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Counts per bucket (``value <= bound``, plus one overflow bucket) and the sum: Prometheus' model."""

    __slots__ = ("bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        #: per bucket, not cumulative; len(bounds) + 1 (the last is +Inf)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0
        self.count = 0
        #: OTLP carries the extremes too (0 while empty)
        self.min = 0
        self.max = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if not self.count or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1


def duration_histogram() -> Histogram:
    return Histogram(DURATION_BOUNDS_NS)


@dataclass(slots=True)
class TokenTimes:
    """Generation latency as clients feel it: time to the first token and between tokens of one stream."""

    time_to_first_token: Histogram = field(default_factory=duration_histogram)
    inter_token: Histogram = field(default_factory=duration_histogram)


@dataclass(slots=True)
class StreamCounters:
    """PredictStream sessions of a generative or generator model; the gauges are kept current by the scheduler."""

    active_streams: int = 0
    waiting_streams: int = 0
    paused_streams: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    streams_expired: int = 0
    streams_rejected: int = 0
    streams_failed: int = 0
    steps: int = 0
    step_streams: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    caches_freed: int = 0
    cache_bytes: int = 0
    buffered_outputs: int = 0
    max_buffered_outputs: int = 0
    #: time to first token and between tokens (not part of ModelStatistics' StreamStatistics: metrics only)
    tokens: TokenTimes = field(default_factory=TokenTimes)


#: Upper bounds (µs) of the latency histogram buckets: roughly 1-2-3-5 steps from 50 µs to 10 s, then +inf.
LATENCY_BOUNDS_US: tuple[float, ...] = (
    50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000,
    30_000, 50_000, 75_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, math.inf,
)  # fmt: skip
_LATENCY_BOUNDS_NS = tuple(b * 1000 for b in LATENCY_BOUNDS_US)


class VersionStats:
    __slots__ = (
        "batch_compute_ns",
        "batch_reruns",
        "batch_rows",
        "batch_sizes",
        "batches",
        "cancelled_before_run",
        "compute_duration",
        "compute_ns",
        "created_unix_ns",
        "expired_before_run",
        "failed",
        "last_inference_ns",
        "latency_counts",
        "queue_duration",
        "queue_ns",
        "request_duration",
        "rows",
        "shadow",
        "streaming",
        "success",
        "success_ns",
        "warmup_count",
    )

    def __init__(self) -> None:
        #: when counting began (the start time of every cumulative metric of this version)
        self.created_unix_ns = time.time_ns()
        self.success = 0
        #: summed duration of the successful calls that were timed (unary ones: see CallOutcome)
        self.success_ns = 0
        self.failed: Counter[str] = Counter()
        #: wall clock (time.time_ns) at the end of the last counted call, any outcome; 0 = none yet
        self.last_inference_ns = 0
        self.batches = 0
        self.rows = 0
        #: rows per engine call → number of calls
        self.batch_sizes: Counter[int] = Counter()
        #: rows per engine call → summed compute time (ns) of those calls (OIP's batch_stats); a plain dict,
        #: whose update costs a third of a Counter's
        self.batch_compute_ns: dict[int, int] = {}
        self.queue_ns = 0
        self.compute_ns = 0
        self.expired_before_run = 0
        self.cancelled_before_run = 0
        #: engine calls that reran one request of a failed batch alone, to find the request at fault
        self.batch_reruns = 0
        self.warmup_count = 0
        #: successful Predict calls per latency bucket (bounds: LATENCY_BOUNDS_US)
        self.latency_counts = [0] * len(LATENCY_BOUNDS_US)
        #: (primary version, output name) → agreement, when this version is a shadow
        self.shadow: dict[tuple[int, str], Agreement] = {}
        #: PredictStream sessions; stays all zero for models that do not generate
        self.streaming = StreamCounters()
        #: unary Predict calls, every outcome, from arrival to reply (the ``latency_counts`` above: successes)
        self.request_duration = duration_histogram()
        #: time each request waited in the batch queue (0 when it ran at once)
        self.queue_duration = duration_histogram()
        #: engine executions (one per batch)
        self.compute_duration = duration_histogram()
        self.batch_rows = Histogram(BATCH_ROWS_BOUNDS)

    def agreement(self, primary_version: int, output: str) -> Agreement:
        key = (primary_version, output)
        found = self.shadow.get(key)
        if found is None:
            found = self.shadow[key] = Agreement()
        return found

    def record_latency(self, elapsed_ns: int) -> None:
        self.latency_counts[bisect_left(_LATENCY_BOUNDS_NS, elapsed_ns)] += 1

    def record_batch(self, rows: int, compute_ns: int) -> None:
        self.batches += 1
        self.rows += rows
        self.batch_sizes[rows] += 1
        self.batch_compute_ns[rows] = self.batch_compute_ns.get(rows, 0) + compute_ns
        self.compute_ns += compute_ns
        self.compute_duration.observe(compute_ns)
        self.batch_rows.observe(rows)

    def record_queue_wait(self, waited_ns: int) -> None:
        self.queue_ns += waited_ns
        self.queue_duration.observe(waited_ns)
