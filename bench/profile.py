"""Where a Predict's CPU goes: the server under load, split by library, and inferd's own steps in-process.

``python -m bench.run --scenario profile [--baseline DIR]`` (DIR: another checkout, e.g. a ``git worktree``
of an older commit, served with this venv) writes bench/results/profile.md and .json:

1. **Under load**: the gRPC floor and inferd (MLP, batching off and on), pinned to the server core, each
   driven by h2load at concurrency 32 over 32 connections. The server's CPU time per request comes from
   ``/proc/PID/task/*/stat`` (every thread), and, when ``perf`` can sample the process, its split by
   shared object (kernel, CPython, gRPC core, onnxruntime, protobuf, numpy, the rest) from ``perf record``;
   ``--rounds`` interleaved rounds (each round runs every target of every checkout), medians.
2. **In-process**: inferd's Predict steps timed around each call on one core, no gRPC (decode the
   request and route it, check and decode the inputs, the engine call with its scheduling, encode the
   answer, count the outcome), so the under-load figures can be read against what the code itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.h2load import grpc_frame, require_h2load
from bench.run import CLIENT_CPU, MODELS, PREDICT_PATH, SERVER_CPU, _pinned, build_bench_repository, example_input

#: shared-object name patterns → the category a sample is counted under
CATEGORIES = (
    ("kernel", re.compile(r"kernel|vmlinux|\[vdso\]")),
    ("CPython", re.compile(r"libpython|python3\.\d+$|_asyncio|_contextvars|select\.cpython|_socket")),
    ("gRPC core (cygrpc)", re.compile(r"cygrpc")),
    ("onnxruntime", re.compile(r"onnxruntime")),
    ("protobuf (upb)", re.compile(r"_message")),
    ("numpy", re.compile(r"_multiarray|numpy")),
    ("libc, libstdc++, loader", re.compile(r"libc\.so|libstdc|ld-linux|libm\.so|libpthread")),
)
TARGETS = ("floor", "mlp_off", "mlp_on")
#: in-process step runs per checkout, alternating between checkouts (medians reported)
STEP_ROUNDS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, help="profile: another checkout to profile beside this one")
    parser.add_argument("--profile-seconds", type=float, default=6.0, help="profile: seconds sampled per target")


def _request(model: str) -> bytes:
    from inferd.tensors import from_numpy
    from inferd.v1 import inference_pb2

    example, input_name, _ = MODELS[model]
    return inference_pb2.PredictRequest(
        model_name=model, inputs=[from_numpy(input_name, example_input(example))]
    ).SerializeToString()


def _thread_ticks(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total


def _perf_split(pid: int, seconds: float, work: Path) -> dict[str, float] | None:
    """Share of the process's samples per category, or None when perf cannot sample here."""
    if shutil.which("perf") is None:
        return None
    data = work / f"perf-{pid}.data"
    done = subprocess.run(
        ["perf", "record", "-F", "999", "-p", str(pid), "-o", str(data), "--", "sleep", f"{seconds:g}"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not data.exists():
        return None
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
    ).stdout
    shares: dict[str, float] = {}
    for line in report.splitlines():
        match = re.match(r"\s+([\d.]+)%\s+(\S+)", line)
        if not match:
            continue
        share, dso = float(match.group(1)), match.group(2)
        category = next((name for name, pattern in CATEGORIES if pattern.search(dso)), "other")
        shares[category] = shares.get(category, 0.0) + share
    return shares or None


def _env(checkout: Path) -> dict[str, str]:
    """The checkout's server and SDK first on the path (``-m server`` also finds it from the working folder)."""
    return {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'clients' / 'python'}"}


def _under_load(command: list[str], body: Path, port: int, seconds: float, work: Path, cwd: Path) -> dict[str, Any]:
    from bench.run import _wait_port, _wait_serving

    process = subprocess.Popen(
        _pinned(command, SERVER_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=_env(cwd)
    )
    try:
        if "floor_server" in " ".join(command):
            _wait_port(f"127.0.0.1:{port}")
        else:
            _wait_serving(f"127.0.0.1:{port}")
        load = [
            require_h2load(), "-c32", "-m1", "-t1", f"-D{seconds + 4:g}", "--warm-up-time=1", "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}{PREDICT_PATH}",
        ]  # fmt: skip
        if CLIENT_CPU is not None and shutil.which("taskset"):
            load = ["taskset", "-c", str(CLIENT_CPU), *load]
        h2load = subprocess.Popen(load, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)  # warm-up, then sample the steady state
        ticks, started = _thread_ticks(process.pid), time.monotonic()
        split = _perf_split(process.pid, seconds, work)
        if split is None:
            time.sleep(seconds)
        ticks, elapsed = _thread_ticks(process.pid) - ticks, time.monotonic() - started
        out, _ = h2load.communicate(timeout=seconds + 60)
        rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
        if rate is None:
            raise RuntimeError(f"h2load: {out[-500:]}")
        req_per_s = float(rate.group(1))
        cpu_s = ticks / os.sysconf("SC_CLK_TCK")
        return {
            "req_per_s": req_per_s,
            "cpu_share": cpu_s / elapsed,
            "us_per_request": cpu_s / (req_per_s * elapsed) * 1e6,
            "split": split,
        }
    finally:
        process.terminate()
        process.wait(20)


def _commands(checkout: Path, repo: Path, port: int) -> dict[str, list[str]]:
    server = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
    return {
        "floor": [sys.executable, str(checkout / "bench" / "floor_server.py"), "--port", str(port)],
        "mlp_off": [*server, "--log-level", "WARNING"],
        "mlp_on": [*server, "--log-level", "WARNING"],
    }


def profile_target(checkout: Path, target: str, repo: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    body = work / f"{target}.bin"
    body.write_bytes(grpc_frame(_request("mlp_off" if target == "floor" else target)))
    command = _commands(checkout, repo, args.port)[target]
    point = _under_load(command, body, args.port, args.profile_seconds, work, checkout)
    print(f"  {checkout.name} {target}: {point['req_per_s']:.0f} req/s, "
          f"{point['us_per_request']:.0f} µs CPU per request", flush=True)  # fmt: skip
    return point


def _median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Median req/s and CPU per request over rounds; the library split averaged over the rounds that have one."""
    splits = [p["split"] for p in points if p.get("split")]
    split = None
    if splits:
        names = {name for one in splits for name in one}
        split = {name: statistics.fmean(one.get(name, 0.0) for one in splits) for name in names}
    return {
        "req_per_s": statistics.median(p["req_per_s"] for p in points),
        "cpu_share": statistics.median(p["cpu_share"] for p in points),
        "us_per_request": statistics.median(p["us_per_request"] for p in points),
        "split": split,
        "rounds_req_per_s": [round(p["req_per_s"]) for p in points],
    }


def median_steps(runs: list[dict[str, float]]) -> dict[str, float] | None:
    """Each step's median over the runs (None when no run succeeded)."""
    if not runs:
        return None
    return {key: float(statistics.median(run[key] for run in runs)) for key in runs[0]}


def _steps(checkout: Path, repo: Path) -> dict[str, float] | None:
    """The in-process step timings, run in a child so the checkout's own modules are timed."""
    script = Path(__file__).with_name("profile_steps.py")  # this checkout's script, the checkout's code
    done = subprocess.run(
        _pinned([sys.executable, str(script), str(repo)], SERVER_CPU),
        cwd=checkout,
        capture_output=True,
        text=True,
        env=_env(checkout),
    )
    if done.returncode != 0:
        return None
    parsed: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def run(args: argparse.Namespace, work: Path) -> Path:
    repo = (work / "repo").resolve()  # the servers run in the checkout they profile
    build_bench_repository(repo)
    checkouts = {"this checkout": Path.cwd()}
    if args.baseline is not None:
        checkouts = {"baseline": args.baseline.resolve(), **checkouts}
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {n: {t: [] for t in TARGETS} for n in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):  # interleaved: drift on a shared machine hits every target alike
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
            for target in TARGETS:
                for name, checkout in checkouts.items():
                    rounds[name][target].append(profile_target(checkout, target, repo, args, Path(tmp)))
    results: dict[str, Any] = {}
    for name in checkouts:
        results[name] = {target: _median_point(points) for target, points in rounds[name].items()}
    # the in-process steps alternate between the checkouts too (one run each swung by ±10 %): medians
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for _ in range(STEP_ROUNDS):
        for name, checkout in checkouts.items():
            measured = _steps(checkout, repo)
            if measured is not None:
                steps[name].append(measured)
    for name in checkouts:
        results[name]["steps"] = median_steps(steps[name])
    from bench.profile_report import write_profile_report

    return write_profile_report(results, args)
