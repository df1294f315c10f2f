"""The executor thread's wait for a CPU, read from the kernel (server/scheduling/cpu_wait.py)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from server.scheduling import cpu_wait

linux_schedstat = pytest.mark.skipif(
    not os.path.exists(cpu_wait.SCHEDSTAT) or not hasattr(os, "sched_setaffinity"),
    reason="needs Linux's per-thread schedstat and CPU affinity",
)


def _hash_for(seconds_of_work: int) -> None:
    """CPU-bound work that releases the GIL (hashlib over large buffers), so two threads compete for the CPU."""
    block = b"x" * (1 << 20)
    for _ in range(seconds_of_work):
        hashlib.sha256(block).digest()


@linux_schedstat
def test_a_thread_sharing_its_core_with_a_busy_thread_reads_time_waiting_for_it() -> None:
    core = min(os.sched_getaffinity(0))
    waits: list[int] = []

    def measured() -> None:
        os.sched_setaffinity(0, {core})  # this thread only
        before = cpu_wait.run_queue_wait_ns()
        _hash_for(60)
        waits.append(cpu_wait.run_queue_wait_ns() - before)

    def rival() -> None:
        os.sched_setaffinity(0, {core})
        _hash_for(60)

    threads = [threading.Thread(target=measured), threading.Thread(target=rival)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert waits and waits[0] > 0


@linux_schedstat
def test_each_thread_reads_its_own_wait() -> None:
    readings: dict[str, int] = {}

    def read(name: str) -> None:
        readings[name] = cpu_wait.run_queue_wait_ns()

    thread = threading.Thread(target=read, args=("fresh",))
    thread.start()
    thread.join()
    readings["main"] = cpu_wait.run_queue_wait_ns()
    assert all(isinstance(value, int) and value >= 0 for value in readings.values())
    assert cpu_wait.run_queue_wait_ns() >= readings["main"]  # a running total


def test_where_the_kernel_does_not_say_the_wait_reads_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(cpu_wait, "SCHEDSTAT", os.path.join(str(tmp_path), "no-such-file"))
    monkeypatch.setattr(cpu_wait, "_unavailable", False)
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.extend([cpu_wait.run_queue_wait_ns(), cpu_wait.run_queue_wait_ns()])
    )
    thread.start()
    thread.join()
    assert results == [0, 0]
    assert cpu_wait._unavailable is True  # not retried on every call
