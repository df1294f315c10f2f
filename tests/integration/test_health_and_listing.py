"""grpc.health.v1 per server and per model; ListModels/ModelMetadata report failures with reasons;
ModelStatistics counts every call, streams included."""

from __future__ import annotations

import gc
import queue
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd import Client, errors
from inferd.control import ModelControl
from inferd.v1 import inference_pb2
from tests.integration.conftest import build_small_repository
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


@pytest.mark.parametrize("service", ["", "inferd.v1.InferenceService", "model/scale", "model/flaky"])
def test_server_service_and_ready_models_are_serving(small_server: ServerThread, service: str):
    assert _check(small_server.address, service) == SERVING


@pytest.mark.parametrize("service", ["model/broken", "model/badconfig"])
def test_failed_models_are_not_serving(small_server: ServerThread, service: str):
    assert _check(small_server.address, service) == NOT_SERVING


def test_unknown_health_service_is_not_found(small_server: ServerThread):
    with pytest.raises(grpc.RpcError) as info:
        _check(small_server.address, "model/nosuchmodel")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown health service 'model/nosuchmodel'" in info.value.details()


def test_health_list_returns_every_service_with_its_status(small_server: ServerThread):
    with grpc.insecure_channel(small_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    statuses = {service: int(response.status) for service, response in reply.statuses.items()}
    assert statuses == {
        "": SERVING,
        "inferd.v1.InferenceService": SERVING,
        "model/scale": SERVING,
        "model/flaky": SERVING,
        "model/wide": SERVING,
        "model/identity": SERVING,
        "model/broken": NOT_SERVING,
        "model/badconfig": NOT_SERVING,
    }


def test_list_models_reports_failed_versions_and_bad_configs_with_reasons(stub):
    models = {m.name: m for m in stub.ListModels(inference_pb2.ListModelsRequest(), timeout=5).models}
    assert set(models) == {"scale", "flaky", "broken", "badconfig", "wide", "identity"}
    scale = models["scale"].versions[0]
    assert scale.state == inference_pb2.VERSION_STATE_READY
    assert scale.engine == "python"
    assert list(scale.labels) == ["stable"]
    broken = models["broken"].versions[0]
    assert broken.state == inference_pb2.VERSION_STATE_FAILED
    assert "boom at import" in broken.reason
    bad = models["badconfig"]
    assert not bad.versions
    assert "badconfig/config.pbtxt:2:" in bad.reason and "data_typo" in bad.reason


def test_model_metadata_describes_signature_and_serving_version(stub):
    meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="scale"), timeout=5)
    assert meta.version == 1 and meta.engine == "python" and meta.max_batch_size == 8
    assert [(t.name, list(t.shape)) for t in meta.inputs] == [("x", [-1, 4])]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [("y", [-1, 4])]
    assert meta.config.name == "scale"


def test_model_metadata_of_unknown_version_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="scale", version=9), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'scale' version 9 not found" in info.value.details()


def test_server_metadata_lists_importable_engines(stub):
    meta = stub.ServerMetadata(inference_pb2.ServerMetadataRequest(), timeout=5)
    assert meta.name == "inferd"
    assert "python" in meta.engines
    assert "health" in meta.extensions and "reflection" in meta.extensions


class _Watch:
    """A grpc.health.v1 Watch read on a thread: the statuses seen, and how the stream ended."""

    def __init__(self, channel: grpc.Channel, service: str) -> None:
        self.seen: queue.Queue[int] = queue.Queue()
        self.ended: queue.Queue[grpc.StatusCode] = queue.Queue()
        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.seen.put(int(reply.status))
            self.ended.put(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            self.ended.put(err.code())

    def until(self, status: int) -> list[int]:
        """The statuses received up to ``status`` (a load publishes NOT_SERVING while it runs)."""
        got = [self.seen.get(timeout=10)]
        while got[-1] != status:
            got.append(self.seen.get(timeout=10))
        return got


def test_watch_streams_not_serving_then_ends_when_the_server_stops(tmp_path):
    server = ServerThread(build_small_repository(tmp_path)).start()
    channel = grpc.insecure_channel(server.address)
    try:
        watch = _Watch(channel, "model/scale")
        assert watch.seen.get(timeout=10) == SERVING
        assert server.server is not None
        server.call(server.server.health.shutdown())
        assert watch.seen.get(timeout=10) == NOT_SERVING
        assert watch.ended.get(timeout=10) == grpc.StatusCode.OK  # ended by the server, at once
        late = _Watch(channel, "")  # the port is still open during the drain window
        assert late.seen.get(timeout=10) == NOT_SERVING
        assert late.ended.get(timeout=10) == grpc.StatusCode.OK
    finally:
        channel.close()
        server.stop()


def test_watch_on_an_unknown_service_says_service_unknown_then_follows_it(tmp_path):
    root = build_small_repository(tmp_path)
    server = ServerThread(root).start()
    channel = grpc.insecure_channel(server.address)
    try:
        watch = _Watch(channel, "model/late")
        assert watch.seen.get(timeout=10) == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        write_model(root, "late", SCALE_CONFIG, {1: scale_model(3)})
        with Client(server.address, timeout=30) as client:
            ModelControl(client).load("late")
            assert watch.until(SERVING)[-1] == SERVING
            ModelControl(client).unload("late")
            assert watch.seen.get(timeout=10) == NOT_SERVING
        watch.call.cancel()
    finally:
        channel.close()
        server.stop()


def _counts(client: Client, model: str) -> tuple[int, dict[str, int]]:
    (stats,) = client.statistics(model, 1)
    return stats.success_count, dict(stats.failure_count)


def test_chunked_streams_are_counted_in_model_statistics_like_predict(small_server: ServerThread):
    x = np.arange(32, dtype=np.float32).reshape(8, 4) + 1
    with Client(small_server.address, timeout=10) as client:
        success, failed = _counts(client, "flaky")
        assert len(list(client.predict_stream("flaky", {"x": x}, chunk_rows=2))) == 4
        assert _counts(client, "flaky") == (success + 1, failed)

        # the engine fails on the third chunk (its first value is 13): one INTERNAL, after two messages
        x[4, 0] = 13
        with pytest.raises(errors.Internal):
            list(client.predict_stream("flaky", {"x": x}, chunk_rows=2))
        failed["INTERNAL"] = failed.get("INTERNAL", 0) + 1
        assert _counts(client, "flaky") == (success + 1, failed)

        # refused before the first chunk, as Predict's validation would be
        with pytest.raises(errors.InvalidArgument):
            list(client.predict_stream("flaky", {"x": x.astype(np.float64)}, chunk_rows=2))
        failed["INVALID_ARGUMENT"] = failed.get("INVALID_ARGUMENT", 0) + 1
        assert _counts(client, "flaky") == (success + 1, failed)


def test_a_chunked_stream_the_client_cancels_counts_as_cancelled(small_server: ServerThread):
    with Client(small_server.address, timeout=30) as client:
        cancelled = _counts(client, "wide")[1].get("CANCELLED", 0)
        # 8 chunks of 2.4 MB: more than gRPC's flow-control window, so the server is still writing
        stream = client.predict_stream("wide", {"x": np.ones((8, 1), np.float32)}, chunk_rows=1)
        assert next(stream).sequence_index == 0
        stream.close()
        eventually(lambda: _counts(client, "wide")[1].get("CANCELLED", 0) == cancelled + 1, what="CANCELLED counted")


def test_a_started_server_freezes_its_start_up_heap_out_of_the_collector(tmp_path: Path) -> None:
    """Full garbage collections under load must not re-scan the objects the server made at start-up."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    write_model(tmp_path, "scale", SCALE_CONFIG, {1: scale_model(2)})
    server = ServerThread(tmp_path).start()
    try:
        assert _check(server.address, "model/scale") == SERVING
        assert gc.get_freeze_count() > 10_000
    finally:
        server.stop()
        gc.unfreeze()
