"""Where a model version's blocking engine calls run, and how many are running.

One policy for unary calls, batches and stream steps alike:

- ``thread``: every call runs on the version's executor (``instance_count`` threads);
- ``inline``: every call runs on the event loop (for engines that are known to be tiny);
- ``auto``: inline while calls average under ``INLINE_BELOW_NS`` (a thread hop costs more than a tiny
  model's call) **and no call is running on the executor** — an inline call would otherwise wait on the
  engine's lock with the whole event loop blocked behind it. The average is of the engine's own time,
  measured around the call on whichever thread runs it: timing a threaded call from the event loop would
  add the hop there and back, which under load is itself over the threshold, and keep a tiny model on
  the executor for good once heavy load met it first.

It counts *engine calls*, not the coroutines awaiting them: a caller that is cancelled while its call
runs on a thread stops waiting, but the call is still counted until the thread returns, and
:meth:`EngineCalls.close` closes the engine only once no call on it is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from engines.base import InvalidInput
from server.core.errors import InvalidArgument, Unavailable

T = TypeVar("T")
ExecutionMode = Literal["auto", "thread", "inline"]

#: "auto" runs calls inline while their moving average stays under this many nanoseconds.
INLINE_BELOW_NS = 100_000
#: weight of the newest call in the moving average of call time
EWMA_WEIGHT = 0.1


class EngineCalls:
    """Runs one version's engine calls (see the module docstring); closes the engine when none runs."""

    def __init__(
        self,
        model: str,
        version: int,
        mode: str = "auto",
        instances: int = 1,
        initial_ns: float = float(INLINE_BELOW_NS),
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.model = model
        self.version = version
        self.mode = mode
        self._executor = ThreadPoolExecutor(max_workers=max(1, instances), thread_name_prefix=f"{model}-v{version}")
        self._ewma_ns = initial_ns
        self._lock = threading.Lock()
        #: engine calls running now, inline or on a thread (written under ``_lock``)
        self._running = 0
        #: of which on the executor
        self._threaded = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._clock = clock

    @property
    def running(self) -> int:
        """Engine calls in progress (a cancelled caller's call counts until its thread returns)."""
        return self._running

    def note_cost(self, ns: float) -> None:
        """Seed the moving average (e.g. with warm-up call times) before traffic arrives."""
        self._ewma_ns = ns

    def runs_inline(self) -> bool:
        """Whether a call made now would run on the event loop (and so cannot suspend)."""
        return self._inline()

    def _inline(self) -> bool:
        if self.mode == "inline":
            return True
        return self.mode == "auto" and self._threaded == 0 and self._ewma_ns < INLINE_BELOW_NS

    def _begin(self, threaded: bool) -> None:
        if self.closed:
            raise Unavailable(f"model '{self.model}' version {self.version} is unloading")
        with self._lock:
            self._running += 1
            if threaded:
                self._threaded += 1
        self._idle.clear()

    def _end(self, threaded: bool, elapsed_ns: int) -> None:
        """Runs on the event loop when a call has really returned."""
        with self._lock:
            self._running -= 1
            if threaded:
                self._threaded -= 1
            idle = self._running == 0
        self._ewma_ns += (elapsed_ns - self._ewma_ns) * EWMA_WEIGHT
        if idle:
            self._idle.set()

    def _translate(self, exc: InvalidInput) -> InvalidArgument:
        return InvalidArgument(f"model '{self.model}' rejected its input: {exc}")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` under the policy; an engine's :class:`InvalidInput` becomes INVALID_ARGUMENT."""
        clock = self._clock
        if self._inline():
            # on the event loop and synchronous: nothing can observe the call as running, so it is not
            # counted (no lock, no idle event); only its time feeds the average
            if self.closed:
                raise Unavailable(f"model '{self.model}' version {self.version} is unloading")
            started = clock()
            try:
                return fn(*args)
            except InvalidInput as exc:
                raise self._translate(exc) from None
            finally:
                self._ewma_ns += (clock() - started - self._ewma_ns) * EWMA_WEIGHT
        loop = self._loop = self._loop or asyncio.get_running_loop()
        self._begin(True)
        spent = [0]  # the engine's own time, written by the worker thread before the future completes

        def timed() -> T:
            began = clock()
            try:
                return fn(*args)
            finally:
                spent[0] = clock() - began

        try:
            future: Future[T] = self._executor.submit(timed)
        except RuntimeError:  # the executor was shut down under us
            self._end(True, 0)
            raise Unavailable(f"model '{self.model}' version {self.version} is unloading") from None

        future.add_done_callback(lambda _: self._end_from_thread(loop, spent))
        try:
            return await asyncio.wrap_future(future, loop=loop)
        except InvalidInput as exc:
            raise self._translate(exc) from None

    def fire(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` without waiting for it (cleanup after a cancelled stream); counted like any call."""
        if self.closed:
            return
        if self._inline():
            fn()
            return
        loop = self._loop = self._loop or asyncio.get_running_loop()
        self._begin(True)
        clock = self._clock
        spent = [0]

        def timed() -> object:
            began = clock()
            try:
                return fn()
            finally:
                spent[0] = clock() - began

        future = self._executor.submit(timed)
        future.add_done_callback(lambda _: self._end_from_thread(loop, spent))

    def _end_from_thread(self, loop: asyncio.AbstractEventLoop, spent: list[int]) -> None:
        """A thread's call returned: count it on the loop (unless the loop is gone: nothing left to count),
        with the time the engine itself took (``spent``, measured on the thread)."""
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._end, True, spent[0])

    async def wait_idle(self) -> None:
        """Until no engine call is running."""
        while self._running:
            await self._idle.wait()

    async def close(self, closer: Callable[[], object] | None) -> None:
        """Refuse new calls, wait until no call runs, then run ``closer`` (the engine's close) on a thread."""
        self.closed = True
        await self.wait_idle()
        try:
            if closer is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, closer)
        finally:
            self._executor.shutdown(wait=False)
