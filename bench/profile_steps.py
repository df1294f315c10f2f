"""Time inferd's Predict steps in-process (no gRPC) and print them as one JSON line (bench/profile.py).

Run as a script with the checkout to time first on PYTHONPATH; the steps are timed around each call
of a loop of MLP Predicts on one core, so they add up to what the handler costs per request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

STEPS = ("decode and route", "check and decode inputs", "engine call (scheduled)", "encode answer", "count outcome")


class _Context:
    """What the Predict handler reads of grpc.aio's ServicerContext."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float | None:
        return None


async def _measure(repo: Path, calls: int) -> dict[str, float]:
    import numpy as np

    from inferd.tensors import from_numpy
    from inferd.v1 import inference_pb2
    from server.api.codec import encode_response
    from server.api.outcomes import CallOutcome
    from server.app import InferdServer, ServerOptions

    server = InferdServer(ServerOptions(repository=repo, port=0))
    await server.start()
    try:
        servicer: Any = server.servicer
        context: Any = _Context()
        features = np.random.default_rng(0).random((1, 256), dtype=np.float32)
        data = inference_pb2.PredictRequest(
            model_name="mlp_off", inputs=[from_numpy("features", features)]
        ).SerializeToString()
        clock = time.perf_counter_ns
        spent = [0] * (len(STEPS) + 1)
        for _round in range(2):  # the first round warms up
            spent = [0] * (len(STEPS) + 1)
            for _ in range(calls):
                t0 = clock()
                message, payloads, request, slot = servicer.accept(servicer._read_predict, data, context, None)
                t1 = clock()
                outcome = CallOutcome(slot.stats, request.deadline, t0)
                request, rows = await servicer.inputs.decode(message, request, slot.validator, payloads)
                t2 = clock()
                outputs = await slot.infer(request.inputs, request.deadline, rows, request.parameters)
                t3 = clock()
                servicer.serialise(encode_response(request, slot.version, outputs, slot.validator.output_names))
                t4 = clock()
                outcome.__exit__(None, None, None)
                servicer.served(request, slot, rows, outputs)
                t5 = clock()
                for i, (a, b) in enumerate(((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t0, t5))):
                    spent[i] += b - a
        times = {name: spent[i] / calls / 1000 for i, name in enumerate(STEPS)}
        times["total"] = spent[-1] / calls / 1000
        engine = slot.engine
        x = {"features": features}
        started = clock()
        for _ in range(calls):
            engine.infer(x)
        times["of which the engine alone"] = (clock() - started) / calls / 1000
        return times
    finally:
        await server.stop(drain=False)


def main() -> None:
    import logging

    logging.disable(logging.WARNING)
    print(json.dumps(asyncio.run(_measure(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20000))))


if __name__ == "__main__":
    main()
