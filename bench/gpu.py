"""GPU check: every engine on the example models — parity against ONNX Runtime on CPU, and throughput at
batch 1/8/32/64 in-process and through a real server — written to ``docs/gpu-results.md``.

``scripts/gpu_check.sh`` runs the GPU tests and then this; it also runs (and says so) on a host without
a GPU, where every GPU engine is listed under "could not run" with its reason.

Engines (each on ``mlp_ranker``; the GPU ones on ``text_encoder`` too, a model big enough to be
compute-bound):

- ``onnxruntime-cpu``: the reference;
- ``onnxruntime-cuda``: the CUDA execution provider (needs onnxruntime-gpu);
- ``torch-cpu`` / ``torch-cuda`` / ``torch-cuda-fp16`` / ``torch-cuda-graphs``: a TorchScript twin of
  ``mlp_ranker`` built from its ONNX weights, so torch is compared with ONNX Runtime on the same model;
- ``tensorrt-fp32`` / ``tensorrt-fp16``: plans auto-built from model.onnx into a temporary cache.

Usage: ``python -m bench.gpu [--output docs/gpu-results.md] [--junit gpu-tests.xml] [--seconds 0.4]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 8, 32, 64)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class EngineCase:
    """One engine configuration on one model."""

    label: str
    model: str
    backend: str
    artifact: str
    parameters: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    batches: tuple[int, ...] = BATCHES
    server: bool = True
    #: why it cannot run here (decided before loading), or "" to try
    unavailable: str = ""


@dataclass
class CaseResult:
    case: EngineCase
    status: str = "not run"  # ok | failed | skipped
    reason: str = ""
    load_seconds: float = 0.0
    precision: str = ""
    notes: list[str] = field(default_factory=list)
    parity: dict[int, float] = field(default_factory=dict)  # batch → max abs error vs onnxruntime-cpu
    parity_ok: bool | None = None
    tolerance: tuple[float, float] = (0.0, 0.0)
    inprocess: dict[int, float] = field(default_factory=dict)  # batch → rows/s
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch → ms per call in-process
    served: dict[int, float] = field(default_factory=dict)  # batch → rows/s through the server
    server_error: str = ""


# --- the models -----------------------------------------------------------------------------------------


def write_torch_twin(onnx_path: Path, output: Path) -> None:
    """A TorchScript copy of a Gemm/Relu/Sigmoid chain (mlp_ranker) with the ONNX file's own weights."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers: list[torch.nn.Module] = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = weights[node.input[1]]
            w = w if attrs.get("transB", 0) else w.T  # torch Linear keeps (out, in)
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                linear.bias.copy_(torch.from_numpy(weights[node.input[2]]))
            layers.append(linear)
        elif node.op_type == "Relu":
            layers.append(torch.nn.ReLU())
        elif node.op_type == "Sigmoid":
            layers.append(torch.nn.Sigmoid())
        else:
            raise ValueError(f"write_torch_twin handles Gemm/Relu/Sigmoid chains, not {node.op_type}")
    module = torch.nn.Sequential(*layers).eval()
    torch.jit.save(torch.jit.script(module), str(output))


def build_models(root: Path) -> None:
    from examples.build import build_repository

    build_repository(root, ["mlp_ranker", "text_encoder"])
    write_torch_twin(root / "mlp_ranker" / "1" / "model.onnx", root / "mlp_ranker" / "1" / "model.pt")


def example_input(model: str, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "text_encoder":
        return {"input_ids": rng.integers(1, 1024, size=(rows, 128), dtype=np.int64)}
    return {"features": rng.standard_normal((rows, 256)).astype(np.float32)}


# --- the environment ------------------------------------------------------------------------------------


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception as exc:
        return f"installed but does not import: {str(exc).splitlines()[0][:160]}"


def environment() -> dict[str, str]:
    env = {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "host": platform.node(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "grpcio": _version("grpc"),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "tensorrt": _version("tensorrt"),
        "pynvml (nvidia-ml-py)": _version("pynvml"),
    }
    try:
        import onnxruntime

        env["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except Exception:
        pass
    try:
        import torch

        env["torch CUDA"] = str(torch.version.cuda or "none (CPU build)")
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env["device"] = (
                f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
            )
        else:
            env["device"] = "no CUDA device (torch.cuda.is_available() is False)"
    except Exception as exc:
        env["device"] = f"unknown: {exc}"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if smi.returncode == 0:
            env["nvidia-smi"] = smi.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.TimeoutExpired):
        env["nvidia-smi"] = "not found"
    return env


def cuda_reason() -> str | None:
    """Why CUDA cannot be used here, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is False)"
    return None


def tensorrt_reason() -> str | None:
    """Why the TensorRT engine cannot run here, or None."""
    reason = cuda_reason()
    if reason is not None:
        return reason
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt on this GPU host)"
    try:
        import tensorrt

        major = int(str(tensorrt.__version__).split(".")[0])
    except Exception as exc:  # installed but broken (CUDA libraries missing)
        return f"tensorrt does not import: {str(exc).splitlines()[0][:200]}"
    return None if major >= 10 else f"TensorRT {tensorrt.__version__} is older than 10"


def cases() -> list[EngineCase]:
    """Every engine configuration, with the reason it cannot run here decided up front where possible."""
    cuda = cuda_reason()
    trt = tensorrt_reason()
    try:
        import onnxruntime

        ort_cuda = (
            None
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers()
            else ("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        )
    except ImportError:
        ort_cuda = "onnxruntime is not installed"
    out: list[EngineCase] = []
    for model in ("mlp_ranker", "text_encoder"):
        heavy = model == "text_encoder"
        out.append(
            EngineCase(
                f"onnxruntime-cpu/{model}",
                model,
                "onnxruntime",
                "model.onnx",
                {"providers": "cpu", "intra_op_threads": "0"},
                batches=(1, 8) if heavy else BATCHES,
            )
        )
        out.append(
            EngineCase(
                f"onnxruntime-cuda/{model}",
                model,
                "onnxruntime",
                "model.onnx",
                {"providers": "cuda"},
                "cuda:0",
                unavailable=ort_cuda or cuda or "",
            )
        )
        if not heavy:
            out.append(EngineCase(f"torch-cpu/{model}", model, "torch", "model.pt", server=False))
            out.append(
                EngineCase(f"torch-cuda/{model}", model, "torch", "model.pt", device="cuda:0", unavailable=cuda or "")
            )
            out.append(
                EngineCase(
                    f"torch-cuda-fp16/{model}",
                    model,
                    "torch",
                    "model.pt",
                    {"autocast": "fp16"},
                    "cuda:0",
                    unavailable=cuda or "",
                )
            )
            out.append(
                EngineCase(
                    f"torch-cuda-graphs/{model}",
                    model,
                    "torch",
                    "model.pt",
                    {"cuda_graphs": "true"},
                    "cuda:0",
                    unavailable=cuda or "",
                )
            )
        for precision in ("fp32", "fp16"):
            out.append(
                EngineCase(
                    f"tensorrt-{precision}/{model}",
                    model,
                    "tensorrt",
                    "model.onnx",
                    {"trt_auto_build": "true", "trt_precision": precision},
                    "cuda:0",
                    unavailable=trt or "",
                )
            )
    return out


# --- in-process ------------------------------------------------------------------------------------------


def load_spec(case: EngineCase, root: Path, cache: Path) -> Any:
    from engines.base import LoadSpec, Signature, TensorSig
    from server.models.config import load_config

    config = load_config(root / case.model / "config.pbtxt", model_name=case.model)
    parameters = {**config.parameters, **case.parameters, "trt_cache_dir": str(cache)}
    if case.backend != "onnxruntime":
        parameters.pop("intra_op_threads", None)
    return LoadSpec(
        model_name=case.model,
        version=1,
        artifact=root / case.model / "1" / case.artifact,
        signature=Signature(
            tuple(TensorSig(s.name, s.dtype, s.dims) for s in config.signature.inputs),
            tuple(TensorSig(s.name, s.dtype, s.dims) for s in config.signature.outputs),
        ),
        max_batch_size=config.max_batch_size,
        parameters=parameters,
        device=case.device,
    )


def throughput(call: Callable[[], object], rows: int, seconds: float) -> tuple[float, float]:
    """(rows/s, ms per call) of ``call`` run back to back for about ``seconds`` after five warm-up calls."""
    for _ in range(5):  # TorchScript's profiling executor specialises a new shape over its first calls
        call()
    calls = 0
    started = time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 5:
            return rows * calls / elapsed, elapsed / calls * 1000


def run_inprocess(
    case: EngineCase, root: Path, cache: Path, references: Mapping[str, Any], seconds: float
) -> tuple[CaseResult, Any]:
    from engines.base import load_engine
    from engines.parity import compare_outputs, parity_config

    result = CaseResult(case)
    if case.unavailable:
        result.status, result.reason = "skipped", case.unavailable
        return result, None
    started = time.perf_counter()
    try:
        engine = load_engine(case.backend, load_spec(case, root, cache))
    except Exception as exc:
        result.status, result.reason = "failed", f"load: {type(exc).__name__}: {str(exc)[:400]}"
        return result, None
    result.load_seconds = time.perf_counter() - started
    result.precision = str(getattr(engine, "precision", "fp32"))
    result.notes = [str(n) for n in getattr(engine, "notes", ())]
    reference = references.get(case.model)
    atol, rtol = parity_config({}).tolerances(result.precision)
    result.tolerance = (atol, rtol)
    try:
        ok = True
        for rows in case.batches:
            inputs = example_input(case.model, rows, seed=rows)
            got = engine.infer(inputs)
            if reference is not None and reference is not engine:
                want = reference.infer(inputs)
                (diff, *_) = compare_outputs(got, want, list(want), atol, rtol)
                result.parity[rows] = diff.max_abs
                ok = ok and diff.ok
            result.inprocess[rows], result.latency_ms[rows] = throughput(
                functools.partial(engine.infer, inputs), rows, seconds
            )
        result.parity_ok = ok if result.parity else None
        result.status = "ok"
    except Exception as exc:
        result.status, result.reason = "failed", f"run: {type(exc).__name__}: {str(exc)[:400]}"
    return result, engine


# --- through the server ---------------------------------------------------------------------------------


def server_repository(root: Path, results: Sequence[CaseResult], cache: Path) -> tuple[Path, dict[str, str]]:
    """One model per runnable case (``<model>__<engine>``), each pinned to its engine and device parameters."""
    import shutil

    repo = root / "_served"
    names: dict[str, str] = {}
    for result in results:
        case = result.case
        if result.status != "ok" or not case.server:
            continue
        name = f"{case.model}__{case.label.split('/')[0].replace('-', '_')}"
        target = repo / name
        target.mkdir(parents=True)
        shutil.copytree(root / case.model / "1", target / "1")
        config = (root / case.model / "config.pbtxt").read_text().splitlines()
        lines = [line for line in config if not line.startswith(("name:", "engine:", "dynamic_batching", "parameters"))]
        lines.append(f'engine: "{case.backend}"')
        parameters = {**case.parameters, "trt_cache_dir": str(cache), "parity_reference": "none"}
        if case.backend == "onnxruntime" and "providers" not in case.parameters:
            parameters["providers"] = "cpu"
        lines.extend(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters.items())
        (target / "config.pbtxt").write_text("\n".join(lines) + "\n")
        names[case.label] = name
    return repo, names


def serve_and_measure(
    repo: Path, names: Mapping[str, str], results: Sequence[CaseResult], seconds: float, concurrency: int
) -> str:
    """Closed-loop load at ``concurrency`` per batch size against ``inferd serve`` in a subprocess; fills
    ``served``. Returns why nothing could be served, or ""."""
    from inferd import Client

    if not names:
        return "no engine loaded, so nothing was served"
    device = "cuda:0" if any(r.case.device.startswith("cuda") for r in results if r.case.label in names) else "cpu"
    port_file = repo / "port"
    log = repo / "server.log"
    command = [sys.executable, "-m", "server", "serve", "--repository", str(repo), "--port", "0"]
    command += ["--port-file", str(port_file), "--device", device, "--log-level", "WARNING"]
    with log.open("wb") as log_handle:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600  # TensorRT plans may build at start
            while not port_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    return f"the server did not start: {log.read_text()[-600:]}"
                time.sleep(0.2)
            address = f"127.0.0.1:{port_file.read_text().strip()}"
            with Client(address, timeout=60) as probe:
                served = {m.name: m for m in probe.list_models()}
            for result in results:
                name = names.get(result.case.label)
                if name is None:
                    continue
                state = served.get(name)
                engine = state.versions[0].engine if state and state.versions else ""
                if engine != result.case.backend:
                    why = state.versions[0].reason if state and state.versions else "not listed"
                    result.server_error = f"served by {engine or 'nothing'}: {why}"
                    continue
                try:
                    for rows in result.case.batches:
                        result.served[rows] = _load(address, name, result.case.model, rows, seconds, concurrency)
                except Exception as exc:
                    result.server_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return ""


def _load(address: str, name: str, model: str, rows: int, seconds: float, concurrency: int) -> float:
    from inferd import Client

    inputs = example_input(model, rows)
    done = [0] * concurrency
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(slot: int) -> None:
        try:
            with Client(address, timeout=60) as client:
                client.predict(name, inputs)  # warm the channel
                while not stop.is_set():
                    client.predict(name, inputs)
                    done[slot] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # let every worker connect and warm up
    start_counts = sum(done)
    started = time.perf_counter()
    # at least `seconds`, and long enough for two calls per client on slow models (capped)
    while True:
        time.sleep(min(seconds, 0.05))
        counted = sum(done) - start_counts
        elapsed = time.perf_counter() - started
        if errors or (elapsed >= seconds and counted >= 2 * concurrency) or elapsed >= 10 * seconds + 5:
            break
    stop.set()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    return counted * rows / elapsed


# --- the GPU tests' junit report ------------------------------------------------------------------------


def read_junit(path: Path | None) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Counts and (test, outcome, message) rows from pytest's junit XML."""
    if path is None or not path.is_file():
        return {}, []
    tree = ET.parse(path)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    rows = []
    for case in tree.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}".removeprefix("tests.gpu.")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (
                    (child.get("message") or child.text or "").strip().splitlines()[0][:200]
                    if (child.get("message") or child.text)
                    else ""
                )
        counts[outcome] = counts.get(outcome, 0) + 1
        rows.append((name, outcome, message))
    return counts, rows


# --- the report -----------------------------------------------------------------------------------------


def _fmt_rate(value: float | None) -> str:
    return "—" if value is None else (f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}")


def render(
    env: Mapping[str, str],
    results: Sequence[CaseResult],
    tests: tuple[dict[str, int], list[tuple[str, str, str]]],
    server_note: str,
    seconds: float,
    concurrency: int,
    elapsed: float,
) -> str:
    gpu = any(r.status == "ok" and r.case.device.startswith("cuda") for r in results)
    lines = ["# GPU check results", ""]
    if not gpu:
        lines += [
            "> **No GPU engine ran in this run.** This file records a run of `scripts/gpu_check.sh` on a host",
            "> without a usable GPU (see *could not run* below); only the CPU engines were measured. Rerun the",
            "> script on a GPU host to replace it with real results.",
            "",
        ]
    lines += [
        f"Written by `scripts/gpu_check.sh` (`python -m bench.gpu`) in {elapsed:.0f} s.",
        "",
        "## Environment",
        "",
    ]
    lines += ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in env.items()] + [""]
    counts, rows = tests
    lines += ["## GPU tests (`pytest -m gpu tests/gpu`)", ""]
    if not rows:
        lines += ["Not run (no junit report was given).", ""]
    else:
        lines += [", ".join(f"{v} {k}" for k, v in counts.items() if v) + ".", "", "| test | outcome | detail |"]
        lines += ["| --- | --- | --- |"] + [f"| `{n}` | {o} | {m.replace('|', '/')} |" for n, o, m in rows] + [""]
    ran = [r for r in results if r.status == "ok"]
    lines += [
        "## Parity against ONNX Runtime on CPU",
        "",
        "Max absolute error per batch size on seeded random inputs; *ok* means within the tolerance the fallback",
        "chain would apply for the engine's precision (`engines/parity.py`).",
        "",
        "| engine / model | precision | " + " | ".join(f"batch {b}" for b in BATCHES) + " | within tolerance |",
        "| --- | --- | " + " | ".join("---" for _ in BATCHES) + " | --- |",
    ]
    for r in ran:
        errors = " | ".join(f"{r.parity[b]:.2e}" if b in r.parity else "—" for b in BATCHES)
        verdict = "reference" if r.parity_ok is None else ("ok" if r.parity_ok else "**no**")
        tol = f" (atol {r.tolerance[0]:g}, rtol {r.tolerance[1]:g})" if r.parity_ok is not None else ""
        lines.append(f"| {r.case.label} | {r.precision} | {errors} | {verdict}{tol} |")
    lines += [
        "",
        "## Throughput (rows/s)",
        "",
        f"In-process: one `engine.infer` call at a time for {seconds:g} s per batch size. Through the server: "
        f"{concurrency} concurrent SDK clients (gRPC on 127.0.0.1, dynamic batching off) for {seconds:g} s; the ratio "
        "is served ÷ in-process.",
        "",
        "| engine / model | load s | " + " | ".join(f"b{b} in-proc | b{b} served | ratio" for b in BATCHES) + " |",
        "| --- | --- | " + " | ".join("--- | --- | ---" for _ in BATCHES) + " |",
    ]
    for r in ran:
        cells = []
        for b in BATCHES:
            inproc, served = r.inprocess.get(b), r.served.get(b)
            ratio = f"{served / inproc:.2f}" if inproc and served else "—"
            cells.append(f"{_fmt_rate(inproc)} | {_fmt_rate(served)} | {ratio}")
        lines.append(f"| {r.case.label} | {r.load_seconds:.1f} | " + " | ".join(cells) + " |")
    speedups = _speedups(ran)
    if speedups:
        lines += ["", "## Speed-ups (in-process rows/s at the largest batch measured)", "", *speedups]
    notes = [(r.case.label, n) for r in ran for n in r.notes]
    if notes:
        lines += ["", "## Engine notes", ""] + [f"- {label}: {note}" for label, note in notes]
    missing = [r for r in results if r.status != "ok"] + [r for r in ran if r.server_error]
    lines += ["", "## Could not run", ""]
    if server_note:
        lines.append(f"- through the server: {server_note}")
    if not missing and not server_note:
        lines.append("Everything ran.")
    for r in missing:
        why = r.reason if r.status != "ok" else f"through the server: {r.server_error}"
        lines.append(f"- {r.case.label} ({r.status if r.status != 'ok' else 'served'}): {why}")
    return "\n".join(lines) + "\n"


def _speedups(ran: Sequence[CaseResult]) -> list[str]:
    by_label = {r.case.label: r for r in ran}
    out = []
    for model in ("mlp_ranker", "text_encoder"):
        for fast, slow in (
            ("tensorrt-fp16", "torch-cuda"),
            ("tensorrt-fp32", "torch-cuda"),
            ("tensorrt-fp16", "onnxruntime-cuda"),
            ("torch-cuda", "torch-cpu"),
            ("onnxruntime-cuda", "onnxruntime-cpu"),
        ):
            a, b = by_label.get(f"{fast}/{model}"), by_label.get(f"{slow}/{model}")
            if a and b:
                common = sorted(set(a.inprocess) & set(b.inprocess))
                if common:
                    batch = common[-1]
                    out.append(
                        f"- {model}: {fast} / {slow} = {a.inprocess[batch] / b.inprocess[batch]:.2f}× at batch {batch}"
                    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "gpu-results.md")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--junit", type=Path, help="the GPU tests' junit XML, summarised in the report")
    parser.add_argument("--seconds", type=float, default=0.4, help="measuring time per point (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients through the server (default %(default)s)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    env = environment()
    print("environment:", json.dumps(env, indent=1), flush=True)
    results: list[CaseResult] = []
    server_note = ""
    with tempfile.TemporaryDirectory(prefix="inferd-gpu-") as tmp:
        root, cache = Path(tmp), Path(tmp) / "trt-cache"
        build_models(root)
        references: dict[str, Any] = {}
        engines: list[Any] = []
        for case in cases():
            print(f"{case.label}: ", end="", flush=True)
            result, engine = run_inprocess(case, root, cache, references, args.seconds)
            if engine is not None:
                engines.append(engine)
                if case.label.startswith("onnxruntime-cpu/"):
                    references[case.model] = engine
            print(result.status, result.reason or {b: round(v) for b, v in result.inprocess.items()}, flush=True)
            results.append(result)
        for engine in engines:
            try:
                engine.close()
            except Exception:
                traceback.print_exc()
        repo, names = server_repository(root, results, cache)
        print(f"through the server: {sorted(names)}", flush=True)
        server_note = serve_and_measure(repo, names, results, args.seconds, args.concurrency)
    elapsed = time.perf_counter() - started
    tests = read_junit(args.junit)
    text = render(env, results, tests, server_note, args.seconds, args.concurrency, elapsed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"environment": env, "results": [dataclasses.asdict(r) for r in results], "seconds": elapsed},
                indent=1,
                default=str,
            )
        )
    print(f"wrote {args.output} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
