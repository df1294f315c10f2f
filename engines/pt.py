"""PyTorch backend: TorchScript archives (``model.pt``).

Only ``torch.jit.load`` is used. inferd never calls ``torch.load`` on a pickle, because unpickling
runs arbitrary code from the model file; a TorchScript archive holds code and weights without that
risk. ``torch.export`` programs (``.pt2``) are not supported on purpose: ``torch.export.load`` falls
back to ``torch.load(weights_only=False)`` when its weights-only read fails, i.e. it may unpickle.

Thread-safety: a TorchScript module with no Python state is safe to call from several threads at
once, and ``infer`` keeps no per-call state of its own. Note that ``intra_op_threads`` sets
``torch.set_num_threads``, which is process-wide: the last torch model loaded decides it for all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from engines.base import Arrays, BackendUnavailable, EngineError, LoadSpec, dry_run


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


class TorchEngine:
    """A TorchScript module; inputs go positionally in signature order, outputs map back by name."""

    backend = "torch"

    def __init__(self, spec: LoadSpec, module: torch.jit.ScriptModule, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self._module: torch.jit.ScriptModule | None = module
        self._input_names: tuple[str, ...] = tuple(s.name for s in spec.signature.inputs)
        self._output_names: tuple[str, ...] = tuple(s.name for s in spec.signature.outputs)

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        module = self._module
        if module is None:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        try:
            args = [_to_tensor(inputs[name], self.device) for name in self._input_names]
        except KeyError as exc:
            raise EngineError(f"input {exc} is missing") from None
        with torch.inference_mode():
            result = module(*args)
            return self._map_outputs(result)

    def _map_outputs(self, result: Any) -> dict[str, np.ndarray]:
        names = self._output_names
        if isinstance(result, torch.Tensor):
            if len(names) != 1:
                raise EngineError(f"the model returned one tensor but config.pbtxt declares outputs {list(names)}")
            return {names[0]: _to_numpy(names[0], result)}
        if isinstance(result, Mapping):
            missing = [n for n in names if n not in result]
            if missing:
                raise EngineError(
                    f"outputs {missing} declared in config.pbtxt are not in the model's dict {sorted(result)}"
                )
            return {n: _to_numpy(n, result[n]) for n in names}
        if isinstance(result, Sequence):
            if len(result) != len(names):
                raise EngineError(
                    f"the model returned {len(result)} values but config.pbtxt declares "
                    f"{len(names)} outputs {list(names)}"
                )
            return {n: _to_numpy(n, v) for n, v in zip(names, result, strict=True)}
        raise EngineError(f"the model returned {type(result).__name__}; expected a tensor, tuple/list or dict")

    def close(self) -> None:
        self._module = None


def load(spec: LoadSpec) -> TorchEngine:
    """Load ``model.pt`` with ``torch.jit.load`` and dry-run it against the signature."""
    if not spec.artifact.is_file():
        raise EngineError(f"model {spec.model_name} v{spec.version}: {spec.artifact} does not exist")
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
    try:
        module = torch.jit.load(str(spec.artifact), map_location=device)
    except Exception as exc:
        raise EngineError(
            f"model {spec.model_name} v{spec.version}: model.pt is not a loadable TorchScript archive "
            "(save it with torch.jit.script/trace + torch.jit.save; pickled modules are refused): "
            f"{_first_line(exc)}"
        ) from exc
    module.eval()
    _check_arity(spec, module)
    engine = TorchEngine(spec, module, device)
    dry_run(engine.infer, spec)
    return engine
