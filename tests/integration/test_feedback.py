"""Feedback through a real server: predictions recorded per version (shadow mirrors too), scored when the
truth arrives; unknown, expired, repeated and malformed feedback answered clearly; the metrics exported."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from inferd import AsyncClient, Client
from inferd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from inferd.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2
from server.telemetry.metrics import MetricsSource
from tests.support import ServerThread, write_model

#: returns its input as the class probabilities, so a test chooses exactly what was predicted
IDENTITY = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"probs": np.asarray(inputs["x"], dtype=np.float32)}
"""
#: a challenger whose probabilities are the reverse of the input's
REVERSED = IDENTITY.replace('inputs["x"]', 'inputs["x"][:, ::-1]')
CLASSIFIER = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 3] }
output { name: "probs" data_type: DATA_TYPE_FP32 dims: [-1, 3] }
version_policy { all {} }
version_labels { key: "stable" value: 1 }
version_labels { key: "challenger" value: 2 }
shadow { label: "challenger" fraction: 1.0 }
feedback { ttl_seconds: 60 }
"""
#: y = 2x
DOUBLER = """
import numpy as np

class Model:
    def infer(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}
"""
REGRESSOR = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
feedback {}
"""
PLAIN = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 1] }
"""
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def server(tmp_path: Path, clock: Clock) -> Iterator[ServerThread]:
    write_model(tmp_path, "cls", CLASSIFIER, {1: IDENTITY, 2: REVERSED})
    write_model(tmp_path, "reg", REGRESSOR, {1: DOUBLER})
    write_model(tmp_path, "plain", PLAIN, {1: DOUBLER})
    with ServerThread(tmp_path) as running:
        assert running.server is not None
        running.server.servicer.feedback.clock = clock  # before the first prediction makes a store
        yield running


def settle(server: ServerThread) -> None:
    """Wait for the shadow mirrors still running, so the challenger's predictions are recorded."""
    assert server.server is not None
    server.call(server.server.shadow.close())


def feedback_stats(client: Client, model: str, version: int) -> inference_pb2.FeedbackStatistics:
    (stats,) = client.statistics(model, version)
    return stats.feedback


def test_classification_scores_primary_and_shadow_on_the_same_truth(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        prediction = client.predict_response("cls", {"x": PROBS})
        assert prediction.version == 1
        settle(server)
        result = client.feedback("cls", prediction.id, [0, 2])
        assert result.outcome == "scored" and result.scored_versions == (1, 2)
        primary = feedback_stats(client, "cls", 1)
        assert (primary.kind, primary.scored, primary.correct) == ("classification", 2, 1)  # argmax 0 ✓, 1 ✗
        assert primary.log_loss_sum == pytest.approx(-math.log(0.7) - math.log(0.1), rel=1e-6)
        # the challenger predicted the reversed rows [0.1 0.2 0.7] and [0.1 0.8 0.1]: both wrong
        challenger = feedback_stats(client, "cls", 2)
        assert (challenger.scored, challenger.correct) == (2, 0)
        assert challenger.log_loss_sum == pytest.approx(-math.log(0.1) - math.log(0.1), rel=1e-6)
        # an id is scored once; the counts do not move
        with pytest.raises(AlreadyExists, match="already scored"):
            client.feedback("cls", prediction.id, [0, 2])
        assert feedback_stats(client, "cls", 1).scored == 2


def test_regression_mae_and_rmse(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)  # predicted 2, 4, 6
        prediction = client.predict_response("reg", {"x": x})
        result = client.feedback("reg", prediction.id, np.array([[2.0], [5.0], [3.0]], dtype=np.float32))
        assert result.scored and result.scored_versions == (1,)
        stats = feedback_stats(client, "reg", 1)
        assert (stats.kind, stats.scored) == ("regression", 3)
        assert stats.abs_error_sum / stats.scored == pytest.approx(4 / 3)  # MAE of errors 0, 1, 3
        assert math.sqrt(stats.squared_error_sum / stats.scored) == pytest.approx(math.sqrt(10 / 3))
        assert stats.squared_error_sq_sum == pytest.approx(0 + 1 + 81)


async def test_async_client_and_unknown_and_expired_ids_are_outcomes_not_errors(server: ServerThread, clock: Clock):
    async with AsyncClient(server.address, timeout=10) as client:
        unknown = await client.feedback("cls", "no-such-id", [0])
        assert unknown.outcome == "unknown_id" and "no-such-id" in unknown.message
        old = await client.predict_response("cls", {"x": PROBS})
        clock.now += 61  # past ttl_seconds: 60
        expired = await client.feedback("cls", old.id, [0, 0])
        assert expired.outcome == "expired" and "ttl_seconds" in expired.message
        # a later prediction drops the expired record; its id is still answered "expired", not "unknown"
        fresh = await client.predict_response("cls", {"x": PROBS})
        stale = await client.predict_response("cls", {"x": PROBS}, request_id="stale-one")
        clock.now += 61
        await client.predict_response("cls", {"x": PROBS})
        assert (await client.feedback("cls", stale.id, [0, 0])).outcome == "expired"
        assert (await client.feedback("cls", fresh.id, [0, 0])).outcome == "expired"
    assert server.server is not None
    unmatched = server.server.servicer.feedback.unmatched
    assert unmatched[("cls", "unknown_id")] == 1 and unmatched[("cls", "expired")] == 3


def test_malformed_targets_are_invalid_argument_naming_the_tensor_and_keep_the_record(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        prediction = client.predict_response("cls", {"x": PROBS})
        settle(server)
        with pytest.raises(InvalidArgument, match=r"'target'.*shape \[2\]"):
            client.feedback("cls", prediction.id, [0, 1, 2])
        with pytest.raises(InvalidArgument, match=r"'target'.*INT64"):
            client.feedback("cls", prediction.id, np.array([0.0, 1.0], dtype=np.float32))
        with pytest.raises(InvalidArgument, match=r"class outside \[0, 3\)"):
            client.feedback("cls", prediction.id, [0, 3])
        reg = client.predict_response("reg", {"x": np.ones((2, 1), dtype=np.float32)})
        with pytest.raises(InvalidArgument, match=r"'target'.*FP32"):
            client.feedback("reg", reg.id, [1, 2])
        with pytest.raises(InvalidArgument, match=r"'target'.*shape \[2, 1\]"):
            client.feedback("reg", reg.id, np.ones((2,), dtype=np.float32))
        # the record survived the refusals: the corrected target scores it
        assert client.feedback("cls", prediction.id, [1, 1]).scored
        assert client.feedback("reg", reg.id, np.ones((2, 1), dtype=np.float32)).scored
        with pytest.raises(NotFound):
            client.feedback("nope", "x", [0])
        with pytest.raises(FailedPrecondition, match="no feedback policy"):
            client.feedback("plain", "x", [0])
    # raw API: a target whose bytes disagree with its shape, and no target at all
    with grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        bad = inference_pb2.FeedbackRequest(model_name="cls", request_id="x")
        bad.target.name = "labels"
        bad.target.data_type = tensor_pb2.DATA_TYPE_INT64
        bad.target.shape.append(2)
        bad.target.raw_contents = b"\x00" * 3
        for request in (bad, inference_pb2.FeedbackRequest(model_name="cls", request_id="x")):
            with pytest.raises(grpc.RpcError) as err:
                stub.Feedback(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_feedback_metrics(server: ServerThread):
    with Client(server.address, timeout=10) as client:
        prediction = client.predict_response("cls", {"x": PROBS})
        settle(server)
        client.feedback("cls", prediction.id, [0, 1])
        client.feedback("cls", "unknown", [0, 1])
        reg = client.predict_response("reg", {"x": np.ones((2, 1), dtype=np.float32)})
        client.feedback("reg", reg.id, np.zeros((2, 1), dtype=np.float32))
    assert server.server is not None
    server_ = server.server
    source = MetricsSource(server_._versions, {}, {}, feedback_unmatched=server_.servicer.feedback.unmatched)
    points = {
        (m.name, tuple(sorted(p.attributes.items()))): p.value
        for m in server.call(_collect(source))
        if m.name.startswith("inferd_feedback")
        for p in m.data.data_points  # type: ignore[union-attr]
    }
    cls1 = (("model", "cls"), ("version", "1"))
    assert points[("inferd_feedback_scored_rows", cls1)] == 2
    assert points[("inferd_feedback_correct_rows", cls1)] == 2
    assert points[("inferd_feedback_correct_rows", (("model", "cls"), ("version", "2")))] == 1  # row 2 only
    assert points[("inferd_feedback_squared_error_sum", (("model", "reg"), ("version", "1")))] == pytest.approx(8.0)
    assert points[("inferd_feedback_unmatched", (("model", "cls"), ("reason", "unknown_id")))] == 1
    assert not any(name == "inferd_feedback_scored_rows" and ("model", "plain") in labels for name, labels in points)


async def _collect(source: MetricsSource) -> list:  # type: ignore[type-arg]
    return source.collect()  # on the server's loop, as the exporter calls it
