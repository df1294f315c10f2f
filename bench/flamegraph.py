"""A flame graph of inferd serving the MLP under the issue's load: where the server's time goes.

``python -m bench.run --scenario flamegraph`` starts inferd on the bench repository (``mlp_on``: the
documented batching default) pinned to the server core, drives it with h2load at concurrency 32 over 32
connections (one request in flight each) from the other core, and samples every thread of the server
with py-spy for ``--flamegraph-seconds`` (``--flamegraph-native`` adds the C frames of gRPC's core,
onnxruntime and CPython, at a cost: see :func:`py_spy_command`). It writes
bench/results/flamegraph-mlp-c32.svg (open it in a browser: a frame's width is its share of the samples;
hover for its name and share) and skips with a note where py-spy is missing or may not attach to another
process (it needs ptrace: root, or CAP_SYS_PTRACE in a container).

What it shows, and what not: samples of where threads *are*, at ``--flamegraph-rate`` Hz, not a count of
calls. Samples of other threads parked in a wait (gRPC's poller in ``epoll_wait``, the executor's idle
worker) are left out (bench/flamegraph_svg.py), so the widths are shares of the time threads worked;
the event loop's own waits stay in. Per-request costs by library come from ``--scenario profile`` (perf).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.flamegraph_svg import parse, render
from bench.h2load import run_h2load
from bench.profile import _request
from bench.run import CLIENT_CPU, PREDICT_PATH, RESULTS, build_bench_repository, running

OUTPUT = "flamegraph-mlp-c32.svg"
MODEL = "mlp_on"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flamegraph-seconds", type=float, default=10.0, help="flamegraph: seconds sampled")
    parser.add_argument("--flamegraph-rate", type=int, default=250, help="flamegraph: samples a second")
    parser.add_argument(
        "--flamegraph-native",
        action="store_true",
        help="flamegraph: C frames too (pauses the server per sample: it then serves several times slower)",
    )


def py_spy_command(py_spy: str, pid: int, seconds: float, rate: int, output: Path, native: bool = False) -> list[str]:
    """Sample every thread of ``pid``, written as collapsed stacks (one per line). Without ``native`` the
    server is never paused (``--nonblocking``) and time in C code counts for the Python line that called
    it; with it the C frames show, but every sample stops the process to unwind it (measured: 434 instead
    of ~3,000 req/s at 250 Hz), which changes what a batching server does."""
    command = [
        py_spy, "record", "--pid", str(pid), "--threads", "--rate", str(rate),
        "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(output),
    ]  # fmt: skip
    return [*command, "--native"] if native else [*command, "--nonblocking"]


def run(args: argparse.Namespace, work: Path) -> Path:
    output = RESULTS / OUTPUT
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("flamegraph: skipped, py-spy is not installed (pip install py-spy; it is in the dev extra)")
        return output
    repo = (work / "flamegraph-repo").resolve()
    build_bench_repository(repo)
    address = f"127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(args.port)]
    stacks = work / "flamegraph.txt"
    serving = running([*command, "--log-level", "WARNING", "--no-metrics"], address)
    with serving as server, ThreadPoolExecutor(max_workers=1) as pool:  # the load runs while py-spy samples
        load = pool.submit(
            run_h2load, f"http://{address}{PREDICT_PATH}", _request(MODEL), concurrency=32, connections=32,
            seconds=args.flamegraph_seconds + 2, warmup=1, cpu=CLIENT_CPU,
        )  # fmt: skip
        time.sleep(2)  # warm-up: sample the steady state
        sampled = subprocess.run(
            py_spy_command(
                py_spy, server.pid, args.flamegraph_seconds, args.flamegraph_rate, stacks, args.flamegraph_native
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        req_per_s = load.result().req_per_s
    if sampled.returncode != 0 or not stacks.exists():
        print(f"flamegraph: skipped, py-spy could not sample the server: {sampled.stderr.strip()[-300:]}")
        return output
    root, dropped = parse(stacks.read_text().splitlines())
    title = (
        f"inferd, {MODEL}, h2load 32 connections x 1 stream ({req_per_s:.0f} req/s); {root.count} samples "
        f"at {args.flamegraph_rate} Hz, {dropped} of parked threads left out"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    output.write_text(render(root, title))
    return output
