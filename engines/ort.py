"""ONNX Runtime backend: the reference engine for ``model.onnx``.

``InferenceSession.run`` is thread-safe, so one engine serves several executor threads at once.
Session options follow the measured facts in DESIGN.md: intra-op threads from the config
(default 1, one per pinned core), one inter-op thread and sequential execution, because more
threads than cores oversubscribe and slow the server down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.base import Arrays, EngineError, InvalidInput, LoadSpec, TensorSig, inside_root, outside_reason
from engines.onnx_external import MalformedModel, external_locations

log = logging.getLogger(__name__)

#: ONNX Runtime element type strings -> inferd dtype names.
ORT_TYPES: dict[str, str] = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(bfloat16)": "BF16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}

#: Short provider names accepted in the ``providers`` parameter besides the full ones.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


#: Providers that run on a GPU and take a ``device_id`` option.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _int_parameter(spec: LoadSpec, key: str, default: str) -> int:
    raw = spec.parameters.get(key, default)
    try:
        value = int(raw)
    except ValueError:
        raise EngineError(f"parameter '{key}' must be an integer, got '{raw}'") from None
    if value < 0:
        raise EngineError(f"parameter '{key}' must be >= 0, got {value}")
    return value


def choose_providers(spec: LoadSpec) -> list[str]:
    """Requested providers that this onnxruntime build has, in order; CPU when none is left.

    Asking for CUDA on a CPU-only install degrades to CPU with a warning instead of failing the load,
    so one config works on both kinds of host.
    """
    available = ort.get_available_providers()
    requested_raw = spec.parameters.get("providers", "")
    if requested_raw.strip():
        requested = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in requested_raw.split(",") if p.strip()]
    elif spec.device.startswith("cuda"):
        requested = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        requested = ["CPUExecutionProvider"]
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning(
            "model %s v%d: onnxruntime providers %s are not available here (have %s)",
            spec.model_name,
            spec.version,
            missing,
            available,
        )
    return chosen or ["CPUExecutionProvider"]


def provider_options(spec: LoadSpec, providers: Sequence[str]) -> list[dict[str, str]]:
    """Per-provider options: the GPU providers get ``device_id`` from a ``cuda:N`` device."""
    kind, _, index = spec.device.partition(":")
    gpu = {"device_id": index} if kind == "cuda" and index.isdigit() else {}
    return [dict(gpu) if p in GPU_PROVIDERS else {} for p in providers]


def _check_tensor(kind: str, sig: TensorSig, node: Any) -> None:
    """Compare one config tensor with the session's node arg; raise EngineError naming the tensor."""
    found_dtype = ORT_TYPES.get(node.type, node.type)
    if found_dtype != sig.dtype:
        raise EngineError(f"{kind} '{sig.name}': config.pbtxt declares {sig.dtype} but model.onnx has {found_dtype}")
    model_dims = [d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or [])]
    if len(model_dims) != len(sig.dims):
        raise EngineError(
            f"{kind} '{sig.name}': config.pbtxt declares rank {len(sig.dims)} {list(sig.dims)} "
            f"but model.onnx has rank {len(model_dims)} {model_dims}"
        )
    for axis, (declared, found) in enumerate(zip(sig.dims, model_dims, strict=True)):
        # A fixed config dim over a dynamic model dim is fine (the config narrows it); the reverse
        # would let requests through that the model then rejects, e.g. batching over a fixed batch of 1.
        if found != -1 and declared != found:
            raise EngineError(
                f"{kind} '{sig.name}': dim {axis} is {declared} in config.pbtxt but fixed at {found} "
                f"in model.onnx (config {list(sig.dims)}, model {model_dims})"
            )


def check_signature(spec: LoadSpec, session: ort.InferenceSession) -> None:
    """Raise EngineError unless the session's inputs and outputs agree with config.pbtxt."""
    model_inputs = {node.name: node for node in session.get_inputs()}
    model_outputs = {node.name: node for node in session.get_outputs()}
    for sig in spec.signature.inputs:
        node = model_inputs.get(sig.name)
        if node is None:
            raise EngineError(
                f"input '{sig.name}' declared in config.pbtxt is not an input of model.onnx "
                f"(model inputs: {sorted(model_inputs)})"
            )
        _check_tensor("input", sig, node)
    undeclared = sorted(set(model_inputs) - {sig.name for sig in spec.signature.inputs})
    if undeclared:
        raise EngineError(f"model.onnx needs inputs {undeclared} that config.pbtxt does not declare")
    for sig in spec.signature.outputs:
        node = model_outputs.get(sig.name)
        if node is None:
            raise EngineError(
                f"output '{sig.name}' declared in config.pbtxt is not an output of model.onnx "
                f"(model outputs: {sorted(model_outputs)})"
            )
        _check_tensor("output", sig, node)


class OrtEngine:
    """One ``InferenceSession``; ``infer`` may be called from several threads at once."""

    backend = "onnxruntime"

    def __init__(self, spec: LoadSpec, session: ort.InferenceSession) -> None:
        self.spec = spec
        self.providers: list[str] = list(session.get_providers())
        self._session: ort.InferenceSession | None = session
        #: onnxruntime's C session under the Python wrapper: calling it directly skips the wrapper's three
        #: Python checks per call (~2.5 µs of a ~8 µs MLP call); a failed direct call is retried through the
        #: wrapper, whose checks and execution-provider fallback then decide the outcome
        self._direct: Any = getattr(session, "_sess", None)
        self._output_names: list[str] = [sig.name for sig in spec.signature.outputs]
        # ORT wants str elements for string tensors; the codec hands us bytes.
        self._string_inputs: tuple[str, ...] = tuple(s.name for s in spec.signature.inputs if s.dtype == "BYTES")
        self._string_outputs: tuple[str, ...] = tuple(s.name for s in spec.signature.outputs if s.dtype == "BYTES")
        #: a failed run is raised (and the server logs what is not the client's fault); onnxruntime's own
        #: ERROR line per failure would let any client flood stderr with bad ids, so runs log only FATAL
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        feed = inputs
        if self._string_inputs:
            converted = dict(inputs)
            for name in self._string_inputs:
                if name in converted:
                    converted[name] = _to_str_array(converted[name])
            feed = converted
        try:
            results = self._run(session, feed)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            if is_invalid_argument(exc):
                raise InvalidInput(f"onnxruntime refused the input values: {_status_message(exc)}") from exc
            raise EngineError(f"onnxruntime failed on model {self.spec.model_name}: {exc}") from exc
        outputs = dict(zip(self._output_names, results, strict=True))
        for name in self._string_outputs:
            outputs[name] = _to_bytes_array(outputs[name])
        return outputs

    def _run(self, session: ort.InferenceSession, feed: Arrays) -> list[Any]:
        direct = self._direct
        if direct is not None:
            try:
                results: list[Any] = direct.run(self._output_names, feed, self._run_options)
                return results
            except Exception:  # the wrapper below raises (or recovers) with its own checks
                pass
        return list(session.run(self._output_names, feed, self._run_options))

    def close(self) -> None:
        """Drop the session; its memory is freed once in-flight calls holding it return."""
        self._session = None
        self._direct = None


def is_invalid_argument(exc: BaseException) -> bool:
    """Whether onnxruntime blamed the input (status INVALID_ARGUMENT, e.g. an out-of-range Gather index)."""
    invalid = getattr(ort.capi.onnxruntime_pybind11_state, "InvalidArgument", None)
    return (invalid is not None and isinstance(exc, invalid)) or "INVALID_ARGUMENT" in str(exc)


def _status_message(exc: BaseException) -> str:
    """onnxruntime's own explanation, without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :" prefix."""
    text = str(exc)
    _head, sep, tail = text.partition("INVALID_ARGUMENT :")
    message = tail.strip() if sep else text.strip()
    detail = message.rpartition("Status Message:")  # a kernel's failure: keep the kernel's reason
    return detail[2].strip() if detail[1] else message


def _to_str_array(array: np.ndarray) -> np.ndarray:
    flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def _to_bytes_array(array: np.ndarray) -> np.ndarray:
    flat = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def session_options(spec: LoadSpec) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = _int_parameter(spec, "intra_op_threads", "1")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def check_external_data(spec: LoadSpec, artifact: Path) -> None:
    """Refuse a model whose external data files are absolute paths or resolve outside the repository
    (onnxruntime's own checks vary by version, and do not know the repository root)."""
    try:
        locations = external_locations(artifact)
    except (MalformedModel, OSError, ValueError):
        return  # not a protobuf we can read: onnxruntime refuses it with its own reason
    where = f"model {spec.model_name} v{spec.version}: model.onnx"
    for location in dict.fromkeys(locations):
        shown = repr(location[:120])
        if not location or "\0" in location:
            raise EngineError(f"{where} names external data {shown}, which is not a file name; refused")
        path = Path(location)
        if path.is_absolute():
            raise EngineError(f"{where} names external data by an absolute path {shown}; refused")
        if spec.root is not None:
            reason = outside_reason(artifact.parent / path, spec.root)
            if reason is not None:
                raise EngineError(f"{where}: external data {reason}")


def load(spec: LoadSpec, providers: Sequence[str] | None = None) -> OrtEngine:
    """Open ``model.onnx`` and check it against the config's signature."""
    if not spec.artifact.is_file():
        raise EngineError(f"model {spec.model_name} v{spec.version}: {spec.artifact.name} does not exist")
    check_external_data(spec, inside_root(spec.artifact, spec.root))
    chosen = list(providers) if providers is not None else choose_providers(spec)
    try:
        session = ort.InferenceSession(
            str(spec.artifact),
            sess_options=session_options(spec),
            providers=chosen,
            provider_options=provider_options(spec, chosen),
        )
    except Exception as exc:
        raise EngineError(
            f"model {spec.model_name} v{spec.version}: onnxruntime cannot load model.onnx: {exc}"
        ) from exc
    check_signature(spec, session)
    return OrtEngine(spec, session)
