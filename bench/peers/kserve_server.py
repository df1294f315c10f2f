"""KServe peer: a custom ``kserve.Model`` running onnxruntime (one thread), served by ``kserve.ModelServer``.

Runs in the kserve peer's venv (never the project's): ``python kserve_server.py --grpc_port P --http_port Q
--model NAME=/path/model.onnx [...]``; kserve's own flags (ports, workers) are read by kserve itself.
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve  # type: ignore[import-not-found]
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        results = self.session.run(self.outputs, {self.input: x})
        outputs = []
        for name, y in zip(self.outputs, results, strict=True):
            out = InferOutput(name=name, shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(np.ascontiguousarray(y, dtype=np.float32), binary_data=True)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model", action="append", default=[], help="NAME=/path/to/model.onnx")
    args, _ = parser.parse_known_args()
    models = [OnnxModel(*spec.split("=", 1)) for spec in args.model]
    kserve.ModelServer().start(models)


if __name__ == "__main__":
    main()
