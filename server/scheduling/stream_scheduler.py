"""Continuous (iteration-level) batching of PredictStream sessions: one scheduler per model version.

A generative model's streams are advanced together: each pass of the scheduler's loop frees what
left, then runs **one engine step for every active stream at once** (new streams are prefilled in
that step, the others decode one token in a single batched call), then hands each stream its output.
New streams join between steps and finished ones leave, so a long generation never holds up a short
one, and the per-step cost is shared by every stream in it.

Bounds, all from the model's ``streaming`` config (:class:`~server.scheduling.settings.StreamingSpec`):

- admission (server/scheduling/stream_admission.py): ``max_active_streams`` generate at once, up to
  ``max_waiting_streams`` more wait, beyond that RESOURCE_EXHAUSTED;
- each stream holds at most ``max_buffered_outputs`` step outputs its client has not read; a stream at
  the bound is *paused* (left out of steps) until its client reads, so a slow reader costs a bounded
  amount of memory and no compute. A reader that falls behind gets the buffered outputs merged into
  one message (:meth:`~engines.stream_part.StreamPart.merged`);
- a stream whose client cancels, or whose deadline passes, is dropped before the next step and its
  cache is freed; an output of a step already running for it is discarded.

Every engine call (step, cache release) goes through the version's
:class:`~server.scheduling.execution.EngineCalls`, one at a time from this loop, so the engine never
sees a step and a release at once. When a step fails for a group of streams, the group is split in two
and each half stepped again until the stream at fault is alone: only it fails (INVALID_ARGUMENT when
the engine said its input was bad, INTERNAL otherwise), the others carry on. Closing stops the loop
*between* steps, waiting for a running step to return, and only then frees the remaining caches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence

import numpy as np

from engines.generative import Generation, GenerationError, GenerativeEngine
from engines.stream_part import StreamPart
from server.core.errors import DeadlineExceeded, InvalidArgument, ServingError, Unavailable
from server.core.types import ParamValue
from server.scheduling.execution import EngineCalls
from server.scheduling.settings import StreamingSpec
from server.scheduling.stream_admission import Admission
from server.telemetry.stats import StreamCounters

log = logging.getLogger("inferd.streaming")

#: most step outputs merged into one message for a reader that fell behind
MAX_COALESCE = 64


class Stream:
    """One generating session as its reader (the servicer) and the scheduler share it."""

    __slots__ = (
        "_event",
        "_scheduler",
        "cache_bytes",
        "deadline",
        "error",
        "finished",
        "gen",
        "last_token_ns",
        "left",
        "outputs",
    )

    def __init__(
        self, scheduler: StreamScheduler, gen: Generation, deadline: float | None, opened_ns: int | None = None
    ) -> None:
        self._scheduler = scheduler
        self.gen = gen
        self.deadline = deadline
        self.outputs: deque[StreamPart] = deque()
        self._event = asyncio.Event()
        self.error: Exception | None = None
        #: no more outputs will be added (completed, failed or expired)
        self.finished = False
        #: the reader went away (cancelled, or gRPC ended the call at its deadline)
        self.left = False
        self.cache_bytes = 0
        #: ``time.perf_counter_ns()`` when the stream asked to open (admission wait counts towards the first
        #: token), then when its latest token was produced
        self.last_token_ns = time.perf_counter_ns() if opened_ns is None else opened_ns

    def push(self, output: StreamPart) -> None:
        self.outputs.append(output)
        self._event.set()

    def end(self, error: Exception | None = None) -> None:
        self.finished = True
        self.error = error
        self._event.set()

    async def next_part(self) -> StreamPart | None:
        """The outputs buffered so far merged into one part; waits for one; None once finished."""
        while not self.outputs:
            if self.error is not None:
                raise self.error
            if self.finished:
                return None
            self._event.clear()
            await self._event.wait()
        if self.error is not None:
            raise self.error
        scheduler = self._scheduler
        was_full = len(self.outputs) >= scheduler.spec.max_buffered
        taken = [self.outputs.popleft() for _ in range(min(len(self.outputs), MAX_COALESCE))]
        scheduler.counters.buffered_outputs -= len(taken)
        if was_full:
            scheduler.wake()  # it was paused: it may step again
        return StreamPart.merged(taken)

    def drop_outputs(self) -> None:
        """Nobody will read what is buffered: forget it (and take it off the gauge)."""
        self._scheduler.counters.buffered_outputs -= len(self.outputs)
        self.outputs.clear()


class StreamScheduler:
    """Steps every active stream of one generative model version together; see the module docstring."""

    def __init__(
        self,
        model: str,
        engine: GenerativeEngine,
        spec: StreamingSpec,
        counters: StreamCounters,
        calls: EngineCalls,
    ) -> None:
        self.model = model
        self.engine = engine
        self.spec = spec
        self.counters = counters
        self.calls = calls
        self.admission = Admission(model, spec, counters)
        self._active: list[Stream] = []
        #: streams taken out of the step set whose caches the next engine call frees
        self._to_free: list[Stream] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._cursor = 0
        #: test hook: steps still allowed before the scheduler holds (None = run freely)
        self._budget: int | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"streams-{self.model}")

    def wake(self) -> None:
        self._wake.set()

    async def open(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue], deadline: float | None
    ) -> Stream:
        """Admit a new stream (waiting for a place if needed); it joins the next step."""
        opened = time.perf_counter_ns()
        try:
            gen = self.engine.start(inputs, parameters)
        except GenerationError as exc:
            raise InvalidArgument(f"model '{self.model}': {exc}") from None
        await self.admission.enter(deadline)
        if self._closing:  # the place came from close() racing us: there will be no more steps
            self.admission.leave()
            raise Unavailable(f"model '{self.model}' is unloading")
        stream = Stream(self, gen, deadline, opened)
        self._active.append(stream)
        self.counters.streams_started += 1
        self._wake.set()
        return stream

    async def session(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue], deadline: float | None
    ) -> AsyncGenerator[StreamPart, None]:
        """The parts of one stream, as the servicer sends them; the last carries the finish reason."""
        stream = await self.open(inputs, parameters, deadline)
        try:
            while (part := await stream.next_part()) is not None:
                yield part
        finally:
            self.detach(stream)

    def detach(self, stream: Stream) -> None:
        """The reader is done with ``stream``: what it left unread is dropped, and if the stream was still
        generating, it is taken out before the next step."""
        if stream.left:
            return
        stream.left = True
        if stream.finished:
            stream.drop_outputs()  # finished with outputs nobody read: they leave the gauge with the reader
            return
        self.admission.count_cancel(stream.deadline)
        self._wake.set()

    # test hooks ------------------------------------------------------------------------------
    def pause(self, after_steps: int = 0) -> None:
        """Test hook: allow ``after_steps`` more steps, then hold; freeing and admission go on meanwhile."""
        self._budget = after_steps
        self._wake.set()

    def resume(self) -> None:
        self._budget = None
        self._wake.set()

    # the loop ----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                break
            try:
                await self._pass()
            except Exception as exc:  # a bug here, not a failed step (those fail their own streams)
                log.exception("model %s: the stream scheduler's pass failed", self.model)
                for stream in list(self._active):
                    self._fail(stream, exc)
                await self._free()
        await self._shut()

    async def _pass(self) -> None:
        """Free what left, then one step for every runnable stream, then hand out the outputs."""
        self._reap()
        await self._free()
        batch = self._pick()
        if not batch:
            return
        self._wake.set()  # more steps follow unless the next pass finds nothing to do
        await self._step(batch)
        await self._free()
        await asyncio.sleep(0)  # let the readers send what this step made before the next one

    def _reap(self) -> None:
        """Drop streams whose reader left or whose deadline passed."""
        now = time.monotonic()
        for stream in list(self._active):
            if stream.left:
                self._remove(stream)
            elif stream.deadline is not None and now >= stream.deadline:
                self.counters.streams_expired += 1
                self._remove(stream, DeadlineExceeded(f"deadline expired while generating on model '{self.model}'"))

    def _pick(self) -> list[Stream]:
        bound = self.spec.max_buffered
        runnable = [s for s in self._active if len(s.outputs) < bound]
        self.counters.paused_streams = len(self._active) - len(runnable)
        if not runnable or self._budget == 0:
            return []
        if self._budget is not None:
            self._budget -= 1
        limit = self.spec.max_step_streams
        if limit and len(runnable) > limit:
            start = self._cursor % len(runnable)
            runnable = (runnable[start:] + runnable[:start])[:limit]
            self._cursor = start + limit
        return runnable

    async def _step(self, batch: list[Stream]) -> None:
        """One engine step for ``batch``; if it fails, step each half again until the culprit is alone."""
        try:
            parts, sizes = await self.calls.run(self._step_blocking, [s.gen for s in batch])
        except Exception as exc:
            if len(batch) == 1 or (isinstance(exc, ServingError) and not isinstance(exc, InvalidArgument)):
                for stream in batch:  # the culprit, or a failure no smaller step avoids (unloading)
                    self._fail(stream, exc)
                return
            half = len(batch) // 2
            await self._step(batch[:half])
            await self._step(batch[half:])
            return
        self._deliver(batch, parts, sizes)

    def _step_blocking(self, gens: Sequence[Generation]) -> tuple[list[StreamPart], list[int]]:
        """On the engine's thread: the step, and each stream's cache size after it."""
        parts = self.engine.step(gens)
        return parts, [self.engine.cache_bytes(g) for g in gens]

    def _deliver(self, batch: list[Stream], parts: list[StreamPart], sizes: list[int]) -> None:
        counters = self.counters
        counters.steps += 1
        counters.step_streams += len(batch)
        now = time.perf_counter_ns()
        for stream, part, size in zip(batch, parts, sizes, strict=True):
            if stream.gen.generated == 1:
                counters.prompt_tokens += len(stream.gen.prompt)
                counters.tokens.time_to_first_token.observe(now - stream.last_token_ns)
            else:
                counters.tokens.inter_token.observe(now - stream.last_token_ns)
            stream.last_token_ns = now
            counters.generated_tokens += 1
            counters.cache_bytes += size - stream.cache_bytes
            stream.cache_bytes = size
            if stream.left:
                continue  # its reader is gone: the output is dropped, the cache freed on the next pass
            stream.push(part)
            counters.buffered_outputs += 1
            counters.max_buffered_outputs = max(counters.max_buffered_outputs, len(stream.outputs))
            if part.final:
                counters.streams_completed += 1
                self._remove(stream)

    def _fail(self, stream: Stream, exc: Exception) -> None:
        """End ``stream`` with ``exc`` (a model failure is logged; the servicer answers INTERNAL for it)."""
        if stream.finished:
            return
        if not isinstance(exc, ServingError):
            log.error("model %s: a generation step failed", self.model, exc_info=exc)
        self.counters.streams_failed += 1
        self._remove(stream, exc)

    def _remove(self, stream: Stream, error: Exception | None = None) -> None:
        """Take a stream out of the step set and give its place to a waiter; its cache is freed next
        (and counted freed now, so the counters never show a finished stream still holding one)."""
        if stream not in self._active:
            return
        self._active.remove(stream)
        if stream.left or error is not None:  # nobody will read what is buffered
            stream.drop_outputs()
        self._to_free.append(stream)
        self.counters.caches_freed += stream.gen.started
        self.counters.cache_bytes -= stream.cache_bytes
        stream.cache_bytes = 0
        self.admission.leave()
        if not stream.finished:
            stream.end(error)

    async def _free(self) -> None:
        """Free the caches of the streams taken out, in one engine call (steps never run meanwhile)."""
        if not self._to_free:
            return
        gens, self._to_free = [s.gen for s in self._to_free], []
        try:
            await self.calls.run(self._free_blocking, gens)
        except Unavailable:
            log.debug("model %s: %d stream caches not freed, the engine is closing", self.model, len(gens))
        except Exception:
            log.exception("model %s: freeing %d stream caches failed", self.model, len(gens))

    def _free_blocking(self, gens: Sequence[Generation]) -> None:
        for gen in gens:
            self.engine.release(gen)

    async def close(self) -> None:
        """Stop the loop between steps; streams still open (none after a drain) end UNAVAILABLE.

        A step running on a thread is waited for, never abandoned: the remaining caches are freed only
        after it returned, by the loop itself, so cancelling ``close`` does not cut that short.
        """
        self.admission.close()
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.shield(task)
        else:
            await self._shut()

    async def _shut(self) -> None:
        """After the last step: end what is still open UNAVAILABLE and free its caches."""
        for stream in list(self._active):
            stream.left = True
            self._remove(stream, Unavailable(f"model '{self.model}' is unloading"))
        await self._free()
