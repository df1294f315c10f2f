"""Versioned slots: version and label routing, traffic splits, sticky keys, shadow traffic, warm-up,
failed loads that keep the old version, and health that never flickers for unrelated models."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd.tensors import from_numpy, to_numpy
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

COUNTING_MODEL = """
import itertools
import numpy as np

CALLS = itertools.count(1)

class Model:
    def infer(self, inputs):
        n = next(CALLS)
        x = np.asarray(inputs["x"], dtype=np.float32)
        return {"y": np.full_like(x, float(n))}
"""

ROUTED_CONFIG = (
    SCALE_CONFIG
    + """
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "canary" value: 2 }
traffic { label: "stable" weight: 90 }
traffic { label: "canary" weight: 10 }
"""
)

SHADOWED_CONFIG = (
    SCALE_CONFIG
    + """
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "challenger" value: 2 }
shadow { label: "challenger" fraction: 1.0 }
"""
)

WARMED_CONFIG = (
    SCALE_CONFIG
    + """
warmup { input_kind: INPUT_KIND_RANDOM batch_sizes: [1, 4] count: 3 }
"""
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("versions-repo")
    write_model(root, "routed", ROUTED_CONFIG, {v: scale_model(v) for v in (1, 2, 3)})
    write_model(root, "shadowed", SHADOWED_CONFIG, {1: scale_model(1), 2: scale_model(1.5)})
    write_model(root, "warmed", WARMED_CONFIG, {1: COUNTING_MODEL})
    write_model(root, "other", SCALE_CONFIG, {1: scale_model(5)})
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo) as running:
        yield running


@pytest.fixture()
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def predict(channel: grpc.Channel, model: str, **fields: object) -> inference_pb2.PredictResponse:
    x = np.ones((1, 4), dtype=np.float32)
    request = inference_pb2.PredictRequest(model_name=model, inputs=[from_numpy("x", x)], **fields)  # type: ignore[arg-type]
    return inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=10)


def factor(reply: inference_pb2.PredictResponse) -> float:
    return float(to_numpy(reply.outputs[0])[0, 0])


def test_an_explicit_version_is_served_by_that_version(channel):
    for version in (1, 2, 3):
        reply = predict(channel, "routed", model_version=version)
        assert reply.model_version == version and factor(reply) == version


def test_a_label_routes_to_its_version(channel):
    assert predict(channel, "routed", version_label="canary").model_version == 2
    assert predict(channel, "routed", version_label="stable").model_version == 1


def test_traffic_split_follows_the_weights_over_2000_requests(channel):
    counts = Counter(predict(channel, "routed").model_version for _ in range(2000))
    assert set(counts) == {1, 2}  # version 3 has no label, so the split never picks it
    share = counts[2] / 2000
    assert 0.07 < share < 0.13, counts  # 10% ± 3 points (about 4.5 standard deviations)


def test_a_routing_key_field_is_sticky(channel):
    for key in ("user-1", "user-2", "user-3", "user-4"):
        versions = {predict(channel, "routed", routing_key=key).model_version for _ in range(20)}
        assert len(versions) == 1


def test_the_routing_key_header_is_sticky_and_agrees_with_the_field(channel):
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.PredictRequest(
        model_name="routed", inputs=[from_numpy("x", np.ones((1, 4), dtype=np.float32))]
    )
    for i in range(30):
        key = f"tenant-{i}"
        by_header = {
            stub.Predict(request, metadata=[("x-inferd-routing-key", key)], timeout=10).model_version for _ in range(5)
        }
        assert by_header == {predict(channel, "routed", routing_key=key).model_version}


def test_shadow_answers_are_never_returned_and_agreement_is_recorded(channel, server: ServerThread):
    replies = [predict(channel, "shadowed") for _ in range(40)]
    assert {r.model_version for r in replies} == {1}
    assert {factor(r) for r in replies} == {1.0}
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    assert server.server is not None
    server.call(server.server.shadow.close())  # let the mirrors that are still running finish
    stats = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="shadowed", version=2), timeout=5)
    (comparison,) = stats.statistics[0].shadow
    assert comparison.primary_version == 1 and comparison.output == "y"
    assert comparison.compared + comparison.dropped == 40
    assert comparison.compared > 0
    assert comparison.max_abs_diff == pytest.approx(0.5)
    assert comparison.mean_abs_diff == pytest.approx(0.5)
    primary = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="shadowed", version=1), timeout=5)
    assert primary.statistics[0].success_count == 40 and not primary.statistics[0].shadow


def test_warm_up_runs_before_ready(channel):
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    stats = stub.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="warmed"), timeout=5).statistics[0]
    assert stats.warmup_count == 6  # batch sizes 1 and 4, three times each
    assert stats.execution_count == 0
    # the model numbers its calls: one load-time dry run and six warm-ups came before this first request
    assert factor(predict(channel, "warmed")) == 8.0


def _health_watch(address: str, service: str) -> tuple[grpc.Channel, queue.Queue[int]]:
    channel = grpc.insecure_channel(address)
    seen: queue.Queue[int] = queue.Queue()
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))

    def read() -> None:
        try:
            for reply in watch:
                seen.put(int(reply.status))
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()
    return channel, seen


def test_failed_load_keeps_the_old_version_and_other_health_never_changes(tmp_path: Path):
    write_model(tmp_path, "evolving", SCALE_CONFIG, {1: scale_model(1)})
    write_model(tmp_path, "other", SCALE_CONFIG, {1: scale_model(5)})
    with ServerThread(tmp_path) as server:
        server_ch, server_seen = _health_watch(server.address, "")
        other_ch, other_seen = _health_watch(server.address, "model/other")
        with grpc.insecure_channel(server.address) as channel:
            admin = admin_pb2_grpc.ModelServiceStub(channel)
            assert server_seen.get(timeout=5) == health_pb2.HealthCheckResponse.SERVING
            assert other_seen.get(timeout=5) == health_pb2.HealthCheckResponse.SERVING
            # version 2 is broken: the load reports it, version 1 keeps serving
            (tmp_path / "evolving" / "2").mkdir()
            (tmp_path / "evolving" / "2" / "model.py").write_text("raise ImportError('missing weights')\n")
            reply = admin.LoadModel(admin_pb2.LoadModelRequest(name="evolving"), timeout=30)
            states = {v.version: v.state for v in reply.status.versions}
            assert states == {1: inference_pb2.VERSION_STATE_READY, 2: inference_pb2.VERSION_STATE_FAILED}
            assert "missing weights" in {v.version: v.reason for v in reply.status.versions}[2]
            assert predict(channel, "evolving").model_version == 1
            # a broken config keeps serving too
            config = tmp_path / "evolving" / "config.pbtxt"
            config.write_text("max_batch_size: oops\n")
            reply = admin.LoadModel(admin_pb2.LoadModelRequest(name="evolving"), timeout=30)
            assert "config.pbtxt:1:" in reply.status.reason
            assert predict(channel, "evolving").model_version == 1
            # fixed: version 2 takes over
            config.write_text(SCALE_CONFIG)
            (tmp_path / "evolving" / "2" / "model.py").write_text(scale_model(2))
            admin.LoadModel(admin_pb2.LoadModelRequest(name="evolving"), timeout=30)
            assert predict(channel, "evolving").model_version == 2
        # nothing but the initial SERVING was ever sent for the server and the unrelated model
        assert server_seen.empty() and other_seen.empty()
        server_ch.close()
        other_ch.close()


def test_set_traffic_relabels_atomically_and_rejects_unready_versions(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: scale_model(2)})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        assert predict(channel, "m").model_version == 2  # no labels: the highest READY version
        admin.SetTraffic(admin_pb2.SetTrafficRequest(name="m", version_labels={"stable": 1}), timeout=5)
        assert predict(channel, "m").model_version == 1  # rollback is a label move
        with pytest.raises(grpc.RpcError) as info:
            admin.SetTraffic(admin_pb2.SetTrafficRequest(name="m", version_labels={"stable": 7}), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 7" in info.value.details()
        assert predict(channel, "m").model_version == 1


def test_unload_of_a_version_and_of_a_model(tmp_path: Path):
    write_model(tmp_path, "m", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: scale_model(2)})
    with ServerThread(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        admin = admin_pb2_grpc.ModelServiceStub(channel)
        reply = admin.UnloadModel(admin_pb2.UnloadModelRequest(name="m", version=2), timeout=10)
        assert [v.version for v in reply.status.versions] == [1]
        assert predict(channel, "m").model_version == 1
        admin.UnloadModel(admin_pb2.UnloadModelRequest(name="m"), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            predict(channel, "m")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        index = admin.RepositoryIndex(admin_pb2.RepositoryIndexRequest(), timeout=5)
        (model,) = index.models
        assert model.name == "m" and list(model.versions_on_disk) == [1, 2] and not model.loaded
