"""Stream admission on its own: places, the FIFO of waiters, deadlines, cancels and closing."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.core.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from server.scheduling.settings import StreamingSpec
from server.scheduling.stream_admission import Admission
from server.telemetry.stats import StreamCounters
from tests.support import eventually_async


def admission(active: int = 1, waiting: int = 2) -> tuple[Admission, StreamCounters]:
    counters = StreamCounters()
    return Admission("m", StreamingSpec(max_active=active, max_waiting=waiting), counters), counters


async def waiting_for(gate: Admission, count: int) -> None:
    await eventually_async(lambda: gate.waiting == count, what=f"{count} waiting")


async def test_a_freed_place_goes_to_the_oldest_waiter_and_a_full_queue_is_resource_exhausted():
    gate, counters = admission(active=1, waiting=2)
    await gate.enter(None)
    first = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 1)
    second = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 2)
    with pytest.raises(ResourceExhausted, match="max_active_streams 1, max_waiting_streams 2"):
        await gate.enter(None)
    assert counters.streams_rejected == 1
    gate.leave()
    await first
    assert not second.done() and (counters.active_streams, counters.waiting_streams) == (1, 1)
    gate.leave()
    await second
    gate.leave()
    assert (counters.active_streams, counters.waiting_streams) == (0, 0)


async def test_close_ends_every_waiter_unavailable_and_leaves_the_active_count_alone():
    gate, counters = admission(active=1, waiting=2)
    await gate.enter(None)
    waiters = [asyncio.ensure_future(gate.enter(None)) for _ in range(2)]
    await waiting_for(gate, 2)
    gate.close()
    for waiter in waiters:
        with pytest.raises(Unavailable, match="unloading"):
            await waiter
    assert (counters.active_streams, counters.waiting_streams) == (1, 0)  # the waiters held no place
    gate.leave()  # the one active stream ends
    assert counters.active_streams == 0
    with pytest.raises(Unavailable):
        await gate.enter(None)


async def test_a_waiter_whose_deadline_passes_is_deadline_exceeded_and_gives_up_its_turn():
    gate, counters = admission(active=1, waiting=2)
    await gate.enter(None)
    with pytest.raises(DeadlineExceeded, match="waiting for a stream place"):
        await gate.enter(time.monotonic() + 0.01)
    assert counters.streams_expired == 1 and counters.waiting_streams == 0
    gate.leave()
    assert counters.active_streams == 0


async def test_a_cancelled_waiter_counts_as_cancelled_and_the_place_skips_it():
    gate, counters = admission(active=1, waiting=2)
    await gate.enter(None)
    cancelled = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 1)
    later = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert counters.streams_cancelled == 1 and gate.waiting == 1
    gate.leave()
    await later
    assert counters.active_streams == 1


async def test_a_waiter_cancelled_as_its_place_arrives_passes_the_place_on():
    gate, counters = admission(active=1, waiting=2)
    await gate.enter(None)
    unlucky = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 1)
    next_in_line = asyncio.ensure_future(gate.enter(None))
    await waiting_for(gate, 2)
    gate.leave()  # the place goes to ``unlucky`` ...
    unlucky.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    await next_in_line
    assert counters.active_streams == 1 and counters.waiting_streams == 0


def test_a_cancel_at_the_deadline_counts_as_expired():
    gate, counters = admission()
    gate.count_cancel(time.monotonic() + 0.001)  # within the clock slack: gRPC ended it at its deadline
    gate.count_cancel(None)
    assert (counters.streams_expired, counters.streams_cancelled) == (1, 1)
