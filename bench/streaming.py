"""Streaming scenario: time to first token and aggregate tokens/s with continuous batching on and off.

One server (pinned to the server cpu) serves two copies of the ``tiny_lm`` example that differ only in
``streaming.max_step_streams``: ``lm_on`` steps every active stream together (continuous batching),
``lm_off`` steps one stream at a time, in turn. An asyncio load generator with the SDK (pinned to the
client cpu) keeps 1, 4 and 16 streams open in a closed loop: each worker opens a stream of
``--stream-tokens`` tokens (sampled, ``ignore_eos`` so every stream has the same length) and opens the
next as soon as it ends. Per point: tokens received per second inside the measured window, time from
opening a stream to its first token, and the server's mean streams per engine step. Rounds are
interleaved (on/off, every concurrency, then again) and medians reported, because this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.run import CLIENT_CPU, RESULTS, SERVER_CPU, running
from examples.tiny_lm import CORPUS_FILE, write_model
from inferd import AsyncClient
from inferd.predictions import prompt_inputs
from inferd.v1 import inference_pb2, inference_pb2_grpc

CONCURRENCY = (1, 4, 16)
MODES = {"on": "lm_on", "off": "lm_off"}
CONFIG = """name: "{name}"
engine: "generative"
max_batch_size: 0
input {{ name: "prompt" data_type: DATA_TYPE_BYTES dims: [-1] }}
output {{ name: "token_ids" data_type: DATA_TYPE_INT64 dims: [-1] }}
output {{ name: "text" data_type: DATA_TYPE_BYTES dims: [-1] }}
streaming {{ max_active_streams: 16 max_waiting_streams: 64 max_step_streams: {step} }}
execution: "{execution}"
"""


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


def build_streaming_repository(root: Path, execution: str) -> None:
    """``lm_on`` and ``lm_off``: the same weights, continuous batching on and off."""
    for mode, name in MODES.items():
        write_model(root / name / "1")
        step = 0 if mode == "on" else 1
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, step=step, execution=execution))


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
    while time.monotonic() < window[1]:
        index += 1
        params = {"max_tokens": tokens, "temperature": 0.8, "top_k": 40, "seed": index, "ignore_eos": True}
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
        window = (now + args.warmup, now + args.warmup + args.seconds)
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
        tokens_per_s=tokens / args.seconds,
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
    repo = work / "streaming-repo"
    build_streaming_repository(repo, args.execution)
    address = f"127.0.0.1:{args.port}"
    if CLIENT_CPU is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CLIENT_CPU})  # the load generator (this process) on its own core
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    command += ["--log-level", "WARNING"]
    concurrencies = [int(c) for c in args.streaming_concurrency.split(",")]
    rounds: dict[str, dict[int, list[Point]]] = {mode: {c: [] for c in concurrencies} for mode in MODES}
    with running(command, address):
        for r in range(max(1, args.rounds)):
            for c in concurrencies:
                for mode, model in MODES.items():
                    point = asyncio.run(_measure(address, model, c, args))
                    rounds[mode][c].append(point)
                    print(
                        f"round {r + 1} batching {mode:<3} streams={c:<3} {point.tokens_per_s:7.0f} tok/s  "
                        f"ttft p50 {point.ttft_p50_ms:6.1f} ms  per-stream {point.per_stream_tokens_per_s:6.0f} tok/s  "
                        f"streams/step {point.streams_per_step:.2f}"
                    )
    results: dict[str, Any] = {
        mode: {c: asdict(_median_point(points)) for c, points in by_c.items()} for mode, by_c in rounds.items()
    }
    results["rounds"] = {mode: {c: [asdict(p) for p in ps] for c, ps in by_c.items()} for mode, by_c in rounds.items()}
    for mode in MODES:
        lo, hi = min(concurrencies), max(concurrencies)
        results[f"ratio_{mode}_{hi}_vs_{lo}"] = results[mode][hi]["tokens_per_s"] / results[mode][lo]["tokens_per_s"]
    return results


def write_streaming_report(results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "stream_tokens": args.stream_tokens,
        "execution": args.execution,
        "sampling": "temperature 0.8, top_k 40, per-stream seed, ignore_eos",
    }
    (RESULTS / "streaming.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# streaming benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · server on cpu {SERVER_CPU}, load (asyncio SDK) on cpu "
        f"{CLIENT_CPU} · tiny_lm example, {args.stream_tokens} tokens per stream ({meta['sampling']}) · "
        f"{args.seconds}s per point after {args.warmup}s warm-up, median of {args.rounds} interleaved rounds",
        "",
        "| continuous batching | streams | tokens/s | × 1 stream | TTFT p50 ms | TTFT p90 ms | "
        "tokens/s per stream | streams per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        points = results[mode]
        base = points[min(points)]["tokens_per_s"]
        for c, p in points.items():
            lines.append(
                f"| {mode} | {c} | {p['tokens_per_s']:.0f} | {p['tokens_per_s'] / base:.2f} | "
                f"{p['ttft_p50_ms']:.1f} | {p['ttft_p90_ms']:.1f} | {p['per_stream_tokens_per_s']:.0f} | "
                f"{p['streams_per_step']:.2f} |"
            )
    ratios = {k: v for k, v in results.items() if k.startswith("ratio_")}
    lines += ["", "Aggregate tokens/s, most streams vs one stream:", ""]
    lines += [f"- {k.removeprefix('ratio_').replace('_', ' ')}: **{v:.2f}×**" for k, v in ratios.items()]
    path = RESULTS / "streaming.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this scenario (bench/run.py adds them to its parser)."""
    parser.add_argument("--stream-tokens", type=int, default=64, help="tokens per stream (streaming scenario)")
    parser.add_argument(
        "--streaming-concurrency", default=",".join(map(str, CONCURRENCY)), help="open streams per point"
    )
    parser.add_argument(
        "--execution", default="thread", choices=["thread", "inline"], help="where steps run (streaming scenario)"
    )


def run(args: argparse.Namespace, work: Path) -> Path:
    return write_streaming_report(scenario_streaming(args, work), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=18001)
    add_arguments(parser)
    args = parser.parse_args()
    work = Path(".cache/bench")
    shutil.rmtree(work / "streaming-repo", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"wrote {run(args, work)}")


if __name__ == "__main__":
    main()
