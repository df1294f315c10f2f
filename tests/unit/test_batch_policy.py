"""The window policy decides, from clock values alone, when holding a queue for a fuller batch pays."""

from __future__ import annotations

from server.scheduling.batch_policy import EARLY_FILLS_TO_GROW, LONELY_WINDOWS_TO_STOP, WindowPolicy

WINDOW = 0.002


def adaptive() -> WindowPolicy:
    policy = WindowPolicy("adaptive", WINDOW, max_rows=64, probe_interval=0.25)
    for i in range(20):  # traffic with a 100 µs rhythm
        policy.note_arrival(i * 1e-4)
    return policy


def test_eager_policy_never_waits():
    policy = WindowPolicy("eager", WINDOW, max_rows=64)
    assert policy.decide(rows=1, head_enqueued=0.0, now=0.0) == 0.0


def test_zero_window_means_eager_whatever_the_kind():
    assert WindowPolicy("always", 0.0, max_rows=64).kind == "eager"


def test_always_policy_waits_out_the_window_unless_a_preferred_size_is_reached():
    policy = WindowPolicy("always", WINDOW, max_rows=64, preferred=(4, 8))
    assert policy.decide(rows=1, head_enqueued=0.0, now=0.0005) == WINDOW - 0.0005
    assert policy.decide(rows=4, head_enqueued=0.0, now=0.0005) == 0.0
    assert policy.decide(rows=3, head_enqueued=0.0, now=WINDOW) == 0.0


def test_adaptive_policy_does_not_hold_before_the_first_probe_is_due():
    policy = WindowPolicy("adaptive", WINDOW, max_rows=64, probe_interval=0.25)
    policy.note_arrival(10.0)
    assert policy.decide(rows=1, head_enqueued=10.0, now=10.0) == 0.0


def test_a_probe_holds_only_a_few_arrival_gaps_not_the_whole_window():
    policy = adaptive()
    now = 1.0
    wait = policy.decide(rows=1, head_enqueued=now, now=now)
    assert 0 < wait < WINDOW / 2


def test_a_lonely_probe_returns_to_eager_until_the_next_probe():
    policy = adaptive()
    policy.decide(rows=1, head_enqueued=1.0, now=1.0)
    policy.decide(rows=1, head_enqueued=1.0, now=1.01)  # probe over
    policy.observe(rows=1, now=1.01, window_expired=True)
    assert not policy.windowing
    assert policy.decide(rows=1, head_enqueued=1.02, now=1.02) == 0.0


def test_a_lone_request_of_many_rows_is_a_lonely_probe_not_a_reason_to_window():
    """8-row requests at concurrency 1: a probe sees one request of 8 rows; windowing on would grow the
    expected size past 8 and make every later request wait the whole window for nobody."""
    policy = adaptive()
    policy.decide(rows=8, head_enqueued=1.0, now=1.0)
    policy.decide(rows=8, head_enqueued=1.0, now=1.01)  # probe over
    policy.observe(rows=8, now=1.01, window_expired=True, requests=1)
    assert not policy.windowing
    assert policy.decide(rows=8, head_enqueued=1.02, now=1.02) == 0.0


def test_a_probe_that_gathers_requests_turns_windowing_on_and_aims_for_that_size():
    policy = adaptive()
    policy.decide(rows=1, head_enqueued=1.0, now=1.0)
    policy.observe(rows=6, now=1.002, window_expired=True)
    assert policy.windowing and policy.expected_requests == 6
    assert policy.decide(rows=5, head_enqueued=2.0, now=2.0) > 0
    assert policy.decide(rows=6, head_enqueued=2.0, now=2.0) == 0.0


def test_windowing_stops_after_several_lonely_windows_in_a_row():
    policy = adaptive()
    policy.decide(rows=1, head_enqueued=1.0, now=1.0)
    policy.observe(rows=6, now=1.002, window_expired=True)
    for i in range(LONELY_WINDOWS_TO_STOP):
        assert policy.windowing
        policy.decide(rows=1, head_enqueued=2.0 + i, now=2.0 + i)
        policy.observe(rows=1, now=2.002 + i, window_expired=True)
    assert not policy.windowing


def test_expected_size_grows_after_a_run_of_early_fills():
    policy = adaptive()
    policy.decide(rows=1, head_enqueued=1.0, now=1.0)
    policy.observe(rows=6, now=1.002, window_expired=True)
    for i in range(EARLY_FILLS_TO_GROW):
        policy.decide(rows=6, head_enqueued=2.0 + i, now=2.0 + i)
        policy.observe(rows=6, now=2.0 + i, window_expired=False)
    assert policy.expected_requests == 7


def rhythm(gap: float, arrivals: int = 40) -> WindowPolicy:
    policy = WindowPolicy("adaptive", WINDOW, max_rows=64, probe_interval=0.25)
    for i in range(arrivals):
        policy.note_arrival(i * gap)
    return policy


def test_a_saturated_server_whose_arrivals_are_a_third_of_a_window_apart_still_probes():
    """A server saturated by a closed loop sees arrivals one service time apart: its own speed. Needing
    four arrivals per window to probe trapped a server slow enough: never probed, never batched, stayed
    slow (measured at c=32 with ~500 µs between arrivals: 1.00 rows per engine call)."""
    policy = rhythm(WINDOW / 3)
    now = 1.0
    policy.note_arrival(now)
    wait = policy.decide(rows=1, head_enqueued=now, now=now)
    assert 0 < wait <= WINDOW + 1e-9
    policy.observe(rows=3, now=now + wait, window_expired=True)
    assert policy.windowing and policy.expected_requests == 3


def test_sparse_traffic_is_never_held():
    policy = rhythm(0.005)  # 5 ms apart: not even two arrivals per 2 ms window
    for now in (1.0, 2.0, 3.0):
        policy.note_arrival(now)
        assert policy.decide(rows=1, head_enqueued=now, now=now) == 0.0


def test_windowing_waits_for_requests_not_rows_when_each_request_holds_several():
    """8-row requests at concurrency 32: counted in rows, the first request already "filled" the 2 rows
    a fresh window expects, went alone, and after three such lonely windows windowing stopped, so
    multi-row requests over many connections never batched (measured: 0.99 engine calls per request)."""
    policy = adaptive()
    policy.decide(rows=8, head_enqueued=1.0, now=1.0, requests=1)
    policy.observe(rows=24, now=1.0005, window_expired=False, requests=3)  # a probe gathered three
    assert policy.windowing
    assert policy.decide(rows=8, head_enqueued=2.0, now=2.0, requests=1) > 0  # one 8-row request waits
    assert policy.decide(rows=16, head_enqueued=2.0, now=2.0001, requests=2) == 0.0  # two requests go
    policy.observe(rows=16, now=2.0001, window_expired=False, requests=2)
    assert policy.windowing


def test_a_full_window_of_multi_row_requests_sets_the_expected_size_in_requests():
    policy = adaptive()
    policy.decide(rows=8, head_enqueued=1.0, now=1.0, requests=1)
    policy.observe(rows=32, now=1.002, window_expired=True, requests=4)
    assert policy.expected_requests == 4
    assert policy.decide(rows=24, head_enqueued=2.0, now=2.0, requests=3) > 0
    assert policy.decide(rows=32, head_enqueued=2.0, now=2.0, requests=4) == 0.0
