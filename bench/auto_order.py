"""``make bench``'s auto-order scenario: does ``execution: auto`` end up in the same place whether a fresh
server first meets light load or heavy load?

Each repeat starts a fresh server (the MLP with batching on, ``execution`` left at its ``auto`` default)
twice: one is hit at once with concurrency 32 over 32 connections ("heavy first"), the other first
serves a lone caller for a while ("light first") and then the same heavy load. The heavy load's req/s
and p99 are compared between the two orders; the policy's own unit test (tests/unit/
test_execution_auto.py, a fake clock) checks the decision itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.h2load import run_h2load
from bench.run import (
    CLIENT_CPU,
    MODELS,
    PREDICT_PATH,
    RESULTS,
    build_bench_repository,
    example_input,
    machine_meta,
    running,
)
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

MODEL = "mlp_on"
ORDERS = ("heavy first", "light first")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auto-repeats", type=int, default=3, help="auto-order: fresh servers per order")


def _once(order: str, repo: Path, message: bytes, args: argparse.Namespace) -> dict[str, float]:
    port = args.port + 40
    address = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
    with running([*command, "--log-level", "WARNING"], address):
        url = f"http://{address}{PREDICT_PATH}"
        if order == "light first":
            run_h2load(url, message, concurrency=1, seconds=2, warmup=0, cpu=CLIENT_CPU)
        # the same heavy load in both orders, measured after its own warm-up: what the policy *reaches*
        heavy = run_h2load(
            url, message, concurrency=32, seconds=args.seconds, warmup=args.warmup, cpu=CLIENT_CPU, connections=32
        )
    return {"req_per_s": heavy.req_per_s, "p50_ms": heavy.p50_ms, "p99_ms": heavy.p99_ms}


def run(args: argparse.Namespace, work: Path) -> Path:
    repo = (work / "repo").resolve()
    build_bench_repository(repo)
    example, input_name, _ = MODELS[MODEL]
    message = inference_pb2.PredictRequest(
        model_name=MODEL, inputs=[from_numpy(input_name, example_input(example))]
    ).SerializeToString()
    points: dict[str, list[dict[str, float]]] = {order: [] for order in ORDERS}
    for repeat in range(args.auto_repeats):
        for order in ORDERS if repeat % 2 == 0 else reversed(ORDERS):
            points[order].append(_once(order, repo, message, args))
            print(f"repeat {repeat + 1} {order}: {points[order][-1]['req_per_s']:.0f} req/s", flush=True)
    return _write(points, args)


def _write(points: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> Path:
    results: dict[str, Any] = {
        order: {
            "req_per_s": statistics.median(p["req_per_s"] for p in runs),
            "p50_ms": statistics.median(p["p50_ms"] for p in runs),
            "p99_ms": statistics.median(p["p99_ms"] for p in runs),
            "runs_req_per_s": [round(p["req_per_s"]) for p in runs],
        }
        for order, runs in points.items()
    }
    meta = {
        **machine_meta(),
        "seconds": args.seconds,
        "repeats": args.auto_repeats,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auto_order.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    heavy, light = results["heavy first"], results["light first"]
    lines = [
        "# auto-order benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · a fresh server per run (`{MODEL}`, `execution` left at `auto`), "
        f"then concurrency 32 over 32 connections, measured for {args.seconds:g} s after {args.warmup:g} s of it; "
        f"'light first' serves a lone caller for 2 s before that · {args.auto_repeats} repeats per order, "
        "alternating, medians",
        "",
        "| order | req/s under the heavy load | p50 ms | p99 ms | req/s per run |",
        "|---|---|---|---|---|",
    ]
    for order, r in results.items():
        lines.append(
            f"| {order} | {r['req_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['runs_req_per_s']} |"
        )
    lines += [
        "",
        f"heavy first / light first: req/s **{heavy['req_per_s'] / light['req_per_s']:.2f}×**, "
        f"p99 {heavy['p99_ms'] / light['p99_ms']:.2f}× (1.00 = the order does not matter)",
    ]
    path = RESULTS / "auto_order.md"
    path.write_text("\n".join(lines) + "\n")
    return path
