"""The batch cost tuner, from recorded call times and clock values alone: which batch sizes pay, and
how it keeps measuring the sizes next to the ones it runs."""

from __future__ import annotations

from server.scheduling.batch_cost import MIN_BATCHES_BETWEEN, SLOW_MIN_SAMPLES, BatchCostTuner


def feed(tuner: BatchCostTuner, rows: int, ns_per_row: float, times: int = 10) -> None:
    for _ in range(times):
        tuner.record(rows, int(rows * ns_per_row))


def test_tuner_leaves_batches_uncapped_while_bigger_batches_are_cheaper_per_row():
    tuner = BatchCostTuner(64)
    feed(tuner, 1, 10_000)
    feed(tuner, 8, 2_000)
    feed(tuner, 32, 500)
    assert tuner.steady_cap == 64


def test_tuner_caps_batches_where_per_row_time_stops_falling():
    tuner = BatchCostTuner(32)
    feed(tuner, 1, 10_500_000)  # the example encoder on one CPU core
    feed(tuner, 4, 9_800_000)
    feed(tuner, 16, 11_500_000)
    assert tuner.steady_cap == 7  # the 4–7 rows bucket was cheapest per row


def test_tuner_keeps_exploring_other_sizes_now_and_then():
    tuner = BatchCostTuner(32, explore_every=4)
    feed(tuner, 1, 10_500_000)
    feed(tuner, 4, 9_800_000)
    feed(tuner, 16, 11_500_000)
    caps = [tuner.cap() for _ in range(4 * 6)]
    explored = caps[3::4]
    assert sorted(explored) == [1, 3, 7, 15, 31, 32]  # every bucket size, smaller and larger
    assert all(c == 7 for i, c in enumerate(caps) if i % 4 != 3)


def test_slow_batches_explore_on_a_time_basis_not_only_every_nth_batch():
    """2.75 batches a second explored every 32nd batch is one exploration per ~12 s: the encoder never
    learned that smaller batches were cheaper per row."""
    tuner = BatchCostTuner(32, explore_every=32, explore_interval=1.0)
    tuner.record(32, 32 * 13_700_000)
    caps = [tuner.cap(now=i * 0.36) for i in range(MIN_BATCHES_BETWEEN + 1)]
    assert caps[: MIN_BATCHES_BETWEEN - 1] == [32] * (MIN_BATCHES_BETWEEN - 1)
    assert min(caps) < 32


def test_fast_batches_are_not_explored_more_often_than_one_in_a_few():
    tuner = BatchCostTuner(32, explore_every=32, explore_interval=0.0)
    tuner.record(32, 32 * 1_000)
    caps = [tuner.cap(now=float(i)) for i in range(4 * MIN_BATCHES_BETWEEN)]
    assert sum(c < 32 for c in caps) == 4


def test_a_slow_bucket_is_known_after_fewer_samples():
    tuner = BatchCostTuner(32, min_samples=8)
    feed(tuner, 8, 10_700_000, times=SLOW_MIN_SAMPLES)  # 86 ms per batch
    feed(tuner, 32, 13_700_000, times=SLOW_MIN_SAMPLES)
    assert tuner.steady_cap == 15


def test_a_fast_bucket_still_needs_every_sample():
    tuner = BatchCostTuner(32, min_samples=4)
    feed(tuner, 1, 1_000_000, times=3)
    feed(tuner, 16, 5_000_000, times=3)
    assert tuner.steady_cap == 32


def test_a_fresh_tuner_learns_within_seconds_that_a_slow_model_prefers_smaller_batches():
    """The encoder's 8-row requests at concurrency 32 (the queue always holds four of them), timed as
    measured on one core: 8 rows 10.7 ms a row, 16–24 rows 11.6, 32 rows 13.7. Uncapped it runs
    32-row batches (2.3 a second); within 15 s of simulated load the tuner must settle on 8-row ones
    (exploring every 32nd batch alone took 41 s, and with 8 samples per size longer still)."""
    per_row = {8: 10_700_000, 16: 11_600_000, 24: 11_600_000, 32: 13_700_000}
    tuner = BatchCostTuner(32)
    now, sizes, settled = 0.0, [], None
    while now < 45.0:
        cap = min(32, tuner.cap(now))
        rows = max(8, cap // 8 * 8)  # whole 8-row requests, the first one whatever the cap
        ns = rows * per_row[rows]
        tuner.record(rows, ns)
        now += ns / 1e9
        sizes.append((now, rows))
        if settled is None and tuner.steady_cap == 15:
            settled = now
    assert settled is not None and settled < 15.0
    late = [rows for at, rows in sizes if at >= 15.0]
    assert sum(r == 8 for r in late) >= 0.8 * len(late)


def test_tuner_never_caps_a_tiny_model_on_call_time_jitter():
    """Under load a ~40 µs inline MLP call that gRPC's thread preempts looks dearer per row in a bigger
    batch; capping on that noise held batches at 3 rows (measured: 0.74× the floor instead of 0.87×)."""
    tuner = BatchCostTuner(64)
    feed(tuner, 1, 40_000)
    feed(tuner, 3, 12_000)  # 36 µs for 3 rows
    feed(tuner, 6, 16_000)  # 96 µs for 6: one preemption, not a dearer row
    assert tuner.steady_cap == 64


def test_tuner_still_caps_when_the_extra_time_per_batch_is_beyond_jitter():
    tuner = BatchCostTuner(64)
    feed(tuner, 1, 40_000)
    feed(tuner, 3, 12_000)
    feed(tuner, 40, 30_000)  # 40 rows: 720 µs more per batch than at 12 µs a row
    assert tuner.steady_cap == 3


def test_one_hiccup_in_a_tiny_models_call_does_not_cap_its_batches():
    """Noise only adds time: a ~40 µs inline call preempted for 3 ms once lifted its bucket's per-row
    cost far enough to cap the MLP at 3 rows, where it stayed (measured: ~15 % fewer requests/s)."""
    tuner = BatchCostTuner(64)
    feed(tuner, 1, 40_000)
    feed(tuner, 3, 12_000)
    feed(tuner, 6, 6_000)
    tuner.record(6, 3_000_000)  # one call of 6 rows that took 3 ms
    assert tuner.steady_cap == 64


def test_a_lasting_change_in_call_time_is_still_learned_through_the_outlier_clip():
    tuner = BatchCostTuner(32, min_samples=4)
    feed(tuner, 1, 10_500_000)
    feed(tuner, 4, 9_800_000)
    feed(tuner, 16, 9_000_000)
    assert tuner.steady_cap == 32
    feed(tuner, 16, 30_000_000, times=30)  # 16-row batches became 3x dearer per row for good
    assert tuner.steady_cap == 7


def test_peek_answers_what_the_next_cap_will_be_without_taking_it():
    tuner = BatchCostTuner(16, explore_every=3)
    feed(tuner, 1, 40_000)
    feed(tuner, 3, 12_000)
    feed(tuner, 6, 100_000)  # 352 µs more per batch at 4–7 rows: capped at 3
    answers = []
    for _ in range(9):
        expected = tuner.peek()
        assert tuner.peek() == expected  # asking twice changes nothing
        answers.append((expected, tuner.cap()))
    assert all(peeked == taken for peeked, taken in answers)
    assert [taken for _, taken in answers] == [3, 3, 3, 3, 3, 7, 3, 3, 15]  # explorations: 3, 7, 15, …


def test_a_lone_request_at_the_cap_queues_for_an_upward_exploration_at_most_once_an_interval() -> None:
    tuner = BatchCostTuner(16, explore_interval=1.0)
    assert not tuner.explores_above(1, now=0.0)  # the first request starts the clock
    assert not tuner.explores_above(1, now=0.5)  # within the interval: runs alone
    assert tuner.explores_above(1, now=1.0)
    assert tuner.peek(now=1.0) > 1  # the batch after it explores above the cap (the turn of 1 skipped)
    assert tuner.cap(now=1.0) > 1
    assert not tuner.explores_above(1, now=1.5)  # explored at 1.0: the next one a second later
    assert tuner.explores_above(1, now=2.0)


def test_no_upward_exploration_is_asked_for_at_the_largest_size() -> None:
    tuner = BatchCostTuner(16, explore_interval=0.0)
    assert not tuner.explores_above(16, now=0.0)
    assert not tuner.explores_above(16, now=5.0)
