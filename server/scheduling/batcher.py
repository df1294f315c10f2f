"""Dynamic batching for one model version: deadline-aware, cancellable, bounded, prioritised.

Policy. A request is dispatched at once when an engine instance is idle and the window policy
(server/batch_policy.py) sees no gain in waiting, so a lone request does not sit out a window; batches
form from the requests that arrive while every instance is busy, or while the adaptive policy holds
the queue because recent windows filled. ``always_wait_for_window`` holds the oldest request up to
``max_queue_delay`` unless a preferred size (or max_batch_size) is reached first. ``hold_until_queued``
is a test hook that keeps the queue closed until that many requests wait.

Correctness first: a batch only joins requests with equal non-batch dimensions and dtypes; cancelled
and expired requests are dropped before the engine runs; each future is resolved exactly once; an
engine error fails only its own batch.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import numpy as np

from server.core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from server.models.config import BatchingSpec
from server.scheduling.batch_policy import BatchCostTuner, PolicyKind, WindowPolicy
from server.telemetry.stats import VersionStats

Arrays = Mapping[str, np.ndarray]
RunBatch = Callable[[Arrays], Awaitable[dict[str, np.ndarray]]]
ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


#: A cancellation this close to a request's deadline is counted as expiry: gRPC cancels a call at its
#: deadline by its own clock, which can run a little ahead of the deadline we computed at decode time.
DEADLINE_SLACK_S = 0.010


def shape_key(inputs: Arrays) -> ShapeKey:
    """Requests batch together only when everything but the batch dimension agrees."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


@dataclass(slots=True, eq=False)
class Pending:
    inputs: Arrays
    rows: int
    key: ShapeKey
    future: asyncio.Future[dict[str, np.ndarray]]
    deadline: float | None
    enqueued: float
    priority: int
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(
        self,
        model: str,
        spec: BatchingSpec,
        max_batch_size: int,
        instances: int,
        run_batch: RunBatch,
        stats: VersionStats,
    ) -> None:
        self.model = model
        self.spec = spec
        self.max_batch_size = max_batch_size
        self._run_batch = run_batch
        self._stats = stats
        self._idle_instances = instances
        self._levels = max(1, spec.priority_levels)
        self._queues: list[deque[Pending]] = [deque() for _ in range(self._levels)]
        self.queued = 0
        self._delay = spec.max_queue_delay_us / 1e6
        kind: PolicyKind = "always" if spec.always_wait_for_window else "adaptive"
        self._policy = WindowPolicy(kind, self._delay, max_batch_size, spec.preferred_batch_sizes)
        self._window_expired = False
        self._tuner = BatchCostTuner(max_batch_size)
        #: cap batch sizes where per-row engine time stops falling (off with explicit sizes or the test hook)
        self._cost_aware = not spec.preferred_batch_sizes and not spec.hold_until_queued
        self._window_timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._hold_open = False
        self._loop: asyncio.AbstractEventLoop | None = None

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

    async def submit(
        self, inputs: Arrays, rows: int, deadline: float | None, priority: int = 0
    ) -> dict[str, np.ndarray]:
        if self.spec.max_queue_size and self.queued >= self.spec.max_queue_size:
            raise ResourceExhausted(
                f"model '{self.model}' queue is full ({self.spec.max_queue_size} requests waiting); retry later"
            )
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        now = time.monotonic()
        if self.spec.default_timeout_us:
            queue_deadline = now + self.spec.default_timeout_us / 1e6
            deadline = queue_deadline if deadline is None else min(deadline, queue_deadline)
        if deadline is not None and now >= deadline:
            self._stats.expired_before_run += 1
            raise DeadlineExceeded(f"deadline expired before model '{self.model}' ran")
        self._policy.note_arrival(now)
        if (
            self.queued == 0
            and self._idle_instances > 0
            and not self.spec.hold_until_queued
            and self._policy.decide(rows, now, now) <= 0
        ):
            return await self._run_now(inputs, rows, now)
        pending = Pending(inputs, rows, shape_key(inputs), loop.create_future(), deadline, now, priority)
        if deadline is not None:
            pending.timer = loop.call_at(loop.time() + (deadline - now), self._expire, pending)
        pending.future.add_done_callback(functools.partial(self._forget, pending))
        self._queues[priority].append(pending)
        self.queued += 1
        self._dispatch()
        return await pending.future

    async def _run_now(self, inputs: Arrays, rows: int, now: float) -> dict[str, np.ndarray]:
        """The idle-engine fast path: no queue entry, future or task for a request that can run at once.

        Parallelism stays bounded by the slot's executor threads even if a cancelled caller returns the
        instance before its thread finishes.
        """
        self._policy.observe(rows, now, False)
        self._idle_instances -= 1
        started = time.perf_counter_ns()
        try:
            outputs = await self._run_batch(inputs)
        finally:
            elapsed = time.perf_counter_ns() - started
            self._stats.record_batch(rows, elapsed)
            self._tuner.record(rows, elapsed)
            self._idle_instances += 1
            if self.queued:
                self._dispatch()
        return outputs  # a lone request's outputs are returned whole, as without a batcher

    def _forget(self, pending: Pending, _future: object = None) -> None:
        """Runs when a future completes for any reason; a cancelled caller leaves the queue at once."""
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future.cancelled():
            queue = self._queues[pending.priority]
            try:
                queue.remove(pending)
            except ValueError:
                return  # already taken into a batch; its result is discarded
            self.queued -= 1
            if pending.deadline is not None and time.monotonic() >= pending.deadline - DEADLINE_SLACK_S:
                self._stats.expired_before_run += 1  # gRPC cancelled the call at its deadline
            else:
                self._stats.cancelled_before_run += 1

    def _expire(self, pending: Pending) -> None:
        if not pending.future.done():
            queue = self._queues[pending.priority]
            try:
                queue.remove(pending)
            except ValueError:
                return  # already running: let it finish
            self.queued -= 1
            self._stats.expired_before_run += 1
            pending.future.set_exception(DeadlineExceeded(f"deadline expired while queued for model '{self.model}'"))

    def _queued_rows(self, key: ShapeKey | None = None) -> int:
        return sum(p.rows for q in self._queues for p in q if key is None or p.key == key)

    def _oldest(self) -> Pending | None:
        for queue in self._queues:
            if queue:
                return queue[0]
        return None

    def _dispatch(self) -> None:
        """Start as many batches as idle instances and the policy allow."""
        while self._idle_instances > 0 and self.queued > 0:
            if self.spec.hold_until_queued and not self._hold_open:
                if self.queued < self.spec.hold_until_queued:
                    return
                self._hold_open = True  # release this group, then close again once the queue is empty
            head = self._oldest()
            assert head is not None
            if self._should_wait(head):
                return
            batch = self._take_batch(head.key)
            if not batch:
                continue
            self._policy.observe(sum(p.rows for p in batch), time.monotonic(), self._window_expired)
            if self._window_timer is not None:
                self._window_timer.cancel()
                self._window_timer = None
            self._idle_instances -= 1
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if self.queued == 0:
            self._hold_open = False

    def _should_wait(self, head: Pending) -> bool:
        """Ask the window policy whether to hold the queue; arm one timer for when the window ends."""
        if self.spec.hold_until_queued:
            return False
        now = time.monotonic()
        if self._cost_aware:
            self._policy.max_rows = self._tuner.steady_cap  # never wait for rows the batch would not take
        wait = self._policy.decide(self._queued_rows(head.key), head.enqueued, now)
        if wait <= 0:
            self._window_expired = head.enqueued + self._delay <= now
            return False
        if self._window_timer is None:
            self._window_timer = asyncio.get_running_loop().call_later(wait, self._window_elapsed)
        return True

    def _window_elapsed(self) -> None:
        self._window_timer = None
        self._dispatch()

    def _take_batch(self, key: ShapeKey) -> list[Pending]:
        """Highest priority first, FIFO within a level, same shape key, up to max (or a preferred) size."""
        available = self._queued_rows(key)
        limit = min(available, self.max_batch_size)
        fitting = [s for s in self.spec.preferred_batch_sizes if s <= limit]
        if fitting:
            limit = fitting[-1]
        elif self._cost_aware:
            limit = min(limit, self._tuner.cap())
        batch: list[Pending] = []
        rows = 0
        now = time.monotonic()
        for queue in self._queues:
            for pending in list(queue):
                if pending.key != key:
                    continue
                if rows and rows + pending.rows > limit:
                    break
                queue.remove(pending)
                self.queued -= 1
                if pending.future.done():
                    continue
                if pending.deadline is not None and now >= pending.deadline:
                    self._stats.expired_before_run += 1
                    pending.future.set_exception(
                        DeadlineExceeded(f"deadline expired while queued for model '{self.model}'")
                    )
                    continue
                batch.append(pending)
                rows += pending.rows
            if rows >= limit:
                break
        return batch

    async def _execute(self, batch: list[Pending]) -> None:
        started = time.monotonic()
        for pending in batch:
            self._stats.queue_ns += int((started - pending.enqueued) * 1e9)
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                names = batch[0].inputs.keys()
                inputs = {name: np.concatenate([p.inputs[name] for p in batch]) for name in names}
            rows = sum(p.rows for p in batch)
            t0 = time.perf_counter_ns()
            try:
                outputs = await self._run_batch(inputs)
            finally:
                elapsed = time.perf_counter_ns() - t0
                self._stats.record_batch(rows, elapsed)
                self._tuner.record(rows, elapsed)
            self._resolve(batch, outputs, rows)
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._idle_instances += 1
            self._dispatch()

    def _resolve(self, batch: list[Pending], outputs: dict[str, np.ndarray], rows: int) -> None:
        for name, array in outputs.items():
            if array.shape[:1] != (rows,):
                raise RuntimeError(
                    f"model '{self.model}' returned {array.shape[0] if array.ndim else 0} rows of '{name}' "
                    f"for a batch of {rows}"
                )
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            if not pending.future.done():
                pending.future.set_result({name: array[offset:end] for name, array in outputs.items()})
            offset = end

    async def close(self) -> None:
        """Fail whatever still waits and let running batches finish."""
        if self._window_timer is not None:
            self._window_timer.cancel()
        for queue in self._queues:
            while queue:
                pending = queue.popleft()
                self.queued -= 1
                if not pending.future.done():
                    pending.future.set_exception(Unavailable(f"model '{self.model}' is unloading"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
