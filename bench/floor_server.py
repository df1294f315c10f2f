"""The gRPC floor: a grpc.aio server whose Predict returns an empty response and does nothing else.

It answers on inferd's own method path so the same h2load request body drives both servers, on OIP's
unary ModelInfer path the same way (the peers benchmark replays one OIP request to every server), and on
OIP's ModelStreamInfer path it answers every streamed message with an empty one: the floor of a
grpc.aio bidirectional stream (bench/oip.py).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc


async def _empty(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b""


async def _echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield b""


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.method_handlers_generic_handler(
        "inferd.v1.InferenceService", {"Predict": grpc.unary_unary_rpc_method_handler(_empty)}
    )
    stream = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(_echo),
            "ModelInfer": grpc.unary_unary_rpc_method_handler(_empty),
        },
    )
    server.add_generic_rpc_handlers((handler, stream))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"floor server on {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
