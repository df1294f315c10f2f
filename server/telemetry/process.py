"""Process and device gauges, as OpenTelemetry observable instruments read at collection time.

Resident memory and CPU time come from the OS (``/proc/self/statm`` on Linux, ``resource`` elsewhere).
GPU memory and utilisation come from NVML (``pynvml``, the ``nvidia-ml-py`` package) and exist only where
it is installed and finds a device; nothing here can be checked on a machine without an NVIDIA GPU, and
the tests on such machines only check that the GPU gauges are absent rather than wrong.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

log = logging.getLogger("inferd.telemetry")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process' resident set size now (Linux), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _rss(_options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(resident_bytes())


def _cpu(_options: CallbackOptions) -> Iterable[Observation]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    yield Observation(usage.ru_utime + usage.ru_stime)


class _Nvml:
    """NVML handles, opened once; None of the callbacks yields anything where NVML is absent."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception:  # no package, no driver, no device: no GPU gauges
            self._handles = []

    def memory(self, field: str) -> Iterable[Observation]:
        for index, handle in enumerate(self._handles):
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                log.debug("NVML memory of device %d: %s", index, exc)
                continue
            yield Observation(int(getattr(info, field)), {"device": str(index)})

    def utilisation(self, _options: CallbackOptions) -> Iterable[Observation]:
        for index, handle in enumerate(self._handles):
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            except Exception as exc:
                log.debug("NVML utilisation of device %d: %s", index, exc)
                continue
            yield Observation(rates.gpu / 100.0, {"device": str(index)})

    @property
    def present(self) -> bool:
        return bool(self._handles)


def register_process_gauges(meter: Meter) -> None:
    """``process_resident_memory_bytes``, ``process_cpu_seconds_total`` and, with NVML, per-device GPU gauges."""
    meter.create_observable_gauge("process_resident_memory", [_rss], unit="By", description="resident set size")
    meter.create_observable_counter("process_cpu", [_cpu], unit="s", description="user and system CPU time")
    nvml = _Nvml()
    if not nvml.present:
        return
    meter.create_observable_gauge(
        "inferd_gpu_memory_used", [lambda _o: nvml.memory("used")], unit="By", description="GPU memory in use"
    )
    meter.create_observable_gauge(
        "inferd_gpu_memory_total", [lambda _o: nvml.memory("total")], unit="By", description="GPU memory"
    )
    meter.create_observable_gauge(
        "inferd_gpu_utilization_ratio", [nvml.utilisation], description="share of time a kernel ran (NVML)"
    )
