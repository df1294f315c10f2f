"""Python backend: a class in ``model.py`` for custom pre/post-processing.

The class (``Model`` unless the ``python_class`` parameter names another) is built as ``cls()`` or
``cls(spec)`` when its ``__init__`` takes an argument; an optional ``load()`` runs next. It must have
``infer(inputs: dict[str, np.ndarray]) -> dict[str, array-like]``; ``close()`` is optional. A class may
instead (or also) define ``infer_stream(inputs, parameters)`` yielding dicts of outputs: PredictStream
then sends one message per yield (server/streaming.py), and a class without ``infer`` is streaming-only.

Thread-safety: user code is not assumed thread-safe, so calls are serialised with a lock unless the
class sets ``thread_safe = True``. Exceptions raised by the user's ``infer`` propagate unchanged
(the server logs their traceback); only load problems become ``EngineError``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import Arrays, EngineError, LoadSpec, dry_run
from engines.user_code import close_model, import_model_file, module_name_for, takes_argument


class PythonEngine:
    """Wraps one instance of the user's class; see the module docstring for the threading rule."""

    backend = "python"

    def __init__(self, spec: LoadSpec, model: Any, module: ModuleType) -> None:
        self.spec = spec
        self.model = model
        self.infer_stream: Callable[..., Any] | None = getattr(model, "infer_stream", None)
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
        if self._lock is None:
            result = self._infer(inputs)
        else:
            with self._lock:
                result = self._infer(inputs)
        if not isinstance(result, Mapping):
            raise EngineError(f"model.py infer() returned {type(result).__name__}; it must return a dict of outputs")
        try:
            return {name: np.asarray(result[name]) for name in self._output_names}
        except KeyError as exc:
            raise EngineError(f"model.py infer() did not return output {exc} (returned {sorted(result)})") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_model(self.model, self._module, module_name_for(self.spec))


def load(spec: LoadSpec) -> PythonEngine:
    """Import ``model.py``, build its class, run ``load()`` and a dry run against the signature."""
    where = f"model {spec.model_name} v{spec.version}: model.py"
    if not spec.artifact.is_file():
        raise EngineError(f"{where} does not exist at {spec.artifact}")
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
