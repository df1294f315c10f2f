"""The batcher alone, against a fake engine whose calls are held on asyncio.Events (no server, no sleeps).

The fake's calls behave like EngineCalls.run on an executor thread: a caller that is cancelled stops
waiting, but the call itself runs until the test releases it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from server.core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServingError, Unavailable
from server.scheduling.batch_cost import BatchCostTuner
from server.scheduling.batcher import Batcher
from server.scheduling.eager import resume
from server.scheduling.execution import EngineCalls
from server.scheduling.settings import DEFAULT_MAX_QUEUE_SIZE, BatchingSpec
from server.telemetry.stats import VersionStats
from tests.support import eventually_async

#: a row holding this value is one the engine refuses as invalid input (an out-of-vocabulary id)
BAD = -1.0
#: a row holding this value makes the engine fail in a way that blames no input
CRASH = -2.0


@dataclass
class Call:
    inputs: dict[str, np.ndarray]
    rows: int
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeEngine:
    """``run_batch`` for the batcher; with ``held`` every call waits until the test releases it."""

    def __init__(self, *, held: bool = False) -> None:
        self.held = held
        self.calls: list[Call] = []
        self.started: asyncio.Queue[Call] = asyncio.Queue()
        self.running = 0
        self.peak = 0

    async def run_batch(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # like a call on an executor thread: the caller's cancel does not stop the call
        return await asyncio.shield(asyncio.ensure_future(self._call(dict(inputs))))

    async def _call(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        call = Call(inputs, x.shape[0])
        self.calls.append(call)
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.put_nowait(call)
        try:
            if self.held:
                await call.release.wait()
            if (x == BAD).any():
                raise InvalidArgument("model 'm' rejected its input: id out of vocabulary")
            if (x == CRASH).any():
                raise RuntimeError("the engine crashed")
            return {"y": x * 2}
        finally:
            self.running -= 1

    async def next_call(self) -> Call:
        return await asyncio.wait_for(self.started.get(), 10)

    @property
    def sizes(self) -> list[int]:
        return [c.rows for c in self.calls]


def make(
    engine: FakeEngine, *, instances: int = 1, max_batch_size: int = 16, version: int | None = 3, **spec: object
) -> Batcher:
    return Batcher(
        "m",
        dataclasses.replace(BatchingSpec(), **spec),  # type: ignore[arg-type]
        max_batch_size,
        instances,
        engine.run_batch,
        VersionStats(),
        version=version,
    )


def rows(caller: int, n: int = 1, width: int = 4, value: float | None = None) -> dict[str, np.ndarray]:
    """Inputs unique to each caller (or all ``value``), so a reply with someone else's rows is caught."""
    if value is not None:
        return {"x": np.full((n, width), value, np.float32)}
    return {"x": (caller * 100 + np.arange(n * width, dtype=np.float32)).reshape(n, width)}


def submit(batcher: Batcher, inputs: dict[str, np.ndarray], **kwargs: object) -> asyncio.Task[dict[str, np.ndarray]]:
    deadline = kwargs.pop("deadline", None)
    priority = kwargs.pop("priority", 0)
    return asyncio.ensure_future(batcher.submit(inputs, inputs["x"].shape[0], deadline, priority))  # type: ignore[arg-type]


def assert_counts_consistent(batcher: Batcher) -> None:
    """The live counts equal what a full scan of the queue finds."""
    requests, by_key, requests_by_key = batcher._queue.recount()
    assert batcher.queued == requests
    assert batcher._queue.row_counts == {k: v for k, v in by_key.items() if v}
    assert batcher._queue.request_counts == requests_by_key


# --- a bad request inside a batch (item 8) ------------------------------------------------------------


async def test_one_bad_request_fails_alone_and_the_rest_of_its_batch_get_their_rows() -> None:
    engine = FakeEngine()
    batcher = make(engine, hold_until_queued=9)
    good = [rows(i) for i in range(8)]
    tasks = [submit(batcher, x) for x in good[:4]]
    tasks.append(submit(batcher, rows(0, value=BAD)))
    tasks += [submit(batcher, x) for x in good[4:]]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    bad = results.pop(4)
    assert isinstance(bad, InvalidArgument) and "model 'm'" in bad.message
    for result, x in zip(results, good, strict=True):
        assert not isinstance(result, BaseException), result
        np.testing.assert_array_equal(result["y"], x["x"] * 2)
    assert engine.sizes == [9] + [1] * 9  # the failed batch, then each member once, alone
    assert batcher._stats.batch_reruns == 9
    assert batcher._idle_instances == 1


async def test_an_engine_failure_that_blames_no_input_fails_only_the_request_that_causes_it() -> None:
    engine = FakeEngine()
    batcher = make(engine, hold_until_queued=3)
    xs = [rows(1), rows(2, value=CRASH), rows(3)]
    first, crashed, last = await asyncio.gather(*(submit(batcher, x) for x in xs), return_exceptions=True)
    assert isinstance(crashed, RuntimeError) and not isinstance(crashed, ServingError)  # answered INTERNAL
    assert not isinstance(first, BaseException) and not isinstance(last, BaseException)
    np.testing.assert_array_equal(first["y"], xs[0]["x"] * 2)
    np.testing.assert_array_equal(last["y"], xs[2]["x"] * 2)


async def test_a_lone_failing_request_gets_its_own_error_without_a_rerun() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    with pytest.raises(RuntimeError, match="crashed"):
        await batcher.submit(rows(0, value=CRASH), 1, None)
    with pytest.raises(InvalidArgument):
        await batcher.submit(rows(0, value=BAD), 1, None)
    assert engine.sizes == [1, 1] and batcher._stats.batch_reruns == 0


async def test_a_serving_error_of_the_engine_fails_the_batch_without_reruns() -> None:
    calls = 0

    async def unloading(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        raise Unavailable("model 'm' version 3 is unloading")

    batcher = Batcher("m", BatchingSpec(hold_until_queued=3), 8, 1, unloading, VersionStats())
    results = await asyncio.gather(*(batcher.submit(rows(i), 1, None) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    assert calls == 1 and batcher._stats.batch_reruns == 0


async def test_a_member_whose_deadline_passes_while_others_rerun_fails_without_running() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine, hold_until_queued=3)
    soon = time.monotonic() + 0.3
    bad = submit(batcher, rows(1, value=BAD))
    first = submit(batcher, rows(2))
    late = submit(batcher, rows(3), deadline=soon)
    (await engine.next_call()).release.set()  # the batch of three fails
    lone_bad = await engine.next_call()
    assert lone_bad.rows == 1 and (lone_bad.inputs["x"] == BAD).all()
    with pytest.raises(DeadlineExceeded, match="reran its failed batch"):
        await asyncio.wait_for(late, 10)  # its deadline passes while the bad request reruns
    lone_bad.release.set()
    (await engine.next_call()).release.set()
    with pytest.raises(InvalidArgument):
        await bad
    np.testing.assert_array_equal((await first)["y"], rows(2)["x"] * 2)
    assert engine.sizes == [3, 1, 1] and batcher._stats.batch_reruns == 2


# --- engine calls outlive their callers (items 1 and 5) -----------------------------------------------


async def test_a_cancelled_callers_instance_is_not_reused_until_its_engine_call_returns() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine)
    alone = submit(batcher, rows(1))  # the idle-engine fast path
    running = await engine.next_call()
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert batcher._idle_instances == 0  # the engine call is still running
    queued = submit(batcher, rows(2))
    await eventually_async(lambda: batcher.queued == 1, what="the second request waits")
    assert engine.running == 1 and len(engine.calls) == 1
    running.release.set()
    (await engine.next_call()).release.set()
    np.testing.assert_array_equal((await queued)["y"], rows(2)["x"] * 2)
    assert engine.peak == 1 and batcher._idle_instances == 1


async def test_a_batch_whose_callers_all_left_keeps_its_instance_until_the_call_returns() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine, hold_until_queued=2)
    callers = [submit(batcher, rows(i)) for i in range(2)]
    batch = await engine.next_call()
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    later = [submit(batcher, rows(10 + i)) for i in range(2)]
    await eventually_async(lambda: batcher.queued == 2, what="two more requests wait")
    assert batcher._idle_instances == 0 and engine.running == 1
    batch.release.set()
    (await engine.next_call()).release.set()
    await asyncio.gather(*later)
    assert engine.sizes == [2, 2] and engine.peak == 1


async def test_two_instances_run_two_engine_calls_at_once_never_three() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine, instances=2)
    tasks = [submit(batcher, rows(i)) for i in range(5)]
    first, second = await engine.next_call(), await engine.next_call()
    await eventually_async(lambda: batcher.queued == 3, what="three requests wait")
    assert engine.running == 2 and batcher._idle_instances == 0
    first.release.set()
    third = await engine.next_call()  # the freed instance takes the three waiting requests as one batch
    assert third.rows == 3 and engine.running == 2
    second.release.set()
    third.release.set()
    await asyncio.gather(*tasks)
    assert engine.peak == 2 and batcher._idle_instances == 2


async def test_an_inline_engine_call_answers_on_the_fast_path_and_frees_its_instance() -> None:
    calls = 0

    async def inline(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        if (inputs["x"] == BAD).any():
            raise InvalidArgument("model 'm' rejected its input")
        return {"y": inputs["x"] * 2}  # never yields the loop, like EngineCalls' inline mode

    batcher = Batcher("m", BatchingSpec(), 8, 1, inline, VersionStats())
    np.testing.assert_array_equal((await batcher.submit(rows(1), 1, None))["y"], rows(1)["x"] * 2)
    with pytest.raises(InvalidArgument):
        await batcher.submit(rows(0, value=BAD), 1, None)
    assert calls == 2 and batcher._idle_instances == 1 and not batcher._running


async def test_a_caller_that_comes_straight_back_after_a_queued_request_finds_the_engine_idle() -> None:
    """A client at concurrency 1 sends its next request as soon as the answer arrives. The instance must be
    free by then: freed one loop turn after the callers woke, the next request queued, and so did every
    one after it (batching on measured ~5 % slower than off at concurrency 1)."""
    fast = 0

    class Counting(Batcher):
        async def _run_now(self, *args: Any) -> dict[str, np.ndarray]:
            nonlocal fast
            fast += 1
            return await super()._run_now(*args)

    engine = FakeEngine(held=True)
    batcher = Counting("m", BatchingSpec(), 16, 1, engine.run_batch, VersionStats())
    first = submit(batcher, rows(1))
    held = await engine.next_call()  # the instance is busy: the next request queues

    async def client() -> list[dict[str, np.ndarray]]:
        queued = await batcher.submit(rows(2), 1, None)
        return [queued, await batcher.submit(rows(3), 1, None)]  # straight back, like a closed loop

    looping = asyncio.ensure_future(client())
    await eventually_async(lambda: batcher.queued == 1)
    engine.held = False
    held.release.set()
    await first
    answers = await looping
    np.testing.assert_array_equal(answers[1]["y"], rows(3)["x"] * 2)
    assert fast == 2  # the first request and the one that came straight back; only the second queued
    assert batcher._idle_instances == 1 and not batcher._running


async def test_a_call_known_to_run_inline_is_awaited_directly_without_starting_it_by_hand() -> None:
    """With ``runs_inline`` saying yes, the fast path awaits the engine call as a plain coroutine: no
    hand-driven ``send`` (whose StopIteration costs a caller at concurrency 1), no task."""
    started_by_hand = 0
    real_call = Batcher._call

    class Counting(Batcher):
        def _call(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            nonlocal started_by_hand
            call = real_call(self, *args, **kwargs)  # type: ignore[arg-type]
            original_send = call.send

            class Watched:
                def send(self, value: object) -> object:
                    nonlocal started_by_hand
                    started_by_hand += 1
                    return original_send(value)

                def __await__(self) -> object:
                    return call.__await__()

                def __getattr__(self, name: str) -> object:
                    return getattr(call, name)

            return Watched()

    async def inline(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2}

    known = Counting("m", BatchingSpec(), 8, 1, inline, VersionStats(), runs_inline=lambda: True)
    np.testing.assert_array_equal((await known.submit(rows(1), 1, None))["y"], rows(1)["x"] * 2)
    assert started_by_hand == 0 and known._idle_instances == 1 and not known._running
    unknown = Counting("m", BatchingSpec(), 8, 1, inline, VersionStats())
    np.testing.assert_array_equal((await unknown.submit(rows(2), 1, None))["y"], rows(2)["x"] * 2)
    assert started_by_hand == 1 and unknown._idle_instances == 1


async def test_a_cancelled_caller_keeps_the_instance_while_its_executor_thread_runs() -> None:
    release = threading.Event()
    entered = threading.Event()

    def infer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        release.wait(10)
        return {"y": inputs["x"] * 2}

    calls = EngineCalls("m", 1, "thread", instances=1)

    async def run_batch(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await calls.run(infer, inputs)

    batcher = Batcher("m", BatchingSpec(), 8, 1, run_batch, VersionStats())
    caller = submit(batcher, rows(1))
    await eventually_async(entered.is_set, what="the engine call started on its thread")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert batcher._idle_instances == 0 and calls.running == 1
    release.set()
    await eventually_async(lambda: batcher._idle_instances == 1, what="the instance comes back with the thread")
    assert calls.running == 0
    await calls.close(None)


# --- close (item 3) -----------------------------------------------------------------------------------


async def queued_with_a_deadline(engine: FakeEngine, batcher: Batcher) -> tuple[Any, Call, Any, Any]:
    """One request running (held), one queued behind it with a deadline timer armed."""
    running = submit(batcher, rows(0))
    call = await engine.next_call()
    queued = submit(batcher, rows(1), deadline=time.monotonic() + 3600)
    await eventually_async(lambda: batcher.queued == 1)
    pending = batcher._queue.head()
    assert pending is not None and pending.timer is not None
    return running, call, queued, pending


async def test_a_queued_request_failed_by_close_leaves_no_deadline_timer_armed() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine)
    running, call, queued, pending = await queued_with_a_deadline(engine, batcher)
    timer = pending.timer
    closing = asyncio.ensure_future(batcher.close())
    with pytest.raises(Unavailable):
        await queued
    assert timer.cancelled() and pending.timer is None
    call.release.set()
    await running
    await closing


async def test_a_cancelled_queued_caller_leaves_the_queue_and_is_counted_once() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine)
    running, call, queued, pending = await queued_with_a_deadline(engine, batcher)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert batcher.queued == 0 and batcher._stats.cancelled_before_run == 1 and pending.timer is None
    call.release.set()
    await running
    assert engine.sizes == [1] and batcher._stats.cancelled_before_run == 1


async def test_close_fails_queued_requests_with_unavailable_and_waits_for_the_running_call() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine)
    running = submit(batcher, rows(0))
    call = await engine.next_call()
    queued = [submit(batcher, rows(i)) for i in (1, 2)]
    await eventually_async(lambda: batcher.queued == 2, what="two requests wait")
    closing = asyncio.ensure_future(batcher.close())
    for task in queued:
        with pytest.raises(Unavailable, match="model 'm' version 3 is unloading"):
            await task
    assert not closing.done()  # the running call is waited for, not abandoned
    with pytest.raises(Unavailable, match="model 'm' version 3 is unloading"):
        await asyncio.wait_for(batcher.submit(rows(3), 1, None), 10)  # refused while the close is under way
    call.release.set()
    await asyncio.wait_for(closing, 10)
    np.testing.assert_array_equal((await running)["y"], rows(0)["x"] * 2)
    assert batcher.queued == 0 and engine.sizes == [1]


async def test_a_closed_batcher_refuses_requests_and_a_stale_window_timer_dispatches_nothing() -> None:
    engine = FakeEngine()
    batcher = make(engine, always_wait_for_window=True, max_queue_delay_us=60_000_000)
    waiting = submit(batcher, rows(0))
    await eventually_async(lambda: batcher._window_timer is not None, what="the window timer is armed")
    timer = batcher._window_timer
    await batcher.close()
    with pytest.raises(Unavailable, match="unloading"):
        await waiting
    with pytest.raises(Unavailable, match="model 'm' version 3 is unloading"):
        await asyncio.wait_for(batcher.submit(rows(1), 1, None), 10)
    assert timer is not None and timer.cancelled()
    batcher._window_elapsed()  # a timer callback that was already due when close ran
    assert engine.calls == [] and batcher.queued == 0


# --- the queue: bounded, and counts kept live (item 9) ------------------------------------------------


async def test_a_full_queue_answers_resource_exhausted_naming_the_model_and_its_limit() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine, max_queue_size=2)
    busy = submit(batcher, rows(0))
    call = await engine.next_call()
    waiting = [submit(batcher, rows(i)) for i in (1, 2)]
    await eventually_async(lambda: batcher.queued == 2, what="two requests wait")
    with pytest.raises(ResourceExhausted, match=r"model 'm' queue is full \(2 requests waiting, its max_queue_size\)"):
        await batcher.submit(rows(3), 1, None)
    call.release.set()
    (await engine.next_call()).release.set()
    await asyncio.gather(busy, *waiting)


def test_a_spec_without_a_queue_limit_gets_the_bounded_default() -> None:
    batcher = make(FakeEngine(), max_queue_size=0)
    assert batcher.max_queue_size == DEFAULT_MAX_QUEUE_SIZE == BatchingSpec().max_queue_size


async def test_queue_counts_match_a_full_recount_through_cancels_expiries_and_batches() -> None:
    engine = FakeEngine(held=True)
    batcher = make(engine, max_batch_size=4, priority_levels=2, default_priority_level=2)
    busy = submit(batcher, rows(0))
    first = await engine.next_call()
    expiring: list[asyncio.Task[dict[str, np.ndarray]]] = []
    cancelled: list[asyncio.Task[dict[str, np.ndarray]]] = []
    kept: list[asyncio.Task[dict[str, np.ndarray]]] = []
    soon = time.monotonic() + 0.2
    for i in range(24):
        inputs = rows(i, n=1 + i % 3, width=4 if i % 2 else 3)
        if i % 5 == 0:
            expiring.append(submit(batcher, inputs, deadline=soon, priority=i % 2))
        elif i % 4 == 0:
            cancelled.append(submit(batcher, inputs, priority=i % 2))
        else:
            kept.append(submit(batcher, inputs, priority=i % 2))
    await eventually_async(lambda: batcher.queued == 24, what="all requests wait")
    assert_counts_consistent(batcher)
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    await eventually_async(lambda: batcher.queued == 24 - len(cancelled), what="the cancelled leave the queue")
    assert_counts_consistent(batcher)
    expired = await asyncio.gather(*expiring, return_exceptions=True)
    assert all(isinstance(e, DeadlineExceeded) for e in expired)
    assert batcher.queued == len(kept)
    assert_counts_consistent(batcher)
    call = first
    while batcher.queued:  # each released call frees the instance for the next batch
        call.release.set()
        call = await engine.next_call()
        assert call.rows <= 4
        assert_counts_consistent(batcher)
    call.release.set()
    await asyncio.gather(busy, *kept)
    assert batcher.queued == 0 and batcher._queue.row_counts == {}
    assert batcher._stats.cancelled_before_run == len(cancelled)
    assert batcher._stats.expired_before_run == len(expiring)


# --- the fast path's eager start (server/scheduling/eager.py) -----------------------------------------


async def test_a_started_coroutine_finishes_in_a_task_through_every_suspension_and_error() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()

    async def call() -> int:
        a = await first
        try:
            await second
        except KeyError:
            return a * 10
        return -1

    coro = call()
    waiting_on = coro.send(None)
    assert waiting_on is first
    task = loop.create_task(resume(coro, waiting_on))
    first.set_result(4)
    second.set_exception(KeyError("x"))
    assert await task == 40


async def test_a_batch_the_cost_tuner_cuts_short_to_explore_teaches_the_window_policy_nothing() -> None:
    """Exploring a smaller size cuts a batch below what was queued. Shown to the window policy as what
    a window gathers, such batches shrank the batches after them (on the MLP: 6.3 → 5.6 rows per call,
    ~5 % fewer requests/s when every exploration cut one short)."""
    engine = FakeEngine(held=True)
    batcher = make(engine, max_batch_size=16)
    batcher._tuner = BatchCostTuner(16, explore_every=1)  # every queued batch explores: caps 3, then 7
    observed: list[int] = []
    real_observe = batcher._policy.observe

    def spy(rows: int, now: float, window_expired: bool, requests: int | None = None) -> None:
        observed.append(rows)
        real_observe(rows, now, window_expired, requests)

    batcher._policy.observe = spy  # type: ignore[method-assign]
    first = submit(batcher, rows(0))
    call = await engine.next_call()
    queued = [submit(batcher, rows(i)) for i in range(1, 8)]
    await eventually_async(lambda: batcher.queued == 7)
    for _ in range(2):
        call.release.set()
        call = await engine.next_call()
    call.release.set()
    await asyncio.gather(first, *queued)
    assert engine.sizes == [1, 3, 4]  # the 3-row batch was the exploration, cut short of the 7 queued
    assert observed == [1, 4]  # the lone first request and the rest of the queue; not the explored cut


async def test_a_batcher_capped_at_a_small_size_still_explores_a_bigger_one() -> None:
    """A cap also bounds what the window waits for: requests that arrive one at a time (as after an
    inline engine call) were dispatched the moment the cap's rows were queued, so an exploration of a
    bigger size found no more rows to take and measured nothing new, and the cap could never lift
    (measured: a server stuck at 3-row batches for good). The exploration now gets its window."""
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=16, always_wait_for_window=True, max_queue_delay_us=60_000_000)
    tuner = BatchCostTuner(16, explore_every=1)
    for batch_rows, ns_per_row in ((1, 40_000), (3, 12_000), (6, 100_000)):
        for _ in range(10):
            tuner.record(batch_rows, batch_rows * ns_per_row)
    assert tuner.steady_cap == 3
    tuner.record = lambda rows, ns: None  # type: ignore[method-assign]  # the fake's timings teach it nothing
    tuner._explored = 1  # the next batch explores up to 7 rows
    batcher._tuner = tuner
    observed: list[int] = []
    batcher._policy.observe = lambda rows, *args, **kwargs: observed.append(rows)  # type: ignore[method-assign]
    callers = []
    for i in range(4):
        callers.append(submit(batcher, rows(i)))
        await eventually_async(lambda: batcher.queued + sum(engine.sizes) == len(callers))
    await eventually_async(lambda: engine.calls)
    assert engine.sizes == [4]  # was [3]: the cap's rows, dispatched as the third arrived; 4 is a bucket above
    replies = await asyncio.gather(*callers)
    for i, reply in enumerate(replies):
        np.testing.assert_array_equal(reply["y"], rows(i)["x"] * 2)
    assert observed == []  # an explored batch teaches the window policy nothing
    assert_counts_consistent(batcher)


async def test_a_batcher_capped_at_one_row_still_explores_when_every_call_runs_inline() -> None:
    """With the cost cap at one row every request fills its batch, so no window holds it, and an inline
    engine call is over before the next request is read: the queue stayed empty, every request took the
    fast path, and the tuner was never asked again — 1-row batches for good. Such a request now queues
    once per exploration interval, and the batch after it explores upwards."""
    sizes: list[int] = []

    async def inline(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(inputs["x"].shape[0])  # no await: like a call made on the event loop
        return {"y": inputs["x"] * 2}

    spec = dataclasses.replace(BatchingSpec(), max_queue_delay_us=60_000_000)
    batcher = Batcher("m", spec, 16, 1, inline, VersionStats(), runs_inline=lambda: True)
    tuner = BatchCostTuner(16, explore_interval=0.0)
    for batch_rows, ns_per_row in ((1, 10_000), (2, 200_000)):
        for _ in range(10):
            tuner.record(batch_rows, batch_rows * ns_per_row)
    assert tuner.steady_cap == 1
    tuner.record = lambda rows, ns: None  # type: ignore[method-assign]  # the fake's timings teach it nothing
    batcher._tuner = tuner
    batcher._policy.max_rows = 1  # what the batcher last read from the tuner

    async def client(caller: int) -> list[dict[str, np.ndarray]]:
        return [await batcher.submit(rows(caller * 10 + n), 1, None) for n in range(5)]

    replies = await asyncio.gather(*(client(caller) for caller in range(4)))
    for caller, answers in enumerate(replies):
        for n, reply in enumerate(answers):
            np.testing.assert_array_equal(reply["y"], rows(caller * 10 + n)["x"] * 2)
    assert max(sizes) > 1  # was twenty 1-row calls
    assert sum(sizes) == 20
    assert_counts_consistent(batcher)


async def test_multi_row_requests_that_arrive_one_at_a_time_keep_forming_batches() -> None:
    """After a probe showed requests arriving together, the adaptive window must hold an 8-row request
    for the next one: counted in rows, it dispatched every 8-row request alone (it "filled" the 2 rows
    a fresh window expects) and windowing soon stopped."""
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=64, max_queue_delay_us=60_000_000)
    batcher._cost_aware = False  # the fake's timings are not the subject here
    policy = batcher._policy
    policy.windowing = True  # as after a probe that gathered several requests
    policy.expected_requests = 2.0
    callers = []
    for i in range(6):
        callers.append(submit(batcher, rows(i, n=8)))
        await eventually_async(lambda: batcher.queued + sum(engine.sizes) // 8 == len(callers))
    replies = await asyncio.gather(*callers)
    for i, reply in enumerate(replies):
        np.testing.assert_array_equal(reply["y"], rows(i, n=8)["x"] * 2)
    assert engine.sizes == [16, 16, 16]  # was [8, 8, 8, 8, 8, 8]: each request alone
    assert policy.windowing
    assert_counts_consistent(batcher)
