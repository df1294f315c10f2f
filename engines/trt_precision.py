"""TensorRT precision: builder flags for a precision on a GPU, and INT8 calibration data.

:func:`precision_flags` maps a requested precision and the GPU's compute capability to builder flags,
refusing what the GPU cannot do; :func:`load_calibration` turns ``.npy`` files into calibration
batches. Both are pure and unit-tested without a GPU. :func:`entropy_calibrator` wraps those batches
for TensorRT and imports ``torch`` lazily; it is **unverified on hardware** (it has never run here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError
from engines.plan_meta import GpuIdentity

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


class PrecisionError(EngineError):
    """The requested precision is not possible on this GPU or for this model."""


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


def entropy_calibrator(trt: Any, batches: Sequence[Mapping[str, np.ndarray]], cache: Path | None, device: int) -> Any:
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
