"""The stream scheduler with a fake generative engine held on events: no server, no model.

The fake engine's step runs on the version's executor thread (EngineCalls in ``thread`` mode) and can
be held inside on a ``threading.Event``, so a test decides exactly what happens while a step runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from engines.base import InvalidInput
from engines.stream_part import StreamPart
from server.core.errors import InvalidArgument, Unavailable
from server.scheduling.execution import EngineCalls
from server.scheduling.settings import StreamingSpec
from server.scheduling.stream_scheduler import StreamScheduler
from server.telemetry.stats import StreamCounters
from tests.support import eventually_async

HOLD_S = 30.0


@dataclass(eq=False)
class FakeGen:
    name: str
    max_tokens: int
    prompt: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    generated: int = 0
    cache: object = None

    @property
    def started(self) -> bool:
        return self.cache is not None


class FakeEngine:
    """Steps streams named by their prompt; can hold a step, fail for a prompt, and records overlaps."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None  # when set to an unset Event, steps wait for it
        self.inside = threading.Event()  # set while a step runs
        self.bad: dict[str, Exception] = {}  # a step with one of these prompts raises this
        self.steps: list[list[str]] = []
        self.released: list[str] = []
        self.release_during_step = False

    def start(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any]) -> FakeGen:
        return FakeGen(str(inputs["prompt"][0]), int(parameters.get("max_tokens", 3)))

    def step(self, gens: Sequence[FakeGen]) -> list[StreamPart]:
        self.inside.set()
        try:
            self.steps.append([g.name for g in gens])
            if self.gate is not None:
                assert self.gate.wait(HOLD_S), "the test never let the step go"
            for gen in gens:
                if gen.name in self.bad:
                    raise self.bad[gen.name]
            return [self._advance(gen) for gen in gens]
        finally:
            self.inside.clear()

    @staticmethod
    def _advance(gen: FakeGen) -> StreamPart:
        gen.cache = gen.cache or object()
        gen.generated += 1
        outputs = {"token_ids": np.array([gen.generated], dtype=np.int64)}
        if gen.generated < gen.max_tokens:
            return StreamPart(outputs)
        return StreamPart(outputs, True, {"finish_reason": "length"})

    def release(self, gen: FakeGen) -> int:
        if self.inside.is_set():
            self.release_during_step = True
        self.released.append(gen.name)
        gen.cache = None
        return 0

    def cache_bytes(self, gen: FakeGen) -> int:
        return 8 if gen.started else 0


@pytest.fixture()
async def calls() -> AsyncIterator[EngineCalls]:
    engine_calls = EngineCalls("m", 1, mode="thread", instances=2)  # a release could overlap a step
    yield engine_calls
    await engine_calls.close(None)


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def counters() -> StreamCounters:
    return StreamCounters()


@pytest.fixture()
async def make(engine: FakeEngine, counters: StreamCounters, calls: EngineCalls) -> AsyncIterator[Any]:
    made: list[StreamScheduler] = []

    def build(**spec: int) -> StreamScheduler:
        scheduler = StreamScheduler("m", engine, StreamingSpec(**spec), counters, calls)  # type: ignore[arg-type]
        scheduler.start()
        made.append(scheduler)
        return scheduler

    yield build
    if engine.gate is not None:
        engine.gate.set()  # a failed test must not leave a step held
    for scheduler in made:
        await scheduler.close()


def request(name: str, max_tokens: int = 3) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"prompt": np.array([name], dtype=object)}, {"max_tokens": max_tokens}


async def read_all(scheduler: StreamScheduler, name: str, max_tokens: int = 3) -> list[int]:
    """Every token id a stream's reader receives, in order."""
    inputs, parameters = request(name, max_tokens)
    tokens: list[int] = []
    async for part in scheduler.session(inputs, parameters, None):
        tokens.extend(int(t) for t in part.outputs["token_ids"])
    return tokens


def gauges_are_zero(counters: StreamCounters) -> bool:
    return (
        counters.active_streams == 0
        and counters.waiting_streams == 0
        and counters.buffered_outputs == 0
        and counters.cache_bytes == 0
    )


async def in_step(engine: FakeEngine) -> None:
    """Until a step is running (held on the engine's gate) on the executor thread."""
    await eventually_async(engine.inside.is_set, what="a step is running")


# --- closing -------------------------------------------------------------------------------------


async def test_close_waits_for_the_running_step_and_only_then_frees_the_caches(make, engine, counters):
    scheduler = make()
    engine.gate = threading.Event()
    readers = [asyncio.ensure_future(read_all(scheduler, name, 5)) for name in ("a", "b")]
    await in_step(engine)
    closing = asyncio.ensure_future(scheduler.close())
    done, _ = await asyncio.wait([closing], timeout=0.05)
    assert not done, "close() returned while a step was still running on its thread"
    assert engine.released == [] and engine.inside.is_set()
    engine.gate.set()
    await closing
    assert not engine.release_during_step
    assert sorted(engine.released) == ["a", "b"] and len(engine.steps) == 1  # no step after close
    for reader in readers:
        with pytest.raises(Unavailable, match="unloading"):
            await reader
    assert gauges_are_zero(counters) and counters.caches_freed == 2


async def test_a_reader_cancelled_during_a_step_is_freed_after_it_then_close_frees_the_rest(make, engine, counters):
    scheduler = make()
    engine.gate = threading.Event()
    doomed = asyncio.ensure_future(read_all(scheduler, "doomed", 5))
    other = asyncio.ensure_future(read_all(scheduler, "other", 5))
    await in_step(engine)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert counters.streams_cancelled == 1 and engine.released == []  # not while the step holds its cache
    closing = asyncio.ensure_future(scheduler.close())
    done, _ = await asyncio.wait([closing], timeout=0.05)
    assert not done and engine.released == []  # close waits for the step too
    engine.gate.set()
    await closing
    assert not engine.release_during_step and sorted(engine.released) == ["doomed", "other"]
    with pytest.raises(Unavailable):
        await other
    assert gauges_are_zero(counters)


async def test_close_ends_the_streams_waiting_for_a_place_unavailable(make, engine, counters):
    scheduler = make(max_active=1, max_waiting=2)
    scheduler.pause()
    active = asyncio.ensure_future(read_all(scheduler, "active"))
    waiters = [asyncio.ensure_future(read_all(scheduler, name)) for name in ("w1", "w2")]
    await eventually_async(lambda: counters.active_streams == 1 and counters.waiting_streams == 2)
    await scheduler.close()
    for waiter in waiters:
        with pytest.raises(Unavailable, match="unloading"):
            await waiter
    with pytest.raises(Unavailable):
        await active
    with pytest.raises(Unavailable):
        await read_all(scheduler, "late")
    assert engine.steps == [] and engine.released == ["active"]
    assert counters.active_streams == 0 and counters.waiting_streams == 0
    assert counters.streams_started == 1


# --- a bad prompt inside a step --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (InvalidInput("token id 999 is not in the vocabulary"), InvalidArgument),
        (RuntimeError("fell over"), RuntimeError),
    ],
)
async def test_a_bad_prompt_fails_only_its_own_stream_and_the_others_finish(make, engine, counters, error, answer):
    scheduler = make()
    engine.bad["bad"] = error
    scheduler.pause()  # hold until all five have joined, so the bad one shares their step
    names = ["a", "b", "bad", "c", "d"]
    readers = {name: asyncio.ensure_future(read_all(scheduler, name, 4)) for name in names}
    await eventually_async(lambda: counters.active_streams == 5)
    scheduler.resume()
    with pytest.raises(answer) as info:
        await readers.pop("bad")
    if answer is InvalidArgument:
        assert "model 'm'" in str(info.value) and "not in the vocabulary" in str(info.value)
    for reader in readers.values():
        assert await reader == [1, 2, 3, 4]
    assert engine.steps[0] == names and engine.released.count("bad") == 1
    assert counters.streams_failed == 1 and counters.streams_completed == 4
    await eventually_async(lambda: gauges_are_zero(counters), what="gauges back to 0")


async def test_a_failure_no_smaller_step_avoids_fails_the_step_without_splitting_it(make, engine, counters, calls):
    scheduler = make()
    engine.gate = threading.Event()
    readers = [asyncio.ensure_future(read_all(scheduler, name)) for name in ("a", "b")]
    await in_step(engine)
    calls.closed = True  # the version is unloading under the step: every further engine call is refused
    engine.gate.set()
    await eventually_async(lambda: counters.active_streams == 0)
    for reader in readers:
        with pytest.raises(Unavailable):
            await reader
    assert len(engine.steps) == 1 and counters.streams_failed == 2


# --- gauges ---------------------------------------------------------------------------------------------


async def test_buffered_outputs_return_to_zero_when_a_finished_streams_reader_leaves_unread(make, engine, counters):
    scheduler = make()
    scheduler.pause(after_steps=1)
    inputs, parameters = request("s", 3)
    session = scheduler.session(inputs, parameters, None)
    first = await session.__anext__()
    assert first.outputs["token_ids"].tolist() == [1]
    scheduler.resume()
    await eventually_async(lambda: counters.streams_completed == 1)
    assert counters.buffered_outputs == 2  # finished, with two outputs nobody read yet
    await session.aclose()  # ... and the reader leaves
    assert counters.buffered_outputs == 0
    assert counters.streams_cancelled == 0  # it had finished: leaving it is no cancel
    await eventually_async(lambda: gauges_are_zero(counters), what="gauges back to 0")


async def test_a_reader_that_fell_behind_gets_the_buffered_outputs_in_one_message(make, engine, counters):
    scheduler = make(max_buffered=8)
    scheduler.pause(after_steps=1)
    inputs, parameters = request("s", 5)
    session = scheduler.session(inputs, parameters, None)
    await session.__anext__()
    scheduler.resume()
    await eventually_async(lambda: counters.streams_completed == 1)
    rest = [part async for part in session]
    assert len(rest) == 1 and rest[0].final and rest[0].outputs["token_ids"].tolist() == [2, 3, 4, 5]
    assert rest[0].parameters == {"finish_reason": "length"}
    await eventually_async(lambda: gauges_are_zero(counters), what="gauges back to 0")
