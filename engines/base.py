"""The Engine protocol, the load specification, and lazy backend lookup.

An engine is anything with ``infer`` and ``close``: a Protocol, not a class tree. Backends register
by name in ``BACKENDS`` and are imported only when a model asks for them, so a server without torch
or TensorRT installed still serves ONNX models (and says why the others are unavailable).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from inferd.tensors import numpy_dtype

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class TensorSig:
    """One input or output: name, inferd dtype name ("FP32") and dims (-1 = dynamic)."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.dims) and all(d in (-1, s) for d, s in zip(self.dims, shape, strict=True))

    def example_shape(self, batch: int = 1) -> tuple[int, ...]:
        """A concrete shape for synthetic inputs: dynamic dims become ``batch`` (first) or 1."""
        return tuple((batch if i == 0 else 1) if d == -1 else d for i, d in enumerate(self.dims))


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]

    def input(self, name: str) -> TensorSig | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSig | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything a backend needs to load one model version."""

    model_name: str
    version: int
    artifact: Path
    signature: Signature
    max_batch_size: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    device: str = "cpu"
    #: Engine calls that may run at once (the config's instance_count): GPU engines keep one
    #: execution context / CUDA stream per instance.
    instances: int = 1
    #: The model repository's root (resolved): every file the engine reads must lie under it
    #: (:func:`inside_root`). None: no repository (a test or a tool loading one file).
    root: Path | None = None
    #: Sample inputs from the version's ``warmup.npz`` (engines/samples.py), validated against the
    #: signature: the dry run feeds them instead of zeros. None: the version has none.
    samples: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def companion(self, filename: str) -> Path:
        """A file beside the artefact (weights, a vocabulary), refused when it resolves outside the repository.

        python and generative models should open their own files through this (``spec.companion("vocab.txt")``).
        """
        return inside_root(self.artifact.parent / filename, self.root)


@runtime_checkable
class Engine(Protocol):
    """A loaded model version. ``infer`` blocks; the server calls it off the event loop."""

    backend: str

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def echo(value: object, limit: int = 64) -> str:
    """A client's string for a message: quoted and escaped as Python's repr does (a newline shows as
    \\n), cut to ``limit`` characters with a "…" marker and the full length: ``'aaaa'… (20000 characters)``.

    Engines use it for parameter names; the server's messages use it through server/core/echo.py.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


class EngineError(Exception):
    """A model version that cannot be loaded or run by a backend; the message says why."""


class InvalidInput(EngineError):
    """The engine refused the *values* of its inputs (an out-of-vocabulary id, a malformed string).

    Backends raise it for the engine's own "invalid argument" errors, and python models raise it for
    input they reject, importing it from its public path ``from engines.model_api import InvalidInput``.
    The server answers INVALID_ARGUMENT naming the model, and in a batch only the request at fault fails.
    """


class BackendUnavailable(EngineError):
    """The backend's runtime library is not installed here."""


class OutsideRepository(EngineError):
    """A file an engine would read resolves outside the model repository (a symlink out, ``..``)."""


def outside_reason(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be read — it resolves outside ``root`` (resolved) — or None when it may."""
    shown = _shown(path, root)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return f"'{shown}' cannot be resolved (a symlink loop?); refused"
    if resolved == root or root in resolved.parents:
        return None
    if _has_symlink(path, root):
        return f"'{shown}' is a symlink that leads outside the model repository; refused"
    return f"'{shown}' resolves outside the model repository; refused"


def inside_root(path: Path, root: Path | None) -> Path:
    """``path`` resolved; OutsideRepository when it leaves ``root`` (no check without a root)."""
    if root is None:
        return path
    reason = outside_reason(path, root)
    if reason is not None:
        raise OutsideRepository(reason)
    return path.resolve()


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the root (clients read load failures), or just its name."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return f"…/{path.name}"


def _has_symlink(path: Path, root: Path) -> bool:
    """Whether ``path`` or one of its folders up to ``root`` is a symlink."""
    current = path
    while current != root and current != current.parent:
        if current.is_symlink():
            return True
        current = current.parent
    return False


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    module: str
    artifact: str  # file name inside the version folder
    requires: str  # the import that must succeed
    install_hint: str


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("onnxruntime", "engines.ort", "model.onnx", "onnxruntime", "pip install 'inferd[onnxruntime]'"),
        Backend("torch", "engines.pt", "model.pt", "torch", "pip install 'inferd[torch]'"),
        Backend("python", "engines.python", "model.py", "numpy", "numpy is always installed"),
        # model.py too, so it is only chosen by name: config.pbtxt says engine: "generative"
        Backend("generative", "engines.generative", "model.py", "numpy", "numpy is always installed"),
        Backend(
            "tensorrt",
            "engines.trt",
            "model.plan",
            "tensorrt",
            "pip install tensorrt on a host with an NVIDIA GPU (docs/engines.md#tensorrt)",
        ),
    )
}

#: Backend chosen by artefact when a config names none, in this order.
ARTIFACT_ORDER = ("model.plan", "model.onnx", "model.pt", "model.py")


def backend_available(name: str) -> bool:
    backend = BACKENDS.get(name)
    return backend is not None and importlib.util.find_spec(backend.requires) is not None


def available_backends() -> list[str]:
    return [name for name in BACKENDS if backend_available(name)]


def backend_for_artifact(version_dir: Path) -> str | None:
    for artifact in ARTIFACT_ORDER:
        if (version_dir / artifact).is_file():
            return next(b.name for b in BACKENDS.values() if b.artifact == artifact)
    return None


def load_engine(backend_name: str, spec: LoadSpec) -> Engine:
    """Import the backend lazily and load one version; raises EngineError with the reason."""
    backend = BACKENDS.get(backend_name)
    if backend is None:
        raise EngineError(f"unknown engine '{backend_name}' (known: {', '.join(BACKENDS)})")
    if importlib.util.find_spec(backend.requires) is None:
        raise BackendUnavailable(
            f"engine '{backend_name}' needs the '{backend.requires}' package: {backend.install_hint}"
        )
    module = importlib.import_module(backend.module)
    engine: Engine = module.load(spec)
    return engine


def bool_parameter(parameters: Mapping[str, str], key: str, default: bool = False) -> bool:
    """A true/false model parameter (1/0, yes/no, on/off too); EngineError on anything else."""
    raw = parameters.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise EngineError(f"parameter '{key}' must be true or false, got '{raw}'")


def zero_inputs(signature: Signature, batch: int = 1) -> dict[str, np.ndarray]:
    """Synthetic all-zero inputs for a signature (warm-up and load-time checks)."""
    out: dict[str, np.ndarray] = {}
    for sig in signature.inputs:
        shape = sig.example_shape(batch)
        if sig.dtype == "BYTES":
            arr = np.empty(shape, dtype=object)
            arr.fill(b"")
            out[sig.name] = arr
        else:
            out[sig.name] = np.zeros(shape, dtype=numpy_dtype(sig.dtype))
    return out


def random_inputs(signature: Signature, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic random inputs (warm-up): normal floats, small non-negative integers, short byte strings."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for sig in signature.inputs:
        shape = sig.example_shape(batch)
        if sig.dtype == "BYTES":
            flat = [bytes(rng.integers(97, 123, size=8, dtype=np.uint8)) for _ in range(int(np.prod(shape)))]
            arr = np.empty(len(flat), dtype=object)
            arr[:] = flat
            out[sig.name] = arr.reshape(shape)
        elif sig.dtype == "BOOL":
            out[sig.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif sig.dtype.startswith(("INT", "UINT")):
            out[sig.name] = rng.integers(0, 16, size=shape).astype(numpy_dtype(sig.dtype))
        else:
            out[sig.name] = rng.standard_normal(size=shape).astype(numpy_dtype(sig.dtype))
    return out


def check_outputs(signature: Signature, outputs: Mapping[str, Any], *, batch: int | None = None) -> None:
    """Raise EngineError when outputs do not match the declared signature (names, dtypes, ranks)."""
    for sig in signature.outputs:
        if sig.name not in outputs:
            raise EngineError(f"output '{sig.name}' declared in config.pbtxt is not produced (got {sorted(outputs)})")
        array = np.asarray(outputs[sig.name])
        if sig.dtype != "BYTES" and array.dtype != numpy_dtype(sig.dtype):
            raise EngineError(f"output '{sig.name}' is {array.dtype} but config.pbtxt declares {sig.dtype}")
        if len(array.shape) != len(sig.dims) or not all(
            d in (-1, s) for d, s in zip(sig.dims, array.shape, strict=True)
        ):
            raise EngineError(
                f"output '{sig.name}' has shape {list(array.shape)}; config.pbtxt declares {list(sig.dims)}"
            )
        if batch is not None and sig.dims and sig.dims[0] == -1 and array.shape[0] != batch:
            raise EngineError(f"output '{sig.name}' has {array.shape[0]} rows for a batch of {batch}")


#: The sample inputs' file in a version folder (read by engines/samples.py), fed to the dry run.
SAMPLES_FILE = "warmup.npz"
_DOC = "docs/config.md#sample-inputs-warmupnpz"


def dry_run(infer: Callable[[Arrays], Mapping[str, Any]], spec: LoadSpec) -> None:
    """Run ``infer`` once and check the outputs, so a mismatch fails the load, not a request.

    It feeds the version's sample inputs (``warmup.npz``) when it has them, else zeros: two rows when
    the model batches, so a model that silently drops or merges the batch dim fails here.
    """
    if spec.samples:
        inputs = dict(spec.samples)
        batch = int(next(iter(inputs.values())).shape[0]) if spec.max_batch_size > 0 else 1
        fed_what = f"the sample inputs of {SAMPLES_FILE}"
    else:
        batch = 2 if spec.max_batch_size > 1 else 1
        inputs = zero_inputs(spec.signature, batch)
        fed_what = "zero inputs as config.pbtxt declares them"
    try:
        outputs = infer(inputs)
    except Exception as exc:
        fed = ", ".join(f"'{t.name}' {t.dtype} {list(inputs[t.name].shape)}" for t in spec.signature.inputs)
        hint = "" if spec.samples else f" (give real sample inputs in the version folder's {SAMPLES_FILE}: {_DOC})"
        raise EngineError(
            f"model {spec.model_name} v{spec.version}: a dry run with {fed_what} ({fed}) failed: "
            f"{_error_summary(exc)}{hint}"
        ) from exc
    check_outputs(spec.signature, outputs, batch=batch if spec.max_batch_size > 0 else None)


def _error_summary(exc: BaseException) -> str:
    """One line for a load-failure message; the full error stays chained for the log.

    TorchScript errors carry two tracebacks in their text, and their last line is the actual error.
    """
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1:
        return lines[-1].strip()
    text = lines[0] if lines else ""
    return text if isinstance(exc, EngineError) else f"{type(exc).__name__}: {text}"
