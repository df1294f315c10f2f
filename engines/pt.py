"""PyTorch backend: TorchScript archives (``model.pt``).

Only ``torch.jit.load`` is used. inferd never calls ``torch.load`` on a pickle, because unpickling
runs arbitrary *Python* code from the model file. A TorchScript archive is code too, but TorchScript
code: it runs only TorchScript operators, and the few of those that touch the filesystem
(``torch.from_file``, ``torch.save``) are refused — in the archive's code before it is loaded and in
the loaded graphs (engines/torchscript_guard.py). It can still use as much memory and CPU as it likes;
see docs/engines.md. ``torch.export`` programs (``.pt2``) are not supported on purpose:
``torch.export.load`` falls back to ``torch.load(weights_only=False)`` when its weights-only read
fails, i.e. it may unpickle.

Thread-safety: a TorchScript module with no Python state is safe to call from several threads at
once, and ``infer`` keeps no per-call state of its own. Note that ``intra_op_threads`` sets
``torch.set_num_threads``, which is process-wide: the last torch model loaded decides it for all.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engines.base import (
    Arrays,
    BackendUnavailable,
    EngineError,
    InvalidInput,
    LoadSpec,
    bool_parameter,
    dry_run,
    inside_root,
)
from engines.torchscript_guard import FileAccess, check_archive, check_module


def _device(spec: LoadSpec) -> torch.device:
    try:
        device = torch.device(spec.device or "cpu")
    except RuntimeError as exc:
        raise EngineError(f"model {spec.model_name}: device '{spec.device}' is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"model {spec.model_name} asks for device '{spec.device}' but torch sees no CUDA GPU")
    return device


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """numpy -> torch without the read-only warning: server inputs are often read-only views."""
    if not (array.flags.writeable and array.flags.c_contiguous and array.dtype.isnative):
        array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
    tensor = torch.from_numpy(array)
    return tensor if device.type == "cpu" else tensor.to(device)


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise EngineError(f"output '{name}': the model returned {type(value).__name__}, not a tensor")
    return value.numpy(force=True)


def _check_arity(spec: LoadSpec, module: torch.jit.ScriptModule) -> None:
    """Compare ``forward``'s parameters with the declared inputs (names may differ; the count may not)."""
    try:
        arguments = list(module.forward.schema.arguments)[1:]  # type: ignore[attr-defined]  # drop self
    except AttributeError:  # no schema to read: the dry run still checks the model
        return
    required = [a for a in arguments if not a.has_default_value()]
    declared = [s.name for s in spec.signature.inputs]
    if not len(required) <= len(declared) <= len(arguments):
        params = ", ".join(a.name for a in arguments)
        takes = f"{len(required)}" if len(required) == len(arguments) else f"{len(required)} to {len(arguments)}"
        raise EngineError(
            f"model.pt forward({params}) takes {takes} inputs but "
            f"config.pbtxt declares {len(declared)} ({', '.join(declared)}); "
            "inputs are passed positionally in config order"
        )


def _first_line(exc: Exception, limit: int = 300) -> str:
    """torch's loader errors run to several paragraphs of advice; the first sentence says what failed."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(". ", 1)[0][:limit]


#: ``autocast`` parameter values → torch dtypes.
AUTOCAST_DTYPES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}
#: inferd dtype name → torch dtype attribute, for casting autocast outputs back to the declared dtype.
_DECLARED = {"FP32": "float32", "FP64": "float64", "FP16": "float16"}


@dataclass(frozen=True, slots=True)
class TorchOptions:
    """GPU options of the torch engine; all off by default (see docs/engines.md)."""

    autocast: str = ""  # "", "fp16" or "bf16"
    cuda_graphs: bool = False
    graph_batches: str = ""
    compile: str = ""  # "", or a torch.compile mode ("default", "reduce-overhead", "max-autotune")

    @staticmethod
    def from_parameters(parameters: Mapping[str, str]) -> TorchOptions:
        autocast = parameters.get("autocast", "").strip().lower()
        if autocast in ("", "off", "none", "false", "fp32"):
            autocast = ""
        elif autocast not in AUTOCAST_DTYPES:
            raise EngineError(f"parameter 'autocast' must be fp16, bf16 or off, got '{parameters['autocast']}'")
        compile_mode = parameters.get("torch_compile", "").strip().lower()
        if compile_mode in ("", "off", "none", "false", "0"):
            compile_mode = ""
        elif compile_mode in ("true", "on", "1", "yes"):
            compile_mode = "default"
        return TorchOptions(
            autocast=autocast,
            cuda_graphs=bool_parameter(parameters, "cuda_graphs"),
            graph_batches=parameters.get("cuda_graph_batches", ""),
            compile=compile_mode,
        )

    def for_device(self, device: torch.device) -> tuple[TorchOptions, list[str]]:
        """Autocast and CUDA graphs only apply on CUDA: on CPU they are dropped, each with a note."""
        if device.type == "cuda":
            return self, []
        notes = []
        if self.autocast:
            notes.append(f"torch: autocast {self.autocast} ignored on {device}: it applies on CUDA only")
        if self.cuda_graphs:
            notes.append(f"torch: cuda_graphs ignored on {device}: CUDA graphs need a CUDA device")
        return TorchOptions(compile=self.compile), notes


def _slice_rows(value: Any, rows: int) -> Any:
    """The first ``rows`` rows of every tensor in a tensor / sequence / dict result (graph buckets are padded)."""
    if isinstance(value, torch.Tensor):
        return value[:rows]
    if isinstance(value, Mapping):
        return {k: _slice_rows(v, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_slice_rows(v, rows) for v in value]
    return value


class _CudaGraphs:
    """One CUDA graph per batch bucket, captured on first use; replays are serialised (shared static buffers).

    A batch runs in the smallest bucket that holds it, padded with whatever rows the static inputs held
    last: rows must be independent, as dynamic batching assumes anyway. Unverified on hardware here.
    """

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device, buckets: list[int], autocast: Any) -> None:
        self._module = module
        self._device = device
        self.buckets = buckets
        self._autocast = autocast
        self._lock = threading.Lock()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Any]] = {}

    def bucket_for(self, rows: int) -> int | None:
        return next((b for b in self.buckets if b >= rows), None)

    def _capture(
        self, bucket: int, like: Sequence[torch.Tensor]
    ) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Any]:
        static = [torch.zeros((bucket, *t.shape[1:]), dtype=t.dtype, device=self._device) for t in like]
        side = torch.cuda.Stream(device=self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side), torch.inference_mode(), self._autocast():
            for _ in range(2):  # warm-up on a side stream, as torch.cuda.graphs requires
                self._module(*static)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), self._autocast(), torch.cuda.graph(graph):
            out = self._module(*static)
        return graph, static, out

    def run(self, args: Sequence[torch.Tensor], rows: int, bucket: int, read: Any) -> dict[str, np.ndarray]:
        """Copy ``args`` into the bucket's static inputs, replay, and ``read`` the sliced outputs (under the lock)."""
        with self._lock:
            found = self._graphs.get(bucket)
            if found is None:
                found = self._graphs[bucket] = self._capture(bucket, args)
            graph, static, out = found
            with torch.inference_mode():
                for dst, src in zip(static, args, strict=True):
                    dst[:rows].copy_(src, non_blocking=True)
                graph.replay()
                result: dict[str, np.ndarray] = read(_slice_rows(out, rows))
                return result


class TorchEngine:
    """A TorchScript module; inputs go positionally in signature order, outputs map back by name."""

    backend = "torch"

    def __init__(
        self,
        spec: LoadSpec,
        module: torch.jit.ScriptModule,
        device: torch.device,
        options: TorchOptions | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        self.device = device
        self.options = options or TorchOptions()
        self.notes: list[str] = list(notes)
        self.precision = self.options.autocast or "fp32"
        self._module: torch.jit.ScriptModule | None = module
        self._input_names: tuple[str, ...] = tuple(s.name for s in spec.signature.inputs)
        self._output_names: tuple[str, ...] = tuple(s.name for s in spec.signature.outputs)
        self._cast: dict[str, torch.dtype] = {}
        if self.options.autocast:
            self._cast = {
                s.name: getattr(torch, _DECLARED[s.dtype]) for s in spec.signature.outputs if s.dtype in _DECLARED
            }
        self._graphs: _CudaGraphs | None = None
        if self.options.cuda_graphs:
            self._graphs = self._make_graphs()

    def _autocast(self) -> Any:
        if not self.options.autocast:
            return contextlib.nullcontext()
        return torch.autocast(
            device_type=self.device.type, dtype=getattr(torch, AUTOCAST_DTYPES[self.options.autocast])
        )

    def _make_graphs(self) -> _CudaGraphs | None:
        spec = self.spec
        if spec.max_batch_size <= 0:
            self.notes.append("torch: cuda_graphs ignored: the model has no batch dimension")
            return None
        if any(d == -1 for s in spec.signature.inputs for d in s.dims[1:]):
            self.notes.append("torch: cuda_graphs ignored: inputs have dynamic non-batch dims")
            return None
        raw = self.options.graph_batches
        try:
            sizes = (
                sorted({int(x) for x in raw.split(",") if x.strip()})
                if raw.strip()
                else _powers_of_two(spec.max_batch_size)
            )
        except ValueError:
            raise EngineError(f"parameter cuda_graph_batches must list integers, got '{raw}'") from None
        buckets = [b for b in sizes if 0 < b <= spec.max_batch_size]
        if not buckets:
            raise EngineError(f"cuda_graph_batches {raw!r} has no size in 1..max_batch_size ({spec.max_batch_size})")
        return _CudaGraphs(self._module, self.device, buckets, self._autocast)  # type: ignore[arg-type]

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        module = self._module
        if module is None:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        try:
            args = [_to_tensor(inputs[name], self.device) for name in self._input_names]
        except KeyError as exc:
            raise EngineError(f"input {exc} is missing") from None
        try:
            graphs = self._graphs
            if graphs is not None and args:
                rows = int(args[0].shape[0])
                bucket = graphs.bucket_for(rows)
                if bucket is not None:
                    return graphs.run(args, rows, bucket, self._map_outputs)
            with torch.inference_mode(), self._autocast():
                result = module(*args)
                return self._map_outputs(result)
        except (IndexError, RuntimeError) as exc:
            reason = input_fault(exc)
            if reason is None:
                raise
            raise InvalidInput(f"torch refused the input values: {reason}") from exc

    def _numpy(self, name: str, value: Any) -> np.ndarray:
        target = self._cast.get(name)
        if (
            target is not None
            and isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and value.dtype != target
        ):
            value = value.to(target)
        return _to_numpy(name, value)

    def _map_outputs(self, result: Any) -> dict[str, np.ndarray]:
        names = self._output_names
        if isinstance(result, torch.Tensor):
            if len(names) != 1:
                raise EngineError(f"the model returned one tensor but config.pbtxt declares outputs {list(names)}")
            return {names[0]: self._numpy(names[0], result)}
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            if missing:
                raise EngineError(
                    f"outputs {missing} declared in config.pbtxt are not in the model's dict {sorted(result)}"
                )
            return {n: self._numpy(n, result[n]) for n in names}
        if isinstance(result, Sequence):
            if len(result) != len(names):
                raise EngineError(
                    f"the model returned {len(result)} values but config.pbtxt declares "
                    f"{len(names)} outputs {list(names)}"
                )
            return {n: self._numpy(n, v) for n, v in zip(names, result, strict=True)}
        raise EngineError(f"the model returned {type(result).__name__}; expected a tensor, tuple/list or dict")

    def close(self) -> None:
        self._module = None
        self._graphs = None


#: the last line of a failure that torch raises for an index outside a lookup table (an embedding's
#: vocabulary): IndexError in eager code, a RuntimeError ending in this line from TorchScript
INDEX_OUT_OF_RANGE = "index out of range in self"


def input_fault(exc: BaseException) -> str | None:
    """The reason, if torch's error says the input values are at fault (an out-of-range lookup index)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if isinstance(exc, IndexError):
        return last or "index out of range"
    if isinstance(exc, RuntimeError) and last.endswith(INDEX_OUT_OF_RANGE):
        return last.removeprefix("RuntimeError:").strip()
    return None


def _powers_of_two(limit: int) -> list[int]:
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


def _compile(module: torch.jit.ScriptModule, mode: str) -> tuple[torch.jit.ScriptModule, str]:
    """``torch_compile``: torch.compile refuses TorchScript modules (the only kind inferd loads, for safety),
    so the TorchScript optimiser runs instead: freeze + ``torch.jit.optimize_for_inference``."""
    try:
        optimised = torch.jit.optimize_for_inference(module)
    except Exception as exc:
        return (
            module,
            f"torch: torch_compile={mode} skipped: torch.jit.optimize_for_inference failed: {_first_line(exc)}",
        )
    return optimised, (
        f"torch: torch_compile={mode}: torch.compile does not take TorchScript, so the model was frozen and "
        "optimised with torch.jit.optimize_for_inference instead"
    )


def load(spec: LoadSpec) -> TorchEngine:
    """Load ``model.pt`` with ``torch.jit.load`` and dry-run it against the signature."""
    if not spec.artifact.is_file():
        raise EngineError(f"model {spec.model_name} v{spec.version}: {spec.artifact.name} does not exist")
    bytes_inputs = [s.name for s in spec.signature.inputs if s.dtype == "BYTES"]
    if bytes_inputs:
        raise EngineError(f"inputs {bytes_inputs} are BYTES, which the torch engine cannot pass to a model")
    threads = spec.parameters.get("intra_op_threads")
    if threads is not None:
        try:
            torch.set_num_threads(max(1, int(threads)))
        except ValueError:
            raise EngineError(f"parameter 'intra_op_threads' must be an integer, got '{threads}'") from None
    device = _device(spec)
    options, notes = TorchOptions.from_parameters(spec.parameters).for_device(device)
    artifact = inside_root(spec.artifact, spec.root)
    refused = f"model {spec.model_name} v{spec.version}: model.pt refused:"
    try:
        check_archive(artifact)  # before torch.jit.load, which runs the archive's __setstate__ code
    except FileAccess as exc:
        raise EngineError(f"{refused} {exc}") from None
    try:
        module = torch.jit.load(str(artifact), map_location=device)
    except Exception as exc:
        raise EngineError(
            f"model {spec.model_name} v{spec.version}: model.pt is not a loadable TorchScript archive "
            "(save it with torch.jit.script/trace + torch.jit.save; pickled modules are refused): "
            f"{_first_line(exc)}"
        ) from exc
    try:
        check_module(module)
    except FileAccess as exc:
        raise EngineError(f"{refused} {exc}") from None
    module.eval()
    _check_arity(spec, module)
    if options.compile:
        module, note = _compile(module, options.compile)
        notes.append(note)
    engine = TorchEngine(spec, module, device, options, notes)
    dry_run(engine.infer, spec)
    return engine
