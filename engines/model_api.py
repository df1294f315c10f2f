"""The public API for ``model.py`` authors: the only names from the server a model may rely on.

``from engines.model_api import InvalidInput`` is the stable import path (the rest of ``engines`` is
internal and may move). Raise :class:`InvalidInput` from ``infer``/``infer_stream`` for input your
model rejects: the client gets INVALID_ARGUMENT with your message (naming the model), in a batch only
the request at fault fails, and the server keeps serving. Any other exception is a model failure
(INTERNAL, logged with its traceback). :class:`LoadSpec` is what ``Model(spec)`` receives
(``spec.companion("vocab.txt")`` opens a file beside ``model.py``, inside the repository).
"""

from __future__ import annotations

from engines.base import Arrays, InvalidInput, LoadSpec

__all__ = ["Arrays", "InvalidInput", "LoadSpec"]
