"""TensorRT backend (``model.plan``): a placeholder until the GPU engine lands.

It exists so that a config asking for TensorRT gets a clear reason instead of an import error, and
the fallback chain moves on to the next engine. The real engine (plan deserialisation, optimisation
profiles for the batch dim, execution on a CUDA stream) comes with ``engines/trt_build.py``.
"""

from __future__ import annotations

from typing import NoReturn

from engines.base import BackendUnavailable, EngineError, LoadSpec


def load(spec: LoadSpec) -> NoReturn:
    try:
        import tensorrt  # noqa: F401  (imported here only: it needs CUDA libraries to import at all)
    except ImportError as exc:
        raise BackendUnavailable(
            f"model {spec.model_name} v{spec.version}: TensorRT needs an NVIDIA GPU and the 'tensorrt' "
            f"package ({exc}); list another engine such as onnxruntime after tensorrt"
        ) from None
    raise EngineError(
        f"model {spec.model_name} v{spec.version}: the TensorRT engine is not implemented in this build yet; "
        "serve model.onnx with onnxruntime instead"
    )
