"""Triton Python-backend model (copied as model.py into each Triton model folder): onnxruntime, one thread.

Triton hands ``execute`` every request its dynamic batcher grouped (one when batching is off); they are
concatenated into one onnxruntime call and split back, so a formed batch costs one engine call.
Runs inside Triton's Python backend stub, in the triton peer's venv (never the project's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        results = self.session.run(self.outputs, {self.input: np.concatenate(arrays) if len(arrays) > 1 else arrays[0]})
        responses, start = [], 0
        for x in arrays:
            end = start + len(x)
            tensors = [pb_utils.Tensor(n, y[start:end]) for n, y in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
