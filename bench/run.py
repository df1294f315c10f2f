"""``make bench``: batching off vs on, against the gRPC floor and the in-process compute floor.

The server and the load generator are pinned to different cores (when there are two). Each point is
a closed loop at fixed concurrency for a fixed time; errors are read from the server's counters.
Results go to bench/results/<scenario>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.h2load import LoadResult, run_h2load
from examples.build import build_repository
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc

RESULTS = Path(__file__).parent / "results"
PREDICT_PATH = "/inferd.v1.InferenceService/Predict"
SERVER_CPU, CLIENT_CPU = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)

MODELS = {
    # bench name: (example model, input name, batching on?)
    "mlp_off": ("mlp_ranker", "features", False),
    "mlp_on": ("mlp_ranker", "features", True),
    "encoder_off": ("text_encoder", "input_ids", False),
    "encoder_on": ("text_encoder", "input_ids", True),
}


def example_input(model: str, rows: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    if model == "text_encoder":
        return rng.integers(1, 1024, size=(rows, 128), dtype=np.int64)
    return rng.random((rows, 256), dtype=np.float32)


def build_bench_repository(root: Path) -> None:
    """Copies of the examples with batching off and on (the only difference between the pairs)."""
    source = root / "_examples"
    build_repository(source)
    for name, (example, _input, batching) in MODELS.items():
        target = root / name
        shutil.copytree(source / example, target)
        lines = [
            line
            for line in (target / "config.pbtxt").read_text().splitlines()
            if not line.startswith(("name:", "dynamic_batching"))
        ]
        if batching:
            lines.append("dynamic_batching { max_queue_delay_microseconds: 2000 }")
        (target / "config.pbtxt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(source)


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if cpu is not None and shutil.which("taskset") else command


def _wait_serving(address: str, timeout: float = 120) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server at {address} did not become SERVING")


@contextmanager
def running(
    command: list[str],
    address: str,
    health: bool = True,
    env: dict[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The server ``command`` running until the block ends; ``ready(address)``, if given, replaces the
    plaintext health check (a TLS port needs its own)."""
    process = subprocess.Popen(_pinned(command, SERVER_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        if ready is not None:
            ready(address)
        elif health:
            _wait_serving(address)
        else:
            _wait_port(address)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_port(address: str, timeout: float = 30) -> None:
    grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=timeout)


def _stats(address: str, model: str) -> inference_pb2.VersionStatistics:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=model), timeout=10)
    return reply.statistics[0]


def compute_floor(root: Path, model: str, input_name: str, seconds: float) -> dict[str, float]:
    """The engine called in-process on one core: requests/s at batch 1, rows/s at batch 32."""
    from engines.base import LoadSpec, load_engine
    from server.models.config import load_config

    spec = load_config(root / model / "config.pbtxt", model_name=model)
    backend = spec.engines[0]
    artifact = next(p for p in (root / model / "1").iterdir() if p.name.startswith("model."))
    engine = load_engine(backend, LoadSpec(model, 1, artifact, spec.signature, spec.max_batch_size, spec.parameters))
    out: dict[str, float] = {}
    for rows in (1, 32):
        x = {input_name: example_input(MODELS[model][0], rows)}
        engine.infer(x)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            engine.infer(x)
            calls += 1
        elapsed = time.perf_counter() - started
        out[f"calls_per_s_batch{rows}"] = calls / elapsed
        out[f"rows_per_s_batch{rows}"] = calls * rows / elapsed
    engine.close()
    return out


def scenario_batching(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Floor and inferd run side by side (both pinned to the server core, idle when not measured) and are
    measured in interleaved rounds, so drift on a shared machine hits every target alike; medians reported."""
    repo = work / "repo"
    build_bench_repository(repo)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models = [m for m in MODELS if not args.models or any(m.startswith(p) for p in args.models.split(","))]
    results: dict[str, Any] = {"floor": {}, "inferd": {m: {} for m in models}, "compute_floor": {}}
    floor_address = f"127.0.0.1:{args.port + 1}"
    address = f"127.0.0.1:{args.port}"
    messages = {
        name: inference_pb2.PredictRequest(
            model_name=name, inputs=[from_numpy(MODELS[name][1], example_input(MODELS[name][0]))]
        ).SerializeToString()
        for name in models
    }
    floor_message = messages.get("mlp_off") or next(iter(messages.values()))
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    command += ["--log-level", "WARNING"]
    floor_command = [sys.executable, "-m", "bench.floor_server", "--port", str(args.port + 1)]
    with running(floor_command, floor_address, health=False), running(command, address):
        for c in concurrencies:
            rounds: dict[str, list[dict[str, Any]]] = {"floor": [], **{m: [] for m in models}}
            for round_ in range(args.rounds):
                r = run_h2load(
                    f"http://{floor_address}{PREDICT_PATH}",
                    floor_message,
                    concurrency=c,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    cpu=CLIENT_CPU,
                )
                rounds["floor"].append(asdict(r))
                for name in models:
                    before = _stats(address, name)
                    r = run_h2load(
                        f"http://{address}{PREDICT_PATH}",
                        messages[name],
                        concurrency=c,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        cpu=CLIENT_CPU,
                    )
                    rounds[name].append(_point(r, before, _stats(address, name)))
                line = "  ".join(f"{t} {rounds[t][-1]['req_per_s']:.0f}" for t in rounds)
                print(f"c={c:<3} round {round_ + 1}: req/s  {line}", flush=True)
            results["floor"][c] = _median_point(rounds["floor"])
            for name in models:
                results["inferd"][name][c] = _median_point(rounds[name])
    for name in ("mlp_off", "encoder_off"):
        if name in models:
            example, input_name, _ = MODELS[name]
            results["compute_floor"][example] = compute_floor(repo, name, input_name, min(args.seconds, 3))
    return results


def _median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
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
    r: LoadResult, before: inference_pb2.VersionStatistics, after: inference_pb2.VersionStatistics
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
        "rows_per_s": r.req_per_s,  # one row per request in these scenarios
        "mean_batch_rows": (after.inference_count - before.inference_count) / max(1, calls),
    }


def write_report(name: str, results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    floor = results.get("floor", {})
    inferd = results.get("inferd", {})
    compute = results.get("compute_floor", {})
    lines = [
        f"# {name} benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · server processes pinned to cpu {SERVER_CPU}, h2load to cpu "
        f"{CLIENT_CPU} · closed loop, one HTTP/2 connection, {args.seconds:g} s per point after {args.warmup:g} s "
        f"warm-up · {args.rounds} interleaved rounds, medians shown (errors summed)",
        "",
    ]
    lines += _summary(floor, inferd)
    lines += [
        "",
        "| target | conc | req/s | × gRPC floor | p50 ms | p90 ms | p99 ms | errors | engine calls/req | rows/batch |"
        " req/s per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, r in floor.items():
        lines.append(
            f"| grpc floor | {c} | {r['req_per_s']:.0f} | 1.00 | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['http_failures']} | - | - | {r['rounds_req_per_s']} |"
        )
    for model, points in inferd.items():
        for c, r in points.items():
            ratio = r["req_per_s"] / floor[c]["req_per_s"] if c in floor else float("nan")
            lines.append(
                f"| {model} | {c} | {r['req_per_s']:.0f} | {ratio:.2f} | {r['p50_ms']:.2f} | "
                f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
                f"{r['engine_calls_per_request']:.3f} | {r['mean_batch_rows']:.1f} | {r['rounds_req_per_s']} |"
            )
    if compute:
        lines += [
            "",
            "Compute floor (the engine called in-process in a loop, one thread, no gRPC):",
            "",
            "| model | calls/s at batch 1 | rows/s at batch 32 |",
            "|---|---|---|",
        ]
        for model, r in compute.items():
            lines.append(f"| {model} | {r['calls_per_s_batch1']:.0f} | {r['rows_per_s_batch32']:.0f} |")
        lines += ["", "inferd rows/s as a share of the compute floor (best concurrency):", ""]
        for model, points in inferd.items():
            example = MODELS[model][0]
            if example in compute:
                best = max(p["rows_per_s"] for p in points.values())
                lines.append(
                    f"- {model}: {best:.0f} rows/s = {best / compute[example]['calls_per_s_batch1']:.2f}× the "
                    f"in-process batch-1 rate, {best / compute[example]['rows_per_s_batch32']:.2f}× the batch-32 rate"
                )
    lines += [
        "",
        "errors = failed requests by the server's own counters (ModelStatistics) plus non-200 HTTP answers;",
        "streams that h2load resets when its time is up (CANCELLED) are not errors and are left out.",
    ]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _summary(floor: dict[Any, Any], inferd: dict[str, dict[Any, Any]]) -> list[str]:
    """The figures the batching issue asks for, as ratios from this run."""
    off, on = inferd.get("mlp_off"), inferd.get("mlp_on")
    if not off or not on:
        return []
    top, low = max(on), min(on)
    lines = ["## Summary (MLP ranker)", ""]
    if top in floor:
        lines.append(
            f"- c={top}: batching on serves {on[top]['req_per_s']:.0f} req/s = "
            f"**{on[top]['req_per_s'] / floor[top]['req_per_s']:.2f}× the gRPC floor** "
            f"(off: {off[top]['req_per_s'] / floor[top]['req_per_s']:.2f}×); target ≥ 0.85"
        )
    lines.append(
        f"- c={top}: **{on[top]['engine_calls_per_request']:.3f} engine calls per request** with batching on "
        f"(mean batch {on[top]['mean_batch_rows']:.1f} rows); target ≤ 0.25"
    )
    lines.append(
        f"- c={top}: p99 {off[top]['p99_ms']:.2f} ms off vs {on[top]['p99_ms']:.2f} ms on "
        f"(on/off {on[top]['p99_ms'] / off[top]['p99_ms']:.2f})"
    )
    lines.append(
        f"- c={low}: p50 {on[low]['p50_ms']:.3f} ms on vs {off[low]['p50_ms']:.3f} ms off: "
        f"**{on[low]['p50_ms'] / off[low]['p50_ms']:.2f}×**; target ≤ 1.1"
    )
    ratios = ", ".join(f"c={c}: {on[c]['req_per_s'] / off[c]['req_per_s']:.2f}" for c in on if c in off)
    lines.append(f"- req/s on/off at each concurrency: {ratios}; target ≥ 1")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenario", default="all", choices=["all", *SCENARIOS], help="which benchmark to run (default: all)"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--models", default="", help="comma list of prefixes (mlp, encoder); default all")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point (medians reported)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--repository", type=Path, help="unused; the bench builds its own copies")
    from bench.streaming import add_arguments as add_streaming_arguments

    add_streaming_arguments(parser)
    from bench.telemetry import add_arguments as add_telemetry_arguments

    add_telemetry_arguments(parser)
    from bench.quality import add_arguments as add_quality_arguments

    add_quality_arguments(parser)
    from bench.oip import add_arguments as add_oip_arguments

    add_oip_arguments(parser)
    from bench.security import add_arguments as add_security_arguments

    add_security_arguments(parser)
    args = parser.parse_args()
    work = Path(".cache/bench")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in SCENARIOS if args.scenario == "all" else [args.scenario]:
        print(f"==> scenario {name}")
        print(f"wrote {SCENARIOS[name](args, work)}")


def _run_batching(args: argparse.Namespace, work: Path) -> Path:
    return write_report("batching", scenario_batching(args, work), args)


def _run_swap(args: argparse.Namespace, work: Path) -> Path:
    from bench.swap import scenario_swap, write_swap_report

    return write_swap_report(scenario_swap(args, work), args)


def _run_streaming(args: argparse.Namespace, work: Path) -> Path:
    from bench.streaming import run

    return run(args, work)


def _run_telemetry(args: argparse.Namespace, work: Path) -> Path:
    from bench.telemetry import run

    return run(args, work)


def _run_quality(args: argparse.Namespace, work: Path) -> Path:
    from bench.quality import run

    return run(args, work)


def _run_oip(args: argparse.Namespace, work: Path) -> Path:
    from bench.oip import run

    return run(args, work)


def _run_security(args: argparse.Namespace, work: Path) -> Path:
    from bench.security import run

    return run(args, work)


#: scenario name → runner returning the report path
SCENARIOS: dict[str, Callable[[argparse.Namespace, Path], Path]] = {
    "batching": _run_batching,
    "swap": _run_swap,
    "streaming": _run_streaming,
    "telemetry": _run_telemetry,
    "quality": _run_quality,
    "oip": _run_oip,
    "security": _run_security,
}


if __name__ == "__main__":
    main()
