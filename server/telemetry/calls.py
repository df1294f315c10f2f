"""Per-call records for the observers that need one call's story: tracing and the access log.

Metrics do not use this: they are plain counters on the version's :class:`~server.telemetry.stats.VersionStats`
and cost the same whether anything observes. A :class:`CallRecord` exists only while at least one
:class:`CallObserver` is installed (``--access-log``, or tracing configured); with none, the servicer never
builds one and the batcher's only cost is one ``ContextVar.get``.

Flow: the servicer calls :meth:`CallObservers.begin` when a call arrives (before parsing, so that
unknown models and malformed requests are observed too). It answers None when no observer wants the
call (tracing alone, and the call is not sampled): the call then goes on unobserved. Otherwise the
servicer fills ``model``/``version`` once it routed, and calls :meth:`CallObservers.end` when the call
is over. The record is the task's :data:`current_call`, so the batcher (same task as the caller) picks
it up on submit and, once the engine ran, stamps the queue wait, the engine execution and the
:class:`BatchInfo` it shared with the other requests of its batch (:func:`stamp_batch`); observers then
hear about each batch once (:meth:`CallObserver.batch`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.core.deadlines import outcome_code


@dataclass(slots=True, eq=False)
class BatchInfo:
    """One engine execution and the calls it served (a lone request is a batch of one)."""

    id: int
    rows: int
    #: wall-clock (``time.time_ns()``) start and end of the engine call, for spans
    started_unix_ns: int
    ended_unix_ns: int
    members: list[CallRecord] = field(default_factory=list)


class CallSource(Protocol):
    """Where a call came from: what grpc.aio's ServicerContext tells (read only if an observer asks)."""

    def invocation_metadata(self) -> Sequence[tuple[str, Any]] | None: ...

    def peer(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StaticCallSource:
    """A :class:`CallSource` with fixed answers (calls made outside gRPC, tests)."""

    metadata: Sequence[tuple[str, Any]] = ()
    address: str = ""

    def invocation_metadata(self) -> Sequence[tuple[str, Any]]:
        return self.metadata

    def peer(self) -> str:
        return self.address


@dataclass(slots=True, eq=False)
class CallRecord:
    """What one Predict or PredictStream call did; filled as it goes, read by observers at its end."""

    observers: CallObservers
    method: str
    #: the call's context: its metadata and peer are read from it only when an observer needs them
    source: CallSource
    bytes_in: int
    #: ``time.perf_counter_ns()`` and ``time.time_ns()`` when the call arrived
    started_ns: int
    started_unix_ns: int
    request_id: str = ""
    model: str = ""
    #: the version that served it; 0 while (or if never) routed
    version: int = 0
    bytes_out: int = 0
    #: status name (``OK``, ``NOT_FOUND``, ...) and, for failures, the message sent
    code: str = "OK"
    message: str = ""
    ended_ns: int = 0
    #: time spent waiting in the batch queue (0 when the engine was idle, or the model does not batch)
    queue_ns: int = 0
    #: the engine execution that served this call; None for streams and calls that never ran
    batch: BatchInfo | None = None
    #: the tracing observer's per-call state (its server span), None when the call is not sampled
    trace: Any = None
    #: the call's deadline (``time.monotonic()``), to tell expiry from a client's cancel
    deadline: float | None = None
    _metadata: Sequence[tuple[str, Any]] | None = None

    @property
    def metadata(self) -> Sequence[tuple[str, Any]]:
        """gRPC invocation metadata (``traceparent``, ``x-request-id``, ...), read once, on first use."""
        if self._metadata is None:
            self._metadata = self.source.invocation_metadata() or ()
        return self._metadata

    @property
    def peer(self) -> str:
        """The client's address as gRPC reports it (``ipv4:10.0.0.1:5000``)."""
        return self.source.peer() or ""

    def decoded(self, request_id: str, model: str, deadline: float | None) -> None:
        """The request parsed; ``version`` is set once it is routed."""
        self.request_id = request_id
        self.model = model
        self.deadline = deadline

    @property
    def duration_ns(self) -> int:
        return self.ended_ns - self.started_ns


class CallObserver(Protocol):
    """Something that wants every call's record: the access log, tracing."""

    def begin(self, record: CallRecord) -> bool:
        """A call arrived (only ``method``, ``source``, ``bytes_in`` and the start times are set); True if
        this observer wants the call's record (tracing: only for a sampled call)."""

    def end(self, record: CallRecord) -> None:
        """The call is over: every field that applies is set."""

    def batch(self, batch: BatchInfo) -> None:
        """One engine execution finished; its members' records carry it (called before their ``end``)."""


#: The record of the call this task is serving, or None when no observer is installed.
current_call: ContextVar[CallRecord | None] = ContextVar("current_call", default=None)

_batch_ids = itertools.count(1)


def next_batch_id() -> int:
    """Process-wide batch ids, so a batch span or log line names one engine execution unambiguously."""
    return next(_batch_ids)


class CallObservers:
    """The installed observers, called in order; empty means no records are made at all."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self._observers = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def begin(self, method: str, source: CallSource, bytes_in: int) -> CallRecord | None:
        """The call's record, or None when no observer wants it (an unsampled call with only tracing on):
        then nothing more is done for the call, and the batcher sees no record."""
        record = CallRecord(self, method, source, bytes_in, time.perf_counter_ns(), time.time_ns())
        wanted = False
        for observer in self._observers:
            if observer.begin(record):
                wanted = True
        if not wanted:
            if current_call.get() is not None:  # an earlier call's, in the same task: not this one's
                current_call.set(None)
            return None
        current_call.set(record)
        return record

    def end(self, record: CallRecord, exc: BaseException | None) -> None:
        record.ended_ns = time.perf_counter_ns()
        if exc is not None:
            record.code = outcome_code(exc, record.deadline)
            record.message = str(getattr(exc, "message", "") or exc)
        for observer in self._observers:
            observer.end(record)

    def batch(self, batch: BatchInfo) -> None:
        for observer in self._observers:
            observer.batch(batch)


def stamp_batch(records: Sequence[CallRecord], rows: int, started_unix_ns: int, elapsed_ns: int) -> None:
    """Give the calls that shared one engine execution its :class:`BatchInfo` (their queue waits were set
    when the batch took them), and tell the observers once."""
    info = BatchInfo(next_batch_id(), rows, started_unix_ns, started_unix_ns + elapsed_ns, list(records))
    for record in records:
        record.batch = info
    records[0].observers.batch(info)
