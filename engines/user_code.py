"""Loading user-written ``model.py`` files, shared by the python and generative backends.

Each (model, version) is imported under its own module name, so two versions never share globals,
and is removed from ``sys.modules`` again when its engine closes or its load fails.

A ``model.py`` is code: once imported it can do anything the server process can (docs/engines.md).
What the server does check is that the file itself lies in the model repository: one that resolves
outside it (a symlink out) is refused *before* it is imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from types import ModuleType

from engines.base import EngineError, LoadSpec, inside_root


def module_name_for(spec: LoadSpec, kind: str = "model") -> str:
    """A unique, importable module name per (kind, model, version)."""
    safe = re.sub(r"\W", "_", spec.model_name)
    digest = hashlib.sha1(spec.model_name.encode()).hexdigest()[:8]  # "a-b" and "a_b" stay distinct
    return f"_inferd_{kind}_{safe}_{digest}_v{spec.version}"


def import_model_file(spec: LoadSpec, where: str, kind: str = "model") -> ModuleType:
    """Execute ``spec.artifact`` as a fresh module; any failure becomes an EngineError naming ``where``."""
    name = module_name_for(spec, kind)
    inside_root(spec.artifact, spec.root)  # refused before any of it runs
    import_spec = importlib.util.spec_from_file_location(name, spec.artifact)
    if import_spec is None or import_spec.loader is None:
        raise EngineError(f"{where} cannot be imported")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[name] = module  # dataclasses and typing look the module up while it executes
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise EngineError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def takes_argument(cls: type) -> bool:
    """Whether ``cls(spec)`` is the constructor call (else ``cls()``)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take none we could pass
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional or p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def close_model(model: object, module: ModuleType | None, name: str) -> None:
    """Call the user's optional ``close()`` and forget the module, even when close fails."""
    close = getattr(model, "close", None)
    try:
        if callable(close):
            close()
    finally:
        if sys.modules.get(name) is module:
            del sys.modules[name]
