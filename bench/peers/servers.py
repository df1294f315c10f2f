"""How each peer is started: its venv, its model folders (the bench's own model.onnx files), its command.

Every peer serves the OIP v2 gRPC API (``inference.GRPCInferenceService``) on its own port and runs
onnxruntime with one intra-op thread. Served names follow bench/run.py: ``<model>_off`` / ``<model>_on``
(dynamic batching off / on) where the peer has both settings, ``<model>_off`` otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import venvs

HERE = Path(__file__).parent

#: bench model → (example, input name, output name, OIP datatype, features per row, Triton max batch)
BENCH_MODELS = {
    "mlp": ("mlp_ranker", "features", "score", "FP32", 256, 64),
    "encoder": ("text_encoder", "input_ids", "logits", "INT64", 128, 32),
}
TRITON_TYPES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}
OUTPUT_DIMS = {"score": 1, "logits": 8}


@dataclass
class PeerServer:
    """A peer ready to start: ``served`` maps a target label (e.g. ``triton_on``) to
    {bench model → served model name}; ``statistics``: it answers OIP ModelStatistics."""

    name: str
    command: list[str]
    address: str
    served: dict[str, dict[str, str]]
    env: dict[str, str] = field(default_factory=dict)
    statistics: bool = False
    versions: dict[str, str] = field(default_factory=dict)


def _onnx(onnx_repo: Path, model: str) -> Path:
    return onnx_repo / f"{model}_off" / "1" / "model.onnx"


def triton(onnx_repo: Path, work: Path, port: int, models: tuple[str, ...] = tuple(BENCH_MODELS)) -> PeerServer:
    """tritonserver from the nvidia-pytriton wheel, Python backend, one model.py per model (onnxruntime)."""
    py = venvs.ensure("triton")
    site = next((venvs.venv_dir("triton") / "lib").glob("python3*/site-packages"))
    dist = site / "pytriton" / "tritonserver"
    server = work / "triton" / "server"
    shutil.rmtree(work / "triton", ignore_errors=True)
    shutil.copytree(dist, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = py.resolve().name.removeprefix("python") if py.resolve().name.startswith("python3.") else "3.11"
    stubs = sorted((dist / "python_backend_stubs").iterdir())
    stub = next((s for s in stubs if s.name == version), stubs[-1]) / "triton_python_backend_stub"
    shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
    repo = work / "triton" / "repo"
    served: dict[str, dict[str, str]] = {"triton_off": {}, "triton_on": {}}
    for model in models:
        _ex, input_name, output, dtype, width, max_batch = BENCH_MODELS[model]
        for setting in ("off", "on"):
            name = f"{model}_{setting}"
            (repo / name / "1").mkdir(parents=True)
            shutil.copy(_onnx(onnx_repo, model), repo / name / "1" / "model.onnx")
            shutil.copy(HERE / "triton_model.py", repo / name / "1" / "model.py")
            config = [
                f'name: "{name}"',
                'backend: "python"',
                f"max_batch_size: {max_batch}",
                f'input [ {{ name: "{input_name}" data_type: {TRITON_TYPES[dtype]} dims: [ {width} ] }} ]',
                f'output [ {{ name: "{output}" data_type: TYPE_FP32 dims: [ {OUTPUT_DIMS[output]} ] }} ]',
                "instance_group [ { count: 1 kind: KIND_CPU } ]",
            ]
            if setting == "on":
                config.append("dynamic_batching { }")
            (repo / name / "config.pbtxt").write_text("\n".join(config) + "\n")
            served[f"triton_{setting}"][model] = name
    libs = site / "nvidia_pytriton.libs"
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": ":".join(p for p in (os.environ.get("LD_LIBRARY_PATH", ""), str(libs)) if p),
        "PATH": f"{py.parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(site),
        "OMP_NUM_THREADS": "1",
    }
    command = [str(server / "bin" / "tritonserver"), "--model-repository", str(repo)]
    command += ["--backend-directory", str(server / "backends"), "--grpc-port", str(port)]
    command += ["--grpc-address", "127.0.0.1", "--model-load-thread-count", "1"]  # parallel stub starts can crash it
    command += ["--allow-http", "false", "--allow-metrics", "false", "--log-verbose", "0", "--strict-readiness", "true"]
    versions = venvs.installed_versions("triton", ("nvidia-pytriton", "onnxruntime"))
    return PeerServer("triton", command, f"127.0.0.1:{port}", served, env, statistics=True, versions=versions)


def kserve(onnx_repo: Path, work: Path, port: int, models: tuple[str, ...] = tuple(BENCH_MODELS)) -> PeerServer:
    """KServe ModelServer (gRPC OIP port; its HTTP port on port+1000) with bench/peers/kserve_server.py."""
    py = venvs.ensure("kserve")
    args = [str(py), str(HERE / "kserve_server.py"), "--grpc_port", str(port), "--http_port", str(port + 1000)]
    args += ["--workers", "1"]
    for model in models:
        args += ["--model", f"{model}_off={_onnx(onnx_repo, model).resolve()}"]
    served = {"kserve": {model: f"{model}_off" for model in models}}
    versions = venvs.installed_versions("kserve", ("kserve", "onnxruntime"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return PeerServer("kserve", args, f"127.0.0.1:{port}", served, env, versions=versions)


def mlserver(onnx_repo: Path, work: Path, port: int, models: tuple[str, ...] = tuple(BENCH_MODELS)) -> PeerServer:
    """MLServer (gRPC port; HTTP and metrics on port+1000/+1001), custom runtime bench/peers/mlserver_runtime.py,
    inference in the server process (parallel_workers 0: no extra process hop for a 1-thread model)."""
    py = venvs.ensure("mlserver")
    root = work / "mlserver"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copy(HERE / "mlserver_runtime.py", root / "peer_runtime.py")
    settings = {
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": port + 1000,
        "metrics_port": port + 1001,
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    for model in models:
        folder = root / f"{model}_off"
        folder.mkdir()
        shutil.copy(_onnx(onnx_repo, model), folder / "model.onnx")
        model_settings = {
            "name": f"{model}_off",
            "implementation": "peer_runtime.OnnxRuntimeModel",
            "parameters": {"uri": "./model.onnx"},
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
    served = {"mlserver": {model: f"{model}_off" for model in models}}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root.resolve())}
    command = [str(py.parent / "mlserver"), "start", str(root)]
    versions = venvs.installed_versions("mlserver", ("mlserver", "onnxruntime"))
    return PeerServer("mlserver", command, f"127.0.0.1:{port}", served, env, versions=versions)


PEERS = {"triton": triton, "kserve": kserve, "mlserver": mlserver}
