"""CPU per Predict inside the server, with and without the call observers: the servicer called directly.

No network, no HTTP/2, no other process: a server in this process (models loaded, ports bound but
unused) and its Predict handler awaited in a loop with a stand-in for grpc's context, so what is
measured is the server's own Python per call, where tracing and the access log add theirs. Configs
alternate in rounds; medians of µs per call. Used by the telemetry scenario (bench/telemetry.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from server.app import InferdServer, ServerOptions
from server.telemetry.access_log import AccessLogOptions
from server.telemetry.options import TelemetryOptions
from server.telemetry.tracing_options import TracingOptions


class _Context:
    """What the Predict handler reads of grpc.aio's ServicerContext."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float | None:
        return None


def _options(config: str, repo: Path, work: Path, otlp_endpoint: str) -> ServerOptions:
    access_log = None
    tracing = None
    if config in ("access_log", "all"):
        access_log = AccessLogOptions(destination=str(work / f"calls-{config}.jsonl"), sample_rate=0.01)
    if config in ("tracing", "all"):
        tracing = TracingOptions(endpoint=otlp_endpoint, sampler="parentbased_traceidratio", sampler_arg=0.01)
    return ServerOptions(repository=repo, port=0, telemetry=TelemetryOptions(tracing=tracing, access_log=access_log))


async def _per_call_us(server: InferdServer, message: bytes, calls: int) -> float:
    context: Any = _Context()
    predict = server.servicer.predict
    started = time.perf_counter()
    for _ in range(calls):
        await predict(message, context)
    return (time.perf_counter() - started) / calls * 1e6


async def _measure(
    configs: tuple[str, ...], repo: Path, work: Path, otlp_endpoint: str, message: bytes, rounds: int, calls: int
) -> dict[str, list[float]]:
    servers = {c: InferdServer(_options(c, repo, work, otlp_endpoint)) for c in configs}
    for server in servers.values():
        await server.start()
    try:
        for server in servers.values():
            await _per_call_us(server, message, calls // 4)  # warm up
        samples: dict[str, list[float]] = {c: [] for c in configs}
        for round_ in range(rounds):
            shift = round_ % len(configs)
            for config in configs[shift:] + configs[:shift]:
                samples[config].append(await _per_call_us(servers[config], message, calls))
        return samples
    finally:
        for server in servers.values():
            await server.stop(drain=False)


def measure(
    configs: tuple[str, ...],
    repo: Path,
    work: Path,
    otlp_endpoint: str,
    message: bytes,
    rounds: int = 7,
    calls: int = 5000,
) -> dict[str, float]:
    """Median µs per Predict for each configuration."""
    samples = asyncio.run(_measure(configs, repo, work, otlp_endpoint, message, rounds, calls))
    return {config: statistics.median(points) for config, points in samples.items()}
