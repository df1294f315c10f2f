"""PredictStream for python models whose class defines ``infer_stream``: one message per yielded dict.

The same admission bounds as a generative model's streams (server/scheduling/stream_admission.py);
each stream's generator advances one item at a time, only after the previous item was taken, so a
slow reader pauses its generator. Every call into user code (starting the generator, each ``next()``,
the final ``close()``) goes through the version's :class:`~server.scheduling.execution.EngineCalls`
and runs under the engine's own lock (engines/python.py), never at once with a unary ``infer``.
Closing (the version unloads) closes the generators still open, each once its running ``next()``
returned, so their ``finally`` blocks run before the engine closes; their sessions end UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from engines.stream_part import StreamPart
from server.core.errors import DeadlineExceeded, Unavailable
from server.core.types import ParamValue
from server.scheduling.execution import EngineCalls
from server.scheduling.settings import StreamingSpec
from server.scheduling.stream_admission import Admission
from server.telemetry.stats import StreamCounters

log = logging.getLogger("inferd.streaming")


@runtime_checkable
class GeneratorEngine(Protocol):
    """An engine that streams by running a generator (engines/python.py's PythonEngine)."""

    #: whether this model has a generator at all (a python class with ``infer_stream``)
    streams: bool

    def start_stream(self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any]) -> Any: ...

    def advance_stream(self, stream: Any) -> Mapping[str, Any] | None: ...

    def close_stream(self, stream: Any) -> None: ...


class GeneratorStreams:
    """Runs ``infer_stream`` generators as PredictStream sessions; see the module docstring."""

    def __init__(
        self,
        model: str,
        engine: GeneratorEngine,
        output_names: tuple[str, ...],
        spec: StreamingSpec,
        counters: StreamCounters,
        calls: EngineCalls,
    ) -> None:
        self.model = model
        self.engine = engine
        self._outputs = frozenset(output_names)
        self.spec = spec
        self.counters = counters
        self.calls = calls
        self.admission = Admission(model, spec, counters)
        #: the generators of open sessions (closed by :meth:`close` if the drain left any)
        self._open: set[Any] = set()
        self._closing = False

    def _convert(self, item: Mapping[str, Any]) -> dict[str, np.ndarray]:
        unknown = [name for name in item if name not in self._outputs]
        if unknown:
            raise TypeError(
                f"model.py infer_stream() yielded output {unknown[0]!r}, which config.pbtxt does not declare "
                f"(outputs: {', '.join(sorted(self._outputs))})"
            )
        return {name: np.asarray(value) for name, value in item.items()}

    async def session(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, ParamValue], deadline: float | None
    ) -> AsyncGenerator[StreamPart, None]:
        """One part per yielded dict, then an output-less final part once the generator is exhausted."""
        last_item_ns = time.perf_counter_ns()
        await self.admission.enter(deadline)
        counters = self.counters
        counters.streams_started += 1
        engine = self.engine
        generator: Any = None
        ended = False
        produced_one = False
        try:
            generator = await self.calls.run(engine.start_stream, inputs, parameters)
            self._open.add(generator)
            while True:
                if self._closing:
                    ended = True
                    raise Unavailable(f"model '{self.model}' is unloading")
                if deadline is not None and time.monotonic() >= deadline:
                    ended = True
                    counters.streams_expired += 1
                    raise DeadlineExceeded(f"deadline expired while generating on model '{self.model}'")
                item = await self.calls.run(engine.advance_stream, generator)
                counters.steps += 1
                counters.step_streams += 1
                if item is None:
                    break
                outputs = self._convert(item)
                now = time.perf_counter_ns()
                times = counters.tokens
                (times.inter_token if produced_one else times.time_to_first_token).observe(now - last_item_ns)
                produced_one, last_item_ns = True, now
                counters.generated_tokens += 1
                yield StreamPart(outputs)
            ended = True
            counters.streams_completed += 1
            yield StreamPart({}, True)
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
            if generator is not None:
                self._open.discard(generator)
                self._close_generator(generator)

    def _close_generator(self, generator: Any) -> None:
        """Close the generator (its ``finally`` blocks run) once any ``next()`` still running returned."""

        def close() -> None:
            try:
                self.engine.close_stream(generator)
            except Exception:  # the model's own cleanup failed: nothing the client can be told
                log.warning("model %s: closing a stream's generator failed", self.model, exc_info=True)

        try:
            self.calls.fire(close)
        except RuntimeError:  # the version's executor is already shut down: the version is gone
            log.debug("model %s: generator not closed, the engine is gone", self.model)

    async def close(self) -> None:
        """Refuse new streams (waiters end UNAVAILABLE) and close the generators still open."""
        self.admission.close()
        self._closing = True
        for generator in list(self._open):
            try:
                await self.calls.run(self.engine.close_stream, generator)
            except Exception:
                log.warning("model %s: closing a stream's generator failed", self.model, exc_info=True)
