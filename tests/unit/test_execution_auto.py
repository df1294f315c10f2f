"""``execution: auto`` decides on the engine's own time, not on the hop to a thread and back.

Under heavy load the hop back to a busy event loop is itself over the 100 µs threshold; measured from the
loop it kept a tiny model on the executor for good once heavy load met it first. The clock is a fake one
shared by the engine and the test: the engine "takes" 10 µs, the loop "is busy" for 1 ms while each threaded
call is in flight.
"""

from __future__ import annotations

import asyncio
import threading

from server.scheduling.execution import INLINE_BELOW_NS, EngineCalls

ENGINE_NS = 10_000
BUSY_LOOP_NS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def tiny_engine(clock: FakeClock, threads: list[bool]) -> object:
    def infer() -> int:
        threads.append(threading.current_thread() is not threading.main_thread())
        clock.now += ENGINE_NS
        return 1

    return infer


async def _call_while_the_loop_is_busy(calls: EngineCalls, engine: object, clock: FakeClock) -> None:
    task = asyncio.ensure_future(calls.run(engine))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the call is submitted (or ran inline)
    clock.now += BUSY_LOOP_NS  # other work on the loop while the call is away on a thread
    await task


async def test_a_tiny_engine_met_by_heavy_load_first_returns_inline() -> None:
    clock = FakeClock()
    threads: list[bool] = []
    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=10 * INLINE_BELOW_NS, clock=clock)
    engine = tiny_engine(clock, threads)
    for _ in range(60):
        await _call_while_the_loop_is_busy(calls, engine, clock)
    assert threads[0] is True  # it started on the executor (it looked slow)
    assert threads[-10:] == [False] * 10  # and came back to the loop: the hop was not counted as engine time


async def test_light_or_heavy_load_first_ends_in_the_same_place() -> None:
    light_first, heavy_first = FakeClock(), FakeClock()
    light_threads: list[bool] = []
    heavy_threads: list[bool] = []
    light = EngineCalls("m", 1, "auto", initial_ns=ENGINE_NS, clock=light_first)
    heavy = EngineCalls("m", 1, "auto", initial_ns=10 * INLINE_BELOW_NS, clock=heavy_first)
    light_engine, heavy_engine = tiny_engine(light_first, light_threads), tiny_engine(heavy_first, heavy_threads)
    for _ in range(60):
        await _call_while_the_loop_is_busy(light, light_engine, light_first)
        await _call_while_the_loop_is_busy(heavy, heavy_engine, heavy_first)
    assert light_threads[-10:] == heavy_threads[-10:] == [False] * 10


async def test_an_engine_that_is_itself_slow_stays_on_the_executor() -> None:
    clock = FakeClock()
    threads: list[bool] = []

    def slow() -> int:
        threads.append(threading.current_thread() is not threading.main_thread())
        clock.now += 10 * INLINE_BELOW_NS
        return 1

    calls = EngineCalls("m", 1, "auto", instances=1, initial_ns=ENGINE_NS, clock=clock)
    for _ in range(40):
        await _call_while_the_loop_is_busy(calls, slow, clock)
    assert threads[0] is False  # it looked tiny at first
    assert threads[-10:] == [True] * 10  # its own time moved it off the loop
