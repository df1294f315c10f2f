"""Python backend: a class in ``model.py`` for custom pre/post-processing.

The class (``Model`` unless the ``python_class`` parameter names another) is built as ``cls()`` or
``cls(spec)`` when its ``__init__`` takes an argument; an optional ``load()`` runs next. It must have
``infer(inputs: dict[str, np.ndarray]) -> dict[str, array-like]``; ``close()`` is optional. A class may
instead (or also) define ``infer_stream(inputs, parameters)`` (or ``infer_stream(inputs)``) yielding
dicts of outputs: PredictStream then sends one message per yield (server/scheduling/generator_streams.py),
and a class without ``infer`` is streaming-only.

Thread-safety: user code is not assumed thread-safe, so it runs under one lock per engine unless the
class sets ``thread_safe = True``: a unary ``infer``, calling ``infer_stream``, and every ``next()`` and
``close()`` of the generators it returned never run at once. (Each generator also has its own lock, so
its ``next()`` and ``close()`` never overlap even for a thread-safe class.)

Errors: raise ``InvalidInput`` (``from engines.model_api import InvalidInput``, the public path) from ``infer`` or
``infer_stream`` for input you reject (a value out of range, a malformed string): the client gets
INVALID_ARGUMENT naming the model, and in a batch only its own request fails. Any other exception is a
model failure (INTERNAL; the server logs its traceback). Exceptions propagate unchanged; only load
problems become ``EngineError``.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import Arrays, EngineError, LoadSpec, dry_run
from engines.user_code import close_model, import_model_file, module_name_for, takes_argument

_END = object()


class GeneratorStream:
    """One ``infer_stream`` generator, advanced and closed only through :class:`PythonEngine`."""

    __slots__ = ("_iterator", "_lock")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        #: keeps this generator's next() and close() apart (a running generator cannot be closed)
        self._lock = threading.Lock()


class PythonEngine:
    """Wraps one instance of the user's class; see the module docstring for the threading rule."""

    backend = "python"

    def __init__(self, spec: LoadSpec, model: Any, module: ModuleType) -> None:
        self.spec = spec
        self.model = model
        self._infer_stream: Callable[..., Any] | None = getattr(model, "infer_stream", None)
        #: the class defines infer_stream: PredictStream runs it (one message per yield)
        self.streams = callable(self._infer_stream)
        self._stream_parameters = self.streams and _arity(self._infer_stream) >= 2
        self._module = module
        self._infer: Callable[[Arrays], Any] | None = getattr(model, "infer", None)
        #: only infer_stream: unary Predict is refused with FAILED_PRECONDITION
        self.streaming_only = self._infer is None
        self._lock: threading.Lock | None = None if getattr(model, "thread_safe", False) is True else threading.Lock()
        self._output_names: tuple[str, ...] = tuple(s.name for s in spec.signature.outputs)
        self._closed = False

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray]:
        if self._closed:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        if self._infer is None:
            raise EngineError(f"model {self.spec.model_name} only streams (infer_stream): use PredictStream")
        with self._guard():
            result = self._infer(inputs)
        if not isinstance(result, Mapping):
            raise EngineError(f"model.py infer() returned {type(result).__name__}; it must return a dict of outputs")
        try:
            return {name: np.asarray(result[name]) for name in self._output_names}
        except KeyError as exc:
            raise EngineError(f"model.py infer() did not return output {exc} (returned {sorted(result)})") from None

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        """The engine lock around user code (nothing for a ``thread_safe`` class)."""
        return self._lock if self._lock is not None else contextlib.nullcontext()

    def start_stream(self, inputs: Arrays, parameters: Mapping[str, Any]) -> GeneratorStream:
        """Call ``infer_stream`` under the engine lock; :meth:`advance_stream` then runs its generator."""
        if self._closed:
            raise EngineError(f"model {self.spec.model_name} v{self.spec.version} is closed")
        infer_stream = self._infer_stream
        if infer_stream is None:
            raise EngineError(f"model {self.spec.model_name} has no infer_stream: use Predict")
        with self._guard():
            result = infer_stream(inputs, dict(parameters)) if self._stream_parameters else infer_stream(inputs)
            return GeneratorStream(iter(result))

    def advance_stream(self, stream: GeneratorStream) -> Mapping[str, Any] | None:
        """The generator's next dict of outputs (run under the engine lock); None once it is exhausted."""
        with stream._lock, self._guard():
            item = next(stream._iterator, _END)
        if item is _END:
            return None
        if not isinstance(item, Mapping):
            raise EngineError(f"model.py infer_stream() yielded {type(item).__name__}; it must yield dicts of outputs")
        return item

    def close_stream(self, stream: GeneratorStream) -> None:
        """Close the generator (runs its ``finally`` blocks) under the engine lock, once any next() has returned."""
        closer = getattr(stream._iterator, "close", None)
        if callable(closer):
            with stream._lock, self._guard():
                closer()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_model(self.model, self._module, module_name_for(self.spec))


def _arity(fn: Callable[..., Any] | None) -> int:
    """Positional parameters of ``infer_stream`` (a bound method): 1 = inputs only, 2 = inputs and parameters."""
    try:
        params = inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 2
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(
        1 for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def load(spec: LoadSpec) -> PythonEngine:
    """Import ``model.py``, build its class, run ``load()`` and a dry run against the signature."""
    where = f"model {spec.model_name} v{spec.version}: model.py"
    if not spec.artifact.is_file():
        raise EngineError(f"{where} does not exist")
    module = import_model_file(spec, where)
    class_name = spec.parameters.get("python_class", "Model")
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise EngineError(
            f"{where} defines no class '{class_name}' "
            '(name another with parameters { key: "python_class" value: "..." })'
        )
    streams = callable(getattr(cls, "infer_stream", None))
    if not callable(getattr(cls, "infer", None)) and not streams:
        raise EngineError(f"{where}: class {class_name} has no infer(inputs) (or infer_stream) method")
    try:
        model = cls(spec) if takes_argument(cls) else cls()
        hook = getattr(model, "load", None)
        if callable(hook):
            hook()
    except Exception as exc:
        sys.modules.pop(module_name_for(spec), None)
        raise EngineError(f"{where}: creating {class_name} failed: {type(exc).__name__}: {exc}") from exc
    engine = PythonEngine(spec, model, module)
    if engine.streaming_only:
        return engine  # nothing to dry-run: its outputs are checked as they are yielded
    try:
        dry_run(engine.infer, spec)
    except BaseException:
        with contextlib.suppress(Exception):  # the dry-run error is the one worth reporting
            engine.close()
        raise
    return engine
