"""The bench's two connection patterns: h2load really gets -cC -m1 (C connections × 1 stream) or -c1 -mC
(1 connection × C streams), the batching report shows the pattern and quotes the issue's targets for the
many-connections pattern only, and the scenario selection keeps the peers out of a plain ``make bench``."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from bench.batching import report_lines
from bench.h2load import run_h2load
from bench.patterns import connections, label, measured, parse_patterns, source
from bench.run import selected_scenarios

# A stand-in h2load: records its arguments, writes a request log like h2load's (start, status, µs).
FAKE_H2LOAD = """#!{python}
import json, sys
args = sys.argv[1:]
with open({record!r}, "a") as out:
    out.write(json.dumps(args) + "\\n")
log = args[args.index("--log-file") + 1]
with open(log, "w") as out:
    for i in range(10):
        out.write(f"{{i}}\\t200\\t{{1000 + i}}\\n")
"""


@pytest.fixture
def fake_h2load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    record = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "h2load"
    script.parent.mkdir()
    script.write_text(FAKE_H2LOAD.format(python=sys.executable, record=str(record)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return record


def _flags(record: Path) -> list[list[str]]:
    return [[a for a in json.loads(line) if a.startswith(("-c", "-m"))] for line in record.read_text().splitlines()]


@pytest.mark.parametrize("c", [1, 8, 32])
def test_h2load_gets_c_connections_of_one_stream_or_one_connection_of_c_streams(fake_h2load: Path, c: int) -> None:
    for pattern in ("many", "one"):
        result = run_h2load(
            "http://127.0.0.1:1/x", b"m", concurrency=c, connections=connections(pattern, c), seconds=1, warmup=1
        )
        assert result.requests == 10 and result.http_failures == 0
    assert _flags(fake_h2load) == [[f"-c{c}", "-m1"], ["-c1", f"-m{c}"]]


def test_pattern_names_and_labels() -> None:
    assert parse_patterns("many,one") == ("many", "one")
    assert parse_patterns(" one , one ") == ("one",)
    for bad in ("", "both", "many,two"):
        with pytest.raises(ValueError, match="--connections"):
            parse_patterns(bad)
    assert (connections("many", 32), connections("one", 32)) == (32, 1)
    assert label("many", 32) == "32 conns × 1 stream"
    assert label("one", 32) == "1 conn × 32 streams"
    assert label("many", 1) == "1 conn × 1 stream"
    # at concurrency 1 both patterns are one connection with one stream: measured once, reported under both
    assert measured(("many", "one"), 1) == ("many",) and measured(("many", "one"), 8) == ("many", "one")
    assert source("one", ("many", "one"), 1) == "many" and source("one", ("many", "one"), 32) == "one"


def _point(req_per_s: float, p50: float = 1.0, rows: float = 1.0) -> dict[str, object]:
    return {
        "req_per_s": req_per_s,
        "p50_ms": p50,
        "p90_ms": 2.0,
        "p99_ms": 3.0,
        "errors": 0,
        "http_failures": 0,
        "engine_calls_per_request": 1 / rows,
        "mean_batch_rows": rows,
        "rows_per_s": req_per_s,
        "rounds_req_per_s": [round(req_per_s)],
    }


def test_batching_report_has_a_pattern_column_and_quotes_the_targets_for_many_connections() -> None:
    results = {
        "patterns": ["many", "one"],
        "floor": {"many": {1: _point(3000, p50=0.20), 32: _point(6000)}, "one": {1: _point(3000), 32: _point(5000)}},
        "inferd": {  # pattern → model → rows per request → concurrency
            "many": {
                "mlp_off": {1: {1: _point(2500, p50=0.30), 32: _point(4800)}},
                "mlp_on": {1: {1: _point(2500, p50=0.24), 32: _point(5400, rows=4.0)}},
            },
            "one": {
                "mlp_off": {1: {1: _point(2500), 32: _point(3000)}},
                "mlp_on": {1: {1: _point(2500), 32: _point(3600)}},
            },
        },
        "compute_floor": {},
    }
    meta = {"date": "d", "machine": "m", "server_cpu": 0, "client_cpu": 1}
    args = argparse.Namespace(seconds=2.0, warmup=1.0, rounds=3)
    text = "\n".join(report_lines("batching", results, meta, args))
    assert "| mlp_on | 1 | 32 conns × 1 stream | 32 | 5400 | 5400 | 0.90 |" in text
    assert "| mlp_on | 1 | 1 conn × 32 streams | 32 | 3600 | 3600 | 0.72 |" in text  # × its own pattern's floor
    assert "**0.90× the gRPC floor** (off: 0.80×); target ≥ 0.85 (met)" in text
    assert "**1.20× the floor's p50**; target ≤ 1.25 (met)" in text
    assert text.count("target ≥ 0.85") == 1  # quoted for the many-connections pattern only
    assert "## Summary (MLP ranker, 1 row/request), 1 conn × 32 streams at the top" in text


def test_make_bench_leaves_the_peers_out_unless_asked() -> None:
    everything = selected_scenarios("all", peers=False)
    assert "peers" not in everything and "batching" in everything
    assert selected_scenarios("all", peers=True) == [*everything, "peers"]
    assert selected_scenarios("batching", peers=True) == ["batching", "peers"]
    assert selected_scenarios("peers", peers=True) == ["peers"]
