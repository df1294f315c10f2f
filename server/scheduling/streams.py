"""PredictStream servers: which one a freshly loaded engine gets.

- a generative engine (engines/generative.py) gets a :class:`StreamScheduler`: continuous batching of
  its streams, one engine step for many streams (server/scheduling/stream_scheduler.py);
- a python model with ``infer_stream`` gets :class:`GeneratorStreams`: one message per yielded dict
  (server/scheduling/generator_streams.py);
- any other model gets none: PredictStream then chunks its rows through the ordinary unary path.

Both share the admission bounds (server/scheduling/stream_admission.py) and run every engine call
through the version's :class:`~server.scheduling.execution.EngineCalls`, the one execution policy.
"""

from __future__ import annotations

from engines.generative import GenerativeEngine
from server.scheduling.execution import EngineCalls
from server.scheduling.generator_streams import GeneratorEngine, GeneratorStreams
from server.scheduling.settings import StreamingSpec
from server.scheduling.stream_scheduler import StreamScheduler
from server.telemetry.stats import StreamCounters

StreamServer = StreamScheduler | GeneratorStreams

__all__ = ["GeneratorStreams", "StreamScheduler", "StreamServer", "streams_for"]


def streams_for(
    model: str,
    engine: object,
    spec: StreamingSpec,
    output_names: tuple[str, ...],
    counters: StreamCounters,
    calls: EngineCalls,
) -> StreamServer | None:
    """The stream server of a freshly loaded engine (a started scheduler for a generative engine, a
    generator runner for a python model with ``infer_stream``), or None for a model that only chunks."""
    if isinstance(engine, GenerativeEngine):
        scheduler = StreamScheduler(model, engine, spec, counters, calls)
        scheduler.start()
        return scheduler
    if isinstance(engine, GeneratorEngine) and engine.streams:
        return GeneratorStreams(model, engine, output_names, spec, counters, calls)
    return None
