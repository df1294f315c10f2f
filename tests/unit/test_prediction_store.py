"""The prediction store behind Feedback: capped and time-limited, so memory stays bounded whatever the traffic
(issue 17, acceptance 3: 1M predictions and feedback lookups at a small cap)."""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

from server.quality.feedback import FeedbackBook, FeedbackScores, FeedbackSpec
from server.quality.predictions import Lookup, PredictionStore

ROW = np.zeros((1, 10), dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cap_evicts_oldest_and_ttl_answers_expired_then_scored_once():
    clock = Clock()
    store = PredictionStore(max_records=3, ttl_seconds=10, clock=clock)
    for i in range(4):
        store.add(f"r{i}", 1, ROW)
    assert len(store) == 3 and store.evicted == 1
    assert store.take("r0") == (Lookup.UNKNOWN, None)  # evicted by the cap
    store.add("r1", 2, ROW)  # a shadow joins the primary's record
    lookup, record = store.take("r1")
    assert lookup is Lookup.FOUND and record is not None and sorted(record.rows) == [1, 2]
    assert store.take("r1") == (Lookup.SCORED, None)
    clock.now = 11
    store.add("r9", 1, ROW)  # drops r2, r3 for age, remembering their ids
    assert len(store) == 1
    assert store.take("r2") == (Lookup.EXPIRED, None)
    assert store.take("r3")[0] is Lookup.EXPIRED
    clock.now = 22
    assert store.take("r9")[0] is Lookup.EXPIRED  # still held, but too old to score


def test_restore_puts_back_a_refused_record():
    store = PredictionStore(max_records=3, ttl_seconds=10, clock=Clock())
    store.add("a", 1, ROW)
    lookup, record = store.take("a")
    assert lookup is Lookup.FOUND and record is not None
    store.restore("a", record)
    assert store.take("a")[0] is Lookup.FOUND


def test_scores_classification_from_logits_and_probabilities():
    scores = FeedbackScores("classification")
    scores.add(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    assert (scores.scored, scores.correct) == (2, 1)
    assert scores.log_loss_sum == pytest.approx(-np.log(0.9) - np.log(0.2))
    logits = FeedbackScores("classification")
    logits.add(np.array([[2.0, -1.0]]), np.array([0]))  # not probabilities: softmax first
    assert logits.log_loss_sum == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + np.exp(-1))))


#: 1M predictions at a cap of 10,000: resident memory may grow at most this much once the store is full
#: (unbounded, the same run would hold ~1M records: several hundred MB)
RSS_GROWTH_BOUND_BYTES = 50 * 1024 * 1024


def rss_bytes() -> int:
    """Resident set size now (not the peak: earlier tests in this process must not hide growth)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc (Linux)")
def test_a_million_predictions_and_lookups_at_a_small_cap_keep_memory_bounded():
    """Every id is recorded by a primary and a shadow, half get feedback (found, expired or unknown), and
    time moves so that records also expire: the records, the tombstones and the counters all stay capped."""
    clock = Clock()
    book = FeedbackBook(clock)
    spec = FeedbackSpec(output="probs", kind="classification", max_records=10_000, ttl_seconds=5)
    outputs = {"probs": np.full((1, 10), 0.1, dtype=np.float32)}
    started = time.perf_counter()
    baseline = 0
    for i in range(1_000_000):
        if i == 60_000:  # the store, its tombstones and the allocator's pools are full: the baseline
            gc.collect()
            baseline = rss_bytes()
        clock.now = i / 1000  # 1000 predictions a "second": records expire after 5,000 of them
        request_id = f"req-{i}"
        book.record("m", spec, request_id, 1, outputs)
        book.record("m", spec, request_id, 2, outputs)
        if i % 4 == 1:
            book.take("m", spec, f"req-{i - 5_001}")  # expired (unknown in the first 5,001)
        elif i % 4 == 3:
            book.take("m", spec, f"req-{i - 3_001}")  # found, scored once
    gc.collect()
    growth = rss_bytes() - baseline
    elapsed = time.perf_counter() - started
    store = book.store("m", spec)
    assert len(store) <= 10_000
    assert len(store._expired) <= 10_000 and len(store._scored) <= 10_000
    assert set(book.unmatched) == {("m", "unknown_id"), ("m", "expired")}
    assert book.unmatched[("m", "expired")] > 240_000
    assert growth < RSS_GROWTH_BOUND_BYTES, f"RSS grew {growth / 1e6:.1f} MB after the cap was reached"
    assert elapsed < 20, f"took {elapsed:.1f} s"
