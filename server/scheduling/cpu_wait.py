"""How long the calling thread has waited for a CPU while runnable, from Linux's per-thread schedstat.

``execution: auto`` times an engine call on the executor thread that runs it, so that the hop to the
thread and back is not counted as the engine's time. On a core the thread shares with the event loop (a
server pinned to one core, or more busy threads than cores), that thread's wall time also holds every
slice the loop ran while the engine call was runnable, so a ~60 µs call read as ~100 µs and kept a tiny
model on the executor. The kernel counts that wait per thread (``/proc/thread-self/schedstat``, second
field); subtracting it leaves what the call would have taken on the loop. Where the file cannot be read
(another OS, a kernel without schedstats) the wait reads 0 and a call's time is its wall time.
"""

from __future__ import annotations

import os
import threading

SCHEDSTAT = "/proc/thread-self/schedstat"

_local = threading.local()
#: set once opening the file has failed: never tried again
_unavailable = False


class _ThreadStat:
    """The calling thread's schedstat file, opened once per thread (``thread-self`` names the thread that
    opens it) and closed when the thread's locals go with it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        os.close(self.fd)


def run_queue_wait_ns() -> int:
    """Nanoseconds this thread has spent runnable but not running since it started (0 where unknown);
    two readings around a call give the part of its wall time other threads held the CPU."""
    global _unavailable
    stat: _ThreadStat | None = getattr(_local, "stat", None)
    if stat is None:
        if _unavailable:
            return 0
        try:
            stat = _local.stat = _ThreadStat(os.open(SCHEDSTAT, os.O_RDONLY))
        except OSError:
            _unavailable = True
            return 0
    try:
        return int(os.pread(stat.fd, 64, 0).split()[1])
    except (OSError, IndexError, ValueError):
        return 0
