"""The batching bench's rows-per-request dimension: every cell is measured at each ``--rows`` value (the
floor once, with the 1-row body), the report has rows and rows/s columns, and its summary gives one
"never slower" verdict per (model, rows) naming the worst cell, plus rows per engine call when saturated."""

from __future__ import annotations

import argparse

import pytest

from bench.batching import report_lines
from bench.rows import cells, estimated_seconds, parse_rows, point_seconds, rows_summary, verdict


def _point(req_per_s: float, rows: int = 1, batch: float = 1.0) -> dict[str, object]:
    return {
        "req_per_s": req_per_s,
        "rows": rows,
        "rows_per_s": req_per_s * rows,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": 3.0,
        "errors": 0,
        "http_failures": 0,
        "engine_calls_per_request": rows / batch,
        "mean_batch_rows": batch,
        "rounds_req_per_s": [round(req_per_s)],
    }


def _results() -> dict[str, object]:
    """MLP at 1 and 8 rows; batching on loses only at 8 rows, c=8, one connection."""
    off = {1: {1: _point(1000), 8: _point(2000), 32: _point(2000)}, 8: {1: _point(800, 8), 8: _point(1500, 8)}}
    off[8][32] = _point(1500, 8)
    on_many = {
        1: {1: _point(1010), 8: _point(2400, batch=2.0), 32: _point(3000, batch=6.5)},
        8: {1: _point(800, 8, 8.0), 8: _point(1600, 8, 16.0), 32: _point(1800, 8, 24.0)},
    }
    on_one = {
        1: {1: _point(1010), 8: _point(2100), 32: _point(2500)},
        8: {1: _point(800, 8), 8: _point(1400, 8), 32: _point(1700, 8)},
    }
    floor = {1: _point(1200), 8: _point(3000), 32: _point(3500)}
    return {
        "patterns": ["many", "one"],
        "rows": [1, 8],
        "floor": {"many": floor, "one": floor},
        "inferd": {"many": {"mlp_off": off, "mlp_on": on_many}, "one": {"mlp_off": off, "mlp_on": on_one}},
        "compute_floor": {},
    }


def test_a_round_measures_the_floor_once_per_cell_and_every_model_at_every_rows_value() -> None:
    got = cells(["mlp_off", "mlp_on"], (1, 8), [1, 32], ("many", "one"))
    assert got[:5] == [
        (1, "many", "floor", 1),
        (1, "many", "mlp_off", 1),
        (1, "many", "mlp_off", 8),
        (1, "many", "mlp_on", 1),
        (1, "many", "mlp_on", 8),
    ]
    # c=1 is one connection either way: measured once; c=32 under both patterns
    assert [c for c in got if c[2] == "floor"] == [
        (1, "many", "floor", 1),
        (32, "many", "floor", 1),
        (32, "one", "floor", 1),
    ]
    assert len(got) == 3 * (1 + 2 * 2)


def test_the_default_run_is_estimated_under_twelve_minutes() -> None:
    args = argparse.Namespace(seconds=4.0, batching_seconds=3.0, rounds=3, warmup=1.0)
    assert point_seconds(args) == 3.0
    assert point_seconds(argparse.Namespace(seconds=1.0, batching_seconds=3.0)) == 1.0
    models = ["mlp_off", "mlp_on", "encoder_off", "encoder_on"]
    total = estimated_seconds(models, (1, 8), [1, 8, 32], ("many", "one"), 3, point_seconds(args), args.warmup)
    assert total < 12 * 60


def test_rows_option() -> None:
    assert parse_rows("1,8") == (1, 8) and parse_rows(" 8 , 8,1") == (8, 1)
    for bad in ("", "0", "1,x", "-2"):
        with pytest.raises(ValueError, match="--rows"):
            parse_rows(bad)


def test_never_slower_names_the_worst_cell() -> None:
    assert verdict({("many", 1): 1.01, ("many", 8): 1.2, ("one", 8): 1.0}) == (True, ("one", 8), 1.0)
    assert verdict({("many", 1): 1.01, ("one", 32): 0.93, ("one", 8): 0.97}) == (False, ("one", 32), 0.93)


def test_summary_has_one_verdict_line_per_model_and_rows_with_rows_per_engine_call_when_saturated() -> None:
    results = _results()
    lines = rows_summary(results["inferd"], ["many", "one"])  # type: ignore[arg-type]
    verdicts = [line for line in lines if "never slower" in line]
    assert len(verdicts) == 2
    one_row, eight_rows = verdicts
    assert one_row.startswith("- mlp, 1 row/request: batching on / off req/s at c=1 1 conn × 1 stream: 1.01, ")
    assert "c=8 8 conns × 1 stream: 1.20, c=8 1 conn × 8 streams: 1.05" in one_row
    assert "**never slower: yes** (worst: c=1 1 conn × 1 stream, 1.01)" in one_row
    assert "saturated (c=32, 32 conns × 1 stream): **6.5 rows per engine call**" in one_row
    assert "**never slower: no** (worst: c=8 1 conn × 8 streams, 0.93)" in eight_rows
    assert "**24.0 rows per engine call**" in eight_rows
    assert one_row.split(";")[0].count("c=1 ") == 1  # c=1 is measured once, not listed per pattern


def test_report_has_rows_and_rows_per_second_columns_and_survives_a_json_round_trip() -> None:
    import json

    meta = {"date": "d", "machine": "m", "server_cpu": 0, "client_cpu": 1}
    args = argparse.Namespace(seconds=4.0, batching_seconds=3.0, warmup=1.0, rounds=3)
    for results in (_results(), json.loads(json.dumps(_results()))):  # the JSON file has str keys
        text = "\n".join(report_lines("batching", results, meta, args))
        assert "| target | rows | pattern | conc | req/s | rows/s |" in text
        assert "| mlp_on | 8 | 32 conns × 1 stream | 32 | 1800 | 14400 | 0.51 |" in text
        assert "| grpc floor | - | 32 conns × 1 stream | 32 | 3500 | - | 1.00 |" in text
        assert "3 s per point" in text and "1-row body" in text
        assert text.count("never slower") == 2
        # the floor summary stays, for 1 row per request
        assert "**0.86× the gRPC floor** (off: 0.57×); target ≥ 0.85 (met)" in text
