"""How many workers ``--workers auto`` means, and pinning a worker to one CPU (``--pin-workers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    return sorted(os.sched_getaffinity(0))


def visible_gpus(env: Mapping[str, str]) -> int:
    """GPUs a CUDA process would see: CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L``'s lines (0 if absent)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len([line for line in out.splitlines() if line.startswith("GPU ")])


def auto_workers(device: str, cpus: int, gpus: int) -> int:
    """One worker per usable CPU, or one per visible GPU when the models run on CUDA (each process then
    holds its own copy of every model on its GPU); never fewer than one."""
    if device.startswith("cuda") and gpus > 0:
        return gpus
    return max(1, cpus)


def parse_workers(text: str) -> int | str:
    """``--workers``: a positive count or ``auto``."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be a number of worker processes (1 or more) or auto, not {text!r}") from None
    if value < 1:
        raise ValueError(f"must be 1 or more worker processes (or auto), not {value}")
    return value


def pin_cpu(index: int, cpus: list[int]) -> int:
    """The CPU worker ``index`` is pinned to: round-robin over the usable CPUs."""
    return cpus[index % len(cpus)]
