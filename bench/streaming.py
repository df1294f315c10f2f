"""Streaming scenario: time to first token and aggregate tokens/s with continuous batching on and off.

One server (pinned to the server cpu) serves the ``tiny_lm`` network in two sizes, each twice, the copies
differing only in ``streaming.max_step_streams``: ``on`` steps every active stream together (continuous
batching), ``off`` steps one stream at a time, in turn.

- ``example``: the example as built (0.5 M parameters, numpy float32). Its decode step is a few hundred
  microseconds of interpreter dispatch, and a token's gRPC message costs about as much as its compute.
- ``wide``: d_model 512, d_ff 2048 (12.6 M parameters), projections on bfloat16 weights through torch
  (``TorchModel``): a step reads 25 MB of weights whatever the batch, as an LLM's decode step is bound
  by weight reads, which is the cost continuous batching shares between streams.

An asyncio load generator with the SDK (pinned to the client cpu) keeps 1, 4 and 16 streams open in a
closed loop: each worker opens a stream of ½ to 1½ × ``--stream-tokens`` tokens (uniform, seeded; sampled
with ``ignore_eos`` so the length is exact) and the next as soon as it ends. Per point: tokens received
per second in the measured window, time from opening a stream to its first token, and the server's mean
streams per engine step. Rounds are interleaved and medians reported, because this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.run import CLIENT_CPU, RESULTS, SERVER_CPU, machine_meta, running
from examples.tiny_lm import CORPUS_FILE, TinyLMConfig, write_model
from inferd import AsyncClient
from inferd.predictions import prompt_inputs
from inferd.v1 import inference_pb2, inference_pb2_grpc

CONCURRENCY = (1, 4, 16)
MODES = ("on", "off")
#: variant → (network shape, extra config lines)
VARIANTS: dict[str, tuple[TinyLMConfig, str]] = {
    "example": (TinyLMConfig(), ""),
    "wide": (
        TinyLMConfig(d_model=512, n_layers=4, n_heads=8, d_ff=2048),
        'parameters { key: "python_class" value: "TorchModel" }\n',
    ),
}
CONFIG = """name: "{name}"
engine: "generative"
max_batch_size: 0
input {{ name: "prompt" data_type: DATA_TYPE_BYTES dims: [-1] }}
output {{ name: "token_ids" data_type: DATA_TYPE_INT64 dims: [-1] }}
output {{ name: "text" data_type: DATA_TYPE_BYTES dims: [-1] }}
streaming {{ max_active_streams: 16 max_waiting_streams: 64 max_step_streams: {step} }}
execution: "{execution}"
{extra}"""


@dataclass(frozen=True, slots=True)
class StreamRecord:
    started: float
    first: float | None
    ended: float | None
    tokens: int


@dataclass(frozen=True, slots=True)
class Point:
    concurrency: int
    tokens_per_s: float
    streams: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    per_stream_tokens_per_s: float
    streams_per_step: float


def model_name(variant: str, mode: str) -> str:
    return f"{variant}_{mode}"


def build_streaming_repository(root: Path, variants: list[str], execution: str) -> None:
    """``<variant>_on`` and ``<variant>_off``: the same weights, continuous batching on and off."""
    for variant in variants:
        shape, extra = VARIANTS[variant]
        for mode in MODES:
            name = model_name(variant, mode)
            if mode == MODES[0]:
                write_model(root / name / "1", shape)
            else:
                shutil.copytree(root / model_name(variant, MODES[0]) / "1", root / name / "1")
            config = CONFIG.format(name=name, step=0 if mode == "on" else 1, execution=execution, extra=extra)
            (root / name / "config.pbtxt").write_text(config)


def _prompts(count: int = 64) -> list[str]:
    text = CORPUS_FILE.read_text(encoding="utf-8").replace("\n", " ")
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        start = int(rng.integers(0, len(text) - 80))
        out.append(text[start : start + int(rng.integers(10, 60))])
    return out


async def _worker(
    client: AsyncClient, model: str, prompts: list[str], tokens: int, window: tuple[float, float], seed: int
) -> tuple[list[StreamRecord], int]:
    """Open streams back to back until the window closes; returns them and the tokens inside the window."""
    records: list[StreamRecord] = []
    in_window = 0
    index = seed
    lengths = np.random.default_rng(seed)
    while time.monotonic() < window[1]:
        index += 1
        length = int(lengths.integers(tokens // 2, tokens * 3 // 2 + 1))  # mixed lengths, mean ``tokens``
        params = {"max_tokens": length, "temperature": 0.8, "top_k": 40, "seed": index, "ignore_eos": True}
        started = time.monotonic()
        first = ended = None
        count = 0
        stream = client.predict_stream(model, prompt_inputs(prompts[index % len(prompts)], "prompt"), parameters=params)
        try:
            async for chunk in stream:
                now = time.monotonic()
                got = int(chunk.outputs["token_ids"].size)
                if first is None and got:
                    first = now
                count += got
                if window[0] <= now < window[1]:
                    in_window += got
                if now >= window[1]:
                    break
            else:
                ended = time.monotonic()
        finally:
            await stream.aclose()
        records.append(StreamRecord(started, first, ended, count))
    return records, in_window


def _streaming_stats(address: str, model: str) -> inference_pb2.StreamStatistics:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=model), timeout=10)
    return reply.statistics[0].streaming


async def _measure(address: str, model: str, concurrency: int, args: argparse.Namespace) -> Point:
    prompts = _prompts()
    before = _streaming_stats(address, model)
    async with AsyncClient(address, timeout=120) as client:
        now = time.monotonic()
        window = (now + args.warmup, now + args.warmup + args.streaming_seconds)
        results = await asyncio.gather(
            *(_worker(client, model, prompts, args.stream_tokens, window, 1000 * i) for i in range(concurrency))
        )
    after = _streaming_stats(address, model)
    records = [r for rs, _ in results for r in rs]
    tokens = sum(n for _, n in results)
    measured = [r for r in records if window[0] <= r.started < window[1] and r.first is not None]
    ttft = [((r.first or 0.0) - r.started) * 1000 for r in measured]
    rates = [
        (r.tokens - 1) / (r.ended - r.first)
        for r in records
        if r.ended is not None and r.first is not None and r.ended > r.first
    ]
    steps = after.steps - before.steps
    return Point(
        concurrency=concurrency,
        tokens_per_s=tokens / args.streaming_seconds,
        streams=len(measured),
        ttft_p50_ms=float(np.percentile(ttft, 50)) if ttft else float("nan"),
        ttft_p90_ms=float(np.percentile(ttft, 90)) if ttft else float("nan"),
        per_stream_tokens_per_s=statistics.mean(rates) if rates else float("nan"),
        streams_per_step=(after.step_streams - before.step_streams) / max(1, steps),
    )


def _median_point(points: list[Point]) -> Point:
    """Field-wise medians over the rounds of one point."""
    fields = asdict(points[0])
    return Point(
        **{k: statistics.median(asdict(p)[k] for p in points) if k != "concurrency" else v for k, v in fields.items()}
    )


def scenario_streaming(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    variants = [v for v in args.variants.split(",") if v]
    repo = work / "streaming-repo"
    shutil.rmtree(repo, ignore_errors=True)
    build_streaming_repository(repo, variants, args.execution)
    address = f"127.0.0.1:{args.port}"
    if CLIENT_CPU is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CLIENT_CPU})  # the load generator (this process) on its own core
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    command += ["--log-level", "WARNING"]
    concurrencies = [int(c) for c in args.streaming_concurrency.split(",")]
    keys = [(v, m) for v in variants for m in MODES]
    rounds: dict[tuple[str, str], dict[int, list[Point]]] = {k: {c: [] for c in concurrencies} for k in keys}
    with running(command, address):
        for r in range(max(1, args.streaming_rounds)):
            for variant, mode in keys:
                for c in concurrencies:
                    point = asyncio.run(_measure(address, model_name(variant, mode), c, args))
                    rounds[variant, mode][c].append(point)
                    print(
                        f"round {r + 1} {variant:<8} batching {mode:<3} streams={c:<3} "
                        f"{point.tokens_per_s:7.0f} tok/s  ttft p50 {point.ttft_p50_ms:6.1f} ms  "
                        f"per-stream {point.per_stream_tokens_per_s:6.0f} tok/s  "
                        f"streams/step {point.streams_per_step:.2f}"
                    )
    results: dict[str, Any] = {"points": {}, "rounds": {}, "ratios": {}}
    lo, hi = min(concurrencies), max(concurrencies)
    for (variant, mode), by_c in rounds.items():
        name = model_name(variant, mode)
        results["points"][name] = {c: asdict(_median_point(points)) for c, points in by_c.items()}
        results["rounds"][name] = {c: [asdict(p) for p in points] for c, points in by_c.items()}
        points = results["points"][name]
        results["ratios"][name] = points[hi]["tokens_per_s"] / points[lo]["tokens_per_s"]
    return results


def write_streaming_report(results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        **machine_meta(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "seconds_per_point": args.streaming_seconds,
        "rounds": args.streaming_rounds,
        "stream_tokens": args.stream_tokens,
        "execution": args.execution,
        "sampling": "temperature 0.8, top_k 40, per-stream seed, ignore_eos",
    }
    (RESULTS / "streaming.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# streaming benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · server on cpu {SERVER_CPU}, load (asyncio SDK) on cpu "
        f"{CLIENT_CPU} · {args.stream_tokens // 2}–{args.stream_tokens * 3 // 2} tokens per stream "
        f"({meta['sampling']}) · steps on the "
        f"{args.execution} executor · {args.streaming_seconds}s per point after {args.warmup}s warm-up, median of "
        f"{args.streaming_rounds} interleaved rounds. `example` = tiny_lm as built (numpy, 0.5 M parameters); `wide` = "
        "the same network at d_model 512 / d_ff 2048 with bfloat16 projections in torch (12.6 M parameters, "
        "a decode step bound by weight reads, as an LLM's is). See bench/streaming.py.",
        "",
        "| model | continuous batching | streams | tokens/s | × 1 stream | TTFT p50 ms | TTFT p90 ms | "
        "tokens/s per stream | streams per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, points in results["points"].items():
        variant, mode = name.rsplit("_", 1)
        base = points[min(points)]["tokens_per_s"]
        for c, p in points.items():
            lines.append(
                f"| {variant} | {mode} | {c} | {p['tokens_per_s']:.0f} | {p['tokens_per_s'] / base:.2f} | "
                f"{p['ttft_p50_ms']:.1f} | {p['ttft_p90_ms']:.1f} | {p['per_stream_tokens_per_s']:.0f} | "
                f"{p['streams_per_step']:.2f} |"
            )
    lines += ["", "Aggregate tokens/s at the most streams ÷ at one stream:", ""]
    for name, ratio in results["ratios"].items():
        variant, mode = name.rsplit("_", 1)
        lines.append(f"- {variant}, continuous batching {mode}: **{ratio:.2f}×**")
    lines += ["", "Continuous batching on ÷ off, aggregate tokens/s at the most streams:", ""]
    for name, points in results["points"].items():
        variant, mode = name.rsplit("_", 1)
        other = results["points"].get(model_name(variant, "off"))
        if mode == "on" and other:
            top = max(points)
            lines.append(f"- {variant}: **{points[top]['tokens_per_s'] / other[top]['tokens_per_s']:.2f}×**")
    path = RESULTS / "streaming.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this scenario (bench/run.py adds them to its parser); the whole scenario takes ~2 minutes."""
    parser.add_argument("--streaming-seconds", type=float, default=3.0, help="measured seconds per streaming point")
    parser.add_argument("--streaming-rounds", type=int, default=2, help="interleaved rounds of the streaming points")
    parser.add_argument("--stream-tokens", type=int, default=64, help="tokens per stream (streaming scenario)")
    parser.add_argument(
        "--streaming-concurrency", default=",".join(map(str, CONCURRENCY)), help="open streams per point"
    )
    parser.add_argument(
        "--execution", default="thread", choices=["thread", "inline"], help="where steps run (streaming scenario)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="model sizes to run (streaming scenario)")


def run(args: argparse.Namespace, work: Path) -> Path:
    return write_streaming_report(scenario_streaming(args, work), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=18001)
    add_arguments(parser)
    args = parser.parse_args()
    work = Path(".cache/bench")
    work.mkdir(parents=True, exist_ok=True)
    print(f"wrote {run(args, work)}")


if __name__ == "__main__":
    main()
