"""``make bench``'s workers scenario: ``inferd serve --workers 1`` against ``--workers 2`` (and more where
there are cores), the MLP with batching on, C connections × 1 stream, in interleaved rounds.

Nothing is pinned: the workers and h2load share every core, as they would on a real host where the
load comes from elsewhere but the machine also runs its sidecar and agents. On the 2-core development
machine h2load itself needs most of a core at these rates, so the figure there says how much a second
worker gains when the load generator competes with it, not what a dedicated 2-core server would do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.h2load import run_h2load
from bench.run import (
    MODELS,
    PREDICT_PATH,
    RESULTS,
    _stats,
    _wait_serving,
    build_bench_repository,
    example_input,
    machine_meta,
    stop,
)
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

MODEL = "mlp_on"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers-counts", default="", help="workers: comma list of --workers values (default 1,2,…,cores)"
    )


def _counts(text: str) -> list[int]:
    if text:
        return [int(n) for n in text.split(",")]
    cores = len(os.sched_getaffinity(0))
    return sorted({1, 2, *(n for n in (4, 8) if n <= cores), cores})


def run(args: argparse.Namespace, work: Path) -> Path:
    repo = (work / "repo").resolve()
    build_bench_repository(repo)
    counts = _counts(args.workers_counts)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    example, input_name, _ = MODELS[MODEL]
    message = inference_pb2.PredictRequest(
        model_name=MODEL, inputs=[from_numpy(input_name, example_input(example))]
    ).SerializeToString()
    servers: dict[int, subprocess.Popen[bytes]] = {}
    rounds: dict[tuple[int, int], list[dict[str, Any]]] = {(n, c): [] for n in counts for c in concurrencies}
    try:
        for n in counts:
            port = args.port + 10 + n
            command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
            command += ["--workers", str(n), "--log-level", "WARNING", "--no-metrics"]
            log = (work / f"workers-{n}.log").open("wb")  # the supervisor's and workers' stderr, for a failed start
            servers[n] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            try:
                _wait_serving(f"127.0.0.1:{port}")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its log: {log.name}") from None
        for round_ in range(args.rounds):
            for c in concurrencies:
                for n in counts:
                    address = f"127.0.0.1:{args.port + 10 + n}"
                    before = _stats(address, MODEL)
                    result = run_h2load(
                        f"http://{address}{PREDICT_PATH}",
                        message,
                        concurrency=c,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        connections=c,
                    )
                    after = _stats(address, MODEL)
                    failed = sum(after.failure_count.values()) - sum(before.failure_count.values())
                    cut_off = after.failure_count["CANCELLED"] - before.failure_count["CANCELLED"]
                    rounds[(n, c)].append(
                        {
                            "req_per_s": result.req_per_s,
                            "p50_ms": result.p50_ms,
                            "p99_ms": result.p99_ms,
                            "errors": failed - cut_off + result.http_failures,
                        }
                    )
                line = "  ".join(f"workers={n} {rounds[(n, c)][-1]['req_per_s']:.0f}" for n in counts)
                print(f"round {round_ + 1} c={c}: req/s  {line}", flush=True)
    finally:
        for process in servers.values():
            process.terminate()  # all at once: each drains on its own
        for process in servers.values():
            stop(process, 30)
    return _write(rounds, counts, concurrencies, args)


def _write(
    rounds: dict[tuple[int, int], list[dict[str, Any]]],
    counts: list[int],
    concurrencies: list[int],
    args: argparse.Namespace,
) -> Path:
    results = {
        f"{n}x{c}": {
            "workers": n,
            "concurrency": c,
            "req_per_s": statistics.median(p["req_per_s"] for p in points),
            "p50_ms": statistics.median(p["p50_ms"] for p in points),
            "p99_ms": statistics.median(p["p99_ms"] for p in points),
            "errors": sum(p["errors"] for p in points),
            "rounds_req_per_s": [round(p["req_per_s"]) for p in points],
        }
        for (n, c), points in rounds.items()
    }
    meta = {
        **machine_meta(),
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workers.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# workers benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · `inferd serve --workers N`, {MODEL} (1 row, batching on), "
        f"C connections × 1 stream · nothing pinned: the workers and h2load share every core · "
        f"{args.seconds:g} s per point, {args.rounds} interleaved rounds, medians (errors summed)",
        "",
        "| workers | conc | req/s | × 1 worker | p50 ms | p99 ms | errors | req/s per round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in concurrencies:
        one = results[f"{counts[0]}x{c}"]["req_per_s"]
        for n in counts:
            r = results[f"{n}x{c}"]
            lines.append(
                f"| {n} | {c} | {r['req_per_s']:.0f} | {r['req_per_s'] / one:.2f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['errors']} | {r['rounds_req_per_s']} |"
            )
    lines += [
        "",
        "errors = failed requests by the supervisor's summed ModelStatistics plus non-200 HTTP answers (streams",
        "h2load resets when its time is up are not errors). With as many cores as workers plus the load",
        "generator's, the ratio approaches the worker count; on a machine where h2load shares the cores it cannot.",
    ]
    path = RESULTS / "workers.md"
    path.write_text("\n".join(lines) + "\n")
    return path
