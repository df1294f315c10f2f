"""The access log: one JSON line per sampled Predict/PredictStream call, every failure, written off the event loop.

Cost model. :meth:`AccessLog.end` runs on the event loop for every call, so an OK call that is not
sampled costs one comparison and one ``random()``: no dict, no formatting. A sampled call costs a tuple
of its fields appended to a deque; a background thread (:class:`~server.telemetry.line_writer.LineWriter`,
shared with the audit log) wakes every 0.1 s, formats what is there and writes it,
so a slow disk never stalls the loop. When the writer falls behind by
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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from server.core.echo import bounded
from server.core.principal import current_principal
from server.telemetry.calls import BatchInfo, CallRecord
from server.telemetry.line_writer import STDOUT, LineWriter, open_lines
from server.telemetry.trace_context import parse_traceparent

log = logging.getLogger("inferd.access_log")

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
    try:
        return open_lines(options.destination, "the access log")
    except OSError as exc:
        raise AccessLogError(str(exc)) from None


def check_destination(options: AccessLogOptions) -> None:
    """Fail now, with a clear message, if the log could not be written (for the flag parser)."""
    stream = open_destination(options)
    if not options.to_stdout:
        stream.close()


class AccessLog:
    """A :class:`~server.telemetry.calls.CallObserver` writing JSON lines; :meth:`close` flushes and stops it."""

    def __init__(self, options: AccessLogOptions) -> None:
        self.options = options
        self._sample_rate = float(options.sample_rate)
        self._random = random.Random().random
        self._writer = LineWriter(
            open_destination(options),
            format_line,
            queue_lines=options.queue_lines,
            what="access log",
            thread_name="inferd-access-log",
            owns_stream=not options.to_stdout,
        )
        self._put = self._writer.put

    @property
    def dropped(self) -> int:
        """Lines lost: the writer was too far behind, or writing failed (disk full, ...)."""
        return self._writer.dropped

    @property
    def written(self) -> int:
        """Lines written so far."""
        return self._writer.written

    def begin(self, record: CallRecord) -> bool:
        """Every call's record is needed: whether it is logged is known only at its end (failures are)."""
        return True

    def batch(self, batch: BatchInfo) -> None:
        """Batches are read from each member's record at its end."""

    def end(self, record: CallRecord) -> None:
        # the hot path: an OK call not sampled stops here (random() < 1, so rate 1 logs every call)
        if record.code == "OK" and self._random() >= self._sample_rate:
            return
        batch = record.batch
        self._put(
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
                current_principal.get(),
            )
        )

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file (stdout is flushed, not closed)."""
        self._writer.close()


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
        principal,
    ) = item
    x_request_id, traceparent = _ids_from_metadata(metadata)
    line = {
        "time": rfc3339(started_unix_ns),
        "request_id": bounded(request_id, ID_CHARS) if request_id else None,
        "x_request_id": bounded(x_request_id, ID_CHARS) if x_request_id else None,
        "trace_id": _span_trace_id(trace) or _traceparent_trace_id(traceparent),
        "principal": None if principal is None else bounded(principal.name, ID_CHARS),
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
