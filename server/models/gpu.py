"""GPU memory: what each device has free, and whether a model fits the configured budget.

Memory is read through NVML (``pynvml``, from the ``nvidia-ml-py`` package) when it is installed: it
makes no CUDA context and sees every process's allocations. Otherwise through ``torch.cuda.mem_get_info``,
but only where torch is already imported and CUDA already initialised (or ``allow_init`` asks for it,
as a load onto a GPU does anyway), because initialising CUDA costs hundreds of MiB of GPU memory per
device. Without either, there is nothing to report and no budget to enforce.

The budget (``--gpu-memory-fraction`` or the ``gpu_memory_fraction`` parameter, default 0.9): a model
may load onto a GPU only while ``used + estimate <= fraction × total``. The estimate is the artefact's
size × ``gpu_memory_factor`` (default 2.0: weights plus activations and workspace for typical models),
or exactly ``gpu_memory_mb`` when the model says. A model over budget is refused with the arithmetic in
the reason, and the fallback chain moves on (e.g. to onnxruntime on CPU) instead of the process dying
of an out-of-memory error halfway through a load.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import EngineError, LoadSpec
from engines.plan_meta import cuda_index

_MiB = 1024 * 1024
DEFAULT_FRACTION = 0.9
DEFAULT_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: str = ""
    source: str = ""

    @property
    def used_bytes(self) -> int:
        return max(0, self.total_bytes - self.free_bytes)


def _nvml_devices() -> list[DeviceMemory] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver
        return None
    try:
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability = f"{major}.{minor}"
            except Exception:
                capability = ""
            out.append(
                DeviceMemory(
                    index,
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(info.total),
                    int(info.free),
                    capability,
                    "nvml",
                )
            )
        return out
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _torch_devices(allow_init: bool) -> list[DeviceMemory] | None:
    torch: Any = sys.modules.get("torch")
    if torch is None:
        if not allow_init:
            return None
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            return None
    try:
        if not torch.cuda.is_available() or not (allow_init or torch.cuda.is_initialized()):
            return None
        out = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            props = torch.cuda.get_device_properties(index)
            out.append(DeviceMemory(index, props.name, int(total), int(free), f"{props.major}.{props.minor}", "torch"))
        return out
    except Exception:
        return None


def query_devices(allow_init: bool = False) -> list[DeviceMemory]:
    """Free/used memory per GPU; empty where there is no GPU or no way to ask (see the module docstring)."""
    found = _nvml_devices()
    if found is None:
        found = _torch_devices(allow_init)
    return found or []


def device_memory(index: int, allow_init: bool = True) -> DeviceMemory | None:
    return next((d for d in query_devices(allow_init) if d.index == index), None)


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    fraction: float = DEFAULT_FRACTION
    factor: float = DEFAULT_FACTOR
    explicit_bytes: int | None = None


def _float(parameters: Mapping[str, str], key: str, default: float) -> float:
    raw = parameters.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise EngineError(f"parameter '{key}' must be a number, got '{raw}'") from None


def memory_budget(parameters: Mapping[str, str]) -> MemoryBudget:
    fraction = _float(parameters, "gpu_memory_fraction", DEFAULT_FRACTION)
    if not 0 < fraction <= 1:
        raise EngineError(f"gpu_memory_fraction must be in (0, 1], got {fraction}")
    factor = _float(parameters, "gpu_memory_factor", DEFAULT_FACTOR)
    if factor <= 0:
        raise EngineError(f"gpu_memory_factor must be > 0, got {factor}")
    explicit = _float(parameters, "gpu_memory_mb", 0.0)
    return MemoryBudget(fraction, factor, int(explicit * _MiB) if explicit > 0 else None)


def estimate_model_bytes(artifact_bytes: int, budget: MemoryBudget) -> int:
    """GPU bytes a model is expected to need: ``gpu_memory_mb`` when given, else artefact size × factor."""
    if budget.explicit_bytes is not None:
        return budget.explicit_bytes
    return int(artifact_bytes * budget.factor)


def memory_refusal(estimate: int, device: DeviceMemory, fraction: float, *, how: str = "") -> str | None:
    """Why a model needing ``estimate`` bytes must not load on ``device`` under ``fraction``, or None."""
    limit = int(device.total_bytes * fraction)
    if device.used_bytes + estimate <= limit:
        return None
    return (
        f"needs about {estimate / _MiB:.0f} MiB of GPU memory{f' ({how})' if how else ''}, but GPU {device.index} "
        f"({device.name}) has {device.used_bytes / _MiB:.0f} MiB of {device.total_bytes / _MiB:.0f} MiB in use and the "
        f"budget is {fraction:.0%} ({limit / _MiB:.0f} MiB); free memory, raise --gpu-memory-fraction / "
        "gpu_memory_fraction, or set gpu_memory_mb if the estimate is wrong"
    )


def admit(spec: LoadSpec) -> str | None:
    """The memory-budget check for a GPU load of ``spec``; None when it fits or nothing can be measured."""
    budget = memory_budget(spec.parameters)
    device = device_memory(cuda_index(spec.device))
    if device is None:
        return None
    size = _artifact_bytes(spec.artifact)
    estimate = estimate_model_bytes(size, budget)
    how = (
        "gpu_memory_mb"
        if budget.explicit_bytes is not None
        else f"{spec.artifact.name} {size / _MiB:.0f} MiB × gpu_memory_factor {budget.factor:g}"
    )
    return memory_refusal(estimate, device, budget.fraction, how=how)


def _artifact_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
