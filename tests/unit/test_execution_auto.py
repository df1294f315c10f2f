"""``execution: auto`` decides on the engine's own time, not on the hop to a thread and back, nor on the
time its thread waited for a CPU; and a band between two thresholds keeps a call near either where it is.

Under heavy load the hop back to a busy event loop is itself over the 100 µs threshold; measured from the
loop it kept a tiny model on the executor for good once heavy load met it first. The clock is a fake one
shared by the engine and the test: the engine "takes" 10 µs, the loop "is busy" for 1 ms while each threaded
call is in flight. The executor thread's wait for a CPU is a fake counter too (``FakeWait``).
"""

from __future__ import annotations

import asyncio
import threading

from server.scheduling.execution import INLINE_BELOW_NS, THREAD_ABOVE_NS, EngineCalls

ENGINE_NS = 10_000
BUSY_LOOP_NS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeWait:
    """The executor thread's time runnable but not running so far (what cpu_wait reads from the kernel)."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def no_wait() -> int:
    return 0


def engine_taking(clock: FakeClock, threads: list[bool], costs: list[int], wait: FakeWait | None = None) -> object:
    """An engine whose n-th call takes ``costs[n % len(costs)]`` ns of its own; on a thread it also waits
    as long again for a CPU (the clock moves, and so does ``wait``)."""
    calls = [0]

    def infer() -> int:
        on_thread = threading.current_thread() is not threading.main_thread()
        threads.append(on_thread)
        own = costs[calls[0] % len(costs)]
        calls[0] += 1
        clock.now += own
        if on_thread and wait is not None:
            clock.now += own
            wait.ns += own
        return 1

    return infer


def tiny_engine(clock: FakeClock, threads: list[bool]) -> object:
    return engine_taking(clock, threads, [ENGINE_NS])


async def _call_while_the_loop_is_busy(calls: EngineCalls, engine: object, clock: FakeClock) -> None:
    task = asyncio.ensure_future(calls.run(engine))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the call is submitted (or ran inline)
    clock.now += BUSY_LOOP_NS  # other work on the loop while the call is away on a thread
    await task


async def test_a_tiny_engine_met_by_heavy_load_first_returns_inline() -> None:
    clock = FakeClock()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=10 * INLINE_BELOW_NS, clock=clock, waited=no_wait)
    engine = tiny_engine(clock, threads)
    for _ in range(60):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert threads[0] is True  # it started on the executor (it looked slow)
    assert threads[-10:] == [False] * 10  # and came back to the loop: the hop was not counted as engine time


async def test_light_or_heavy_load_first_ends_in_the_same_place() -> None:
    light_first, heavy_first = FakeClock(), FakeClock()
    light_threads: list[bool] = []
    heavy_threads: list[bool] = []
    light = EngineCalls("m", 1, "auto", initial_ns=ENGINE_NS, clock=light_first, waited=no_wait)
    heavy = EngineCalls("m", 1, "auto", initial_ns=10 * INLINE_BELOW_NS, clock=heavy_first, waited=no_wait)
    light_engine, heavy_engine = tiny_engine(light_first, light_threads), tiny_engine(heavy_first, heavy_threads)
    for _ in range(60):
        await _call_while_the_loop_is_busy(light, light_engine, light_first)
        await _call_while_the_loop_is_busy(heavy, heavy_engine, heavy_first)
    assert light_threads[-10:] == heavy_threads[-10:] == [False] * 10


async def test_an_engine_that_is_itself_slow_stays_on_the_executor() -> None:
    clock = FakeClock()
    threads: list[bool] = []

    slow = engine_taking(clock, threads, [10 * INLINE_BELOW_NS])
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=ENGINE_NS, clock=clock, waited=no_wait)
    for _ in range(40):
        await _call_while_the_loop_is_busy(calls, slow, clock)
    assert threads[0] is False  # it looked tiny at first
    assert threads[-10:] == [True] * 10  # its own time moved it off the loop


async def test_a_tiny_model_whose_calls_average_just_over_the_inline_threshold_stays_on_the_loop() -> None:
    # batched calls of a tiny model under load: mostly ~60 µs, one in four a slow 300 µs (cold caches,
    # a bigger batch); their average, 120 µs, crossed the old single 100 µs threshold again and again
    clock = FakeClock()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=ENGINE_NS, clock=clock, waited=no_wait)
    engine = engine_taking(clock, threads, [60_000, 60_000, 60_000, 300_000])
    for _ in range(200):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert INLINE_BELOW_NS < (3 * 60_000 + 300_000) / 4 < THREAD_ABOVE_NS
    assert threads == [False] * 200


async def test_a_model_that_becomes_slow_for_good_leaves_the_loop_within_a_few_calls() -> None:
    clock = FakeClock()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=ENGINE_NS, clock=clock, waited=no_wait)
    engine = engine_taking(clock, threads, [1_000_000])
    for _ in range(10):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert threads[:3] == [False] * 3  # 10 µs, then 1 ms calls: the average passes 200 µs on the third
    assert threads[3:] == [True] * 7


async def test_a_threaded_call_is_timed_without_the_time_its_thread_waited_for_a_cpu() -> None:
    # on a core shared with the event loop, a 60 µs call's thread waits as long again while the loop runs:
    # 120 µs of wall time, read as the engine's own, held the model on the executor
    clock, wait = FakeClock(), FakeWait()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=10 * INLINE_BELOW_NS, clock=clock, waited=wait)
    engine = engine_taking(clock, threads, [60_000], wait)
    for _ in range(60):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert threads[0] is True
    assert threads[-10:] == [False] * 10


async def test_a_threaded_call_that_really_blocks_for_long_stays_on_the_executor() -> None:
    # time blocked (a GPU sync, I/O) is not time waiting for a CPU: it still counts as the engine's
    clock, wait = FakeClock(), FakeWait()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=10 * INLINE_BELOW_NS, clock=clock, waited=wait)
    engine = engine_taking(clock, threads, [500_000])  # blocks 500 µs, never waits for a CPU
    for _ in range(40):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert threads == [True] * 40
