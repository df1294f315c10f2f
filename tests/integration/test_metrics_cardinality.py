"""Clients cannot grow the metrics: label values come only from the models and versions the server knows.

A scraper pays for every series it stores; a client sending random model names (a typo loop, a scanner)
must move one counter, ``inferd_unrouted_requests_total{code="NOT_FOUND"}``, and create nothing.
"""

from __future__ import annotations

import asyncio
import random
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferd.tensors import from_numpy
from inferd.v1 import inference_pb2
from server.telemetry.options import TelemetryOptions
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

UNKNOWN_MODEL_CALLS = 10_000
#: calls in flight at once: enough to finish in seconds, few enough not to queue at the transport
CONCURRENCY = 256
NOT_FOUND = ("inferd_unrouted_requests_total", (("code", "NOT_FOUND"),))

Series = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("cardinality-repo")
    write_model(root, "scale", SCALE_CONFIG + 'version_labels { key: "stable" value: 1 }\n', {1: scale_model(2)})
    with ServerThread(Path(root), telemetry=TelemetryOptions(metrics_port=0)) as server:
        yield server


def scrape(server: ServerThread) -> dict[Series, float]:
    """Every sample on ``/metrics``, keyed by sample name and sorted labels."""
    assert server.server is not None and server.server.metrics_port, "the server serves no metrics endpoint"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _request(model: str, version: int = 0, label: str = "") -> bytes:
    x = from_numpy("x", np.ones((1, 4), dtype=np.float32))
    message = inference_pb2.PredictRequest(model_name=model, model_version=version, version_label=label, inputs=[x])
    return message.SerializeToString()


async def send_all(address: str, requests: list[bytes]) -> list[grpc.StatusCode]:
    """Send every request as a Predict (at most CONCURRENCY at once); returns each call's status."""
    limit = asyncio.Semaphore(CONCURRENCY)
    async with grpc.aio.insecure_channel(address) as channel:
        predict = channel.unary_unary(
            "/inferd.v1.InferenceService/Predict",
            request_serializer=None,
            response_deserializer=inference_pb2.PredictResponse.FromString,
        )

        async def one(data: bytes) -> grpc.StatusCode:
            async with limit:
                try:
                    await predict(data, timeout=30)
                except grpc.aio.AioRpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

        return await asyncio.gather(*(one(data) for data in requests))


async def miss_once(server: ServerThread) -> None:
    """One unknown-model call, so the NOT_FOUND counter (a fixed label value) exists before the baseline."""
    assert await send_all(server.address, [_request("warm-up-miss")]) == [grpc.StatusCode.NOT_FOUND]


def _changed_values(before: dict[Series, float], after: dict[Series, float]) -> set[Series]:
    return {key for key in before if key in after and after[key] != before[key]}


async def test_ten_thousand_unknown_model_names_add_no_series(metrics_server: ServerThread) -> None:
    await miss_once(metrics_server)
    before = scrape(metrics_server)
    names = [f"no-such-model-{uuid.uuid4().hex}" for _ in range(UNKNOWN_MODEL_CALLS)]

    codes = await send_all(metrics_server.address, [_request(name) for name in names])

    assert set(codes) == {grpc.StatusCode.NOT_FOUND}
    after = scrape(metrics_server)
    assert set(after) == set(before), f"new series: {sorted(set(after) - set(before))[:5]}"
    assert after[NOT_FOUND] - before[NOT_FOUND] == UNKNOWN_MODEL_CALLS
    moved = {key for key in _changed_values(before, after) if key[0].startswith("inferd_")}
    assert moved == {NOT_FOUND}, "only the unrouted NOT_FOUND counter may move"


async def test_unknown_versions_and_labels_of_a_known_model_add_no_series(metrics_server: ServerThread) -> None:
    await miss_once(metrics_server)
    before = scrape(metrics_server)
    rng = random.Random(12)
    requests = [_request("scale", version=rng.randrange(2, 1_000_000)) for _ in range(500)]
    requests += [_request("scale", label=f"label-{uuid.uuid4().hex[:12]}") for _ in range(500)]

    codes = await send_all(metrics_server.address, requests)

    assert set(codes) == {grpc.StatusCode.NOT_FOUND}
    after = scrape(metrics_server)
    assert set(after) == set(before), f"new series: {sorted(set(after) - set(before))[:5]}"
    assert after[NOT_FOUND] - before[NOT_FOUND] == len(requests)
    assert {dict(labels).get("version") for _name, labels in after} <= {None, "1"}
