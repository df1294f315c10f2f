"""What observing inferd costs: req/s with metrics, tracing and the access log on, against all off.

``python -m bench.run --scenario telemetry [--telemetry-rounds 12 --telemetry-seconds 3]`` (part of
``make bench``). One server per configuration, all
pinned to the server core, measured in interleaved rounds with h2load on the other core (the MLP with
dynamic batching, 1 row per request, concurrency 32 by default); medians and their ratios to "off"
go to bench/results/telemetry.md. The configurations:

- off: ``--no-metrics``, no tracing, no access log;
- metrics: the Prometheus endpoint, scraped once a second by this process (Prometheus' usual interval
  is 15-60 s: this is the harsh case);
- tracing 1 %: ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` with 0.01, spans exported over OTLP/gRPC
  to a collector stand-in in this process (requests carry no ``traceparent``: the server decides);
- access log 1 %: ``--access-log FILE --access-log-sample-rate 0.01``;
- all: the three together.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import urllib.request
from concurrent import futures
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.h2load import run_h2load
from bench.run import CLIENT_CPU, MODELS, PREDICT_PATH, RESULTS, build_bench_repository, example_input, running
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

CONFIGS = ("off", "metrics", "tracing", "access_log", "all")
#: the per-call measurement leaves metrics out: scrapes cost nothing per call
CALL_CONFIGS = ("off", "tracing", "access_log", "all")
TARGETS = {"metrics": 0.97, "tracing": 0.95, "access_log": 0.97}


class _SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Accepts OTLP span exports and counts the spans (a collector stand-in)."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Scraper(threading.Thread):
    """GETs /metrics every second, like a (very eager) Prometheus."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.scrapes = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as reply:
                reply.read()
            self.scrapes += 1


def _command(repo: Path, port: int, config: str, work: Path) -> list[str]:
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", str(port)]
    command += ["--log-level", "WARNING"]
    if config in ("metrics", "all"):
        command += ["--metrics-port", str(port + 100)]
    else:
        command += ["--no-metrics"]
    if config in ("access_log", "all"):
        command += ["--access-log", str(work / f"access-{config}.jsonl"), "--access-log-sample-rate", "0.01"]
    return command


def _env(config: str, sink_port: int) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if config in ("tracing", "all"):
        env |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        }
    return env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this scenario (bench/run.py adds them); with the defaults it takes ~5 minutes. Its
    differences are a few percent, so it needs more rounds than the other scenarios to see through noise."""
    parser.add_argument("--telemetry-rounds", type=int, default=12, help="interleaved rounds (telemetry scenario)")
    parser.add_argument("--telemetry-seconds", type=float, default=3.0, help="seconds per point (telemetry scenario)")


def _message(model: str) -> bytes:
    example, input_name, _ = MODELS[model]
    request = inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy(input_name, example_input(example))])
    return request.SerializeToString()


def run(args: argparse.Namespace, work: Path) -> Path:
    message = _message("mlp_on")
    concurrency = int(str(args.concurrency).split(",")[-1])
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    sink = _SpanSink()
    collector = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, collector)
    sink_port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    scrapers: list[_Scraper] = []
    repo = work / "telemetry-repo"
    try:
        with ExitStack() as stack:
            build_bench_repository(repo)
            ports = {config: args.port + 10 + i for i, config in enumerate(CONFIGS)}
            for config, port in ports.items():
                command = _command(repo, port, config, work)
                stack.enter_context(running(command, f"127.0.0.1:{port}", env=_env(config, sink_port)))
                if config in ("metrics", "all"):
                    scrapers.append(_Scraper(f"http://127.0.0.1:{port + 100}/metrics"))
            for scraper in scrapers:
                scraper.start()
            for round_ in range(args.telemetry_rounds):
                shift = round_ % len(CONFIGS)  # a different order each round: drift does not favour one
                for config in CONFIGS[shift:] + CONFIGS[:shift]:
                    url = f"http://127.0.0.1:{ports[config]}{PREDICT_PATH}"
                    r = run_h2load(
                        url,
                        message,
                        concurrency=concurrency,
                        seconds=args.telemetry_seconds,
                        warmup=args.warmup,
                        cpu=CLIENT_CPU,
                    )
                    samples[config].append(asdict(r))
                print(f"telemetry round {round_ + 1}/{args.telemetry_rounds} done", flush=True)
        for scraper in scrapers:
            scraper.stopped.set()
        # the same observers measured inside the server: µs of Python per Predict (no network)
        from bench.call_cost import measure

        per_call = measure(CALL_CONFIGS, repo, work, f"http://127.0.0.1:{sink_port}", _message("mlp_off"))
    finally:
        collector.stop(0)
    extra = {"spans_exported": sink.spans, "scrapes": sum(s.scrapes for s in scrapers)}
    return _write(samples, concurrency, args, extra, work, per_call)


def _median(points: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(p[key] for p in points))


def _write(
    samples: dict[str, list[dict[str, Any]]],
    concurrency: int,
    args: argparse.Namespace,
    extra: dict[str, int],
    work: Path,
    per_call: dict[str, float],
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    logged = {c: _lines(work / f"access-{c}.jsonl") for c in ("access_log", "all")}
    report = {"samples": samples, **extra, "logged": logged, "per_call_us": per_call}
    (RESULTS / "telemetry.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# What observing costs: metrics, tracing, access log vs all off",
        "",
        f"`python -m bench.run --scenario telemetry`: MLP (dynamic batching, 1 row per request), h2load at "
        f"concurrency {concurrency}, {args.telemetry_rounds} interleaved rounds of {args.telemetry_seconds:g} s per "
        "configuration, "
        "medians; each server pinned to the server core, h2load to the other. One run on a shared machine: compare the "
        "ratios, not the absolutes.",
        "",
        "`× off` is the median over rounds of each round's req/s divided by the same round's \"off\" req/s "
        "(paired, so a slow minute on the machine cancels out); `req/s` is the plain median.",
        "",
        "| configuration | req/s | × off (paired) | target | p50 ms | p99 ms | failures |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in CONFIGS:
        points = samples[config]
        rate = _median(points, "req_per_s")
        paired = statistics.median(p["req_per_s"] / o["req_per_s"] for p, o in zip(points, samples["off"], strict=True))
        target = f"≥ {TARGETS[config]:.2f}" if config in TARGETS else ""
        fails = sum(p["http_failures"] for p in points)
        lines.append(
            f"| {config} | {rate:.0f} | {paired:.3f} | {target} | {_median(points, 'p50_ms'):.2f} "
            f"| {_median(points, 'p99_ms'):.2f} | {fails} |"
        )
    lines += [
        "",
        f"Spans exported (1 % sampling, tracing + all): {extra['spans_exported']}; /metrics scrapes: "
        f"{extra['scrapes']}; access-log lines written (1 %): {logged}.",
        "",
        "Inside the server (bench/call_cost.py: the Predict handler awaited in a loop in one process, no "
        "network; the MLP without batching, so every call takes the same path; 7 alternating rounds of 5,000 "
        "calls, medians), the Python each observer adds per call:",
        "",
        "| configuration | µs per Predict | added µs | × off (calls per CPU second) |",
        "| --- | --- | --- | --- |",
    ]
    base = per_call["off"]
    lines += [f"| {c} | {us:.1f} | {us - base:+.1f} | {base / us:.3f} |" for c, us in per_call.items()]
    lines += [
        "",
        "Per-round req/s:",
        "",
    ]
    lines += [f"- {c}: {[round(p['req_per_s']) for p in samples[c]]}" for c in CONFIGS]
    path = RESULTS / "telemetry.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path


def _lines(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.exists() else 0
