"""The access log: one JSON line per sampled Predict/PredictStream call, every failure, written off the event loop.

Cost model. :meth:`AccessLog.end` runs on the event loop for every call, so an OK call that is not
sampled costs one comparison and one ``random()``: no dict, no formatting. A sampled call costs a tuple
of its fields appended to a deque; a background thread wakes every :data:`FLUSH_INTERVAL_S`, formats
what is there and writes it, so a slow disk never stalls the loop. The writer is woken by its timer,
never by a line: waking a thread per line (a queue's ``put``) made every logged line cost the event
loop ~100 µs of thread switches, measured at sample rate 1. When the writer falls behind by
:attr:`AccessLogOptions.queue_lines` lines, new lines are dropped and counted (:attr:`AccessLog.dropped`)
rather than growing memory without bound.

What a line holds (see :data:`FIELDS`): ids, routing, outcome, timings and sizes. Never a tensor,
a parameter or a metadata value other than the ids (``x-request-id`` and the W3C trace id); strings
a client chose (its request id, an unknown model's name) are cut to :data:`ID_CHARS`.

The file is opened once, in append mode. It is not reopened on SIGHUP: rotate it with copytruncate
(logrotate), or log to stdout (``-``) and let the platform collect it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from server.core.echo import bounded
from server.telemetry.calls import BatchInfo, CallRecord
from server.telemetry.trace_context import parse_traceparent

log = logging.getLogger("inferd.access_log")

#: ``destination`` meaning the process' standard output
STDOUT = "-"
#: the keys of every line, in order (a key whose value does not apply is null, never missing)
FIELDS = (
    "time",
    "request_id",
    "x_request_id",
    "trace_id",
    "principal",
    "method",
    "peer",
    "model",
    "version",
    "code",
    "message",
    "duration_ms",
    "queue_ms",
    "batch_id",
    "batch_rows",
    "bytes_in",
    "bytes_out",
)
#: characters kept of a client-chosen string (request id, x-request-id, model name)
ID_CHARS = 128
#: characters kept of a failure's message
MESSAGE_CHARS = 512
#: lines written per write call at most (one write and one flush each)
WRITE_BATCH = 1024
#: seconds between the writer's wake-ups (the most a line waits before it is written)
FLUSH_INTERVAL_S = 0.1
#: seconds close() waits for the writer to drain the queue
CLOSE_TIMEOUT_S = 10.0
#: compact separators; one encoder made once (json.dumps with options builds one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AccessLogError(ValueError):
    """The access log cannot be written where it was told to be."""


@dataclass(frozen=True, slots=True)
class AccessLogOptions:
    """Where the lines go and how many OK calls are logged (failures always are).

    ``sample_rate`` defaults to 1.0: whoever turns the log on without saying more gets every call, which
    is what one expects while debugging or on a quiet server; a busy one sets e.g. 0.01 (1 %), and
    still gets every failure.
    """

    #: a file path (appended to, created if missing) or "-" for standard output
    destination: str | Path
    #: the share of OK calls logged, from 0 (failures only) to 1 (every call)
    sample_rate: float = 1.0
    #: lines waiting for the writer thread before new ones are dropped
    queue_lines: int = 10_000

    def __post_init__(self) -> None:
        if not str(self.destination):
            raise AccessLogError("the access log's destination is empty: give a file path, or - for stdout")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 <= rate <= 1:
            raise AccessLogError(f"the access log's sample rate must be a number from 0 to 1, not {rate!r}")
        if self.queue_lines < 1:
            raise AccessLogError(f"the access log's queue must hold at least 1 line, not {self.queue_lines}")

    @property
    def to_stdout(self) -> bool:
        return str(self.destination) == STDOUT


def open_destination(options: AccessLogOptions) -> TextIO:
    """The stream to write to: stdout, or the file opened for appending (created if missing)."""
    if options.to_stdout:
        return sys.stdout
    path = Path(options.destination)
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise AccessLogError(f"cannot write the access log {path}: {exc.strerror or exc}") from None


def check_destination(options: AccessLogOptions) -> None:
    """Fail now, with a clear message, if the log could not be written (for the flag parser)."""
    stream = open_destination(options)
    if stream is not sys.stdout:
        stream.close()


class AccessLog:
    """A :class:`~server.telemetry.calls.CallObserver` writing JSON lines; :meth:`close` flushes and stops it."""

    def __init__(self, options: AccessLogOptions) -> None:
        self.options = options
        self._stream = open_destination(options)
        self._owns_stream = not options.to_stdout
        self._sample_rate = float(options.sample_rate)
        self._random = random.Random().random
        #: lines waiting for the writer; deque append/popleft are atomic, so no lock and no wake-up
        self._pending: deque[tuple[Any, ...]] = deque()
        self._limit = options.queue_lines
        self._closed = False
        self._stop = threading.Event()
        self._dropped_full = 0  # written by the event loop's thread only
        self._dropped_failed = 0  # written by the writer thread only
        self._failing = False
        #: lines written so far
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="inferd-access-log", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines lost: the writer was too far behind, or writing failed (disk full, ...)."""
        return self._dropped_full + self._dropped_failed

    def begin(self, record: CallRecord) -> bool:
        """Every call's record is needed: whether it is logged is known only at its end (failures are)."""
        return True

    def batch(self, batch: BatchInfo) -> None:
        """Batches are read from each member's record at its end."""

    def end(self, record: CallRecord) -> None:
        # the hot path: an OK call not sampled stops here (random() < 1, so rate 1 logs every call)
        if record.code == "OK" and self._random() >= self._sample_rate:
            return
        if self._closed or len(self._pending) >= self._limit:
            self._dropped_full += 1
            return
        batch = record.batch
        self._pending.append(
            (
                record.started_unix_ns,
                record.request_id,
                record.metadata,
                record.trace,
                record.method,
                record.peer,
                record.model,
                record.version,
                record.code,
                record.message,
                record.ended_ns - record.started_ns,
                record.queue_ns,
                None if batch is None else batch.id,
                None if batch is None else batch.rows,
                record.bytes_in,
                record.bytes_out,
            )
        )

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file (stdout is flushed, not closed)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("access log: the writer did not finish in %gs; lines still queued are lost", CLOSE_TIMEOUT_S)
            return
        try:
            if self._owns_stream:
                self._stream.close()
            else:
                self._stream.flush()
        except OSError as exc:
            log.warning("access log: closing %s failed: %s", self.options.destination, exc)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self._drain()
        self._drain()  # close(): what was queued before it is written

    def _drain(self) -> None:
        pending = self._pending
        while pending:
            lines: list[str] = []
            while pending and len(lines) < WRITE_BATCH:
                item = pending.popleft()
                try:
                    lines.append(format_line(item))
                except Exception:  # a bug, not the caller's doing: lose the line, keep the log going
                    self._dropped_failed += 1
                    log.exception("access log: a line could not be formatted")
            if lines:
                self._write(lines)

    def _write(self, lines: list[str]) -> None:
        """One write and one flush for what the queue held; a failure is logged once per run of failures."""
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self._dropped_failed += len(lines)
            if not self._failing:
                log.warning("access log: writing to %s failed, lines are lost: %s", self.options.destination, exc)
            self._failing = True
            return
        self.written += len(lines)
        if self._failing:
            log.warning("access log: writing to %s works again", self.options.destination)
        self._failing = False


def format_line(item: Sequence[Any]) -> str:
    """One queued call as a JSON line (on the writer thread)."""
    (
        started_unix_ns,
        request_id,
        metadata,
        trace,
        method,
        peer,
        model,
        version,
        code,
        message,
        duration_ns,
        queue_ns,
        batch_id,
        batch_rows,
        bytes_in,
        bytes_out,
    ) = item
    x_request_id, traceparent = _ids_from_metadata(metadata)
    line = {
        "time": rfc3339(started_unix_ns),
        "request_id": bounded(request_id, ID_CHARS) if request_id else None,
        "x_request_id": bounded(x_request_id, ID_CHARS) if x_request_id else None,
        "trace_id": _span_trace_id(trace) or _traceparent_trace_id(traceparent),
        "principal": None,  # filled once the server authenticates callers
        "method": method,
        "peer": peer or None,
        "model": bounded(model, ID_CHARS) if model else None,
        "version": version or None,
        "code": code,
        "message": bounded(message, MESSAGE_CHARS) if code != "OK" and message else None,
        "duration_ms": round(duration_ns / 1e6, 3),
        "queue_ms": None if batch_id is None else round(queue_ns / 1e6, 3),
        "batch_id": batch_id,
        "batch_rows": batch_rows,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }
    return _ENCODER.encode(line) + "\n"


def rfc3339(unix_ns: int) -> str:
    """``2025-05-01T12:34:56.789012Z``: UTC, microseconds."""
    seconds, ns = divmod(unix_ns, 1_000_000_000)
    return f"{_utc_second(seconds)}.{ns // 1000:06d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    """Lines come in time order, so the date and time of a second are formatted once for all its lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _ids_from_metadata(metadata: Sequence[tuple[str, Any]]) -> tuple[str, str]:
    """The first ``x-request-id`` and ``traceparent`` values, if the client sent them (nothing else is read)."""
    x_request_id = traceparent = ""
    for key, value in metadata:
        if key == "x-request-id" and not x_request_id and isinstance(value, str):
            x_request_id = value
        elif key == "traceparent" and not traceparent and isinstance(value, str):
            traceparent = value
    return x_request_id, traceparent


def _span_trace_id(trace: Any) -> str | None:
    """The trace id of the server span tracing made for a sampled call (an OTel span, or a holder of one)."""
    if trace is None:
        return None
    get_context = getattr(trace, "get_span_context", None)
    if get_context is None:
        get_context = getattr(getattr(trace, "span", None), "get_span_context", None)
    if get_context is None:
        return None
    try:
        trace_id = get_context().trace_id
    except Exception:  # a span of another shape: fall back to the incoming traceparent
        return None
    return f"{trace_id:032x}" if isinstance(trace_id, int) and trace_id else None


def _traceparent_trace_id(traceparent: str) -> str | None:
    """The trace id of a valid W3C ``traceparent``, parsed as tracing parses it; else None.

    Logged for unsampled calls too, so a line can be matched with the caller's trace."""
    parent = parse_traceparent(traceparent) if traceparent else None
    return None if parent is None else f"{parent.trace_id:032x}"
