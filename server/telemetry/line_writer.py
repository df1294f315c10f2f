"""Lines written by a background thread, so a slow disk never stalls the event loop (the access log, the audit log).

The event loop appends a tuple of fields to a deque (atomic, no lock, no wake-up); a thread wakes every
:data:`FLUSH_INTERVAL_S`, formats what is there with the owner's ``format`` function and writes it in one
write and one flush. The writer is woken by its timer, never by a line: waking a thread per line (a
queue's ``put``) made every logged line cost the event loop ~100 µs of thread switches. When the writer
falls behind by ``queue_lines`` lines, new lines are dropped and counted rather than growing memory.

The file is opened once, in append mode, and not reopened on SIGHUP: rotate it with copytruncate
(logrotate), or write to stdout (``-``) and let the platform collect it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("inferd.line_writer")

#: ``destination`` meaning the process' standard output
STDOUT = "-"
#: lines written per write call at most (one write and one flush each)
WRITE_BATCH = 1024
#: seconds between the writer's wake-ups (the most a line waits before it is written)
FLUSH_INTERVAL_S = 0.1
#: seconds close() waits for the writer to drain the queue
CLOSE_TIMEOUT_S = 10.0


def open_lines(destination: str | Path, what: str) -> TextIO:
    """The stream to write to: stdout for ``-``, else the file opened for appending (created if missing).

    Raises OSError with a message naming ``what`` (e.g. "the access log") and the path."""
    if str(destination) == STDOUT:
        return sys.stdout
    path = Path(destination)
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise OSError(f"cannot write {what} {path}: {exc.strerror or exc}") from None


class LineWriter:
    """A deque of field tuples and the thread that formats and writes them; :meth:`close` flushes and stops it."""

    def __init__(
        self,
        stream: TextIO,
        format_line: Callable[[Any], str],
        *,
        queue_lines: int,
        what: str,
        thread_name: str,
        owns_stream: bool,
    ) -> None:
        self._stream = stream
        self._format = format_line
        self._limit = queue_lines
        self._what = what
        self._owns_stream = owns_stream
        #: lines waiting for the writer; deque append/popleft are atomic, so no lock and no wake-up
        self._pending: deque[Any] = deque()
        self._closed = False
        self._stop = threading.Event()
        self._dropped_full = 0  # written by the event loop's thread only
        self._dropped_failed = 0  # written by the writer thread only
        self._failing = False
        #: lines written so far
        self.written = 0
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines lost: the writer was too far behind, or writing failed (disk full, ...)."""
        return self._dropped_full + self._dropped_failed

    def put(self, item: Any) -> None:
        """Queue one line's fields (on the event loop); dropped and counted when the queue is full or closed."""
        if self._closed or len(self._pending) >= self._limit:
            self._dropped_full += 1
            return
        self._pending.append(item)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file (stdout is flushed, not closed)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning(
                "%s: the writer did not finish in %gs; lines still queued are lost", self._what, CLOSE_TIMEOUT_S
            )
            return
        try:
            if self._owns_stream:
                self._stream.close()
            else:
                self._stream.flush()
        except OSError as exc:
            log.warning("%s: closing failed: %s", self._what, exc)

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
                    lines.append(self._format(item))
                except Exception:  # a bug, not the caller's doing: lose the line, keep the log going
                    self._dropped_failed += 1
                    log.exception("%s: a line could not be formatted", self._what)
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
                log.warning("%s: writing failed, lines are lost: %s", self._what, exc)
            self._failing = True
            return
        self.written += len(lines)
        if self._failing:
            log.warning("%s: writing works again", self._what)
        self._failing = False
