"""bench/results/peers.md and .json from one peers run: a table per model (req/s, p50, p99, errors, rows per
engine call) and the ratios (inferd / floor, inferd / each peer), all within one connection pattern.

Pure functions of the measured points (tests/unit/test_bench_peers.py); ratios are medians of per-round
ratios, so drift on a shared machine cancels between targets measured back to back.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.patterns import label
from bench.run import CLIENT_CPU, RESULTS, SERVER_CPU, machine_meta

HEADLINE = "inferd_on"  # inferd at its documented default: OIP ModelInfer, dynamic batching on
INFERD = ("inferd_on", "inferd_off", "inferd_v1")
PYTHON_PEERS = ("kserve", "mlserver")
#: the issue's targets at MLP, concurrency 32, 32 connections
TARGETS = {"floor": 0.85, "python_peer": 1.6, "p99": 0.5}
WHAT = {
    "floor": "a grpc.aio server answering ModelInfer with an empty message (bench/floor_server.py): the gRPC floor",
    "inferd_on": "inferd, OIP ModelInfer, dynamic batching on (the documented default)",
    "inferd_off": "inferd, OIP ModelInfer, dynamic batching off",
    "inferd_v1": "inferd, its own inferd.v1 Predict, dynamic batching on",
    "triton_off": "Triton (tritonserver from nvidia-pytriton), Python backend running onnxruntime, batching off",
    "triton_on": "Triton, same model.py, dynamic_batching { } (the backend runs a formed batch as one call)",
    "kserve": "KServe ModelServer, custom kserve.Model running onnxruntime, gRPC (OIP v2) port",
    "mlserver": "MLServer, custom MLModel running onnxruntime, gRPC port, parallel_workers 0 (inference in-process)",
}


def median(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Median timings over rounds, errors summed, rows per call median of the rounds that report it."""
    rows = [p["rows_per_call"] for p in points if p.get("rows_per_call") is not None]
    return {
        "req_per_s": float(statistics.median(p["req_per_s"] for p in points)),
        "p50_ms": float(statistics.median(p["p50_ms"] for p in points)),
        "p99_ms": float(statistics.median(p["p99_ms"] for p in points)),
        "errors": int(sum(p["errors"] for p in points)),
        "rows_per_call": float(statistics.median(rows)) if rows else None,
        "rounds_req_per_s": [round(p["req_per_s"]) for p in points],
    }


def _round_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    pairs = [(x, y) for x, y in zip(a["rounds_req_per_s"], b["rounds_req_per_s"], strict=False) if y > 0]
    if not pairs:
        return float("nan")
    return float(statistics.median(x / y for x, y in pairs))


def ratios(cells: dict[str, Any]) -> dict[str, Any]:
    """Per model, pattern and concurrency: the headline inferd target over every other target (median of
    per-round ratios), and the best inferd setting against the best Python peer (req/s and p99)."""
    out: dict[str, Any] = {}
    for model, by_pattern in cells.items():
        for pattern, by_c in by_pattern.items():
            for c, points in by_c.items():
                cell: dict[str, float] = {}
                if HEADLINE in points:
                    for other, point in sorted(points.items(), key=lambda item: item[0] != "floor"):
                        if other != HEADLINE:
                            cell[f"{HEADLINE} / {other}"] = _round_ratio(points[HEADLINE], point)
                ours = [points[t] for t in INFERD if t in points]
                peers = [points[t] for t in PYTHON_PEERS if t in points]
                if ours and peers:
                    best = max(ours, key=lambda p: p["req_per_s"])
                    rival = max(peers, key=lambda p: p["req_per_s"])
                    cell["best inferd / best Python peer"] = best["req_per_s"] / rival["req_per_s"]
                    cell["best inferd p99 / best Python peer p99"] = best["p99_ms"] / rival["p99_ms"]
                out.setdefault(model, {}).setdefault(pattern, {})[c] = cell
    return out


def write(results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["meta"] = {
        **machine_meta(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "seconds_per_point": args.peers_seconds,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
    }
    (RESULTS / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    path = RESULTS / "peers.md"
    path.write_text("\n".join(lines(results)) + "\n")
    return path


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def lines(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    out = [
        "# inferd against its peers",
        "",
        f"`python -m bench.run --scenario peers` · {meta.get('date', '')} · {meta.get('machine', '')} · every server "
        f"pinned to cpu {meta.get('server_cpu')}, h2load to cpu {meta.get('client_cpu')} · "
        f"{meta.get('seconds_per_point', '?')} s per point after {meta.get('warmup_s', '?')} s warm-up · "
        f"{meta.get('rounds', '?')} interleaved rounds, medians · one pre-encoded OIP ModelInferRequest per model "
        "for every target · patterns: many = C connections × 1 stream, one = 1 connection × C streams; ratios only "
        f"within a pattern · whole run {results.get('wall_s', '?')} s",
        "",
    ]
    out += _headline(results.get("ratios", {}))
    out += ["", "## Targets", ""]
    out += [f"- **{t}**: {WHAT.get(t, t)}" for t in results.get("targets", {})]
    versions = results.get("versions", {})
    if versions:
        out.append(
            "- versions: "
            + "; ".join(f"{p} " + ", ".join(f"{k} {v}" for k, v in vs.items()) for p, vs in versions.items())
        )
    for name, reason in results.get("skipped", {}).items():
        out.append(f"- **{name} not measured**: {reason}")
    for name, reason in results.get("restarts", {}).items():
        out.append(f"- {name} crashed while loading and was started again: {reason}")
    for model, by_pattern in results.get("cells", {}).items():
        out += [
            "",
            f"## {model}",
            "",
            "| pattern | conc | target | req/s | p50 ms | p99 ms | errors | rows/engine call | req/s per round |",
        ]
        out.append("|---|---|---|---:|---:|---:|---:|---:|---|")
        for pattern, by_c in by_pattern.items():
            for c, points in by_c.items():
                for target, p in points.items():
                    out.append(
                        f"| {label(pattern, int(c))} | {c} | {target} | {p['req_per_s']:.0f} | {p['p50_ms']:.2f} | "
                        f"{p['p99_ms']:.2f} | {p['errors']} | {_f(p['rows_per_call'], 1)} | {p['rounds_req_per_s']} |"
                    )
        out += _ratio_table(results.get("ratios", {}).get(model, {}))
    out += [
        "",
        "req/s: answers per second (h2load, closed loop); errors: non-200 HTTP answers plus failures in the server's",
        "own statistics where it has them (inferd leaves out the streams h2load resets at the end, Triton counts",
        "them);",
        "rows/engine call: rows served per model execution from the server's statistics (Triton's statistics",
        "extension, inferd's ModelStatistics); '-' where a server reports none (KServe, MLServer).",
        "Every target answered one ModelInfer equal to onnxruntime's output within 1e-5 before and after the load.",
    ]
    return out


def _ratio_table(by_pattern: dict[str, Any]) -> list[str]:
    keys = list(dict.fromkeys(k for by_c in by_pattern.values() for cell in by_c.values() for k in cell))
    if not keys:
        return []
    out = ["", "| pattern | conc | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for pattern, by_c in by_pattern.items():
        for c, cell in by_c.items():
            out.append(f"| {label(pattern, int(c))} | {c} | " + " | ".join(_f(cell.get(k)) for k in keys) + " |")
    return out


def _headline(all_ratios: dict[str, Any]) -> list[str]:
    """The issue's acceptance cell: MLP, concurrency 32, 32 connections."""
    cell = all_ratios.get("mlp", {}).get("many", {}).get("32")
    if not cell:
        return []
    out = ["## Summary (MLP, concurrency 32, 32 connections × 1 stream)", ""]
    checks = [
        (f"{HEADLINE} / floor", "× the gRPC floor", TARGETS["floor"], True),
        ("best inferd / best Python peer", "× the best Python peer (req/s)", TARGETS["python_peer"], True),
        ("best inferd p99 / best Python peer p99", "× the best Python peer's p99", TARGETS["p99"], False),
    ]
    for key, words, target, higher in checks:
        if key in cell:
            met = cell[key] >= target if higher else cell[key] <= target
            sign = "≥" if higher else "≤"
            out.append(f"- {key}: **{cell[key]:.2f}**{words}; target {sign} {target} ({'met' if met else 'NOT met'})")
    for key in ("triton_off", "triton_on"):
        if f"{HEADLINE} / {key}" in cell:
            out.append(f"- {HEADLINE} / {key}: {cell[f'{HEADLINE} / {key}']:.2f}")
    return out
