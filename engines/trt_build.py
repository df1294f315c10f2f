"""ONNX → TensorRT plan: the build itself, its progress display, and the TensorRT import check.

:func:`build_plan` drives the TensorRT 10 Python API (``OnnxParser``, ``IBuilderConfig``, timing cache,
``IProgressMonitor``, INT8 calibration) and writes ``model.plan`` plus ``model.plan.json``. It imports
``tensorrt`` lazily; where it is missing it raises :class:`TensorRTMissing` with an install hint.
The decisions it takes are pure functions in their own modules, unit-tested without a GPU:
optimisation profiles in ``engines/trt_profiles.py``, precision flags and calibration data in
``engines/trt_precision.py``; :func:`progress_line` (the progress display) is here.

**Unverified on hardware in this repository**: no GPU was available while it was written, so
:func:`build_plan` and the calibrator have never run; the pure functions are tested.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import BackendUnavailable, EngineError
from engines.plan_meta import OptimizationProfile, PlanMetadata, detect_gpu, file_sha256, utc_now, write_metadata
from engines.trt_precision import entropy_calibrator, precision_flags
from engines.trt_profiles import merge_dims, profiles_from_parameters

INSTALL_HINT = (
    "TensorRT is not installed here. On a host with an NVIDIA GPU and driver: "
    "pip install tensorrt (the wheel matching your CUDA major version, e.g. tensorrt-cu12), "
    "or run inside the nvcr.io/nvidia/tensorrt container; see "
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html. "
    "Until then list onnxruntime after tensorrt in engine_preference and model.onnx is served as it is."
)


class TensorRTMissing(BackendUnavailable):
    """``import tensorrt`` failed; the message carries the install hint."""


class BuildError(EngineError):
    """TensorRT could not parse the ONNX model or build the plan."""


# --- progress -----------------------------------------------------------------------------------------


def progress_line(elapsed: float, phase: str, step: int | None = None, steps: int | None = None) -> str:
    """``[  12.3s] Building engine 3/10``: one line of the build's progress display."""
    where = f" {step}/{steps}" if step is not None and steps else ""
    return f"[{elapsed:7.1f}s] {phase}{where}"


# --- the build (TensorRT; unverified here) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildOptions:
    precision: str = "fp16"
    workspace_mb: int = 0  # 0 = TensorRT's default (the device's memory)
    timing_cache: Path | None = None
    calibration: Sequence[dict[str, np.ndarray]] = ()
    calibration_cache: Path | None = None
    max_batch_size: int = 0
    config_dims: Mapping[str, Sequence[int]] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    preferred_batch_sizes: Sequence[int] = ()
    device_index: int = 0
    #: Profiles decided beforehand (the plan cache keys on them); None = derive from the network.
    profiles: Sequence[OptimizationProfile] | None = None


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTMissing(f"{INSTALL_HINT} ({exc})") from None
    except Exception as exc:  # present but broken: missing CUDA libraries, wrong driver
        raise TensorRTMissing(f"the 'tensorrt' package is installed but does not import: {exc}") from None
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < 10:
        raise BuildError(
            f"inferd needs TensorRT 10 or newer (name-based I/O, execute_async_v3); found {tensorrt.__version__}"
        )
    return tensorrt


def _network_inputs(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]


def _has_qdq(trt: Any, network: Any) -> bool:
    kinds = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def _progress_monitor(trt: Any, report: Callable[[str], None], started: float) -> Any | None:
    """A ``tensorrt.IProgressMonitor`` printing phases and steps with elapsed time (TensorRT 10+)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()  # TensorRT's Python API needs the base initialised explicitly
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            report(progress_line(time.monotonic() - started, phase_name, 0, num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            report(progress_line(time.monotonic() - started, phase_name, step + 1, self._steps.get(phase_name)))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            report(progress_line(time.monotonic() - started, f"{phase_name} done"))

    return Monitor()


class _Heartbeat:
    """Prints elapsed time every few seconds where TensorRT has no IProgressMonitor."""

    def __init__(self, report: Callable[[str], None], started: float, every: float = 5.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(report, started, every), daemon=True)

    def _run(self, report: Callable[[str], None], started: float, every: float) -> None:
        while not self._stop.wait(every):
            report(progress_line(time.monotonic() - started, "building"))

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1)


def build_plan(
    onnx_path: Path, output: Path, options: BuildOptions, report: Callable[[str], None] = print
) -> PlanMetadata:
    """Parse ``onnx_path``, build a plan for this GPU, write ``output`` and ``output.json``; return the metadata."""
    trt = import_tensorrt()
    gpu = detect_gpu(options.device_index)
    if gpu is None:
        raise BuildError(f"no NVIDIA GPU {options.device_index} is visible (torch.cuda / NVML found none)")
    started = time.monotonic()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    report(progress_line(0.0, f"parsing {onnx_path}"))
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors or 'no detail'}")
    inputs = [(name, merge_dims(dims, options.config_dims.get(name))) for name, dims in _network_inputs(network)]
    if options.profiles is not None:
        profiles = list(options.profiles)
        missing = sorted({name for name, _ in inputs} - {name for name, _ in profiles[0].shapes}) if profiles else []
        if not profiles or missing:
            raise BuildError(f"the optimisation profiles give no shape range for network inputs {missing}")
    else:
        profiles = profiles_from_parameters(
            inputs, options.max_batch_size, options.parameters, options.preferred_batch_sizes
        )
    plan = precision_flags(
        options.precision, gpu, has_calibration=bool(options.calibration), has_qdq=_has_qdq(trt, network)
    )
    for note in plan.notes:
        report(f"note: {note}")
    config = builder.create_builder_config()
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if options.workspace_mb > 0:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    trt_profiles = []
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for name, shape_range in profile.shapes:
            trt_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
        config.add_optimization_profile(trt_profile)
        trt_profiles.append(trt_profile)
    if plan.needs_calibrator:
        config.int8_calibrator = entropy_calibrator(trt, options.calibration, options.calibration_cache, gpu.index)
        config.set_calibration_profile(trt_profiles[0])
    monitor = _progress_monitor(trt, report, started)
    if monitor is not None:
        config.progress_monitor = monitor
    report(progress_line(time.monotonic() - started, f"building {plan.precision} plan for {gpu.name}"))
    with _Heartbeat(report, started) if monitor is None else contextlib.nullcontext():
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("TensorRT could not build the plan (its log above says why)")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + f".tmp{os.getpid()}")
    with partial.open("wb") as handle:
        handle.write(memoryview(serialized))
    os.replace(partial, output)
    if options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        options.timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    meta = PlanMetadata(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        onnx_sha256=file_sha256(onnx_path),
        precision=plan.precision,
        profiles=tuple(profiles),
        build_seconds=round(time.monotonic() - started, 3),
        workspace_mb=options.workspace_mb,
        plan_sha256=file_sha256(output),
        built_at=utc_now(),
        builder_flags=plan.flags,
        notes=plan.notes,
    )
    write_metadata(output, meta)
    report(progress_line(meta.build_seconds, f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)"))
    return meta
