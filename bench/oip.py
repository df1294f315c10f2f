"""The Open Inference Protocol's cost: ModelInfer against inferd.v1 Predict, and ModelStreamInfer against the floor.

``python -m bench.run --scenario oip [--oip-rounds 5]`` (part of ``make bench``). One inferd (the MLP with
dynamic batching, 1 row per request) and the floor server (bench/floor_server.py), both pinned to the
server core; the loads run on the other core, in interleaved rounds; medians go to bench/results/oip.md:

- floor: h2load on the floor's empty unary Predict, 1 connection × C streams;
- v1 Predict and OIP ModelInfer: h2load on inferd, same model, same input, same connection pattern;
- OIP ModelStreamInfer: bench/stream_load.py keeps C requests in flight on ONE bidirectional stream;
- stream floor: the same client against the floor's ModelStreamInfer, which answers every message with
  an empty one: what any grpc.aio bidirectional stream costs before any work is done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.h2load import run_h2load
from bench.run import CLIENT_CPU, PREDICT_PATH, RESULTS, _pinned, build_bench_repository, example_input, running
from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

MODEL, INPUT = "mlp_on", "features"
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
TARGETS = {"oip_vs_v1": 0.95, "stream_vs_floor": 2.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--oip-rounds", type=int, default=5, help="interleaved rounds (oip scenario)")
    parser.add_argument("--oip-concurrency", type=int, default=32, help="streams / requests in flight (oip)")


def messages() -> tuple[bytes, bytes]:
    """The same one-row input as an inferd.v1 PredictRequest and as a raw OIP ModelInferRequest."""
    x = np.ascontiguousarray(example_input("mlp_ranker"), dtype="<f4")
    v1 = inference_pb2.PredictRequest(model_name=MODEL, inputs=[from_numpy(INPUT, x)])
    oip = pb.ModelInferRequest(model_name=MODEL)
    oip.inputs.add(name=INPUT, datatype="FP32", shape=list(x.shape))
    oip.raw_input_contents.append(x.tobytes())
    return v1.SerializeToString(), oip.SerializeToString()


def _stream(address: str, message: Path, in_flight: int, seconds: float, warmup: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.stream_load", "--address", address, "--message", str(message)]
    command += ["--in-flight", str(in_flight), "--seconds", str(seconds), "--warmup", str(warmup)]
    done = subprocess.run(_pinned(command, CLIENT_CPU), capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"stream load failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace, work: Path) -> Path:
    repo = work / "repo"
    build_bench_repository(repo)
    v1, oip = messages()
    oip_file = work / "oip_request.bin"
    oip_file.write_bytes(oip)
    c = args.oip_concurrency
    address, floor_address = f"127.0.0.1:{args.port}", f"127.0.0.1:{args.port + 1}"
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    command += ["--log-level", "WARNING", "--no-metrics"]
    floor_command = [sys.executable, "-m", "bench.floor_server", "--port", str(args.port + 1)]
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in ("floor", "v1", "oip", "stream", "stream_floor")}
    h2 = {"concurrency": c, "seconds": args.seconds, "warmup": args.warmup, "cpu": CLIENT_CPU}
    with running(floor_command, floor_address, health=False), running(command, address):
        for round_ in range(args.oip_rounds):
            rounds["floor"].append(vars_of(run_h2load(f"http://{floor_address}{PREDICT_PATH}", v1, **h2)))
            rounds["v1"].append(vars_of(run_h2load(f"http://{address}{PREDICT_PATH}", v1, **h2)))
            rounds["oip"].append(vars_of(run_h2load(f"http://{address}{INFER_PATH}", oip, **h2)))
            rounds["stream"].append(_stream(address, oip_file, c, args.seconds, args.warmup))
            rounds["stream_floor"].append(_stream(floor_address, oip_file, c, args.seconds, args.warmup))
            line = "  ".join(f"{k} {v[-1]['req_per_s']:.0f}" for k, v in rounds.items())
            print(f"round {round_ + 1}: req/s  {line}", flush=True)
    results = {k: _median(v) for k, v in rounds.items()}
    results["ratios"] = _ratios(rounds)
    return write(results, args)


def vars_of(result: Any) -> dict[str, Any]:
    return {k: getattr(result, k) for k in ("requests", "http_failures", "req_per_s", "p50_ms", "p99_ms")}


def _median(points: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(statistics.median(p[k] for p in points)) for k in ("req_per_s", "p50_ms", "p99_ms")}
    out["errors"] = sum(int(p.get("errors", 0)) + int(p.get("http_failures", 0)) for p in points)
    out["rounds_req_per_s"] = [round(p["req_per_s"]) for p in points]
    return out


def _ratios(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Median of the per-round ratios: each round's targets ran back to back, so drift cancels."""

    def ratio(a: str, b: str) -> float:
        pairs = zip(rounds[a], rounds[b], strict=True)
        return float(statistics.median(x["req_per_s"] / y["req_per_s"] for x, y in pairs))

    return {
        "oip_vs_v1": ratio("oip", "v1"),
        "stream_vs_floor": ratio("stream", "floor"),
        "stream_vs_v1": ratio("stream", "v1"),
        "stream_floor_vs_floor": ratio("stream_floor", "floor"),
        "stream_vs_stream_floor": ratio("stream", "stream_floor"),
        "v1_vs_floor": ratio("v1", "floor"),
    }


def write(results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "oip.json").write_text(json.dumps(results, indent=2) + "\n")
    r = results["ratios"]
    c = args.oip_concurrency
    labels = {
        "floor": f"floor: empty unary Predict (h2load, 1 connection × {c} streams)",
        "v1": "inferd.v1 Predict (h2load)",
        "oip": "OIP ModelInfer (h2load)",
        "stream": f"OIP ModelStreamInfer, {c} in flight on one stream",
        "stream_floor": f"stream floor: empty answers on one bidi stream, {c} in flight",
    }
    lines = [
        "# Open Inference Protocol: ModelInfer and ModelStreamInfer",
        "",
        f"`python -m bench.run --scenario oip` — MLP (mlp_ranker, dynamic batching), 1 row per request, {c} in flight;",
        f"server pinned to one core, load on the other; {args.oip_rounds} interleaved rounds of {args.seconds:g} s,",
        "medians (ratios: median of per-round ratios).",
        "",
        "| target | req/s | p50 ms | p99 ms | errors | rounds |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, label in labels.items():
        p = results[key]
        lines.append(
            f"| {label} | {p['req_per_s']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['errors']} | "
            f"{p['rounds_req_per_s']} |"
        )
    lines += [
        "",
        f"- OIP ModelInfer / inferd.v1 Predict: **{r['oip_vs_v1']:.3f}×** (target ≥ {TARGETS['oip_vs_v1']})",
        f"- OIP ModelStreamInfer / unary floor: **{r['stream_vs_floor']:.2f}×** "
        f"(target ≥ {TARGETS['stream_vs_floor']})",
        f"- OIP ModelStreamInfer / inferd.v1 Predict: {r['stream_vs_v1']:.2f}×",
        f"- stream floor / unary floor: {r['stream_floor_vs_floor']:.2f}× — the most any grpc.aio bidi stream "
        "reaches here before doing any work",
        f"- OIP ModelStreamInfer / stream floor: {r['stream_vs_stream_floor']:.2f}×",
        f"- inferd.v1 Predict / unary floor: {r['v1_vs_floor']:.2f}×",
        "",
    ]
    path = RESULTS / "oip.md"
    path.write_text("\n".join(lines))
    return path
