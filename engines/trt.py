"""TensorRT backend (``model.plan``, or ``model.onnx`` with auto-build): plans run on CUDA streams.

**Unverified on hardware in this repository.** It was written against the TensorRT 10 Python API
without a GPU to run it on; the CPU test suite covers what surrounds it (plan metadata and
compatibility, the plan cache, profiles and precision flags, the fallback to the next engine when
``tensorrt`` is missing) but not this module's CUDA path. ``scripts/gpu_check.sh`` exercises it where
a GPU and TensorRT are present. Every heavy import (``tensorrt``, ``torch``) happens inside ``load``.

How it runs a batch:

- The plan is checked against this GPU and TensorRT release (``engines/plan_cache.py``) and
  deserialised once; inputs and outputs are read by name (``num_io_tensors``/``get_tensor_name``, the
  TensorRT 10 API) and checked against config.pbtxt (names, dtypes, ranks, fixed dims).
- Each of the version's ``instance_count`` instances owns one execution context, one CUDA stream,
  device buffers sized for the largest optimisation profile (flat torch CUDA tensors whose addresses
  never change, so ``set_tensor_address`` is called once), and pinned host staging buffers.
  TensorRT 10 lets several contexts share one optimisation profile.
- ``infer`` takes a free instance, copies inputs host → pinned → device asynchronously on its stream,
  selects the profile holding the batch, sets input shapes only when they change, runs
  ``execute_async_v3``, copies outputs back asynchronously and synchronises the stream once.
- ``cuda_graphs: "true"`` captures one CUDA graph per batch bucket (``cuda_graph_batches``, default
  powers of two up to ``max_batch_size``) per instance, each on its own context with a fixed shape;
  those contexts share one scratch allocation (they never run at once: one stream per instance). A
  batch is padded up to its bucket: rows are assumed independent, as dynamic batching assumes anyway.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engines.base import Arrays, BackendUnavailable, EngineError, LoadSpec, TensorSig, bool_parameter, dry_run
from engines.plan_cache import PlanChoice, resolve_plan, trt_settings
from engines.plan_meta import GpuIdentity, OptimizationProfile, PlanMetadata, cuda_index, detect_gpu
from engines.trt_build import BuildOptions, TensorRTMissing, build_plan, import_tensorrt
from engines.trt_instance import TORCH_DTYPES, TrtInstance, bucket_for, graph_buckets, profile_index
from engines.trt_profiles import profiles_from_parameters, volume
from inferd.tensors import numpy_dtype

log = logging.getLogger(__name__)

#: tensorrt.DataType member name → inferd dtype name.
TRT_DTYPES: dict[str, str] = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}


class TrtEngine:
    """A deserialised plan with a pool of instances; see the module docstring (unverified on hardware)."""

    backend = "tensorrt"

    def __init__(
        self,
        spec: LoadSpec,
        trt: Any,
        torch: Any,
        runtime: Any,
        engine: Any,
        index: int,
        choice: PlanChoice,
    ) -> None:
        self.spec = spec
        self.trt = trt
        self.torch = torch
        self.index = index
        self.plan_path = choice.path
        self.meta: PlanMetadata | None = choice.meta
        self.precision = choice.meta.precision if choice.meta else "unknown"
        self.notes: list[str] = list(choice.notes)
        self._runtime = runtime
        self.engine = engine
        self._batched = spec.max_batch_size > 0
        self._inputs = tuple(s.name for s in spec.signature.inputs)
        self._outputs = tuple(s.name for s in spec.signature.outputs)
        io = self._read_io()
        _check_io(spec, io)
        self.ranges = self._profile_ranges()
        self.buffers = self._buffer_sizes(io)
        self.buckets: list[int] = []
        if bool_parameter(spec.parameters, "cuda_graphs"):
            self.buckets = self._graph_buckets()
        self._pool: queue.SimpleQueue[TrtInstance] = queue.SimpleQueue()
        self._instances = [TrtInstance(self) for _ in range(max(1, spec.instances))]
        for instance in self._instances:
            self._pool.put(instance)

    def _read_io(self) -> dict[str, tuple[bool, str, tuple[int, ...]]]:
        trt, engine = self.trt, self.engine
        io: dict[str, tuple[bool, str, tuple[int, ...]]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = TRT_DTYPES.get(engine.get_tensor_dtype(name).name, engine.get_tensor_dtype(name).name)
            io[name] = (is_input, dtype, tuple(engine.get_tensor_shape(name)))
        return io

    def _profile_ranges(self) -> list[tuple[int, int]]:
        """(min, max) batch rows per optimisation profile (from the first input)."""
        count = max(1, int(self.engine.num_optimization_profiles))
        if not self._batched:
            return [(1, 1)] * count
        first = self._inputs[0]
        ranges = []
        for p in range(count):
            lo, _opt, hi = self.engine.get_tensor_profile_shape(first, p)
            ranges.append((int(lo[0]), int(hi[0])))
        return ranges

    def _buffer_sizes(self, io: Mapping[str, tuple[bool, str, tuple[int, ...]]]) -> dict[str, tuple[str, int]]:
        """Elements per tensor at the largest shape any profile allows (outputs via a probe context)."""
        sizes: dict[str, tuple[str, int]] = {}
        probe = self.engine.create_execution_context()
        if probe is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        stream = self.torch.cuda.Stream(device=self.torch.device("cuda", self.index))
        try:
            for p in range(len(self.ranges)):
                probe.set_optimization_profile_async(p, stream.cuda_stream)
                stream.synchronize()
                for name in self._inputs:
                    shape = tuple(io[name][2])
                    if any(d < 0 for d in shape):
                        shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, p)[2])
                    probe.set_input_shape(name, shape)
                    sizes[name] = (io[name][1], max(sizes.get(name, ("", 0))[1], volume(shape)))
                for name in self._outputs:
                    shape = tuple(int(d) for d in probe.get_tensor_shape(name))
                    if any(d < 0 for d in shape):
                        raise EngineError(
                            f"output '{name}' has a data-dependent shape {list(shape)}; the TensorRT engine needs "
                            "output shapes that follow from the input shapes"
                        )
                    sizes[name] = (io[name][1], max(sizes.get(name, ("", 0))[1], volume(shape)))
        finally:
            del probe
        return sizes

    def _graph_buckets(self) -> list[int]:
        if not self._batched:
            self.notes.append("tensorrt: cuda_graphs ignored: the model has no batch dimension")
            return []
        if any(d == -1 for s in self.spec.signature.inputs for d in s.dims[1:]):
            self.notes.append("tensorrt: cuda_graphs ignored: inputs have dynamic non-batch dims")
            return []
        return graph_buckets(self.spec.max_batch_size, self.ranges, self.spec.parameters.get("cuda_graph_batches", ""))

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        if not self._instances:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        instance = self._pool.get()
        try:
            with self.torch.cuda.device(self.index):
                return self._run(instance, inputs)
        finally:
            self._pool.put(instance)

    def _run(self, inst: TrtInstance, inputs: Arrays) -> dict[str, np.ndarray]:
        torch = self.torch
        arrays = {name: np.asarray(inputs[name]) for name in self._inputs}
        rows = int(arrays[self._inputs[0]].shape[0]) if self._batched else 1
        bucket = bucket_for(rows, self.buckets) if self.buckets else None
        run_rows = bucket or rows
        profile = profile_index(self.ranges, run_rows) if self._batched else 0
        if profile < 0:
            raise EngineError(f"a batch of {rows} rows is outside the plan's optimisation profiles {self.ranges}")
        shapes: dict[str, tuple[int, ...]] = {}
        with torch.cuda.stream(inst.stream):
            for name, array in arrays.items():
                size = array.size
                if size > inst.host_np[name].size:
                    raise EngineError(
                        f"input '{name}' of shape {list(array.shape)} is larger than the plan's largest profile allows"
                    )
                np.copyto(inst.host_np[name][:size], array.reshape(-1), casting="no")
                inst.device[name][:size].copy_(inst.host[name][:size], non_blocking=True)
                shapes[name] = (run_rows, *array.shape[1:]) if self._batched else tuple(array.shape)
            if bucket is not None:
                context, graph = inst.graph(bucket, profile, shapes)
                graph.replay()
            else:
                context = inst.select(profile)
                inst.set_shapes(context, shapes, inst.shapes)
                if not context.execute_async_v3(inst.stream.cuda_stream):
                    raise EngineError(f"TensorRT failed to run model {self.spec.model_name} (see the server log)")
            out_shapes: dict[str, tuple[int, ...]] = {}
            for name in self._outputs:
                full = tuple(int(d) for d in context.get_tensor_shape(name))
                shape = (rows, *full[1:]) if self._batched else full
                size = volume(shape)
                inst.host[name][:size].copy_(inst.device[name][:size], non_blocking=True)
                out_shapes[name] = shape
        inst.stream.synchronize()
        return {name: inst.host_np[name][: volume(shape)].reshape(shape).copy() for name, shape in out_shapes.items()}

    def close(self) -> None:
        instances, self._instances = self._instances, []
        for instance in instances:
            instance.release()
        self.engine = None
        self._runtime = None


def _check_io(spec: LoadSpec, io: Mapping[str, tuple[bool, str, tuple[int, ...]]]) -> None:
    """The plan's I/O against config.pbtxt: every declared tensor exists with the same dtype and rank."""
    plan_inputs = {n for n, (is_input, _, _) in io.items() if is_input}
    declared = {s.name for s in spec.signature.inputs}
    if plan_inputs != declared:
        raise EngineError(f"the plan's inputs {sorted(plan_inputs)} differ from config.pbtxt's {sorted(declared)}")

    def check(kind: str, sig: TensorSig) -> None:
        found = io.get(sig.name)
        if found is None or found[0] != (kind == "input"):
            raise EngineError(f"{kind} '{sig.name}' declared in config.pbtxt is not an {kind} of the plan")
        _, dtype, dims = found
        if dtype != sig.dtype:
            raise EngineError(f"{kind} '{sig.name}': config.pbtxt declares {sig.dtype} but the plan has {dtype}")
        if dtype not in TORCH_DTYPES:
            raise EngineError(f"{kind} '{sig.name}' is {dtype}, which the TensorRT engine cannot stage; use FP32/FP16")
        if len(dims) != len(sig.dims) or any(m >= 0 and c >= 0 and m != c for m, c in zip(dims, sig.dims, strict=True)):
            raise EngineError(
                f"{kind} '{sig.name}': config.pbtxt declares {list(sig.dims)} but the plan has {list(dims)}"
            )

    for sig in spec.signature.inputs:
        check("input", sig)
    for sig in spec.signature.outputs:
        check("output", sig)
    for sig in spec.signature.inputs:
        numpy_dtype(sig.dtype)  # BYTES and other unstageable types fail here with the codec's message


def _import_torch_cuda(spec: LoadSpec) -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailable(
            "the TensorRT engine keeps its device buffers in torch CUDA tensors: install torch with CUDA support"
        ) from None
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"model {spec.model_name} v{spec.version}: TensorRT needs an NVIDIA GPU; torch sees none"
        )
    return torch


def load(spec: LoadSpec) -> TrtEngine:
    """Resolve the plan (compatibility check, auto-build into the cache), deserialise it and dry-run it."""
    where = f"model {spec.model_name} v{spec.version}"
    try:
        trt = import_tensorrt()
    except TensorRTMissing as exc:
        raise BackendUnavailable(f"{where}: {exc}") from None
    torch = _import_torch_cuda(spec)
    index = cuda_index(spec.device)
    gpu: GpuIdentity | None = detect_gpu(index)
    if gpu is None:
        raise BackendUnavailable(f"{where}: no NVIDIA GPU {index} is visible")
    settings = trt_settings(spec.parameters)
    config_inputs = [(s.name, s.dims) for s in spec.signature.inputs]

    def profiles() -> list[OptimizationProfile]:
        return profiles_from_parameters(config_inputs, spec.max_batch_size, spec.parameters)

    def build(onnx: Any, output: Any, shapes: Sequence[OptimizationProfile]) -> PlanMetadata:
        options = BuildOptions(
            precision=settings.precision,
            workspace_mb=settings.workspace_mb,
            timing_cache=settings.cache / f"timing-sm{gpu.major}{gpu.minor}-trt{trt.__version__}.cache",
            max_batch_size=spec.max_batch_size,
            config_dims={s.name: s.dims for s in spec.signature.inputs},
            parameters=spec.parameters,
            device_index=index,
            profiles=tuple(shapes),
        )
        log.info("%s: building a TensorRT plan from %s (this can take minutes)", where, onnx)
        return build_plan(onnx, output, options, report=lambda line: log.info("%s: %s", where, line))

    choice = resolve_plan(spec.artifact, gpu, str(trt.__version__), settings, profiles, build)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    with torch.cuda.device(index):
        engine = runtime.deserialize_cuda_engine(choice.path.read_bytes())
        if engine is None:
            raise EngineError(f"{where}: TensorRT could not deserialise {choice.path} (the server log says why)")
        trt_engine = TrtEngine(spec, trt, torch, runtime, engine, index, choice)
    dry_run(trt_engine.infer, spec)
    return trt_engine
