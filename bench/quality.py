"""What drift monitoring costs: req/s of the MLP with `drift {}` (default sampling) against without.

``python -m bench.run --scenario quality [--quality-rounds 12 --quality-seconds 3]``. One server, pinned to
the server core, serves two copies of the MLP (dynamic batching, 1 row per request): ``mlp_on`` as the
benchmarks build it and ``mlp_drift`` with ``drift {}`` and a reference.npz written by inferd/profile.py
from the same distribution as the requests (so no drift: the steady-state cost). h2load (other core,
concurrency 32 by default) measures them in interleaved rounds; medians and the paired ratio go to
bench/results/quality.md. Target: ≥ 0.97 × without (≤ 3 % req/s). h2load repeats one request, so the
drift model does flag drift (one row repeated is not the reference distribution): the cost measured is
the steady state, sampling and summarising included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.h2load import run_h2load
from bench.run import CLIENT_CPU, PREDICT_PATH, RESULTS, build_bench_repository, example_input, running
from inferd.profile import PROFILE_FILE, build_profile, save_profile
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

#: "copy" is a control: a second plain copy of the MLP in the same server, so the off/copy spread shows
#: what differs between two identical models (e.g. `execution: auto` settling differently) without drift
CONFIGS = {"off": "mlp_on", "copy": "mlp_copy", "drift": "mlp_drift"}
TARGET = 0.97


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quality-rounds", type=int, default=12, help="interleaved rounds (quality scenario)")
    parser.add_argument("--quality-seconds", type=float, default=3.0, help="seconds per point (quality scenario)")


def _repository(repo: Path) -> None:
    build_bench_repository(repo)
    shutil.copytree(repo / "mlp_on", repo / "mlp_copy")
    shutil.copytree(repo / "mlp_on", repo / "mlp_drift")
    config = repo / "mlp_drift" / "config.pbtxt"
    config.write_text(config.read_text() + "drift {}\n")
    sample = np.random.default_rng(1).random((4000, 256), dtype=np.float32)  # example_input's distribution
    profile = build_profile({"features": sample})
    for version in (p for p in (repo / "mlp_drift").iterdir() if p.is_dir() and p.name.isdigit()):
        save_profile(profile, version / PROFILE_FILE)


def run(args: argparse.Namespace, work: Path) -> Path:
    concurrency = int(str(args.concurrency).split(",")[-1])
    messages = {
        config: inference_pb2.PredictRequest(
            model_name=model, inputs=[from_numpy("features", example_input("mlp_ranker"))]
        ).SerializeToString()
        for config, model in CONFIGS.items()
    }
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    repo = work / "quality-repo"
    _repository(repo)
    port = args.port + 30
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
    command += ["--log-level", "WARNING", "--no-metrics"]
    order = list(CONFIGS)
    with running(command, f"127.0.0.1:{port}"):
        for round_ in range(args.quality_rounds):
            for config in order[round_ % len(order) :] + order[: round_ % len(order)]:
                r = run_h2load(
                    f"http://127.0.0.1:{port}{PREDICT_PATH}",
                    messages[config],
                    concurrency=concurrency,
                    seconds=args.quality_seconds,
                    warmup=args.warmup,
                    cpu=CLIENT_CPU,
                )
                samples[config].append(asdict(r))
            print(f"quality round {round_ + 1}/{args.quality_rounds} done", flush=True)
    return _write(samples, concurrency, args, _in_process())


def _in_process() -> dict[str, float]:
    """The monitor's own cost without a network or a server: µs per observed request (the hot path) and
    ms per background summary of 0.5 s of traffic at 2,600 req/s (325 sampled one-row requests)."""
    import time

    from server.quality.drift import DriftMonitor, DriftSpec

    rng = np.random.default_rng(2)
    monitor = DriftMonitor("m", 1, DriftSpec(), {"features"})
    monitor._use(build_profile({"features": rng.random((4000, 256), dtype=np.float32)}), "file")
    rows = [{"features": rng.random((1, 256), dtype=np.float32)} for _ in range(325)]
    outputs = {"scores": np.zeros((1, 1), np.float32)}
    calls = 200_000
    t0 = time.perf_counter()
    for i in range(calls):
        monitor.observe(rows[i % 325], outputs, 1)
        if monitor.pending_rows >= 325:
            monitor.pending, monitor.pending_rows = [], 0
    observe_us = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(50):
        monitor.pending, monitor.pending_rows = list(rows), 325
        monitor.summarise()
    return {"observe_us": observe_us, "summary_ms": (time.perf_counter() - t0) / 50 * 1e3}


def _median(points: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(p[key] for p in points))


def _write(
    samples: dict[str, list[dict[str, Any]]], concurrency: int, args: argparse.Namespace, inside: dict[str, float]
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({"samples": samples, "in_process": inside}, indent=1))
    lines = [
        "# What drift monitoring costs: `drift {}` (default sampling) vs without",
        "",
        f"`python -m bench.run --scenario quality`: MLP (dynamic batching, 1 row per request, 256 features, 32 "
        f"profiled), h2load at concurrency {concurrency}, {args.quality_rounds} interleaved rounds of "
        f"{args.quality_seconds:g} s per configuration, one server pinned to the server core, h2load to the other. "
        "One run on a shared machine: compare the ratio, not the absolutes.",
        "",
        "`× off` is the median of each round's req/s divided by the same round's \"off\" req/s (paired).",
        "",
        "| configuration | req/s | × off (paired) | target | p50 ms | p99 ms | failures |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in CONFIGS:
        points = samples[config]
        paired = statistics.median(p["req_per_s"] / o["req_per_s"] for p, o in zip(points, samples["off"], strict=True))
        target = f"≥ {TARGET:.2f}" if config == "drift" else ""
        lines.append(
            f"| {config} | {_median(points, 'req_per_s'):.0f} | {paired:.3f} | {target} | "
            f"{_median(points, 'p50_ms'):.2f} | {_median(points, 'p99_ms'):.2f} | "
            f"{sum(p['http_failures'] for p in points)} |"
        )
    lines += [
        "",
        "`copy` is a control: a second plain copy of the MLP in the same server. Its spread from `off` is what "
        "two identical models differ by in this run; a drift cost smaller than that spread is not resolved "
        "by req/s, so the monitor's own cost is measured in process too (bench/quality.py `_in_process`, "
        "default sampling of 25 %, 32 of 256 features):",
        "",
        f"- hot path: {inside['observe_us']:.2f} µs per request (a random draw; a sampled request is kept by "
        "reference);",
        f"- background: {inside['summary_ms']:.2f} ms per 0.5 s summary of 325 sampled rows (2,600 req/s × 25 % "
        f"× 0.5 s), i.e. {inside['summary_ms'] / 500 * 100:.2f} % of one core.",
    ]
    lines += ["", "Per-round req/s:", ""]
    lines += [f"- {c}: {[round(p['req_per_s']) for p in samples[c]]}" for c in CONFIGS]
    path = RESULTS / "quality.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
