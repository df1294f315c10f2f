"""MLServer peer: a custom ``MLModel`` running onnxruntime (one thread); copied as peer_runtime.py into
MLServer's model folder and run in the mlserver peer's venv (never the project's)."""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]
from mlserver.utils import get_model_uri  # type: ignore[import-not-found]


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = await get_model_uri(self._settings)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name  # MLModel has its own inputs/outputs properties
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        results = self.session.run(self.output_names, {self.input_name: x})
        outputs = [NumpyCodec.encode_output(name, y) for name, y in zip(self.output_names, results, strict=True)]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
