"""The workers benchmark's pure parts: which --workers values it measures, and its report's ratios."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import bench.workers as workers


def test_default_counts_are_one_two_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert workers._counts("") == [1, 2, 4, 8, 16]
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert workers._counts("") == [1, 2]
    assert workers._counts("1,3") == [1, 3]


def test_the_report_gives_each_count_as_a_ratio_of_one_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "RESULTS", tmp_path)
    point = {"p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}
    rounds = {
        (1, 32): [{**point, "req_per_s": 1000.0}, {**point, "req_per_s": 1200.0}, {**point, "req_per_s": 1100.0}],
        (2, 32): [{**point, "req_per_s": 1650.0}, {**point, "req_per_s": 1700.0}, {**point, "req_per_s": 1600.0}],
    }
    args = argparse.Namespace(seconds=3.0, rounds=3)
    text = workers._write(rounds, [1, 2], [32], args).read_text()
    assert "| 1 | 32 | 1100 | 1.00 |" in text
    assert "| 2 | 32 | 1650 | 1.50 |" in text
    assert "[1650, 1700, 1600]" in text
