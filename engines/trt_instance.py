"""One TensorRT engine instance (execution context, CUDA stream, buffers, CUDA graphs) and batch buckets.

Kept apart from ``engines/trt.py``, which loads the plan and runs batches on a pool of these. Each of a
version's ``instance_count`` instances owns one execution context, one CUDA stream, device buffers
sized for the largest optimisation profile (flat torch CUDA tensors whose addresses never change, so
``set_tensor_address`` is called once) and pinned host staging buffers. With ``cuda_graphs`` it
captures one CUDA graph per batch bucket on its own context with a fixed shape; those contexts share
one scratch allocation (they never run at once: one stream per instance).

:func:`graph_buckets`, :func:`bucket_for` and :func:`profile_index` are pure and unit-tested without a
GPU; :class:`TrtInstance` is **unverified on hardware** (no GPU was available while it was written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import EngineError

if TYPE_CHECKING:
    from engines.trt import TrtEngine

#: inferd dtype name → torch dtype attribute (BF16 has no numpy type to stage through).
TORCH_DTYPES: dict[str, str] = {
    "FP32": "float32",
    "FP16": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def graph_buckets(max_batch_size: int, ranges: Sequence[tuple[int, int]], requested: str = "") -> list[int]:
    """Batch sizes to capture CUDA graphs for: ``requested`` ("1,8,32") or powers of two plus the max.

    Only sizes some profile can run are kept, so every batch up to the largest bucket finds one.
    """
    if requested.strip():
        try:
            sizes = sorted({int(s) for s in requested.split(",") if s.strip()})
        except ValueError:
            raise EngineError(f"parameter cuda_graph_batches must list integers, got '{requested}'") from None
    else:
        sizes, size = [], 1
        while size < max_batch_size:
            sizes.append(size)
            size *= 2
        sizes.append(max_batch_size)
    runnable = [s for s in sizes if any(lo <= s <= hi for lo, hi in ranges)]
    if not runnable:
        raise EngineError(f"no CUDA graph batch size in {sizes} fits the plan's batch ranges {list(ranges)}")
    return runnable


def bucket_for(rows: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds ``rows``; None when the batch is larger than every bucket."""
    return next((b for b in buckets if b >= rows), None)


def profile_index(ranges: Sequence[tuple[int, int]], rows: int) -> int:
    """Index of the first optimisation profile whose batch range holds ``rows``; -1 when none does."""
    return next((i for i, (lo, hi) in enumerate(ranges) if lo <= rows <= hi), -1)


class TrtInstance:
    """One execution context + CUDA stream + device and pinned host buffers; used by one thread at a time."""

    def __init__(self, owner: TrtEngine) -> None:
        torch = owner.torch
        device = torch.device("cuda", owner.index)
        self.owner = owner
        self.stream = torch.cuda.Stream(device=device)
        self.device: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        self.host_np: dict[str, np.ndarray] = {}
        for name, (dtype, numel) in owner.buffers.items():
            torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
            self.device[name] = torch.empty(max(1, numel), dtype=torch_dtype, device=device)
            self.host[name] = torch.empty(max(1, numel), dtype=torch_dtype, pin_memory=True)
            self.host_np[name] = self.host[name].numpy()
        self.context = owner.engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        self._bind(self.context)
        self.profile = -1
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.graphs: dict[int, tuple[Any, Any]] = {}
        self.scratch: Any = None

    def _bind(self, context: Any) -> None:
        for name, tensor in self.device.items():
            if not context.set_tensor_address(name, int(tensor.data_ptr())):
                raise EngineError(f"TensorRT refused the device address of tensor '{name}'")

    def select(self, profile: int) -> Any:
        """The plain context on ``profile``; switching profiles resets shapes and addresses."""
        if profile != self.profile:
            if not self.context.set_optimization_profile_async(profile, self.stream.cuda_stream):
                raise EngineError(f"TensorRT could not switch to optimisation profile {profile}")
            self.profile = profile
            self.shapes.clear()
            self._bind(self.context)
        return self.context

    def set_shapes(
        self, context: Any, shapes: Mapping[str, tuple[int, ...]], cache: dict[str, tuple[int, ...]]
    ) -> None:
        for name, shape in shapes.items():
            if cache.get(name) != shape:
                if not context.set_input_shape(name, shape):
                    raise EngineError(f"TensorRT refused shape {list(shape)} for input '{name}'")
                cache[name] = shape

    def graph(self, bucket: int, profile: int, shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, Any]:
        """The context and CUDA graph for ``bucket``, captured on first use."""
        found = self.graphs.get(bucket)
        if found is not None:
            return found
        owner, torch, trt = self.owner, self.owner.torch, self.owner.trt
        if self.scratch is None:
            size = int(getattr(owner.engine, "device_memory_size_v2", 0) or owner.engine.device_memory_size)
            self.scratch = torch.empty(max(1, size), dtype=torch.uint8, device=torch.device("cuda", owner.index))
        context = owner.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise EngineError("TensorRT could not create an execution context for a CUDA graph")
        if hasattr(context, "set_device_memory"):
            context.set_device_memory(int(self.scratch.data_ptr()), int(self.scratch.numel()))
        else:
            context.device_memory = int(self.scratch.data_ptr())
        if not context.set_optimization_profile_async(profile, self.stream.cuda_stream):
            raise EngineError(f"TensorRT could not select profile {profile} for the bucket-{bucket} graph")
        self._bind(context)
        self.set_shapes(context, shapes, {})
        # One ordinary enqueue first: TensorRT defers some state updates to the first enqueue after a shape change.
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise EngineError(f"TensorRT failed the warm-up run before capturing the bucket-{bucket} graph")
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            context.execute_async_v3(self.stream.cuda_stream)
        self.graphs[bucket] = (context, graph)
        return context, graph

    def release(self) -> None:
        self.graphs.clear()
        self.context = None
        self.scratch = None
        self.device.clear()
        self.host.clear()
        self.host_np.clear()
