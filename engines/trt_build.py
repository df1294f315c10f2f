"""ONNX → TensorRT plan: optimisation profiles, precision flags, and the build itself.

The decisions are pure functions, unit-tested on machines without a GPU:

- :func:`derive_profiles` turns the input dims (config.pbtxt merged over the ONNX graph) and
  ``max_batch_size`` into TensorRT optimisation profiles (min/opt/max per input; several allowed);
- :func:`precision_flags` maps a requested precision and the GPU's compute capability to builder
  flags, refusing what the GPU cannot do;
- :func:`progress_line` formats the build's progress display.

:func:`build_plan` drives the TensorRT 10 Python API (``OnnxParser``, ``IBuilderConfig``, timing cache,
``IProgressMonitor``, INT8 calibration) and writes ``model.plan`` plus ``model.plan.json``. It imports
``tensorrt`` lazily; where it is missing it raises :class:`TensorRTMissing` with an install hint.

**Unverified on hardware in this repository**: no GPU was available while it was written, so
:func:`build_plan` and the calibrator have never run; the pure functions are tested.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import BackendUnavailable, EngineError
from engines.plan_meta import (
    GpuIdentity,
    OptimizationProfile,
    PlanMetadata,
    ShapeRange,
    detect_gpu,
    file_sha256,
    utc_now,
    write_metadata,
)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")

INSTALL_HINT = (
    "TensorRT is not installed here. On a host with an NVIDIA GPU and driver: "
    "pip install tensorrt (the wheel matching your CUDA major version, e.g. tensorrt-cu12), "
    "or run inside the nvcr.io/nvidia/tensorrt container; see "
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html. "
    "Until then list onnxruntime after tensorrt in engine_preference and model.onnx is served as it is."
)


class TensorRTMissing(BackendUnavailable):
    """``import tensorrt`` failed; the message carries the install hint."""


class ProfileError(EngineError):
    """Optimisation profiles cannot be derived from the dims and parameters given."""


class PrecisionError(EngineError):
    """The requested precision is not possible on this GPU or for this model."""


class BuildError(EngineError):
    """TensorRT could not parse the ONNX model or build the plan."""


# --- optimisation profiles ----------------------------------------------------------------------------


def parse_batch_ranges(text: str) -> list[tuple[int, int, int]]:
    """``"1-8,9-64"`` or ``"1:4:8,8:32:64"`` → [(min, opt, max), ...]; ``lo-hi`` optimises for ``hi``."""
    ranges: list[tuple[int, int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if ":" in part:
                lo, opt, hi = (int(x) for x in part.split(":"))
            elif "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                opt = hi
            else:
                lo = opt = hi = int(part)
        except ValueError:
            raise ProfileError(f"batch profile '{part}' must look like MIN-MAX or MIN:OPT:MAX") from None
        ranges.append((lo, opt, hi))
    return ranges


def parse_dim_ranges(text: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """``"input_ids.1=8:64:128, mask.1=8:64:128"`` → {(name, axis): (min, opt, max)}."""
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        name, dot, axis = key.strip().rpartition(".")
        try:
            if not sep or not dot or not name:
                raise ValueError
            lo, opt, hi = (int(x) for x in value.split(":"))
            out[(name, int(axis))] = (lo, opt, hi)
        except ValueError:
            raise ProfileError(f"dynamic dim '{part}' must look like NAME.AXIS=MIN:OPT:MAX") from None
    return out


def merge_dims(model_dims: Sequence[int], config_dims: Sequence[int] | None) -> tuple[int, ...]:
    """A dim fixed in config.pbtxt narrows a dynamic model dim; a dim fixed in the model wins otherwise."""
    if config_dims is None or len(config_dims) != len(model_dims):
        return tuple(int(d) for d in model_dims)
    return tuple(int(m) if m >= 0 else int(c) for m, c in zip(model_dims, config_dims, strict=True))


def derive_profiles(
    inputs: Sequence[tuple[str, Sequence[int]]],
    max_batch_size: int,
    *,
    batch_ranges: Sequence[tuple[int, int, int]] | None = None,
    dim_ranges: Mapping[tuple[str, int], tuple[int, int, int]] | None = None,
    opt_batch: int | None = None,
) -> list[OptimizationProfile]:
    """Optimisation profiles for ``inputs`` ((name, dims) with -1 for dynamic).

    - Batched models (``max_batch_size > 0``): axis 0 of every input is the batch. One profile per
      batch range; by default one range 1..max_batch_size optimised for ``opt_batch`` (else the max).
    - Other dynamic dims need a range in ``dim_ranges`` ((name, axis) → min/opt/max); fixed dims are
      min = opt = max.
    - Unbatched models get exactly one profile.
    """
    if not inputs:
        raise ProfileError("the network has no inputs")
    dim_ranges = dict(dim_ranges or {})
    batched = max_batch_size > 0
    if batched:
        if batch_ranges:
            ranges = list(batch_ranges)
        else:
            opt = opt_batch if opt_batch is not None else max_batch_size
            ranges = [(1, opt, max_batch_size)]
        for lo, opt, hi in ranges:
            if not 1 <= lo <= opt <= hi <= max_batch_size:
                raise ProfileError(
                    f"batch profile {lo}:{opt}:{hi} must satisfy 1 <= min <= opt <= max <= max_batch_size "
                    f"({max_batch_size})"
                )
    else:
        if batch_ranges:
            raise ProfileError("batch profiles need max_batch_size > 0 (the model has no batch dimension)")
        ranges = [(0, 0, 0)]
    known = {name for name, _ in inputs}
    unknown = sorted(f"{n}.{a}" for n, a in dim_ranges if n not in known)
    if unknown:
        raise ProfileError(f"dynamic dims given for inputs the network does not have: {', '.join(unknown)}")
    profiles: list[OptimizationProfile] = []
    for lo, opt, hi in ranges:
        shapes: list[tuple[str, ShapeRange]] = []
        for name, dims in inputs:
            mins: list[int] = []
            opts: list[int] = []
            maxs: list[int] = []
            for axis, dim in enumerate(dims):
                if batched and axis == 0:
                    if dim >= 0 and not (dim == hi == lo):
                        raise ProfileError(
                            f"input '{name}' has its batch dimension fixed at {dim} in the model but "
                            f"max_batch_size is {max_batch_size}: export the ONNX model with a dynamic "
                            "first axis (dynamic_axes / dynamic_shapes)"
                        )
                    mins.append(lo)
                    opts.append(opt)
                    maxs.append(hi)
                elif dim >= 0:
                    mins.append(dim)
                    opts.append(dim)
                    maxs.append(dim)
                else:
                    given = dim_ranges.get((name, axis))
                    if given is None:
                        raise ProfileError(
                            f"input '{name}' axis {axis} is dynamic: give its range with parameter "
                            f"trt_dynamic_dims (or --dynamic-dim) as {name}.{axis}=MIN:OPT:MAX, or fix it in "
                            "config.pbtxt"
                        )
                    dlo, dopt, dhi = given
                    if not 1 <= dlo <= dopt <= dhi:
                        raise ProfileError(f"dynamic dim {name}.{axis}={dlo}:{dopt}:{dhi} needs 1 <= min <= opt <= max")
                    mins.append(dlo)
                    opts.append(dopt)
                    maxs.append(dhi)
            shapes.append((name, ShapeRange(tuple(mins), tuple(opts), tuple(maxs))))
        profiles.append(OptimizationProfile(tuple(shapes)))
    return profiles


def profiles_from_parameters(
    inputs: Sequence[tuple[str, Sequence[int]]],
    max_batch_size: int,
    parameters: Mapping[str, str],
    preferred_batch_sizes: Sequence[int] = (),
) -> list[OptimizationProfile]:
    """The profiles a model's parameters ask for (``trt_profiles``, ``trt_dynamic_dims``, ``trt_opt_batch``)."""
    batch = parse_batch_ranges(parameters.get("trt_profiles", ""))
    dims = parse_dim_ranges(parameters.get("trt_dynamic_dims", ""))
    opt_raw = parameters.get("trt_opt_batch", "")
    try:
        opt = int(opt_raw) if opt_raw else (max(preferred_batch_sizes) if preferred_batch_sizes else None)
    except ValueError:
        raise ProfileError(f"parameter trt_opt_batch must be an integer, got '{opt_raw}'") from None
    return derive_profiles(inputs, max_batch_size, batch_ranges=batch or None, dim_ranges=dims, opt_batch=opt)


# --- precision ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    """Builder flags to set and clear (``tensorrt.BuilderFlag`` member names) and what to tell the user."""

    precision: str
    flags: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()
    needs_calibrator: bool = False
    notes: tuple[str, ...] = ()


def precision_flags(
    precision: str, gpu: GpuIdentity, *, has_calibration: bool = False, has_qdq: bool = False
) -> PrecisionPlan:
    """Builder flags for ``precision`` on ``gpu``; PrecisionError when the GPU or model cannot do it.

    - fp32: strict FP32 (TF32 cleared, so results match a CPU reference closely).
    - tf32: TensorRT's default on Ampere+ (8.0): FP32 storage, TF32 tensor-core math.
    - fp16: needs 5.3+; tensor cores from 7.0 (below that it is rarely faster).
    - bf16: needs Ampere (8.0)+.
    - int8: needs 6.1+, and either calibration data or an ONNX model with Q/DQ nodes; FP16 is allowed
      too (from 7.0) so layers without an INT8 kernel do not fall back to FP32.
    - fp8: needs Ada/Hopper (8.9)+ and an ONNX model with FP8 Q/DQ nodes (TensorRT cannot calibrate FP8).
    """
    precision = precision.lower()
    notes: list[str] = []
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    where = f"{gpu.name} (compute capability {gpu.compute_capability})"
    if has_calibration and precision != "int8":
        notes.append(f"calibration data is only used for int8; ignored for {precision}")
    if precision == "fp32":
        return PrecisionPlan(precision, clear=("TF32",), notes=tuple(notes))
    if precision == "tf32":
        if not gpu.at_least(8, 0):
            raise PrecisionError(f"tf32 needs compute capability 8.0 (Ampere) or newer; {where} has none")
        return PrecisionPlan(precision, flags=("TF32",), notes=tuple(notes))
    if precision == "fp16":
        if not gpu.at_least(5, 3):
            raise PrecisionError(f"fp16 needs compute capability 5.3 or newer; {where} cannot run it")
        if not gpu.at_least(7, 0):
            notes.append(f"{where} has no tensor cores: fp16 may be no faster than fp32")
        return PrecisionPlan(precision, flags=("FP16",), notes=tuple(notes))
    if precision == "bf16":
        if not gpu.at_least(8, 0):
            raise PrecisionError(f"bf16 needs compute capability 8.0 (Ampere) or newer; {where} cannot run it")
        return PrecisionPlan(precision, flags=("BF16",), notes=tuple(notes))
    if precision == "int8":
        if not gpu.at_least(6, 1):
            raise PrecisionError(f"int8 needs compute capability 6.1 or newer; {where} cannot run it")
        if not (has_calibration or has_qdq):
            raise PrecisionError(
                "int8 needs calibration data (--calibration NAME=FILE.npy ...) or an ONNX model with "
                "QuantizeLinear/DequantizeLinear nodes"
            )
        flags = ("INT8", "FP16") if gpu.at_least(7, 0) else ("INT8",)
        if has_qdq and has_calibration:
            notes.append("the model has Q/DQ nodes: its own scales are used and the calibration data is ignored")
        return PrecisionPlan(
            precision, flags=flags, needs_calibrator=has_calibration and not has_qdq, notes=tuple(notes)
        )
    # fp8
    if not gpu.at_least(8, 9):
        raise PrecisionError(f"fp8 needs compute capability 8.9 (Ada) or 9.0 (Hopper) or newer; {where} cannot run it")
    if not has_qdq:
        raise PrecisionError(
            "fp8 needs an ONNX model with FP8 QuantizeLinear/DequantizeLinear nodes (e.g. from NVIDIA TensorRT "
            "Model Optimizer); TensorRT cannot calibrate FP8 itself"
        )
    return PrecisionPlan(precision, flags=("FP8", "FP16"), notes=tuple(notes))


# --- progress -----------------------------------------------------------------------------------------


def progress_line(elapsed: float, phase: str, step: int | None = None, steps: int | None = None) -> str:
    """``[  12.3s] Building engine 3/10``: one line of the build's progress display."""
    where = f" {step}/{steps}" if step is not None and steps else ""
    return f"[{elapsed:7.1f}s] {phase}{where}"


# --- calibration data ---------------------------------------------------------------------------------


def load_calibration(specs: Sequence[str], input_names: Sequence[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    """``NAME=FILE.npy`` (or ``FILE.npy`` for a one-input model) → calibration batches of ``batch_size`` rows.

    Every file of one input is concatenated along the batch axis; all inputs need the same row count.
    """
    if batch_size < 1:
        raise EngineError("calibration batch size must be >= 1")
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(input_names) != 1:
                raise EngineError(
                    f"calibration file '{spec}': the model has inputs {list(input_names)}; write NAME=FILE.npy"
                )
            name, path = input_names[0], spec
        if name not in input_names:
            raise EngineError(f"calibration input '{name}' is not an input of the model ({', '.join(input_names)})")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EngineError(f"calibration file {path} cannot be read: {exc}") from None
        per_input.setdefault(name, []).append(array)
    missing = [n for n in input_names if n not in per_input]
    if missing:
        raise EngineError(f"calibration data is missing for inputs {missing}")
    stacked = {n: np.concatenate(parts, axis=0) for n, parts in per_input.items()}
    rows = {n: a.shape[0] for n, a in stacked.items()}
    if len(set(rows.values())) != 1:
        raise EngineError(f"calibration inputs have different row counts: {rows}")
    total = next(iter(rows.values()))
    # TensorRT's calibrator takes one fixed batch size: a short last batch is dropped (unless it is the only one).
    usable = total - total % batch_size if total >= batch_size else total
    return [
        {n: np.ascontiguousarray(a[start : start + batch_size]) for n, a in stacked.items()}
        for start in range(0, usable, batch_size)
    ]


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


def _calibrator(trt: Any, batches: Sequence[Mapping[str, np.ndarray]], cache: Path | None, device: int) -> Any:
    """An entropy calibrator feeding ``batches`` through torch CUDA buffers (TensorRT's INT8 PTQ)."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()  # TensorRT's Python API needs the base initialised explicitly
            self._batches = list(batches)
            self._next = 0
            self._device = torch.device("cuda", device)
            self._held: list[torch.Tensor] = []

        def get_batch_size(self) -> int:
            return int(next(iter(self._batches[0].values())).shape[0]) if self._batches else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next >= len(self._batches):
                return None
            batch = self._batches[self._next]
            self._next += 1
            self._held = [torch.from_numpy(np.ascontiguousarray(batch[n])).to(self._device) for n in names]
            return [int(t.data_ptr()) for t in self._held]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache is not None and cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                cache.write_bytes(bytes(data))

    return Calibrator()


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
        config.int8_calibrator = _calibrator(trt, options.calibration, options.calibration_cache, gpu.index)
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


def describe_profiles(profiles: Iterable[OptimizationProfile]) -> list[str]:
    """Human-readable profile lines for ``inferd build --show-profiles`` and logs."""
    lines = []
    for index, profile in enumerate(profiles):
        parts = [f"{name} min {list(r.min)} opt {list(r.opt)} max {list(r.max)}" for name, r in profile.shapes]
        lines.append(f"profile {index}: " + "; ".join(parts))
    return lines


def volume(shape: Sequence[int]) -> int:
    return int(math.prod(shape))
