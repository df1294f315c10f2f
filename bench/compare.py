"""Before/after in one run: this checkout's server against another checkout's, on the same load.

``python -m bench.compare --baseline DIR`` (DIR: a checkout of an earlier commit, e.g. made with
``git worktree add DIR <commit>``; it runs with this venv). The gRPC floor, the baseline server and
this server run side by side pinned to the server core and are measured in interleaved rounds, so
drift on a shared machine hits all three alike; medians are reported. Writes
bench/results/compare.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.h2load import run_h2load
from bench.run import CLIENT_CPU, MODELS, PREDICT_PATH, RESULTS, build_bench_repository, example_input, running
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2


def _server(checkout: Path, repo: Path, port: int) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
    if (checkout / "server" / "telemetry" / "options.py").exists():  # it serves metrics, by default on 8002
        command += ["--metrics-port", str(port + 100)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return [*command, "--log-level", "WARNING"], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the commit to compare against")
    parser.add_argument("--label", default="baseline", help="what the baseline is, for the report")
    parser.add_argument("--models", default="mlp", help="comma list of prefixes (mlp, encoder)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=18101)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    models = [m for m in MODELS if any(m.startswith(p) for p in args.models.split(","))]
    targets = {"floor": f"127.0.0.1:{args.port}", "baseline": f"127.0.0.1:{args.port + 1}"}
    targets["current"] = f"127.0.0.1:{args.port + 2}"
    samples: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        repo = Path(tmp) / "repo"
        build_bench_repository(repo)
        messages = {
            m: inference_pb2.PredictRequest(
                model_name=m, inputs=[from_numpy(MODELS[m][1], example_input(MODELS[m][0]))]
            ).SerializeToString()
            for m in models
        }
        floor = [sys.executable, "-m", "bench.floor_server", "--port", str(args.port)]
        stack.enter_context(running(floor, targets["floor"], health=False))
        for name, checkout in (("baseline", args.baseline.resolve()), ("current", here)):
            command, env = _server(checkout, repo, int(targets[name].rsplit(":", 1)[1]))
            stack.enter_context(running(command, targets[name], env=env))
        for c in map(int, args.concurrency.split(",")):
            for round_ in range(args.rounds):
                points = [("floor", "floor", messages[models[0]])]
                points += [(t, m, messages[m]) for m in models for t in ("baseline", "current")]
                for target, model, message in points:
                    url = f"http://{targets[target]}{PREDICT_PATH}"
                    r = run_h2load(
                        url, message, concurrency=c, seconds=args.seconds, warmup=args.warmup, cpu=CLIENT_CPU
                    )
                    key = "floor" if target == "floor" else f"{model}/{target}"
                    samples.setdefault(f"{key}@{c}", []).append(asdict(r))
                print(f"c={c} round {round_ + 1} done", flush=True)
    write(samples, models, args)


def _median(points: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(p[key] for p in points))


def write(samples: dict[str, list[dict[str, Any]]], models: list[str], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.json").write_text(
        json.dumps({"args": vars(args) | {"baseline": str(args.baseline)}, "samples": samples}, indent=1)
    )
    lines = [
        f"# Before/after: this checkout vs {args.label}",
        "",
        f"`python -m bench.compare --baseline DIR --label {args.label}`; {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per point, medians; server core pinned apart from h2load. One run on a shared machine: "
        "compare the ratios, not the absolutes.",
        "",
        "| model | c | floor req/s | before req/s | after req/s | after / before | before / floor | after / floor "
        "| p50 before → after (ms) | p99 before → after (ms) | failures (h2load) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in map(int, args.concurrency.split(",")):
        floor = _median(samples[f"floor@{c}"], "req_per_s")
        for m in models:
            before, after = samples[f"{m}/baseline@{c}"], samples[f"{m}/current@{c}"]
            b, a = _median(before, "req_per_s"), _median(after, "req_per_s")
            fails = sum(p["http_failures"] for p in before + after)
            lines.append(
                f"| {m} | {c} | {floor:.0f} | {b:.0f} | {a:.0f} | {a / b:.2f} | {b / floor:.2f} | {a / floor:.2f} "
                f"| {_median(before, 'p50_ms'):.2f} → {_median(after, 'p50_ms'):.2f} "
                f"| {_median(before, 'p99_ms'):.2f} → {_median(after, 'p99_ms'):.2f} | {fails} |"
            )
    lines += ["", "Per-round req/s (before; after):", ""]
    for key in sorted(k for k in samples if "/baseline@" in k):
        other = key.replace("/baseline@", "/current@")
        lines.append(
            f"- {key.replace('/baseline', '')}: {[round(p['req_per_s']) for p in samples[key]]}; "
            f"{[round(p['req_per_s']) for p in samples[other]]}"
        )
    (RESULTS / "compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
