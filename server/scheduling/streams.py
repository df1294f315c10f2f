"""Continuous (iteration-level) batching of PredictStream sessions: one scheduler per model version.

A generative model's streams are advanced together: each pass of the scheduler's loop frees what
left, then runs **one engine step for every active stream at once** (new streams are prefilled in
that step, the others decode one token in a single batched call), then hands each stream its output.
New streams join between steps and finished ones leave, so a long generation never holds up a short
one, and the per-step cost is shared by every stream in it.

Bounds, all from the model's ``streaming`` config (server/streaming.StreamingSpec):

- ``max_active_streams`` streams generate at once; up to ``max_waiting_streams`` more wait in FIFO
  order for a place; beyond that PredictStream answers RESOURCE_EXHAUSTED.
- Each stream holds at most ``max_buffered_outputs`` step outputs its client has not read; a stream at
  the bound is *paused* (left out of steps) until its client reads, so a slow reader costs a bounded
  amount of memory and no compute. A reader that falls behind gets the buffered outputs merged into
  one message.
- A stream whose client cancels, or whose deadline passes, is dropped before the next step and its
  cache is freed; an output of a step already running for it is discarded.

Python models whose class defines ``infer_stream`` are served by :class:`GeneratorStreams`: one message
per yielded dict, the same admission bounds, one generator step at a time per stream.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from engines.generative import GenerationError, GenerativeEngine, Piece, StepOutput
from server.core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServingError, Unavailable
from server.core.types import ParamValue
from server.telemetry.stats import StreamCounters

log = logging.getLogger("inferd.streaming")

T = TypeVar("T")
DEFAULT_MAX_ACTIVE = 16
DEFAULT_MAX_BUFFERED = 16
#: most step outputs merged into one message for a reader that fell behind
MAX_COALESCE = 64
#: a call cancelled this close to its deadline counts as expired (gRPC and we read the clock apart)
DEADLINE_SLACK_S = 0.01


@dataclass(frozen=True, slots=True)
class StreamingSpec:
    """The streaming bounds of one model (config ``streaming { ... }``, zeros replaced by defaults)."""

    max_active: int = DEFAULT_MAX_ACTIVE
    max_waiting: int = DEFAULT_MAX_ACTIVE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    #: streams per engine step; 0 = all active streams (continuous batching), 1 = one at a time
    max_step_streams: int = 0

    @classmethod
    def from_config(cls, streaming: Any) -> StreamingSpec:
        """From a ``inferd.v1.Streaming`` message (ModelSpec.proto.streaming)."""
        active = int(streaming.max_active_streams) or DEFAULT_MAX_ACTIVE
        return cls(
            max_active=active,
            max_waiting=int(streaming.max_waiting_streams) or active,
            max_buffered=int(streaming.max_buffered_outputs) or DEFAULT_MAX_BUFFERED,
            max_step_streams=int(streaming.max_step_streams),
        )


@dataclass(frozen=True, slots=True)
class Part:
    """One message's worth of a stream: outputs by name, whether it is the last, and response parameters."""

    outputs: dict[str, np.ndarray]
    final: bool
    parameters: dict[str, ParamValue] = field(default_factory=dict)


class Runner:
    """Runs a blocking engine call inline on the event loop or on the version's executor thread."""

    def __init__(self, executor: Executor, inline: bool) -> None:
        self.executor = executor
        self.inline = inline

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def fire(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` without waiting for it (cleanup after a cancelled stream)."""
        if self.inline:
            fn()
        else:
            self.executor.submit(fn)


class Admission:
    """Active places plus a bounded FIFO of waiters; a freed place passes straight to the oldest waiter."""

    def __init__(self, model: str, spec: StreamingSpec, counters: StreamCounters) -> None:
        self.model = model
        self.spec = spec
        self.counters = counters
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def _gauges(self) -> None:
        self.counters.active_streams = self.active
        self.counters.waiting_streams = len(self._waiting)

    async def enter(self, deadline: float | None) -> None:
        """Take a place, waiting for one if the queue has room; RESOURCE_EXHAUSTED otherwise."""
        if self.closed:
            raise Unavailable(f"model '{self.model}' is unloading")
        if self.active < self.spec.max_active and not self._waiting:
            self.active += 1
            self._gauges()
            return
        if len(self._waiting) >= self.spec.max_waiting:
            self.counters.streams_rejected += 1
            raise ResourceExhausted(
                f"model '{self.model}' has {self.active} active streams and {len(self._waiting)} waiting "
                f"(max_active_streams {self.spec.max_active}, max_waiting_streams {self.spec.max_waiting}); "
                "retry later"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._gauges()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.leave()  # the place arrived as we gave up: pass it on
            else:
                future.cancel()
                self._waiting.remove(future)
                self._gauges()
            if isinstance(exc, asyncio.TimeoutError):
                self.counters.streams_expired += 1
                raise DeadlineExceeded(
                    f"deadline expired while waiting for a stream place on model '{self.model}'"
                ) from None
            if isinstance(exc, asyncio.CancelledError):
                self.count_cancel(deadline)
            raise

    def count_cancel(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline - DEADLINE_SLACK_S:
            self.counters.streams_expired += 1  # gRPC cancelled the call at its deadline
        else:
            self.counters.streams_cancelled += 1

    def leave(self) -> None:
        """Give a place back: to the oldest waiter still waiting, else to the pool."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                self._gauges()
                return
        self.active -= 1
        self._gauges()

    def close(self) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(Unavailable(f"model '{self.model}' is unloading"))
        self._gauges()


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
        "left",
        "outputs",
        "stepped",
    )

    def __init__(self, scheduler: StreamScheduler, gen: Any, deadline: float | None) -> None:
        self._scheduler = scheduler
        self.gen = gen
        self.deadline = deadline
        self.outputs: deque[StepOutput] = deque()
        self._event = asyncio.Event()
        self.error: ServingError | Exception | None = None
        #: no more outputs will be added (completed, failed or expired)
        self.finished = False
        #: the reader went away (cancelled, or gRPC ended the call at its deadline)
        self.left = False
        self.stepped = 0
        self.cache_bytes = 0

    def push(self, output: StepOutput) -> None:
        self.outputs.append(output)
        self._event.set()

    def end(self, error: ServingError | Exception | None = None) -> None:
        self.finished = True
        self.error = error
        self._event.set()

    async def next_piece(self) -> Piece | None:
        """The outputs buffered so far merged into one piece; waits for one; None once finished."""
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
        piece = Piece()
        taken = 0
        while self.outputs and taken < MAX_COALESCE:
            piece.add(self.outputs.popleft())
            taken += 1
        scheduler.counters.buffered_outputs -= taken
        if was_full:
            scheduler.wake()  # it was paused: it may step again
        return piece


class StreamScheduler:
    """Steps every active stream of one generative model version together; see the module docstring."""

    def __init__(
        self, model: str, engine: GenerativeEngine, spec: StreamingSpec, counters: StreamCounters, runner: Runner
    ) -> None:
        self.model = model
        self.engine = engine
        self.spec = spec
        self.counters = counters
        self.runner = runner
        self.admission = Admission(model, spec, counters)
        self._active: list[Stream] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cursor = 0
        #: the streams of the step in progress
        self._stepping: list[Stream] = []
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
        try:
            gen = self.engine.start(inputs, parameters)
        except GenerationError as exc:
            raise InvalidArgument(f"model '{self.model}': {exc}") from None
        await self.admission.enter(deadline)
        stream = Stream(self, gen, deadline)
        self._active.append(stream)
        self.counters.streams_started += 1
        self._wake.set()
        return stream

    async def session(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue], deadline: float | None
    ) -> AsyncGenerator[Part, None]:
        """The parts of one stream, as the servicer sends them; the last carries the finish reason."""
        stream = await self.open(inputs, parameters, deadline)
        try:
            while (piece := await stream.next_piece()) is not None:
                if piece.finish_reason is None:
                    yield Part(piece.outputs(), False)
                    continue
                info: dict[str, ParamValue] = {
                    "finish_reason": piece.finish_reason,
                    "prompt_tokens": len(stream.gen.prompt),
                    "generated_tokens": stream.gen.generated,
                }
                yield Part(piece.outputs(), True, info)
        finally:
            self.detach(stream)

    def detach(self, stream: Stream) -> None:
        """The reader is done with ``stream``; if it had not finished, it is dropped before the next step."""
        if stream.finished or stream.left:
            return
        stream.left = True
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
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._pass()
            except Exception as exc:  # a failed step fails its streams (a bug here: all), never the loop
                log.exception("model %s: a generation step failed", self.model)
                for stream in self._stepping or list(self._active):
                    if not stream.finished:
                        self.counters.streams_failed += 1
                        self._remove(stream, exc)
            self._stepping = []

    async def _pass(self) -> None:
        """Free what left, then one step for every runnable stream, then hand out the outputs."""
        self._reap()
        batch = self._pick()
        if not batch:
            return
        self._wake.set()  # more steps follow unless the next pass finds nothing to do
        self._stepping = batch
        outputs = await self.runner(self.engine.step, [s.gen for s in batch])
        self._deliver(batch, outputs)
        await asyncio.sleep(0)  # let the readers send what this step made before the next one

    def _reap(self) -> None:
        """Drop streams whose reader left or whose deadline passed, freeing their caches."""
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

    def _deliver(self, batch: list[Stream], outputs: list[StepOutput]) -> None:
        counters = self.counters
        counters.steps += 1
        counters.step_streams += len(batch)
        for stream, output in zip(batch, outputs, strict=True):
            if stream.stepped == 0:
                counters.prompt_tokens += len(stream.gen.prompt)
            stream.stepped += 1
            counters.generated_tokens += 1
            size = self.engine.cache_bytes(stream.gen)
            counters.cache_bytes += size - stream.cache_bytes
            stream.cache_bytes = size
            if stream.left:
                continue  # its reader is gone: the output is dropped, the cache freed on the next pass
            stream.push(output)
            counters.buffered_outputs += 1
            counters.max_buffered_outputs = max(counters.max_buffered_outputs, len(stream.outputs))
            if output.finish_reason is not None:
                counters.streams_completed += 1
                self._remove(stream)

    def _remove(self, stream: Stream, error: Exception | None = None) -> None:
        """Take a stream out of the step set: free its cache, give its place to a waiter."""
        if stream not in self._active:
            return
        self._active.remove(stream)
        if stream.left or error is not None:  # nobody will read what is buffered
            self.counters.buffered_outputs -= len(stream.outputs)
            stream.outputs.clear()
        had_cache = stream.gen.started
        self.engine.release(stream.gen)
        if had_cache:
            self.counters.caches_freed += 1
        self.counters.cache_bytes -= stream.cache_bytes
        stream.cache_bytes = 0
        self.admission.leave()
        if not stream.finished:
            stream.end(error)

    async def close(self) -> None:
        """Stop the loop; streams still open (there should be none after a drain) end UNAVAILABLE."""
        self.admission.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for stream in list(self._active):
            stream.left = True
            self._remove(stream, Unavailable(f"model '{self.model}' is unloading"))


_END = object()


class GeneratorStreams:
    """PredictStream for python models with ``infer_stream(inputs, parameters)``: one message per yield."""

    def __init__(
        self,
        model: str,
        infer_stream: Callable[..., Any],
        output_names: tuple[str, ...],
        spec: StreamingSpec,
        counters: StreamCounters,
        runner: Runner,
    ) -> None:
        self.model = model
        self._infer_stream = infer_stream
        self._takes_parameters = _arity(infer_stream) >= 2
        self._outputs = frozenset(output_names)
        self.spec = spec
        self.counters = counters
        self.runner = runner
        self.admission = Admission(model, spec, counters)

    def _begin(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue]) -> Iterator[Any]:
        result = self._infer_stream(inputs, dict(parameters)) if self._takes_parameters else self._infer_stream(inputs)
        return iter(result)

    def _convert(self, item: Any) -> dict[str, np.ndarray]:
        if not isinstance(item, Mapping):
            raise TypeError(f"model.py infer_stream() yielded {type(item).__name__}; it must yield dicts of outputs")
        unknown = [name for name in item if name not in self._outputs]
        if unknown:
            raise TypeError(
                f"model.py infer_stream() yielded output {unknown[0]!r}, which config.pbtxt does not declare "
                f"(outputs: {', '.join(sorted(self._outputs))})"
            )
        return {name: np.asarray(value) for name, value in item.items()}

    async def session(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue], deadline: float | None
    ) -> AsyncGenerator[Part, None]:
        """One part per yielded dict, then an output-less final part once the generator is exhausted.

        The generator advances only after its previous item was taken, so a slow reader pauses it.
        """
        await self.admission.enter(deadline)
        counters = self.counters
        counters.streams_started += 1
        lock = threading.Lock()
        iterator: Iterator[Any] | None = None

        def advance() -> Any:
            assert iterator is not None
            with lock:
                return next(iterator, _END)

        def close() -> None:
            closer = getattr(iterator, "close", None)
            if callable(closer):
                with lock:
                    closer()

        ended = False
        try:
            iterator = await self.runner(self._begin, inputs, parameters)
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    ended = True
                    counters.streams_expired += 1
                    raise DeadlineExceeded(f"deadline expired while generating on model '{self.model}'")
                item = await self.runner(advance)
                counters.steps += 1
                counters.step_streams += 1
                if item is _END:
                    break
                outputs = self._convert(item)
                counters.generated_tokens += 1
                yield Part(outputs, False)
            ended = True
            counters.streams_completed += 1
            yield Part({}, True)
        except (asyncio.CancelledError, GeneratorExit):
            if not ended:
                ended = True
                self.admission.count_cancel(deadline)
            raise
        except Exception:
            if not ended:
                ended = True
                counters.streams_failed += 1
            raise
        finally:
            self.admission.leave()
            if iterator is not None:
                try:
                    self.runner.fire(close)
                except RuntimeError:  # the executor is already shut down: the version is gone
                    log.debug("model %s: generator not closed, executor stopped", self.model)

    async def close(self) -> None:
        self.admission.close()


def _arity(fn: Callable[..., Any]) -> int:
    """Positional parameters of ``infer_stream`` (a bound method): 1 = inputs only, 2 = inputs and parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(
        1 for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


StreamServer = StreamScheduler | GeneratorStreams


def streams_for(
    model: str,
    engine: object,
    config: Any,
    output_names: tuple[str, ...],
    counters: StreamCounters,
    executor: Executor,
    execution: str,
) -> StreamServer | None:
    """The stream server of a freshly loaded engine: a started scheduler for a generative engine, a
    generator runner for a python model with ``infer_stream``, None for a model that only chunks.

    Steps run on the version's executor thread unless the model's ``execution`` is "inline".
    """
    spec = StreamingSpec.from_config(config)
    runner = Runner(executor, inline=execution == "inline")
    if isinstance(engine, GenerativeEngine):
        scheduler = StreamScheduler(model, engine, spec, counters, runner)
        scheduler.start()
        return scheduler
    infer_stream = getattr(engine, "infer_stream", None)
    if callable(infer_stream):
        return GeneratorStreams(model, infer_stream, output_names, spec, counters, runner)
    return None
