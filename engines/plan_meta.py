"""TensorRT plan metadata: what a plan was built for, whether it fits this host, and its cache key.

A serialised TensorRT plan only runs on the GPU model and TensorRT version that built it; loading a
foreign plan fails deep inside TensorRT, or worse, runs with tactics tuned for another chip. So every
plan that ``inferd build`` writes gets a JSON file beside it (``model.plan.json``) naming the TensorRT
version, the GPU and its compute capability, the sha256 of the ONNX it came from, the optimisation
profiles and the precision. The engine reads it before deserialising and refuses a mismatch with a
reason a person can act on.

Everything here is pure (no tensorrt, no CUDA) except :func:`detect_gpu`, which imports torch or
pynvml lazily and returns ``None`` on hosts without an NVIDIA GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Bumped when the metadata layout changes incompatibly.
METADATA_FORMAT = 1
METADATA_SUFFIX = ".json"


class PlanMetadataError(ValueError):
    """A metadata file that cannot be read or is not inferd plan metadata."""


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """One GPU as a plan cares about it: its marketing name and SM version."""

    name: str
    major: int
    minor: int
    index: int = 0
    total_bytes: int = 0

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)


@dataclass(frozen=True, slots=True)
class ShapeRange:
    """One input's shape range in an optimisation profile (TensorRT's min/opt/max)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OptimizationProfile:
    """Shape ranges for every input of the network, in input order."""

    shapes: tuple[tuple[str, ShapeRange], ...]

    def range_of(self, name: str) -> ShapeRange | None:
        return next((r for n, r in self.shapes if n == name), None)

    def batch_range(self) -> tuple[int, int]:
        """(min, max) of the first dimension of the first input: the batch range for batched models."""
        first = self.shapes[0][1]
        return (first.min[0], first.max[0]) if first.min else (1, 1)

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for n, r in self.shapes}

    @staticmethod
    def from_json(data: Mapping[str, Mapping[str, Sequence[int]]]) -> OptimizationProfile:
        return OptimizationProfile(
            tuple((name, ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))) for name, r in data.items())
        )


@dataclass(frozen=True, slots=True)
class PlanMetadata:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx_sha256: str
    precision: str
    profiles: tuple[OptimizationProfile, ...]
    build_seconds: float = 0.0
    workspace_mb: int = 0
    plan_sha256: str = ""
    built_at: str = ""
    builder_flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    format: int = METADATA_FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [p.to_json() for p in self.profiles]
        data["builder_flags"] = list(self.builder_flags)
        data["notes"] = list(self.notes)
        data["extra"] = dict(self.extra)
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PlanMetadata:
        try:
            if int(data.get("format", 0)) != METADATA_FORMAT:
                raise PlanMetadataError(f"metadata format {data.get('format')} is not {METADATA_FORMAT}")
            return PlanMetadata(
                tensorrt_version=str(data["tensorrt_version"]),
                gpu_name=str(data["gpu_name"]),
                compute_capability=str(data["compute_capability"]),
                onnx_sha256=str(data["onnx_sha256"]),
                precision=str(data["precision"]),
                profiles=tuple(OptimizationProfile.from_json(p) for p in data.get("profiles", ())),
                build_seconds=float(data.get("build_seconds", 0.0)),
                workspace_mb=int(data.get("workspace_mb", 0)),
                plan_sha256=str(data.get("plan_sha256", "")),
                built_at=str(data.get("built_at", "")),
                builder_flags=tuple(data.get("builder_flags", ())),
                notes=tuple(data.get("notes", ())),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PlanMetadataError):
                raise
            raise PlanMetadataError(f"not inferd plan metadata: {type(exc).__name__}: {exc}") from None


def metadata_path(plan: Path) -> Path:
    """``model.plan`` → ``model.plan.json``."""
    return plan.with_name(plan.name + METADATA_SUFFIX)


def write_metadata(plan: Path, meta: PlanMetadata) -> Path:
    path = metadata_path(plan)
    partial = path.with_name(path.name + f".tmp{os.getpid()}")
    partial.write_text(json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    return path


def read_metadata(plan: Path) -> PlanMetadata | None:
    """The plan's metadata, or None when it has none; a broken file raises PlanMetadataError."""
    path = metadata_path(plan)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanMetadataError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise PlanMetadataError(f"{path.name} is not a JSON object")
    return PlanMetadata.from_json(data)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _release(version: str) -> tuple[int, ...]:
    """'10.3.0.26' → (10, 3, 0): TensorRT plans are tied to major.minor.patch."""
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _same_gpu_name(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def plan_incompatibility(
    meta: PlanMetadata, gpu: GpuIdentity, tensorrt_version: str, *, strict_gpu_name: bool = True
) -> str | None:
    """Why a plan built as ``meta`` says must not run here, or None when it may.

    A different TensorRT release (major.minor.patch) or compute capability is always refused: TensorRT
    would reject the plan or pick tactics for another chip. A different GPU name with the same compute
    capability (an H100 PCIe plan on an H100 SXM) deserialises, but its tactics were timed on the other
    card, so it is refused too unless ``strict_gpu_name`` is off.
    """
    if _release(meta.tensorrt_version) != _release(tensorrt_version):
        return (
            f"the plan was built with TensorRT {meta.tensorrt_version} but this server has TensorRT "
            f"{tensorrt_version}; plans only load on the TensorRT release that built them"
        )
    if meta.compute_capability != gpu.compute_capability:
        return (
            f"the plan was built for compute capability {meta.compute_capability} ({meta.gpu_name}) but GPU "
            f"{gpu.index} is {gpu.name} with compute capability {gpu.compute_capability}"
        )
    if strict_gpu_name and not _same_gpu_name(meta.gpu_name, gpu.name):
        return (
            f"the plan was built on a {meta.gpu_name} but GPU {gpu.index} is a {gpu.name} (same compute capability "
            f'{gpu.compute_capability}; set parameter trt_strict_gpu: "false" to accept it)'
        )
    return None


def plan_cache_key(
    onnx_sha256: str,
    gpu: GpuIdentity,
    tensorrt_version: str,
    precision: str,
    profiles: Sequence[OptimizationProfile],
) -> str:
    """A stable key for a built plan: everything that makes two builds differ, hashed.

    The GPU enters by name and compute capability (not by index or memory), TensorRT by major.minor.patch,
    profiles by their exact shapes in order.
    """
    material = {
        "format": METADATA_FORMAT,
        "onnx_sha256": onnx_sha256,
        "gpu": " ".join(gpu.name.lower().split()),
        "compute_capability": gpu.compute_capability,
        "tensorrt": ".".join(str(p) for p in _release(tensorrt_version)),
        "precision": precision,
        "profiles": [p.to_json() for p in profiles],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cuda_index(device: str) -> int:
    """'cuda:1' → 1; 'cuda' or anything else → 0 (TensorRT runs on a GPU whatever --device says)."""
    kind, _, index = device.partition(":")
    if kind == "cuda" and index.isdigit():
        return int(index)
    return 0


def detect_gpu(index: int = 0) -> GpuIdentity | None:
    """Name and compute capability of GPU ``index`` through torch or pynvml; None without one."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(index)
            return GpuIdentity(props.name, props.major, props.minor, index, int(props.total_memory))
    except Exception:  # torch missing or broken CUDA: try NVML
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        finally:
            pynvml.nvmlShutdown()
        return GpuIdentity(
            name.decode() if isinstance(name, bytes) else str(name), int(major), int(minor), index, total
        )
    except Exception:
        return None
