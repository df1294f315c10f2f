"""Dynamic batching for one model version: deadline-aware, cancellable, bounded, prioritised.

Policy. A request is dispatched at once when an engine instance is idle and the window policy
(server/scheduling/batch_policy.py) sees no gain in waiting, so a lone request does not sit out a
window; batches form from the requests that arrive while every instance is busy, or while the adaptive
policy holds the queue because recent windows filled. ``always_wait_for_window`` holds the oldest
request up to ``max_queue_delay`` unless a preferred size (or max_batch_size) is reached first.
``hold_until_queued`` is a test hook (set through the environment, see server/models/test_hooks.py)
that keeps the queue closed until that many requests wait.

Correctness first: a batch only joins requests with equal non-batch dimensions and dtypes; cancelled
and expired requests are dropped before the engine runs; each future is resolved exactly once; the
queue is bounded (``max_queue_size``, never unbounded) and its counts are kept live (batch_queue.py).
An engine call holds its instance until the call returns, even when every caller waiting for it has
gone, so no more than ``instances`` calls ever run at once. After :meth:`Batcher.close` nothing is
accepted and no timer dispatches.

A failed batch of several requests is rerun one request at a time to find the culprit
(server/scheduling/batch_results.py, :func:`rerun_alone`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from server.core.deadlines import expired
from server.core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from server.scheduling.batch_cost import BatchCostTuner
from server.scheduling.batch_policy import PolicyKind, WindowPolicy
from server.scheduling.batch_queue import Arrays, BatchQueue, Pending, shape_key
from server.scheduling.batch_results import Outputs, fail, may_be_one_requests_fault, rerun_alone, resolve
from server.scheduling.eager import resume
from server.scheduling.settings import DEFAULT_MAX_QUEUE_SIZE, BatchingSpec
from server.telemetry.calls import CallRecord, current_call, stamp_batch
from server.telemetry.stats import VersionStats

log = logging.getLogger("inferd.batcher")

RunBatch = Callable[[Arrays], Awaitable[Outputs]]
T = TypeVar("T")


class Batcher:
    def __init__(
        self,
        model: str,
        spec: BatchingSpec,
        max_batch_size: int,
        instances: int,
        run_batch: RunBatch,
        stats: VersionStats,
        version: int | None = None,
        runs_inline: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.spec = spec
        self.max_batch_size = max_batch_size
        #: requests the queue holds at most; 0 in a spec means the default, never unbounded
        self.max_queue_size = spec.max_queue_size or DEFAULT_MAX_QUEUE_SIZE
        self._run_batch = run_batch
        #: whether the next engine call will run on the event loop (EngineCalls.runs_inline): the fast path
        #: then awaits it directly, since it cannot suspend; None = not known (always the guarded path)
        self._runs_inline = runs_inline
        self._stats = stats
        self.instances = instances
        self._idle_instances = instances
        self._queue = BatchQueue(spec.priority_levels)
        self._delay = spec.max_queue_delay_us / 1e6
        kind: PolicyKind = "always" if spec.always_wait_for_window else "adaptive"
        self._policy = WindowPolicy(kind, self._delay, max_batch_size, spec.preferred_batch_sizes)
        self._window_expired = False
        self._tuner = BatchCostTuner(max_batch_size)
        #: cap batch sizes where per-row engine time stops falling (off with explicit sizes or the test hook)
        self._cost_aware = not spec.preferred_batch_sizes and not spec.hold_until_queued
        self._window_timer: asyncio.TimerHandle | None = None
        #: engine calls this batcher started (batches, lone requests, reruns); each holds an instance
        self._running: set[asyncio.Task[Any]] = set()
        self._hold_open = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def queued(self) -> int:
        """Requests waiting in the queue now."""
        return self._queue.requests

    @property
    def default_priority(self) -> int:
        """The queue index of requests that ask for no priority."""
        return max(0, self.spec.default_priority_level - 1)

    def priority_of(self, parameters: Mapping[str, object]) -> int:
        """Map the request's ``priority`` parameter (1 = highest) to a queue index."""
        raw = parameters.get("priority")
        if raw is None or self.spec.priority_levels == 0:
            return self.default_priority
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= self.spec.priority_levels:
            raise InvalidArgument(
                f"parameter 'priority' for model '{self.model}' must be an integer "
                f"from 1 to {self.spec.priority_levels}"
            )
        return raw - 1

    def _unloading(self) -> Unavailable:
        version = f" version {self.version}" if self.version is not None else ""
        return Unavailable(f"model '{self.model}'{version} is unloading")

    async def submit(self, inputs: Arrays, rows: int, deadline: float | None, priority: int = 0) -> Outputs:
        """Answer one request: at once on an idle engine, else through the queue (and, when it fills the
        cost cap alone, through the queue now and then for an upward exploration: batch_cost.py)."""
        if self.closed:
            raise self._unloading()
        waiting = self._queue.requests
        if waiting >= self.max_queue_size:
            raise ResourceExhausted(
                f"model '{self.model}' queue is full ({self.max_queue_size} requests waiting, its "
                f"max_queue_size); retry later"
            )
        now = time.monotonic()
        if self.spec.default_timeout_us:
            queue_deadline = now + self.spec.default_timeout_us / 1e6
            deadline = queue_deadline if deadline is None else min(deadline, queue_deadline)
        if deadline is not None and now >= deadline:
            self._stats.expired_before_run += 1
            raise DeadlineExceeded(f"deadline expired before model '{self.model}' ran")
        self._policy.note_arrival(now)
        if (
            not waiting
            and self._idle_instances > 0
            and not self.spec.hold_until_queued
            and self._policy.decide(rows, now, now, 1) <= 0
            and (rows < self._policy.max_rows or not self._tuner.explores_above(self._policy.max_rows, now))
        ):
            if self._runs_inline is not None and self._runs_inline():
                # the call runs on the event loop and cannot suspend: nothing to hand to a task, and it is
                # made right here (a coroutine frame less on a lone request's path)
                records = self._begin_now(rows, now)
                try:
                    return await self._call(inputs, rows, records)
                finally:
                    self._release()
            return await self._run_now(inputs, rows, now)
        loop = self._loop = self._loop or asyncio.get_running_loop()
        pending = Pending(inputs, rows, shape_key(inputs), loop.create_future(), deadline, now, priority)
        pending.record = current_call.get()
        if deadline is not None:
            pending.timer = loop.call_at(loop.time() + (deadline - now), self._expire, pending)
        self._queue.push(pending)
        self._dispatch()
        # the caller tidies up after its own wait: a done-callback per future cost a scheduled call each
        try:
            return await pending.future
        except asyncio.CancelledError:  # the caller left (or gRPC cancelled it at its deadline)
            if self._queue.remove(pending):
                self._count_cancel(pending)
            raise
        finally:
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None

    def _start(self, batch: list[Pending]) -> None:
        """Run one batch as a task this batcher owns; it holds an instance until its engine calls return
        (``_execute`` frees it itself, before its callers resume: see there)."""
        self._idle_instances -= 1
        self._track(asyncio.get_running_loop().create_task(self._execute(batch)), self._settled)

    def _own(self, call: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run an engine call that already holds an instance; the instance is freed when the task ends."""
        return self._track(asyncio.get_running_loop().create_task(call), self._finished)

    def _track(self, task: asyncio.Task[T], done: Callable[[asyncio.Task[Any]], None]) -> asyncio.Task[T]:
        self._running.add(task)
        task.add_done_callback(done)
        return task

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # its error reached its callers (or nobody waits any more): never "not retrieved"

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """An engine call really returned (its callers may have gone long ago): free its instance."""
        self._settled(task)
        self._release()

    def _release(self) -> None:
        self._idle_instances += 1
        if self._queue.requests:
            self._dispatch()
        else:
            self._hold_open = False  # what _dispatch does with an empty queue

    async def _run_now(self, inputs: Arrays, rows: int, now: float) -> Outputs:
        """The idle-engine fast path: no queue entry, future or task for a request that can run at once
        (``submit`` makes a call known to run inline itself). The call starts right here
        (server/scheduling/eager.py). An engine call that answers without yielding the loop is over before
        the caller could be cancelled. One that waits (on an executor thread) goes on in a task of the
        batcher's, so a caller cancelled mid-call leaves (``shield``) without handing the instance back
        while the engine still runs.
        """
        records = self._begin_now(rows, now)
        call = self._call(inputs, rows, records)
        try:
            waiting_on = call.send(None)
        except StopIteration as done:
            self._release()
            return done.value
        except BaseException:
            self._release()
            raise
        return await asyncio.shield(self._own(resume(call, waiting_on)))

    def _begin_now(self, rows: int, now: float) -> tuple[CallRecord, ...]:
        """A request takes an idle instance without queueing: the policy, the instance and the (zero)
        queue wait see it; the caller's call record, if something observes calls."""
        self._policy.observe(rows, now, False, requests=1)
        self._idle_instances -= 1
        self._stats.record_queue_wait(0)
        record = current_call.get()  # the caller's task: its record, if something observes calls
        return (record,) if record is not None else ()

    async def _call(self, inputs: Arrays, rows: int, records: Sequence[CallRecord] = ()) -> Outputs:
        """One engine call, timed into the batch statistics and the cost tuner, and stamped on the
        records of the calls it serves when something observes them (tracing, the access log)."""
        started = time.perf_counter_ns()
        started_unix = time.time_ns() if records else 0
        try:
            return await self._run_batch(inputs)
        finally:
            elapsed = time.perf_counter_ns() - started
            self._stats.record_batch(rows, elapsed)
            self._tuner.record(rows, elapsed)
            if records:
                stamp_batch(records, rows, started_unix, elapsed)

    def _count_cancel(self, pending: Pending) -> None:
        if expired(pending.deadline):
            self._stats.expired_before_run += 1  # gRPC cancelled the call at its deadline
        else:
            self._stats.cancelled_before_run += 1

    def _expire(self, pending: Pending) -> None:
        """A queued request's deadline passed: it leaves the queue without running."""
        pending.timer = None
        if not pending.future.done() and self._queue.remove(pending):
            self._stats.expired_before_run += 1
            pending.future.set_exception(DeadlineExceeded(f"deadline expired while queued for model '{self.model}'"))

    def _dispatch(self) -> None:
        """Start as many batches as idle instances and the policy allow."""
        while not self.closed and self._idle_instances > 0 and self.queued > 0:
            if self.spec.hold_until_queued and not self._hold_open:
                if self.queued < self.spec.hold_until_queued:
                    return
                self._hold_open = True  # release this group, then close again once the queue is empty
            head = self._queue.head()
            assert head is not None
            if self._should_wait(head):
                return
            batch, explored = self._take_batch(head)
            if not batch:
                continue
            if not explored:
                # a batch the tuner sized to measure another size says nothing of what a window gathers:
                # shown to the policy, batches cut short shrank the batches that followed (measured on the MLP)
                self._policy.observe(sum(p.rows for p in batch), time.monotonic(), self._window_expired, len(batch))
            if self._window_timer is not None:
                self._window_timer.cancel()
                self._window_timer = None
            self._start(batch)
        if self.queued == 0:
            self._hold_open = False

    def _should_wait(self, head: Pending) -> bool:
        """Ask the window policy whether to hold the queue; arm one timer for when the window ends."""
        if self.spec.hold_until_queued:
            return False
        now = time.monotonic()
        rows = self._queue.rows(head.key)
        if self._cost_aware:
            steady = self._policy.max_rows = self._tuner.steady_cap  # never wait for rows a batch would not take
            explore_cap = self._tuner.peek(now) if steady < self.max_batch_size else 0
            if explore_cap > steady:
                # the next batch explores a size the cap never lets the window gather: hold the queue until
                # it holds more than the cap (a bucket above it), at most the window (batch_cost.py,
                # "exploring upwards"); the policy is neither asked nor taught
                wait = head.enqueued + self._delay - now if rows <= steady else 0.0
                return self._hold(wait, head.enqueued + self._delay <= now)
        wait = self._policy.decide(rows, head.enqueued, now, self._queue.requests_of(head.key))
        return self._hold(wait, head.enqueued + self._delay <= now)

    def _hold(self, wait: float, window_expired: bool) -> bool:
        """Hold the queue for ``wait`` seconds (one timer for when that ends), or not (``wait`` <= 0)."""
        if wait <= 0:
            self._window_expired = window_expired
            return False
        if self._window_timer is None:
            self._window_timer = asyncio.get_running_loop().call_later(wait, self._window_elapsed)
        return True

    def _window_elapsed(self) -> None:
        self._window_timer = None
        if not self.closed:
            self._dispatch()

    def _take_batch(self, head: Pending) -> tuple[list[Pending], bool]:
        """Highest priority first, FIFO within a level, same shape key, up to max (or a preferred) size;
        and whether the cost tuner sized the batch to measure another size than its steady cap (cut
        short below it, or gathered above it)."""
        now = time.monotonic()
        limit = min(self._queue.rows(head.key), self.max_batch_size)
        fitting = [s for s in self.spec.preferred_batch_sizes if s <= limit]
        explored = False
        if fitting:
            limit = fitting[-1]
        elif self._cost_aware:
            cap = self._tuner.cap(now)
            steady = self._tuner.steady_cap
            explored = (cap < limit and cap < steady) or (cap > steady and limit > steady)
            limit = min(limit, cap)
        return self._queue.take(head.key, limit, functools.partial(self._still_wanted, now)), explored

    def _still_wanted(self, now: float, pending: Pending) -> bool:
        """For a request leaving the queue into a batch: False (and dealt with) if cancelled or expired."""
        if pending.future.done():  # cancelled, its caller not woken yet
            self._count_cancel(pending)
            return False
        if pending.deadline is not None and now >= pending.deadline:
            self._stats.expired_before_run += 1
            pending.future.set_exception(DeadlineExceeded(f"deadline expired while queued for model '{self.model}'"))
            return False
        return True

    async def _execute(self, batch: list[Pending]) -> None:
        """Run a batch, answer its callers, and free the instance while they are still waking (freed one
        loop turn later, a caller that came straight back found it busy and stayed on the queued path)."""
        try:
            await self._run_and_answer(batch)
        finally:
            self._release()

    async def _run_and_answer(self, batch: list[Pending]) -> None:
        started = time.monotonic()
        records: list[CallRecord] = []
        for pending in batch:
            waited = int((started - pending.enqueued) * 1e9)
            self._stats.record_queue_wait(waited)
            if pending.record is not None:
                pending.record.queue_ns = waited
                records.append(pending.record)
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            names = batch[0].inputs.keys()
            inputs = {name: np.concatenate([p.inputs[name] for p in batch]) for name in names}
        rows = sum(p.rows for p in batch)
        try:
            outputs = await self._call(inputs, rows, records)
        except Exception as exc:
            if len(batch) > 1 and may_be_one_requests_fault(exc):
                log.debug(
                    "model %s: a batch of %d requests failed (%s); rerunning each alone", self.model, len(batch), exc
                )
                await rerun_alone(self.model, batch, self._call, self._stats)
            else:
                fail(batch, exc)
            return
        try:
            resolve(self.model, batch, outputs, rows)
        except Exception as exc:  # the model answered the wrong number of rows: nobody's request is at fault
            fail(batch, exc)

    async def close(self) -> None:
        """Refuse new requests, fail whatever still waits (UNAVAILABLE) and wait for running engine calls."""
        self.closed = True
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        for pending in self._queue.drain():
            if not pending.future.done():
                pending.future.set_exception(self._unloading())
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
