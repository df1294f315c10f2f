"""``make bench``'s batching scenario: inferd with batching off and on against the gRPC floor, each cell
measured with both connection patterns (bench/patterns.py); ratios are only taken within a pattern.

The floor and inferd run side by side (both pinned to the server core, idle when not measured) and are
measured in interleaved rounds, so drift on a shared machine hits every target alike; medians reported.
Every inferd cell is measured at each ``--rows`` value (rows per request); the floor once per cell with
the 1-row body, since its handler ignores the body (bench/rows.py holds the pure parts).

When an MLP model is measured, the lean handler (bench/lean_server.py: parse, onnxruntime, encode, nothing
else) serves the same MLP file beside them and is measured right after the floor with the MLP 1-row body:
the ceiling of any Python handler that calls the engine per request (``--no-lean`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc

from bench.h2load import LoadResult, run_h2load
from bench.patterns import connections, label, measured, parse_patterns, source
from bench.rows import estimated_seconds, parse_rows, point_seconds, rows_summary
from bench.run import (
    CLIENT_CPU,
    MODELS,
    PREDICT_PATH,
    RESULTS,
    SERVER_CPU,
    _stats,
    _wait_port,
    build_bench_repository,
    compute_floor,
    example_input,
    machine_meta,
    running,
)
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

#: the lean handler's row label in the report
LEAN_LABEL = "lean handler (MLP)"
#: the issue's targets, quoted for the many-connections pattern at the top concurrency
FLOOR_TARGET = 0.85
P50_TARGET = 1.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", default="1,8", help="batching: comma list of rows per request (default 1,8)")
    parser.add_argument(
        "--batching-seconds",
        type=float,
        default=3.0,
        help="batching: measured seconds per point, at most (a lower --seconds wins); keeps the default run ~10 min",
    )
    parser.add_argument(
        "--no-lean",
        dest="lean",
        action="store_false",
        help="batching: leave out the lean handler reference (bench/lean_server.py, measured when an MLP model is)",
    )


def run(args: argparse.Namespace, work: Path) -> Path:
    return write_report("batching", scenario_batching(args, work), args)


def scenario_batching(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    repo = work / "repo"
    build_bench_repository(repo)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    patterns = parse_patterns(args.connections)
    rows_list = parse_rows(args.rows)
    seconds = point_seconds(args)
    models = [m for m in MODELS if not args.models or any(m.startswith(p) for p in args.models.split(","))]
    lean = getattr(args, "lean", True) and any(m.startswith("mlp") for m in models)
    estimate = estimated_seconds(
        models, rows_list, concurrencies, patterns, args.rounds, seconds, args.warmup, lean=lean
    )
    print(f"batching: {seconds:g} s per point, estimated {estimate / 60:.1f} min", flush=True)
    results: dict[str, Any] = {
        "patterns": list(patterns),
        "rows": list(rows_list),
        "floor": {p: {} for p in patterns},
        "inferd": {p: {m: {r: {} for r in rows_list} for m in models} for p in patterns},
        "compute_floor": {},
    }
    if lean:
        results["lean"] = {p: {} for p in patterns}
    floor_address = f"127.0.0.1:{args.port + 1}"
    address = f"127.0.0.1:{args.port}"
    messages = {
        (name, rows): inference_pb2.PredictRequest(
            model_name=name, inputs=[from_numpy(MODELS[name][1], example_input(MODELS[name][0], rows))]
        ).SerializeToString()
        for name in models
        for rows in rows_list
    }
    first = "mlp_off" if "mlp_off" in models else models[0]
    floor_message = messages.get((first, 1)) or messages[(first, rows_list[0])]
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    command += ["--log-level", "WARNING"]
    floor_command = [sys.executable, "-m", "bench.floor_server", "--port", str(args.port + 1)]
    lean_address = f"127.0.0.1:{args.port + 2}"
    lean_message = _mlp_message()
    lean_command = [sys.executable, "-m", "bench.lean_server", "--port", str(args.port + 2)]
    lean_command += ["--model", str(repo / "mlp_off" / "1" / "model.onnx")]
    references = ("floor", "lean") if lean else ("floor",)
    with ExitStack() as servers:
        servers.enter_context(running(floor_command, floor_address, health=False))
        if lean:
            servers.enter_context(running(lean_command, lean_address, ready=_lean_ready(lean_message)))
        servers.enter_context(running(command, address))
        for c in concurrencies:
            rounds: dict[str, dict[Any, list[dict[str, Any]]]] = {
                p: {t: [] for t in (*references, *messages)} for p in patterns
            }
            for round_ in range(args.rounds):
                for pattern in measured(patterns, c):

                    def load(url: str, message: bytes, pattern: str = pattern, c: int = c) -> LoadResult:
                        return run_h2load(
                            url,
                            message,
                            concurrency=c,
                            connections=connections(pattern, c),
                            seconds=seconds,
                            warmup=args.warmup,
                            cpu=CLIENT_CPU,
                        )

                    floor_result = load(f"http://{floor_address}{PREDICT_PATH}", floor_message)
                    rounds[pattern]["floor"].append(asdict(floor_result))
                    if lean:
                        lean_result = load(f"http://{lean_address}{PREDICT_PATH}", lean_message)
                        rounds[pattern]["lean"].append(asdict(lean_result))
                    for name, rows in messages:
                        before = _stats(address, name)
                        r = load(f"http://{address}{PREDICT_PATH}", messages[(name, rows)])
                        rounds[pattern][(name, rows)].append(_point(r, before, _stats(address, name), rows))
                    line = "  ".join(
                        f"{t if isinstance(t, str) else f'{t[0]}x{t[1]}'} {v[-1]['req_per_s']:.0f}"
                        for t, v in rounds[pattern].items()
                    )
                    print(f"c={c:<3} {pattern:<4} round {round_ + 1}: req/s  {line}", flush=True)
            for pattern in patterns:
                points = rounds[source(pattern, patterns, c)]
                results["floor"][pattern][c] = median_point(points["floor"])
                if lean:
                    results["lean"][pattern][c] = median_point(points["lean"])
                for name, rows in messages:
                    results["inferd"][pattern][name][rows][c] = median_point(points[(name, rows)])
    for name in ("mlp_off", "encoder_off"):
        if name in models:
            example, input_name, _ = MODELS[name]
            results["compute_floor"][example] = compute_floor(repo, name, input_name, min(seconds, 3))
    return results


def _mlp_message() -> bytes:
    """The MLP's 1-row request body, whatever ``--rows`` says: the lean handler's load."""
    example, input_name, _ = MODELS["mlp_off"]
    request = inference_pb2.PredictRequest(
        model_name="mlp_off", inputs=[from_numpy(input_name, example_input(example, 1))]
    )
    return request.SerializeToString()


def _lean_ready(message: bytes) -> Callable[[str], None]:
    """Ready = the port answers and one real Predict with the bench's body returns a score: h2load counts
    a gRPC error as a success (HTTP 200), so a lean server that failed every call would look fast."""

    def ready(address: str) -> None:
        _wait_port(address)
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary(PREDICT_PATH, response_deserializer=inference_pb2.PredictResponse.FromString)
            reply = call(message, timeout=30)
        if not reply.outputs or not reply.outputs[0].raw_contents:
            raise RuntimeError(f"lean server at {address} answered without outputs: {reply}")

    return ready


def median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each timing over rounds; counts (errors) summed; the per-round req/s kept for the record."""
    out: dict[str, Any] = {}
    for key, value in points[0].items():
        values = [p[key] for p in points]
        if key in ("errors", "http_failures", "requests", "cancelled_at_end"):
            out[key] = sum(values)
        elif isinstance(value, (int, float)):
            out[key] = float(statistics.median(values))
        else:
            out[key] = value
    out["rounds_req_per_s"] = [round(p["req_per_s"]) for p in points]
    return out


def _point(
    r: LoadResult, before: inference_pb2.VersionStatistics, after: inference_pb2.VersionStatistics, rows: int
) -> dict[str, Any]:
    ok = after.success_count - before.success_count
    failed = sum(after.failure_count.values()) - sum(before.failure_count.values())
    # h2load resets the streams still open when its time is up: those are CANCELLED, not errors
    cut_off = after.failure_count["CANCELLED"] - before.failure_count["CANCELLED"]
    failed -= cut_off
    calls = after.execution_count - before.execution_count
    answered = max(1, ok + failed)
    return {
        **asdict(r),
        "errors": failed + r.http_failures,
        "cancelled_at_end": cut_off,
        "engine_calls_per_request": calls / answered,
        "rows": rows,
        "rows_per_s": r.req_per_s * rows,
        # rows per engine call: inference_count counts rows, execution_count engine calls
        "mean_batch_rows": (after.inference_count - before.inference_count) / max(1, calls),
    }


def write_report(name: str, results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        **machine_meta(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "seconds_per_point": point_seconds(args),
        "rounds": args.rounds,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(report_lines(name, results, meta, args)) + "\n")
    return RESULTS / f"{name}.md"


def report_lines(name: str, results: dict[str, Any], meta: dict[str, Any], args: argparse.Namespace) -> list[str]:
    patterns: list[str] = results["patterns"]
    floor: dict[str, dict[Any, Any]] = results["floor"]
    # inferd[pattern][model][rows][concurrency] → point
    inferd: dict[str, dict[str, dict[Any, dict[Any, Any]]]] = results["inferd"]
    compute = results.get("compute_floor", {})
    lean: dict[str, dict[Any, Any]] = results.get("lean", {})
    lines = [
        f"# {name} benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · server processes pinned to cpu {meta['server_cpu']}, h2load to cpu "
        f"{meta['client_cpu']} · closed loop, connection patterns: many = C connections × 1 stream, one = 1 "
        f"connection × C streams · {point_seconds(args):g} s per point after {args.warmup:g} s warm-up · "
        f"{args.rounds} interleaved rounds, medians shown (errors summed); × floor only within a pattern · "
        "rows = rows per request; the gRPC floor is measured once per cell with the 1-row body (its handler "
        "ignores the body)",
        "",
    ]
    for pattern in patterns:
        lines += summary(pattern, floor[pattern], _at_rows(inferd[pattern], 1), lean.get(pattern))
    lines += rows_summary(inferd, patterns)
    lines += [
        "",
        "| target | rows | pattern | conc | req/s | rows/s | × gRPC floor (req/s) | p50 ms | p90 ms | p99 ms | errors |"
        " engine calls/req | rows/batch | req/s per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pattern in patterns:
        for c, r in floor[pattern].items():
            lines.append(
                f"| grpc floor | - | {label(pattern, int(c))} | {c} | {r['req_per_s']:.0f} | - | 1.00 | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['http_failures']} | - | - | "
                f"{r['rounds_req_per_s']} |"
            )
        lines += _lean_rows(pattern, floor[pattern], lean.get(pattern, {}))
        for model, by_rows in inferd[pattern].items():
            for rows, points in by_rows.items():
                for c, r in points.items():
                    base = floor[pattern].get(c)
                    ratio = r["req_per_s"] / base["req_per_s"] if base else float("nan")
                    lines.append(
                        f"| {model} | {rows} | {label(pattern, int(c))} | {c} | {r['req_per_s']:.0f} | "
                        f"{r['rows_per_s']:.0f} | {ratio:.2f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                        f"{r['p99_ms']:.2f} | {r['errors']} | {r['engine_calls_per_request']:.3f} | "
                        f"{r['mean_batch_rows']:.1f} | {r['rounds_req_per_s']} |"
                    )
    if compute:
        lines += _compute_lines(compute, inferd)
    lines += [
        "",
        "rows/batch = rows per engine call (inference_count / execution_count deltas from ModelStatistics).",
        "errors = failed requests by the server's own counters (ModelStatistics) plus non-200 HTTP answers;",
        "streams that h2load resets when its time is up (CANCELLED) are not errors and are left out.",
    ]
    return lines


def _lean_rows(pattern: str, floor: dict[Any, Any], lean: dict[Any, Any]) -> list[str]:
    """The lean handler's table rows: the MLP 1-row body, × the floor of the same cell."""
    lines = []
    for c, r in lean.items():
        base = floor.get(c)
        ratio = r["req_per_s"] / base["req_per_s"] if base else float("nan")
        lines.append(
            f"| {LEAN_LABEL} | 1 | {label(pattern, int(c))} | {c} | {r['req_per_s']:.0f} | {r['req_per_s']:.0f} | "
            f"{ratio:.2f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['http_failures']} | 1.000 | "
            f"1.0 | {r['rounds_req_per_s']} |"
        )
    return lines


def _at_rows(by_model: dict[str, dict[Any, dict[Any, Any]]], rows: int) -> dict[str, dict[Any, Any]]:
    """One pattern's points at ``rows`` rows per request, by model then concurrency (JSON keys are str)."""
    return {m: next((v for k, v in by_rows.items() if int(k) == rows), {}) for m, by_rows in by_model.items()}


def _compute_lines(compute: dict[str, Any], inferd: dict[str, dict[str, dict[Any, dict[Any, Any]]]]) -> list[str]:
    lines = [
        "",
        "Compute floor (the engine called in-process in a loop, one thread, no gRPC):",
        "",
        "| model | calls/s at batch 1 | rows/s at batch 32 |",
        "|---|---|---|",
    ]
    for model, r in compute.items():
        lines.append(f"| {model} | {r['calls_per_s_batch1']:.0f} | {r['rows_per_s_batch32']:.0f} |")
    lines += ["", "inferd rows/s as a share of the compute floor (best concurrency, pattern and rows):", ""]
    models = {m for by_model in inferd.values() for m in by_model}
    for model in sorted(models):
        example = MODELS[model][0]
        if example in compute:
            best = max(
                p["rows_per_s"]
                for by_model in inferd.values()
                for points in by_model.get(model, {}).values()
                for p in points.values()
            )
            lines.append(
                f"- {model}: {best:.0f} rows/s = {best / compute[example]['calls_per_s_batch1']:.2f}× the "
                f"in-process batch-1 rate, {best / compute[example]['rows_per_s_batch32']:.2f}× the batch-32 rate"
            )
    return lines


def summary(
    pattern: str, floor: dict[Any, Any], inferd: dict[str, dict[Any, Any]], lean: dict[Any, Any] | None = None
) -> list[str]:
    """The figures the issues ask for, as ratios from this run, for one connection pattern; the issue's
    targets (≥ 0.85× the floor at the top concurrency, p50 at c=1 within 1.25× the floor's) are quoted
    for the many-connections pattern only. With ``lean`` (the lean handler's points), one more line: where
    the thinnest Python handler that runs the MLP stands against the floor, and inferd against it."""
    off, on = inferd.get("mlp_off"), inferd.get("mlp_on")
    if not off or not on:
        return []
    top, low = max(on, key=int), min(on, key=int)
    quote = pattern == "many"
    lines = ["", f"## Summary (MLP ranker, 1 row/request), {label(pattern, int(top))} at the top", ""]
    if top in floor:
        best = max(on[top]["req_per_s"], off[top]["req_per_s"]) / floor[top]["req_per_s"]
        target = f"; target ≥ {FLOOR_TARGET} ({'met' if best >= FLOOR_TARGET else 'NOT met'})" if quote else ""
        lines.append(
            f"- c={top}: batching on serves {on[top]['req_per_s']:.0f} req/s = "
            f"**{on[top]['req_per_s'] / floor[top]['req_per_s']:.2f}× the gRPC floor** "
            f"(off: {off[top]['req_per_s'] / floor[top]['req_per_s']:.2f}×){target}"
        )
    if low in floor:
        p50 = min(on[low]["p50_ms"], off[low]["p50_ms"]) / floor[low]["p50_ms"]
        target = f"; target ≤ {P50_TARGET} ({'met' if p50 <= P50_TARGET else 'NOT met'})" if quote else ""
        lines.append(
            f"- c={low}: p50 {on[low]['p50_ms']:.3f} ms on, {off[low]['p50_ms']:.3f} ms off, floor "
            f"{floor[low]['p50_ms']:.3f} ms: **{p50:.2f}× the floor's p50**{target}"
        )
    lines.append(
        f"- c={top}: **{on[top]['engine_calls_per_request']:.3f} engine calls per request** with batching on "
        f"(mean batch {on[top]['mean_batch_rows']:.1f} rows)"
    )
    lines.append(
        f"- c={top}: p99 {off[top]['p99_ms']:.2f} ms off vs {on[top]['p99_ms']:.2f} ms on "
        f"(on/off {on[top]['p99_ms'] / off[top]['p99_ms']:.2f})"
    )
    ratios = ", ".join(f"c={c}: {on[c]['req_per_s'] / off[c]['req_per_s']:.2f}" for c in on if c in off)
    lines.append(f"- req/s on/off at each concurrency: {ratios}; target ≥ 1")
    if lean and top in lean and low in lean and top in floor and low in floor:
        lines.append(
            f"- lean handler: {lean[top]['req_per_s'] / floor[top]['req_per_s']:.2f}× the floor at c={top}, "
            f"p50 {lean[low]['p50_ms'] / floor[low]['p50_ms']:.2f}× the floor's at c={low}; "
            f"inferd batching on / lean {on[top]['req_per_s'] / lean[top]['req_per_s']:.2f}"
        )
    return lines
