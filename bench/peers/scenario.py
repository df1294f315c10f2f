"""``python -m bench.run --scenario peers`` (or ``--peers``, ``make bench-peers``): inferd against Triton,
KServe and MLServer, all serving the bench's model.onnx files with onnxruntime (one thread).

Every server runs at once, pinned to the server core (idle when not measured); h2load on the other core
replays ONE pre-encoded OIP ModelInferRequest per model to every target (inferd's own inferd.v1 Predict
too), with both connection patterns, in interleaved rounds; medians and per-round ratios go to
bench/results/peers.md and .json. Every target is checked once before and once after measuring (its
answer equals onnxruntime's within 1e-5). A peer that cannot run here is reported with the reason.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.h2load import run_h2load
from bench.patterns import connections, measured, parse_patterns, source
from bench.peers import oip_wire, report, servers
from bench.run import (
    CLIENT_CPU,
    PREDICT_PATH,
    SERVER_CPU,
    _pinned,
    _stats,
    build_bench_repository,
    example_input,
    stop,
)
from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2

DEFAULT_TARGETS = "inferd_on,inferd_v1,triton_off,triton_on,kserve,mlserver"
ALL_TARGETS = ("inferd_on", "inferd_off", "inferd_v1", "triton_off", "triton_on", "kserve", "mlserver")
START_TIMEOUT_S = 180.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", action="store_true", help="add the peers scenario (Triton, KServe, MLServer)")
    parser.add_argument("--peers-seconds", type=float, default=3.0, help="seconds per point (peers scenario)")
    parser.add_argument(
        "--peers-targets", default=DEFAULT_TARGETS, help=f"comma list from {', '.join(ALL_TARGETS)} (peers)"
    )


@dataclass(frozen=True)
class Target:
    """One thing h2load measures: a server, a method path, the served name per bench model."""

    label: str
    address: str
    path: str
    served: dict[str, str]
    counters: Callable[[str], tuple[int, int, int] | None]
    messages: dict[str, bytes]


def run(args: argparse.Namespace, work: Path) -> Path:
    started = time.monotonic()
    # SIGTERM (a timeout, kill PID) unwinds like Ctrl-C, so every server started here is stopped
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    try:
        return _run(args, work, started)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, work: Path, started: float) -> Path:
    root = work / "peers"
    onnx_repo = root / "repo"
    build_bench_repository(onnx_repo)
    wanted = [t.strip() for t in args.peers_targets.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(ALL_TARGETS))
    if unknown:
        raise SystemExit(f"--peers-targets: unknown {unknown}; choose from {', '.join(ALL_TARGETS)}")
    inputs = {m: example_input(spec[0]) for m, spec in servers.BENCH_MODELS.items()}
    expected = {m: _reference(onnx_repo, m, inputs[m]) for m in servers.BENCH_MODELS}
    results: dict[str, Any] = {"targets": {}, "skipped": {}, "versions": {}, "cells": {}}
    with ExitStack() as stack:
        targets = _start_all(stack, args, root, onnx_repo, wanted, inputs, results)
        for target in list(targets):
            reason = _check(target, inputs, expected)
            if reason:
                results["skipped"][target.label] = reason
                targets.remove(target)
        results["cells"] = _measure(args, targets)
        for target in targets:
            reason = _check(target, inputs, expected)
            if reason:  # its figures are void: a server that broke under load is not fast
                results["skipped"][target.label] = f"answered wrongly after the load, figures dropped: {reason}"
                for by_pattern in results["cells"].values():
                    for by_c in by_pattern.values():
                        for points in by_c.values():
                            points.pop(target.label, None)
    results["ratios"] = report.ratios(results["cells"])
    results["wall_s"] = round(time.monotonic() - started)
    return report.write(results, args)


def _reference(onnx_repo: Path, model: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_repo / f"{model}_off" / "1" / "model.onnx"), options)
    _example, input_name, output, *_ = servers.BENCH_MODELS[model]
    return np.asarray(session.run([output], {input_name: x})[0])


@contextmanager
def _server(command: list[str], env: dict[str, str] | None, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process pinned to the server core, its output to ``log`` (never an unread pipe)."""
    with log.open("wb") as out:
        process = subprocess.Popen(_pinned(command, SERVER_CPU), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield process
        finally:
            stop(process)


def _start_all(
    stack: ExitStack,
    args: argparse.Namespace,
    root: Path,
    onnx_repo: Path,
    wanted: list[str],
    inputs: dict[str, np.ndarray],
    results: dict[str, Any],
) -> list[Target]:
    """inferd, the floor and every wanted peer, started together; a peer that fails is recorded and left out."""
    port = args.port
    oip = {m: oip_wire.infer_request("", servers.BENCH_MODELS[m][1], x) for m, x in inputs.items()}

    def oip_messages(served: dict[str, str]) -> dict[str, bytes]:
        out = {}
        for model, name in served.items():
            request = oip[model]
            request.model_name = name
            out[model] = request.SerializeToString()
        return out

    def oip_counters(address: str) -> Callable[[str], tuple[int, int, int] | None]:
        def read(name: str) -> tuple[int, int, int] | None:
            c = oip_wire.counters(address, name)
            return None if c is None else (c.inference_count, c.execution_count, c.failures)

        return read

    address, floor_address = f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"
    inferd = [sys.executable, "-m", "server", "serve", "--repository", str(onnx_repo), "--port", str(port)]
    inferd += ["--log-level", "WARNING", "--no-metrics"]
    stack.enter_context(_server(inferd, None, root / "inferd.log"))
    floor = [sys.executable, "-m", "bench.floor_server", "--port", str(port + 1)]
    stack.enter_context(_server(floor, None, root / "floor.log"))
    names = list(servers.BENCH_MODELS)
    oip_wire.wait_ready(address, [f"{m}_{s}" for m in names for s in ("off", "on")], START_TIMEOUT_S)
    results["versions"]["inferd"] = {"python": sys.version.split()[0]}
    # the floor gets the same bytes as inferd_on (it answers any ModelInfer with an empty message)
    floor_messages = oip_messages({m: f"{m}_on" for m in names})
    targets = [Target("floor", floor_address, oip_wire.INFER_PATH, {}, lambda _n: None, floor_messages)]
    for setting in ("on", "off"):
        if f"inferd_{setting}" in wanted:
            served = {m: f"{m}_{setting}" for m in names}
            targets.append(
                Target(
                    f"inferd_{setting}",
                    address,
                    oip_wire.INFER_PATH,
                    served,
                    _v1_counters(address),
                    oip_messages(served),
                )
            )
    if "inferd_v1" in wanted:  # the protocol's cost shows on the tiny MLP; on the encoder it is noise
        served = {"mlp": "mlp_on"}
        v1 = {
            m: inference_pb2.PredictRequest(
                model_name=served[m], inputs=[from_numpy(servers.BENCH_MODELS[m][1], inputs[m])]
            ).SerializeToString()
            for m in served
        }
        targets.append(Target("inferd_v1", address, PREDICT_PATH, served, _v1_counters(address), v1))
    for offset, (peer, start) in enumerate(servers.PEERS.items(), start=2):
        labels = [t for t in wanted if t == peer or t.startswith(f"{peer}_")]
        if not labels:
            continue
        try:
            server = start(onnx_repo, root, port + offset)
        except Exception as error:  # a peer that cannot be installed or prepared here is a result, not a crash
            results["skipped"][peer] = f"{type(error).__name__}: {error}"
            print(f"peers: {peer} left out: {results['skipped'][peer]}", flush=True)
            continue
        failures = []
        for attempt in range(2):  # one retry: a peer that crashed while loading on a busy core gets a second start
            log = root / f"{peer}-{attempt + 1}.log"
            process = stack.enter_context(_server(server.command, server.env, log))

            def alive(process: subprocess.Popen[bytes] = process) -> bool:
                return process.poll() is None

            try:
                names = sorted({n for label in labels for n in server.served[label].values()})
                oip_wire.wait_ready(server.address, names, START_TIMEOUT_S, alive=alive)
                break
            except Exception as error:
                failures.append(_why(error, log))
                process.terminate()
                process.wait(30)
        if len(failures) == 2:
            results["skipped"][peer] = " / ".join(failures)
            print(f"peers: {peer} left out: {results['skipped'][peer]}", flush=True)
            continue
        if failures:
            results.setdefault("restarts", {})[peer] = failures[0]
        results["versions"][peer] = server.versions
        for label in labels:
            counters = oip_counters(server.address) if server.statistics else (lambda _n: None)
            served = server.served[label]
            targets.append(Target(label, server.address, oip_wire.INFER_PATH, served, counters, oip_messages(served)))
    for target in targets:
        results["targets"][target.label] = {"address": target.address, "path": target.path, "served": target.served}
    return targets


def _why(error: BaseException, log: Path) -> str:
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    return f"{type(error).__name__}: {error}" + (f" (log: {' | '.join(tail)[-400:]})" if tail else "")


def _v1_counters(address: str) -> Callable[[str], tuple[int, int, int] | None]:
    """inferd's own statistics: streams h2load resets at the end (CANCELLED) are not failures."""

    def read(name: str) -> tuple[int, int, int] | None:
        s = _stats(address, name)
        failed = sum(s.failure_count.values()) - s.failure_count["CANCELLED"]
        return s.inference_count, s.execution_count, failed

    return read


def _check(target: Target, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> str:
    """'' when every model of ``target`` answers like onnxruntime; the reason otherwise."""
    if target.label == "floor":
        return ""
    for model, name in target.served.items():
        _example, input_name, output, *_ = servers.BENCH_MODELS[model]
        try:
            oip_wire.check(
                target.address, oip_wire.infer_request(name, input_name, inputs[model]), output, expected[model]
            )
        except Exception as error:
            return f"{type(error).__name__}: {error}"
    return ""


def _measure(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    patterns = parse_patterns(args.connections)
    models = list(servers.BENCH_MODELS)
    rounds: dict[str, dict[str, dict[int, dict[str, list[dict[str, Any]]]]]] = {
        m: {p: {c: {t.label: [] for t in targets if m in t.messages} for c in concurrencies} for p in patterns}
        for m in models
    }
    floor = next(t for t in targets if t.label == "floor")
    for c in concurrencies:
        for round_ in range(args.rounds):
            for pattern in measured(patterns, c):
                h2 = {"concurrency": c, "connections": connections(pattern, c), "cpu": CLIENT_CPU}
                point = _load(floor, models[0], args, h2)
                for model in models:  # one floor run per cell: the same request size for both models
                    rounds[model][pattern][c]["floor"].append(point)
                for model in models:
                    for target in targets:
                        if target is not floor and model in target.messages:
                            rounds[model][pattern][c][target.label].append(_load(target, model, args, h2))
                    line = "  ".join(f"{k} {v[-1]['req_per_s']:.0f}" for k, v in rounds[model][pattern][c].items())
                    print(f"{model} c={c:<3} {pattern:<4} round {round_ + 1}: req/s  {line}", flush=True)
    return {
        m: {
            p: {
                str(c): {t: report.median(v) for t, v in by_p[source(p, patterns, c)][c].items()} for c in concurrencies
            }
            for p in patterns
        }
        for m, by_p in rounds.items()
    }


def _load(target: Target, model: str, args: argparse.Namespace, h2: dict[str, Any]) -> dict[str, Any]:
    name = target.served.get(model, "")
    before = target.counters(name) if name else None
    try:
        r = run_h2load(
            f"http://{target.address}{target.path}",
            target.messages[model],
            seconds=args.peers_seconds,
            warmup=args.warmup,
            **h2,
        )
    except RuntimeError as error:  # h2load logged nothing (a server that stalled): a failed point, not a crash
        print(f"peers: {target.label} {model}: {error}", flush=True)
        return {"req_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": 1, "rows_per_call": None}
    after = target.counters(name) if name and before is not None else None
    point: dict[str, Any] = {"req_per_s": r.req_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
    point["errors"] = r.http_failures
    point["rows_per_call"] = None
    if before is not None and after is not None:
        point["errors"] += max(0, after[2] - before[2])
        calls = after[1] - before[1]
        point["rows_per_call"] = (after[0] - before[0]) / calls if calls > 0 else None
    return point
