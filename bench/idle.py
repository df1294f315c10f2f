"""Idle streams and idle connections: what they cost other clients and the server's memory.

A holder process opens ``--streams`` grpc.health.v1.Health/Watch streams (what clients with client-side
health checking keep open) spread over ``--stream-connections`` connections, each within the server's
--max-concurrent-streams, plus ``--connections`` connections with no call at all, and then sits idle.
Another client drives Predict on the example ``mlp_ranker`` in a closed loop, in interleaved rounds
with and without the holder; the server's RSS (/proc/PID/status) and open descriptors are read at
each step. Results go to bench/results/idle.md and .json.

    .venv/bin/python -m bench.idle                 # 2,000 streams + 500 connections, 2 rounds
    .venv/bin/python -m bench.idle --client python # without h2load (nghttp2-client)

Linux only (/proc). The server runs with its default transport limits; --max-connection-idle-seconds
(300 s by default) would close the idle connections, so each round stays well under it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.h2load import LoadResult, run_h2load
from bench.run import CLIENT_CPU, PREDICT_PATH, RESULTS, SERVER_CPU, example_input, running
from examples.build import build_repository
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc

#: a channel of its own TCP connection (channels with equal arguments otherwise share one per process)
NEW_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
MODEL = "mlp_ranker"


# -- the holder (a subprocess: its event loop and GIL stay out of the measured client's way) --------------


#: streams opened at once, each batch once the last one is open: gRPC core cancels calls beyond about
#: 1,000 that the server has not yet picked up (grpc.server.max_pending_requests), so a burst of 2,000 at
#: once would measure that instead of idle streams
BATCH = 100


async def _hold(address: str, streams: int, stream_connections: int, connections: int) -> None:
    channels = [grpc.aio.insecure_channel(address, options=NEW_CONNECTION) for _ in range(stream_connections)]
    calls = []
    for start in range(0, streams, BATCH):
        batch = [
            health_pb2_grpc.HealthStub(channels[index % stream_connections]).Watch(
                health_pb2.HealthCheckRequest(service="")
            )
            for index in range(start, min(streams, start + BATCH))
        ]
        first = await asyncio.gather(*(call.read() for call in batch))
        if any(reply is grpc.aio.EOF or reply.status != health_pb2.HealthCheckResponse.SERVING for reply in first):
            raise SystemExit("a Watch did not start SERVING")
        calls += batch
    idle = [grpc.aio.insecure_channel(address, options=NEW_CONNECTION) for _ in range(connections)]
    for start in range(0, connections, BATCH):
        await asyncio.gather(*(channel.channel_ready() for channel in idle[start : start + BATCH]))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    ended = sum(call.done() for call in calls)
    if ended:
        print(f"holder: {ended} Watch streams ended before the end", file=sys.stderr, flush=True)
    for call in calls:
        call.cancel()
    await asyncio.gather(*(channel.close() for channel in [*channels, *idle]))


def _start_holder(args: argparse.Namespace, address: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.idle", "--hold", address, "--streams", str(args.streams)]
    command += ["--stream-connections", str(args.stream_connections), "--connections", str(args.connections)]
    if CLIENT_CPU is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(CLIENT_CPU), *command]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    if holder.stdout.readline().strip() != "ready":
        holder.kill()
        raise RuntimeError(f"the holder did not get ready (exit {holder.wait()})")
    return holder


def _stop_holder(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    try:
        holder.wait(60)
    except subprocess.TimeoutExpired:
        holder.kill()


# -- measurements ---------------------------------------------------------------------------------------


def _memory(pid: int) -> dict[str, float]:
    """The server's resident memory now and at its peak (MiB), and its open descriptors (≈ connections)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


async def _python_loop(address: str, message: bytes, concurrency: int, seconds: float, warmup: float) -> LoadResult:
    """A closed loop from a grpc.aio client, for machines without h2load."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address, options=NEW_CONNECTION) as channel:
        predict = channel.unary_unary(PREDICT_PATH)
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                await predict(message, timeout=30)
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ms = np.array(latencies) * 1000
    return LoadResult(
        requests=len(ms),
        http_failures=0,
        seconds=seconds,
        req_per_s=len(ms) / seconds,
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
    )


def _failures(address: str) -> Counter[str]:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name=MODEL), timeout=10)
    return sum((Counter(dict(s.failure_count)) for s in reply.statistics), Counter())


def _measure(args: argparse.Namespace, address: str, message: bytes) -> dict[str, Any]:
    before = _failures(address)
    if args.client == "h2load":
        url = f"http://{address}{PREDICT_PATH}"
        cpu = CLIENT_CPU
        result = run_h2load(
            url, message, concurrency=args.concurrency, seconds=args.seconds, warmup=args.warmup, cpu=cpu
        )
    else:
        result = asyncio.run(_python_loop(address, message, args.concurrency, args.seconds, args.warmup))
    failed = _failures(address) - before
    # h2load resets the streams still open when its time is up: those are CANCELLED, not errors
    cut_off = failed.pop("CANCELLED", 0)
    return {**asdict(result), "failed": sum(failed.values()) + result.http_failures, "cancelled_at_end": cut_off}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(".cache/bench-idle")
    shutil.rmtree(work, ignore_errors=True)
    build_repository(work / "_examples")
    (work / "repo").mkdir(parents=True)
    shutil.copytree(work / "_examples" / MODEL, work / "repo" / MODEL)
    address = f"127.0.0.1:{args.port}"
    message = inference_pb2.PredictRequest(
        model_name=MODEL, inputs=[from_numpy("features", example_input(MODEL))]
    ).SerializeToString()
    command = [sys.executable, "-m", "server", "serve", "--repository", str(work / "repo"), "--port", str(args.port)]
    command += ["--log-level", "WARNING"]
    rounds: list[dict[str, Any]] = []
    with running(command, address) as server:
        _measure(args, address, message)  # warm the server and the model
        for number in range(1, args.rounds + 1):
            before = _memory(server.pid)
            quiet = _measure(args, address, message)
            started = time.monotonic()
            holder = _start_holder(args, address)
            setup_s = time.monotonic() - started
            time.sleep(args.settle)  # the server settles after accepting everything; then it is idle load
            holding = _memory(server.pid)
            idle = _measure(args, address, message)
            held = _memory(server.pid)
            _stop_holder(holder)
            released = _memory(server.pid)  # right after the holder's connections closed
            rounds.append(
                {
                    "quiet": quiet,
                    "idle": idle,
                    "memory": {"before": before, "holding": holding, "after_load": held, "released": released},
                    "holder_setup_s": setup_s,
                }
            )
            print(
                f"round {number}: p99 quiet {quiet['p99_ms']:.2f} ms, idle {idle['p99_ms']:.2f} ms; RSS "
                f"{before['rss_mib']:.0f} → {held['rss_mib']:.0f} → {released['rss_mib']:.0f} MiB; "
                f"fds {before['fds']} → {held['fds']}",
                flush=True,
            )
        final = _memory(server.pid)
    return {
        "streams": args.streams,
        "stream_connections": args.stream_connections,
        "connections": args.connections,
        "client": args.client,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "rounds": rounds,
        "final_memory": final,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "pinned": SERVER_CPU is not None},
    }


def _median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(results: dict[str, Any]) -> Path:
    rounds = results["rounds"]
    quiet_p99s = [r["quiet"]["p99_ms"] for r in rounds]
    idle_p99s = [r["idle"]["p99_ms"] for r in rounds]
    quiet_p99, idle_p99 = _median(quiet_p99s), _median(idle_p99s)
    first = rounds[0]["memory"]
    # the first round's growth is the load's cost; later rounds reuse what the allocator kept from it
    cost_mib = first["after_load"]["rss_mib"] - first["before"]["rss_mib"]
    held_things = max(1, results["streams"] + results["connections"])
    highest = max(r["memory"]["after_load"]["rss_mib"] for r in rounds)
    client = "h2load" if results["client"] == "h2load" else "a grpc.aio client"
    lines = [
        "# idle streams and connections",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · `.venv/bin/python -m bench.idle` · {results['streams']} idle "
        f"Health/Watch streams over {results['stream_connections']} connections + {results['connections']} idle "
        f"connections (no call), held by another process; `{MODEL}` Predict from "
        f"{client} at concurrency {results['concurrency']}, {results['seconds']:g} s per run; server defaults for "
        "every transport limit. "
        f"{results['machine']['cpus']} CPUs, server and clients "
        f"{'pinned to separate cores' if results['machine']['pinned'] else 'not pinned'}.",
        "",
        "| round | run | req/s | p50 ms | p90 ms | p99 ms | failed | server RSS MiB | server fds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, 1):
        memory = r["memory"]
        for run_name, point, mem in (
            ("quiet", r["quiet"], memory["before"]),
            ("idle", r["idle"], memory["after_load"]),
        ):
            lines.append(
                f"| {number} | {run_name} | {point['req_per_s']:.0f} | {point['p50_ms']:.2f} | {point['p90_ms']:.2f} | "
                f"{point['p99_ms']:.2f} | {point['failed']} | {mem['rss_mib']:.0f} | {mem['fds']} |"
            )
    final = results["final_memory"]
    released = ", ".join(f"{r['memory']['released']['rss_mib']:.0f}" for r in rounds)
    setups = ", ".join(f"{r['holder_setup_s']:.1f}" for r in rounds)
    lines += [
        "",
        f"- p99 with the idle load / without (medians): {idle_p99:.2f} / {quiet_p99:.2f} ms = "
        f"**{idle_p99 / quiet_p99:.2f}×**; target: within noise, which the quiet runs alone span: "
        f"{min(quiet_p99s):.2f}–{max(quiet_p99s):.2f} ms (with the idle load: "
        f"{min(idle_p99s):.2f}–{max(idle_p99s):.2f} ms).",
        f"- server RSS: {first['before']['rss_mib']:.0f} MiB before the first idle load, "
        f"{first['after_load']['rss_mib']:.0f} MiB with it (**{cost_mib:+.0f} MiB**, ≈ "
        f"{cost_mib * 1024 / held_things:.0f} KiB per stream or connection); with the load of each later round "
        f"at most {highest:.0f} MiB (bounded: freed memory is reused); after the holder left {released} MiB; "
        f"peak {final['peak_rss_mib']:.0f} MiB, at the end {final['rss_mib']:.0f} MiB.",
        f"- the holder needed {setups} s to open everything.",
        "",
        "Caveats: one shared machine, so the quiet rounds' spread is the noise floor; RSS is the process's",
        "resident set (Python's allocator keeps freed arenas, so a drop after release is not guaranteed);",
        "idle streams here are health watches, a PredictStream that waits holds its model's stream places and",
        "memory besides (bounded by the model's `streaming` limits and --max-predict-streams-per-connection).",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "idle.md"
    path.write_text("\n".join(lines) + "\n")
    (RESULTS / "idle.json").write_text(json.dumps(results, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000, help="idle Health/Watch streams (default %(default)s)")
    parser.add_argument(
        "--stream-connections", type=int, default=4, help="connections the streams share (default %(default)s)"
    )
    parser.add_argument("--connections", type=int, default=500, help="idle connections (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="quiet/idle round pairs (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between opening and measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="the measured client's calls in flight")
    parser.add_argument(
        "--client", choices=["h2load", "python"], default="h2load" if shutil.which("h2load") else "python"
    )
    parser.add_argument("--port", type=int, default=18011)
    parser.add_argument("--hold", metavar="ADDRESS", help=argparse.SUPPRESS)  # the holder subprocess
    args = parser.parse_args()
    if args.hold:
        asyncio.run(_hold(args.hold, args.streams, args.stream_connections, args.connections))
        return
    print(f"wrote {write_report(run(args))}")


if __name__ == "__main__":
    main()
