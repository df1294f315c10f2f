"""``make bench``: batching off vs on, against the gRPC floor and the in-process compute floor.

The server and the load generator are pinned to different cores (when there are two). Each point is
a closed loop at fixed concurrency for a fixed time; errors are read from the server's counters.
Results go to bench/results/<scenario>.md and .json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from bench.patterns import parse_patterns
from bench.rows import parse_rows
from examples.build import build_repository
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


def machine_meta() -> dict[str, str]:
    """When and on what a report was measured (every scenario's header)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
    }


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
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (the server drains), then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenario", default="all", choices=["all", *SCENARIOS], help="which benchmark to run (default: all)"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--connections",
        default="many,one",
        help="connection patterns (batching, peers): many = C connections × 1 stream, one = 1 × C streams",
    )
    parser.add_argument("--models", default="", help="comma list of prefixes (mlp, encoder); default all")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point (medians reported)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--repository", type=Path, help="unused; the bench builds its own copies")
    for module in SCENARIOS.values():  # each scenario's own options, from the module that reads them
        add_arguments = getattr(importlib.import_module(module), "add_arguments", None)
        if add_arguments is not None:
            add_arguments(parser)
    args = parser.parse_args()
    try:
        parse_patterns(args.connections)
        parse_rows(args.rows)
    except ValueError as error:
        parser.error(str(error))
    work = Path(".cache/bench")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in selected_scenarios(args.scenario, args.peers):
        print(f"==> scenario {name}")
        print(f"wrote {importlib.import_module(SCENARIOS[name]).run(args, work)}")


def selected_scenarios(scenario: str, peers: bool) -> list[str]:
    """``all`` is every scenario but the peers (they install big venvs and take ~15 minutes); ``--peers``
    adds them to whatever else runs (the issue's "make bench --peers")."""
    names = [n for n in SCENARIOS if n != "peers"] if scenario == "all" else [scenario]
    return [*names, "peers"] if peers and "peers" not in names else names


#: scenario name → the module that runs it (``run(args, work)`` → report path; ``add_arguments`` if it has options)
SCENARIOS: dict[str, str] = {
    "batching": "bench.batching",
    "swap": "bench.swap",
    "streaming": "bench.streaming",
    "telemetry": "bench.telemetry",
    "quality": "bench.quality",
    "oip": "bench.oip",
    "security": "bench.security",
    "auto-order": "bench.auto_order",
    "workers": "bench.workers",
    "profile": "bench.profile",
    "flamegraph": "bench.flamegraph",
    "peers": "bench.peers.scenario",
}

if __name__ == "__main__":
    main()
