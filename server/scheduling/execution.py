"""Where a model version's blocking engine calls run, and how many are running.

One policy for unary calls, batches and stream steps alike:

- ``thread``: every call runs on the version's executor (``instance_count`` threads);
- ``inline``: every call runs on the event loop (for engines that are known to be tiny);
- ``auto``: inline while calls are cheap (a thread hop costs more than a tiny model's call) **and no call
  is running on the executor** — an inline call would otherwise wait on the engine's lock with the whole
  event loop blocked behind it. "Cheap" is a band on the moving average of the engine's own time: a
  version on the executor comes back inline once the average falls under ``INLINE_BELOW_NS``, and one
  running inline leaves for the executor only once it rises over ``THREAD_ABOVE_NS``. A tiny model's
  batched calls under load average ~70 µs with a long tail; with one threshold at 100 µs the average
  crossed it every few seconds, and each spell on the executor cost a hop per batch and shrank the
  batches (0.59-0.72x the gRPC floor in those seconds against 0.73-0.93x without, measured).

The engine's own time is measured around the call on whichever thread runs it: timing a threaded call from
the event loop would add the hop there and back, which under load is itself over the threshold, and keep a
tiny model on the executor for good once heavy load met it first. On the executor thread it also leaves out
the time the thread waited for a CPU while runnable (server/scheduling/cpu_wait.py): on a core shared with
the event loop that wait is the loop's own work, and counted it held a tiny model on the executor.

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
from server.scheduling.cpu_wait import run_queue_wait_ns

T = TypeVar("T")
ExecutionMode = Literal["auto", "thread", "inline"]

#: "auto" brings a version's calls back inline once their moving average falls under this many nanoseconds
INLINE_BELOW_NS = 100_000
#: and sends them to the executor only once it rises over this many (the band between keeps the current place)
THREAD_ABOVE_NS = 200_000
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
        waited: Callable[[], int] = run_queue_wait_ns,
    ) -> None:
        self.model = model
        self.version = version
        self.mode = mode
        self._executor = ThreadPoolExecutor(max_workers=max(1, instances), thread_name_prefix=f"{model}-v{version}")
        self._ewma_ns = initial_ns
        #: where "auto" runs calls now: starts inline only for a version known to be cheap
        self._on_thread = initial_ns >= INLINE_BELOW_NS
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
        #: the calling thread's wait for a CPU so far (ns), read on the executor thread around each call
        self._waited = waited

    @property
    def running(self) -> int:
        """Engine calls in progress (a cancelled caller's call counts until its thread returns)."""
        return self._running

    def note_cost(self, ns: float) -> None:
        """Seed the moving average (e.g. with warm-up call times) before traffic arrives: inline if cheap."""
        self._ewma_ns = ns
        self._on_thread = ns >= INLINE_BELOW_NS

    def _observe(self, ns: float) -> None:
        """One call's engine time into the average, and the place it sets (see the module docstring)."""
        ewma = self._ewma_ns = self._ewma_ns + (ns - self._ewma_ns) * EWMA_WEIGHT
        if self._on_thread:
            self._on_thread = ewma >= INLINE_BELOW_NS
        elif ewma > THREAD_ABOVE_NS:
            self._on_thread = True

    def runs_inline(self) -> bool:
        """Whether a call made now would run on the event loop (and so cannot suspend)."""
        return self._inline()

    def _inline(self) -> bool:
        if self.mode == "inline":
            return True
        return self.mode == "auto" and self._threaded == 0 and not self._on_thread

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
        self._observe(elapsed_ns)
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
                self._observe(clock() - started)
        loop = self._loop = self._loop or asyncio.get_running_loop()
        try:
            future = self._submit(loop, fn, *args)
        except RuntimeError:  # the executor was shut down under us
            self._end(True, 0)
            raise Unavailable(f"model '{self.model}' version {self.version} is unloading") from None
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
        self._submit(loop, fn)

    def _submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Count a call as running on the executor and start it there, timed on its thread: its engine time
        is its wall time less the thread's wait for a CPU (cpu_wait.py), counted on the loop when it returns.
        Raises RuntimeError if the executor has been shut down (the call is then counted, not started)."""
        self._begin(True)
        clock, waited = self._clock, self._waited
        spent = [0]  # the engine's own time, written by the worker thread before the future completes

        def timed() -> T:
            began, waited_before = clock(), waited()
            try:
                return fn(*args)
            finally:
                spent[0] = max(0, clock() - began - (waited() - waited_before))

        future = self._executor.submit(timed)
        future.add_done_callback(lambda _: self._end_from_thread(loop, spent))
        return future

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
