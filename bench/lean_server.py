"""The lean handler: one ONNX model behind the thinnest Python gRPC handler — a reference point, never a
server to use.

Per request it does only what any server that runs a model must do: parse the PredictRequest (upb), turn
each input's ``raw_contents`` into an array (``np.frombuffer`` with the request's data type, reshaped to its
shape), call ``session.run`` (onnxruntime, CPU, one intra-op and one inter-op thread) and build a
PredictResponse that gRPC serialises. Nothing else: no validation (a request that breaks any step is
answered INVALID_ARGUMENT with the error's text), no batching, no statistics, no metrics, no routing —
whatever model name the request carries, the one model answers (as version 1).

The batching bench (bench/batching.py) measures it beside the gRPC floor (bench/floor_server.py): the
floor is what grpc.aio costs per call, this is what the model costs behind the least Python that can
call it, so "inferd / lean" is the share of inferd's own per-request work, and "lean / floor" the
ceiling of any Python handler that calls the engine once per request.

``python -m bench.lean_server --model PATH --port N`` (``--port 0``: any free port); it prints
``lean server on PORT`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort

from inferd.tensors import DTYPE_BY_NAME, NUMPY_DTYPES
from inferd.v1 import inference_pb2

#: request data type (enum value) → numpy dtype; every fixed-width type (FP32, INT64 … )
DTYPES: dict[int, np.dtype[Any]] = {DTYPE_BY_NAME[n]: d for n, d in NUMPY_DTYPES.items() if n != "BYTES"}
#: numpy dtype → response data type (enum value)
DATA_TYPES: dict[np.dtype[Any], int] = {d: v for v, d in DTYPES.items()}

Handler = Callable[[inference_pb2.PredictRequest, grpc.aio.ServicerContext], Awaitable[inference_pb2.PredictResponse]]


def open_session(model: str) -> ort.InferenceSession:
    """The model on the CPU provider with one thread each way, as inferd's examples run it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predict_handler(session: ort.InferenceSession) -> Handler:
    """Predict for ``session``: decode, run, encode; everything the handler reads is a closure local."""
    output_names = [o.name for o in session.get_outputs()]
    run = session.run
    dtypes = DTYPES
    data_types = DATA_TYPES
    response_type = inference_pb2.PredictResponse

    async def predict(
        request: inference_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.PredictResponse:
        try:
            feeds = {
                t.name: np.frombuffer(t.raw_contents, dtype=dtypes[t.data_type]).reshape(tuple(t.shape))
                for t in request.inputs
            }
            values = run(output_names, feeds)
            response = response_type(model_name=request.model_name, model_version=1)
            for name, value in zip(output_names, values, strict=True):
                out = response.outputs.add()
                out.name = name
                out.data_type = data_types[value.dtype]  # type: ignore[assignment]
                out.shape.extend(value.shape)
                out.raw_contents = value.tobytes()
        except Exception as error:  # no validation by design: whatever breaks is the request's fault
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"lean handler: {type(error).__name__}: {error}")
        return response

    return predict


async def serve(model: str, port: int) -> None:
    session = open_session(model)
    # the floor's options (bench/floor_server.py), so the two differ only by the handler
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.method_handlers_generic_handler(
        "inferd.v1.InferenceService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict_handler(session),
                request_deserializer=inference_pb2.PredictRequest.FromString,
                response_serializer=inference_pb2.PredictResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    gc.freeze()  # as inferd does once it serves (server/app.py): the start-up heap out of the collector's reach
    print(f"lean server on {bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ONNX file")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args()
    asyncio.run(serve(args.model, args.port))


if __name__ == "__main__":
    main()
