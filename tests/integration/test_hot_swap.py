"""Zero-drop hot swap: 16 callers keep predicting while versions are swapped through the admin API
(10 times) and through repository polling (3 times). No request fails, every answer comes from a
version that was routable while the request was in flight, and every replaced slot ends UNLOADED."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import grpc
import numpy as np

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.core.types import SlotState
from server.models.registry import ModelEntry
from tests.support import SCALE_CONFIG, ServerThread, eventually_async, scale_model, write_model

CALLERS = 16
ADMIN_SWAPS = 10
POLL_SWAPS = 3


def add_version(root: Path, version: int) -> None:
    """Write a version folder atomically (a rename), so a poll never sees it half-written."""
    staging = root / "swap" / f".staging-{version}"
    staging.mkdir()
    (staging / "model.py").write_text(scale_model(version))
    os.rename(staging, root / "swap" / str(version))


def remove_version(root: Path, version: int) -> None:
    shutil.rmtree(root / "swap" / str(version))


async def test_versions_swap_under_load_without_dropping_a_request(tmp_path: Path):
    write_model(tmp_path, "swap", SCALE_CONFIG + "dynamic_batching { max_queue_delay_microseconds: 500 }\n")
    add_version(tmp_path, 1)
    server = ServerThread(tmp_path, poll_interval=0.05).start()
    assert server.server is not None
    registry = server.server.registry
    # every routing table the server publishes, with the time it took effect (server-side clock)
    timeline: list[tuple[float, frozenset[int]]] = []
    publish = registry.publish

    async def recording_publish(entry: ModelEntry) -> None:
        await publish(entry)
        if entry.name == "swap":
            timeline.append((time.monotonic(), frozenset(entry.ready_versions())))

    timeline.append((time.monotonic(), frozenset(registry.entry("swap").ready_versions())))
    registry.publish = recording_publish  # type: ignore[method-assign]

    answers: list[tuple[float, float, int, float]] = []  # sent, received, version, factor
    failures: list[str] = []
    stop = asyncio.Event()

    async def caller(stub: inference_pb2_grpc.InferenceServiceStub, seed: int) -> None:
        x = np.full((1, 4), float(seed + 1), dtype=np.float32)
        request = inference_pb2.PredictRequest(model_name="swap", inputs=[from_numpy("x", x)])
        while not stop.is_set():
            sent = time.monotonic()
            try:
                reply = await stub.Predict(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            y = to_numpy(reply.outputs[0])
            answers.append((sent, time.monotonic(), reply.model_version, float(y[0, 0]) / (seed + 1)))

    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            admin = admin_pb2_grpc.ModelServiceStub(channel)
            callers = [asyncio.ensure_future(caller(stub, i)) for i in range(CALLERS)]
            version = 1
            for _ in range(ADMIN_SWAPS):
                await wait_for_answers(answers, 20)
                version += 1
                add_version(tmp_path, version)
                reply = await admin.LoadModel(admin_pb2.LoadModelRequest(name="swap"), timeout=60)
                assert [v.version for v in reply.status.versions] == [version]
                remove_version(tmp_path, version - 1)
            for _ in range(POLL_SWAPS):
                await wait_for_answers(answers, 20)
                version += 1
                add_version(tmp_path, version)
                await eventually_async(
                    lambda v=version: registry.entry("swap").ready_versions() == [v], what=f"version {version} alone"
                )
                remove_version(tmp_path, version - 1)
            await wait_for_answers(answers, 20)
            stop.set()
            await asyncio.gather(*callers)
    finally:
        server.call(server.server.manager.wait_drained())
        retired = list(server.server.manager.retired)
        server.stop()

    assert failures == []
    assert len(answers) > 100
    for sent, received, served, scale in answers:
        assert scale == served, "the answer must come from the version that says it served"
        routable = routable_between(timeline, sent, received)
        assert served in routable, f"version {served} was not routable between {sent} and {received}"
    assert {served for _s, _r, served, _f in answers} >= {1, version}
    assert len(retired) == ADMIN_SWAPS + POLL_SWAPS  # under the manager's bound (RETIRED_HISTORY), all kept
    assert all(slot.state is SlotState.UNLOADED for slot in retired)


def routable_between(timeline: list[tuple[float, frozenset[int]]], start: float, end: float) -> set[int]:
    """Versions READY in any routing table in effect at some instant of [start, end]."""
    versions: set[int] = set()
    for i, (at, ready) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else float("inf")
        if at <= end and until >= start:
            versions |= ready
    return versions


async def wait_for_answers(answers: list[object], more: int) -> None:
    target = len(answers) + more
    await eventually_async(lambda: len(answers) >= target, what=f"{target} answers")
