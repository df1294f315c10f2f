"""Bounded chaos: a swap storm, a cancellation storm and one bad request per batch, all under load, twice.

Asserts what a serving layer is trusted for at its edges: no valid request fails, the bad requests
(and only they) get INVALID_ARGUMENT, cancelled and expired calls leave no queue entry, stream or
in-flight count behind, and a second identical round does not grow the process's memory by more than
``RSS_GROWTH_BOUND_MB`` (the first round pays for one-time allocations: imports, thread stacks, caches).
Each round runs ``ROUND_S`` seconds; the whole test stays well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.core.types import SlotState
from tests.support import ServerThread, eventually, write_model

ROUND_S = 6.0
CALLERS = 12
#: memory the second round may add on top of the first (the same work again should add ~nothing)
RSS_GROWTH_BOUND_MB = 24

SCORER_CONFIG = """
max_batch_size: 16
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
dynamic_batching { max_queue_delay_microseconds: 2000 always_wait_for_window: true }
"""

#: rejects rows with a negative first value: the "bad request" in every batch
SCORER_MODEL = """
import numpy as np
from engines.base import InvalidInput

class Model:
    def infer(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        if (x[:, 0] < 0).any():
            raise InvalidInput("x[:, 0] must not be negative")
        return {"y": x * 2}
"""

TICKER_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
streaming { max_active_streams: 8 max_waiting_streams: 64 max_buffered_outputs: 4 }
"""

TICKER_MODEL = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        for i in range(1000000):
            yield {"y": np.full((1, 4), i, dtype=np.float32)}
"""


def _request(value: float) -> inference_pb2.PredictRequest:
    request = inference_pb2.PredictRequest(model_name="scorer")
    request.inputs.append(from_numpy("x", np.full((1, 4), value, np.float32)))
    return request


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


async def _round(address: str, root: Path) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        admin = admin_pb2_grpc.ModelServiceStub(channel)

        async def valid_caller(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                value = rng.uniform(0, 10)
                try:
                    reply = await stub.Predict(_request(value), timeout=30)
                    assert np.allclose(to_numpy(reply.outputs[0]), value * 2)
                    outcomes["valid ok"] += 1
                except grpc.aio.AioRpcError as exc:
                    outcomes[f"valid {exc.code().name}: {exc.details()}"] += 1

        async def bad_caller() -> None:
            while not stop.is_set():
                try:
                    await stub.Predict(_request(-1.0), timeout=30)
                    outcomes["bad ok"] += 1
                except grpc.aio.AioRpcError as exc:
                    outcomes[f"bad {exc.code().name}"] += 1

        async def cancel_storm(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                call = stub.Predict(_request(1.0), timeout=rng.choice([0.0005, 0.002, 0.01, 30]))
                await asyncio.sleep(rng.uniform(0, 0.003))
                call.cancel()
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    await call
                request = inference_pb2.PredictStreamRequest(model_name="ticker")
                request.inputs.append(from_numpy("x", np.ones((1, 4), np.float32)))
                stream = stub.PredictStream(request)
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    for _ in range(rng.randint(0, 3)):
                        await stream.read()
                stream.cancel()
                outcomes["cancelled"] += 1

        async def swap_storm() -> None:
            model_file = root / "scorer" / "1" / "model.py"
            while not stop.is_set():
                os.utime(model_file)  # new files: LoadModel makes a new slot and retires the old one
                await admin.LoadModel(admin_pb2.LoadModelRequest(name="scorer"), timeout=30)
                await admin.LoadModel(admin_pb2.LoadModelRequest(name="ticker"), timeout=30)
                outcomes["swaps"] += 1
                await asyncio.sleep(0.05)

        tasks = [asyncio.ensure_future(valid_caller(i)) for i in range(CALLERS)]
        tasks += [asyncio.ensure_future(bad_caller())]
        tasks += [asyncio.ensure_future(cancel_storm(100 + i)) for i in range(4)]
        tasks += [asyncio.ensure_future(swap_storm())]
        await asyncio.sleep(ROUND_S)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return outcomes


def _settled(server: ServerThread) -> bool:
    """Nothing queued, in flight or streaming in any loaded version, and every retired version closed."""
    assert server.server is not None
    for entry in server.server.registry.models():
        for slot in entry.slots.values():
            queued = slot.batcher.queued if slot.batcher is not None else 0
            streams = slot.stats.streaming
            if queued or slot.in_flight or streams.active_streams or streams.waiting_streams:
                return False
            if streams.buffered_outputs:
                return False
    return not server.server.manager.draining


def test_swap_and_cancel_storms_with_a_bad_request_per_batch_fail_no_valid_request(tmp_path: Path) -> None:
    write_model(tmp_path, "scorer", SCORER_CONFIG, {1: SCORER_MODEL})
    write_model(tmp_path, "ticker", TICKER_CONFIG, {1: TICKER_MODEL})
    with ServerThread(tmp_path, unload_drain_seconds=5) as server:
        rss: list[float] = []
        for round_number in (1, 2):
            outcomes = asyncio.run(_round(server.address, tmp_path))
            failed_valid = {k: n for k, n in outcomes.items() if k.startswith("valid ") and k != "valid ok"}
            assert not failed_valid, f"round {round_number}: valid requests failed: {failed_valid}"
            assert outcomes["valid ok"] > 100 and outcomes["swaps"] >= 5, outcomes
            assert outcomes["bad ok"] == 0 and outcomes["bad INVALID_ARGUMENT"] > 10, outcomes
            assert set(k for k in outcomes if k.startswith("bad ")) == {"bad INVALID_ARGUMENT"}, outcomes
            eventually(lambda: _settled(server), what="queues, streams and drains back to zero")
            entry = server.server.registry.entry("scorer") if server.server else None
            assert entry is not None and all(s.state is SlotState.READY for s in entry.slots.values())
            rss.append(_rss_mb())
        growth = rss[1] - rss[0]
        assert growth < RSS_GROWTH_BOUND_MB, f"RSS grew {growth:.1f} MB in the second round ({rss})"
