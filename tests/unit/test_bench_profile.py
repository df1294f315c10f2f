"""The profile benchmark's pure parts: medians over interleaved rounds and the report's per-library µs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import bench.profile_report as report
from bench.profile import _median_point


def test_rounds_reduce_to_medians_and_an_averaged_library_split() -> None:
    points = [
        {"req_per_s": 1000.0, "cpu_share": 1.0, "us_per_request": 500.0, "split": {"kernel": 40.0, "CPython": 60.0}},
        {"req_per_s": 1200.0, "cpu_share": 1.0, "us_per_request": 450.0, "split": {"kernel": 50.0, "CPython": 50.0}},
        {"req_per_s": 1100.0, "cpu_share": 0.9, "us_per_request": 470.0, "split": None},
    ]
    point = _median_point(points)
    assert point["req_per_s"] == 1100.0 and point["us_per_request"] == 470.0
    assert point["split"] == {"kernel": 45.0, "CPython": 55.0}  # rounds without perf are left out
    assert point["rounds_req_per_s"] == [1000, 1200, 1100]


def test_the_report_turns_shares_into_microseconds_and_ratios_into_the_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS", tmp_path)

    def point(rps: float, us: float, split: dict[str, float]) -> dict[str, object]:
        return {"req_per_s": rps, "cpu_share": 1.0, "us_per_request": us, "split": split, "rounds_req_per_s": [rps]}

    results = {
        "this checkout": {
            "floor": point(3000, 300, {"kernel": 50.0, "CPython": 50.0}),
            "mlp_off": point(2400, 400, {"kernel": 40.0, "CPython": 60.0}),
            "mlp_on": point(2100, 420, {"kernel": 40.0, "CPython": 60.0}),
            "steps": {"total": 40.0},
        }
    }
    args = argparse.Namespace(profile_seconds=6.0, rounds=3, baseline=None)
    text = report.write_profile_report(results, args).read_text()
    assert "| this checkout | inferd, batching off | 2400 | 0.80 | 400 |" in text
    assert "| CPython | 150 | 240 | 252 |" in text  # 50 % of 300 µs, 60 % of 400 and of 420
    assert "| total | 40.0 |" in text


def test_in_process_steps_are_the_median_of_the_runs_step_by_step() -> None:
    from bench.profile import median_steps

    runs = [{"total": 40.0, "engine": 8.0}, {"total": 30.0, "engine": 9.0}, {"total": 35.0, "engine": 7.0}]
    assert median_steps(runs) == {"total": 35.0, "engine": 8.0}
    assert median_steps([]) is None
