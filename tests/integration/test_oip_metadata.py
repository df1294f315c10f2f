"""OIP health, metadata, config and statistics on a real server, through stubs generated from inferd.oip.v2.

The example models (examples/build.py) plus a few written here, read over OIP and compared with what
inferd.v1 says about the same models (tritonclient's own suite is tests/e2e: it cannot share a process).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from examples.build import build_repository
from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from inferd.tensors import DTYPE_NAMES, from_numpy
from inferd.v1 import inference_pb2, inference_pb2_grpc
from server import __version__
from tests.support import ServerThread, scale_model, write_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

EXAMPLES = ["mlp_ranker", "text_encoder", "tabular_torch", "tokenizer", "tiny_lm"]

RANKED_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
instance_count: 2
version_policy { all {} }
version_labels { key: "stable" value: 1 }
dynamic_batching {
  preferred_batch_sizes: [4, 8]
  max_queue_delay_microseconds: 700
  max_queue_size: 40
  default_timeout_microseconds: 90000
  priority_levels: 3
  default_priority_level: 2
}
parameters { key: "flavour" value: "mint" }
"""

COUNTED_CONFIG = """
max_batch_size: 8
input { name: "x" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: DATA_TYPE_FP32 dims: [-1, 4] }
dynamic_batching { }
"""

SCALAR_CONFIG = """
max_batch_size: 0
input { name: "v" data_type: DATA_TYPE_INT32 dims: [3] }
output { name: "w" data_type: DATA_TYPE_INT32 dims: [3] }
"""

SCALAR_MODEL = """
class Model:
    def infer(self, inputs):
        return {"w": inputs["v"] + 1}
"""

COUNTER_CONFIG = """
max_batch_size: 0
input { name: "start" data_type: DATA_TYPE_INT64 dims: [1] }
output { name: "n" data_type: DATA_TYPE_INT64 dims: [1] }
"""

#: a python generator; COUNTER_BOTH also answers unary calls
COUNTER_MODEL = """
import numpy as np

class Model:
    def infer_stream(self, inputs, parameters):
        start = int(np.asarray(inputs["start"]).reshape(-1)[0])
        for i in range(3):
            yield {"n": np.array([start + i], dtype=np.int64)}
"""
COUNTER_BOTH = (
    COUNTER_MODEL
    + """
    def infer(self, inputs):
        return {"n": np.asarray(inputs["start"], dtype=np.int64)}
"""
)

UNIMPLEMENTED = {
    "SystemSharedMemoryStatus": (pb.SystemSharedMemoryStatusRequest, "shared-memory"),
    "SystemSharedMemoryRegister": (pb.SystemSharedMemoryRegisterRequest, "shared-memory"),
    "SystemSharedMemoryUnregister": (pb.SystemSharedMemoryUnregisterRequest, "shared-memory"),
    "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, "shared-memory"),
    "CudaSharedMemoryRegister": (pb.CudaSharedMemoryRegisterRequest, "shared-memory"),
    "CudaSharedMemoryUnregister": (pb.CudaSharedMemoryUnregisterRequest, "shared-memory"),
    "TraceSetting": (pb.TraceSettingRequest, "OTEL_"),
    "LogSettings": (pb.LogSettingsRequest, "--log-level"),
}


def build(root: Path) -> Path:
    build_repository(root, EXAMPLES)
    write_model(root, "ranked", RANKED_CONFIG, {1: scale_model(2), 2: scale_model(3)})
    write_model(root, "counted", COUNTED_CONFIG, {1: scale_model(2)})
    write_model(root, "counted_oip", COUNTED_CONFIG, {1: scale_model(2)})
    write_model(root, "scalar", SCALAR_CONFIG, {1: SCALAR_MODEL})
    write_model(root, "counter", COUNTER_CONFIG, {1: COUNTER_MODEL})
    write_model(root, "counter_both", COUNTER_CONFIG, {1: COUNTER_BOTH})
    broken = "raise RuntimeError('v2 boom')\n"  # version 2 fails at import, version 1 serves
    write_model(root, "halfbroken", COUNTED_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: broken})
    write_model(root, "badconfig", 'max_batch_size: 8\ninput { name: "x" data_typo: 3 }\n', {1: scale_model(1)})
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(build(tmp_path_factory.mktemp("oip-repo"))) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


@pytest.fixture(scope="module")
def oip(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def v1(channel: grpc.Channel) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(channel)


def failure(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)  # type: ignore[operator]
    return caught.value


# -- health and server metadata -------------------------------------------------------------------


def test_server_live_ready_and_metadata(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert oip.ServerLive(pb.ServerLiveRequest()).live
    assert oip.ServerReady(pb.ServerReadyRequest()).ready
    meta = oip.ServerMetadata(pb.ServerMetadataRequest())
    assert (meta.name, meta.version) == ("inferd", __version__)
    assert list(meta.extensions) == [
        "model_repository",
        "model_configuration",
        "schedule_policy",
        "statistics",
        "parameters",
    ]


@pytest.mark.parametrize(
    ("name", "version", "ready"),
    [
        ("mlp_ranker", "", True),
        ("mlp_ranker", "1", True),
        ("mlp_ranker", "2", False),
        ("tiny_lm", "", True),
        ("ranked", "2", True),
        ("halfbroken", "", True),
        ("halfbroken", "1", True),
        ("halfbroken", "2", False),
        ("badconfig", "", False),
        ("nope", "", False),
        ("nope", "1", False),
    ],
)
def test_model_ready_is_false_not_an_error_for_what_cannot_serve(
    oip: pb_grpc.GRPCInferenceServiceStub, name: str, version: str, ready: bool
) -> None:
    assert oip.ModelReady(pb.ModelReadyRequest(name=name, version=version)).ready is ready


def test_model_ready_refuses_a_version_that_is_not_a_number(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    error = failure(oip.ModelReady, pb.ModelReadyRequest(name="mlp_ranker", version="latest"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version 'latest' is not a version number" in (error.details() or "")


# -- model metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "platform"),
    [
        ("mlp_ranker", "onnxruntime_onnx"),
        ("text_encoder", "onnxruntime_onnx"),
        ("tabular_torch", "pytorch_libtorch"),
        ("tokenizer", "python"),
        ("tiny_lm", "python"),
        ("scalar", "python"),
    ],
)
def test_model_metadata_matches_inferd_v1_in_triton_terms(
    oip: pb_grpc.GRPCInferenceServiceStub,
    v1: inference_pb2_grpc.InferenceServiceStub,
    name: str,
    platform: str,
) -> None:
    meta = oip.ModelMetadata(pb.ModelMetadataRequest(name=name))
    ours = v1.ModelMetadata(inference_pb2.ModelMetadataRequest(name=name))
    assert (meta.name, list(meta.versions), meta.platform) == (name, ["1"], platform)
    for oip_tensors, v1_tensors in ((meta.inputs, ours.inputs), (meta.outputs, ours.outputs)):
        assert [(t.name, t.datatype, list(t.shape)) for t in oip_tensors] == [
            (t.name, DTYPE_NAMES[t.data_type], list(t.shape)) for t in v1_tensors
        ]


def test_model_metadata_shapes_carry_the_batch_dimension_like_triton(
    oip: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    ranker = oip.ModelMetadata(pb.ModelMetadataRequest(name="mlp_ranker", version="1"))
    assert [(t.name, t.datatype, list(t.shape)) for t in ranker.inputs] == [("features", "FP32", [-1, 256])]
    assert [(t.name, t.datatype, list(t.shape)) for t in ranker.outputs] == [("score", "FP32", [-1, 1])]
    tokenizer = oip.ModelMetadata(pb.ModelMetadataRequest(name="tokenizer"))
    assert [(t.datatype, list(t.shape)) for t in tokenizer.inputs] == [("BYTES", [-1])]
    scalar = oip.ModelMetadata(pb.ModelMetadataRequest(name="scalar"))  # max_batch_size 0: no batch dim
    assert [(t.datatype, list(t.shape)) for t in scalar.inputs] == [("INT32", [3])]


def test_model_metadata_lists_only_versions_that_can_be_asked_for(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert list(oip.ModelMetadata(pb.ModelMetadataRequest(name="ranked")).versions) == ["1", "2"]
    assert list(oip.ModelMetadata(pb.ModelMetadataRequest(name="halfbroken")).versions) == ["1"]


@pytest.mark.parametrize(
    ("name", "version", "code", "says"),
    [
        ("nope", "", grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        ("mlp_ranker", "7", grpc.StatusCode.NOT_FOUND, "model 'mlp_ranker' version 7 not found (versions: 1)"),
        ("mlp_ranker", "v1", grpc.StatusCode.INVALID_ARGUMENT, "version 'v1' is not a version number"),
        ("badconfig", "", grpc.StatusCode.UNAVAILABLE, "model 'badconfig' is not available: "),
    ],
)
def test_model_metadata_and_config_errors_name_the_model_and_version(
    oip: pb_grpc.GRPCInferenceServiceStub, name: str, version: str, code: grpc.StatusCode, says: str
) -> None:
    for call, request in (
        (oip.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version)),
        (oip.ModelConfig, pb.ModelConfigRequest(name=name, version=version)),
    ):
        error = failure(call, request)
        assert error.code() == code, error.details()
        assert says in (error.details() or "")
    if name == "badconfig":
        assert "config.pbtxt" in (failure(oip.ModelConfig, pb.ModelConfigRequest(name=name)).details() or "")


# -- model config -------------------------------------------------------------------------------


def test_model_config_of_a_batched_model_in_triton_form(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    expected = pb.ModelConfig(
        name="ranked",
        backend="python",
        max_batch_size=8,
        input=[pb.ModelInput(name="x", data_type=pb.TYPE_FP32, dims=[4])],
        output=[pb.ModelOutput(name="y", data_type=pb.TYPE_FP32, dims=[4])],
        version_policy=pb.ModelVersionPolicy(all=pb.ModelVersionPolicy.All()),
        dynamic_batching=pb.ModelDynamicBatching(
            preferred_batch_size=[4, 8],
            max_queue_delay_microseconds=700,
            priority_levels=3,
            default_priority_level=2,
            default_queue_policy=pb.ModelQueuePolicy(
                max_queue_size=40, default_timeout_microseconds=90000, allow_timeout_override=True
            ),
        ),
        instance_group=[pb.ModelInstanceGroup(name="ranked_0", kind=pb.ModelInstanceGroup.KIND_CPU, count=2)],
        parameters={"flavour": pb.ModelParameter(string_value="mint")},
        model_transaction_policy=pb.ModelTransactionPolicy(decoupled=False),
    )
    for version in ("", "1", "2"):
        assert oip.ModelConfig(pb.ModelConfigRequest(name="ranked", version=version)).config == expected


def test_model_config_of_the_examples(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    ranker = oip.ModelConfig(pb.ModelConfigRequest(name="mlp_ranker")).config
    assert (ranker.platform, ranker.backend, ranker.max_batch_size) == ("onnxruntime_onnx", "onnxruntime", 64)
    assert [(i.name, i.data_type, list(i.dims)) for i in ranker.input] == [("features", pb.TYPE_FP32, [256])]
    assert [(o.name, o.data_type, list(o.dims)) for o in ranker.output] == [("score", pb.TYPE_FP32, [1])]
    assert ranker.dynamic_batching.max_queue_delay_microseconds == 500
    assert ranker.version_policy.latest.num_versions == 1
    assert ranker.parameters["intra_op_threads"].string_value == "1"
    assert not ranker.model_transaction_policy.decoupled

    torch_model = oip.ModelConfig(pb.ModelConfigRequest(name="tabular_torch")).config
    assert (torch_model.platform, torch_model.backend) == ("pytorch_libtorch", "pytorch")

    encoder = oip.ModelConfig(pb.ModelConfigRequest(name="text_encoder")).config
    assert [(i.data_type, list(i.dims)) for i in encoder.input] == [(pb.TYPE_INT64, [128])]
    assert not encoder.HasField("dynamic_batching")

    tokenizer = oip.ModelConfig(pb.ModelConfigRequest(name="tokenizer")).config
    assert (tokenizer.platform, tokenizer.backend) == ("", "python")
    assert [(i.data_type, list(i.dims)) for i in tokenizer.input] == [(pb.TYPE_STRING, [])]
    assert [(o.data_type, list(o.dims)) for o in tokenizer.output] == [(pb.TYPE_INT64, [128])]

    lm = oip.ModelConfig(pb.ModelConfigRequest(name="tiny_lm")).config
    assert lm.model_transaction_policy.decoupled  # generative: answers over ModelStreamInfer only
    assert lm.max_batch_size == 0
    assert [(i.data_type, list(i.dims)) for i in lm.input] == [(pb.TYPE_STRING, [-1])]
    assert [(o.name, o.data_type) for o in lm.output] == [("token_ids", pb.TYPE_INT64), ("text", pb.TYPE_STRING)]


@pytest.mark.parametrize(("name", "decoupled"), [("counter", True), ("counter_both", True), ("scalar", False)])
def test_python_models_that_stream_are_decoupled(
    oip: pb_grpc.GRPCInferenceServiceStub, name: str, decoupled: bool
) -> None:
    """Over ModelStreamInfer a generator answers one request with several responses: Triton's decoupled."""
    config = oip.ModelConfig(pb.ModelConfigRequest(name=name)).config
    assert config.model_transaction_policy.decoupled is decoupled
    assert (config.platform, config.backend) == ("", "python")


# -- statistics ---------------------------------------------------------------------------------


def _predict(v1: inference_pb2_grpc.InferenceServiceStub, rows: int) -> None:
    x = np.ones((rows, 4), np.float32)
    v1.Predict(inference_pb2.PredictRequest(model_name="counted", inputs=[from_numpy("x", x)]))


def test_model_statistics_in_triton_form_agree_with_inferd_v1(
    oip: pb_grpc.GRPCInferenceServiceStub, v1: inference_pb2_grpc.InferenceServiceStub
) -> None:
    before_ms = time.time_ns() // 1_000_000
    for rows in (1, 3, 3):  # one after another: each runs alone, so the batch sizes are the request sizes
        _predict(v1, rows)
    with pytest.raises(grpc.RpcError) as bad:  # wrong shape: routed to the version, then refused
        v1.Predict(
            inference_pb2.PredictRequest(model_name="counted", inputs=[from_numpy("x", np.ones((1, 5), np.float32))])
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after_ms = time.time_ns() // 1_000_000

    (stats,) = oip.ModelStatistics(pb.ModelStatisticsRequest(name="counted")).model_stats
    (ours,) = v1.ModelStatistics(inference_pb2.ModelStatisticsRequest(name="counted")).statistics
    assert (stats.name, stats.version) == ("counted", "1")
    assert before_ms <= stats.last_inference <= after_ms
    assert (stats.inference_count, stats.execution_count) == (7, 3)
    infer = stats.inference_stats
    assert infer.success.count == 3 and infer.success.ns > 0
    assert infer.fail.count == 1 and infer.fail.ns > 0
    assert infer.queue.count == 3 and infer.queue.ns == ours.queue_time_ns
    assert (infer.compute_infer.count, infer.compute_infer.ns) == (3, ours.compute_time_ns)
    assert infer.compute_infer.ns > 0
    assert infer.compute_input == pb.StatisticDuration() and infer.compute_output == pb.StatisticDuration()
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(1, 1), (3, 2)]
    assert sum(b.compute_infer.ns for b in stats.batch_stats) == infer.compute_infer.ns
    assert ours.inference_count == 7 and ours.success_count == 3


def test_oip_model_infer_calls_count_in_the_same_statistics(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = pb.ModelInferRequest(
        model_name="counted_oip",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 4])],
        raw_input_contents=[x.tobytes()],
    )
    for _ in range(2):
        reply = oip.ModelInfer(request)
        np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4), x * 2)
    (stats,) = oip.ModelStatistics(pb.ModelStatisticsRequest(name="counted_oip", version="1")).model_stats
    assert (stats.inference_count, stats.execution_count, stats.inference_stats.success.count) == (4, 2, 2)
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(2, 2)]
    assert stats.last_inference > 0


def test_model_statistics_of_every_model_and_one_version(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    every = oip.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    listed = {(s.name, s.version) for s in every}
    assert {(name, "1") for name in EXAMPLES} | {("ranked", "1"), ("ranked", "2"), ("halfbroken", "1")} <= listed
    assert ("halfbroken", "2") not in listed  # FAILED: not a loaded version
    assert not {name for name, _ in listed} & {"badconfig"}
    (two,) = oip.ModelStatistics(pb.ModelStatisticsRequest(name="ranked", version="2")).model_stats
    assert (two.name, two.version, two.inference_count) == ("ranked", "2", 0)


@pytest.mark.parametrize(
    ("name", "version", "code", "says"),
    [
        ("nope", "", grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        ("ranked", "9", grpc.StatusCode.NOT_FOUND, "model 'ranked' version 9 not found (READY versions: 1, 2)"),
        ("halfbroken", "2", grpc.StatusCode.NOT_FOUND, "model 'halfbroken' version 2 is FAILED"),
        ("ranked", "-1", grpc.StatusCode.INVALID_ARGUMENT, "version '-1' is not a version number"),
    ],
)
def test_model_statistics_errors(
    oip: pb_grpc.GRPCInferenceServiceStub, name: str, version: str, code: grpc.StatusCode, says: str
) -> None:
    error = failure(oip.ModelStatistics, pb.ModelStatisticsRequest(name=name, version=version))
    assert error.code() == code
    assert says in (error.details() or "")


# -- what is not implemented, and reflection ----------------------------------------------------


@pytest.mark.parametrize("method", sorted(UNIMPLEMENTED))
def test_shared_memory_trace_and_log_rpcs_answer_unimplemented_saying_why(channel: grpc.Channel, method: str) -> None:
    request_type, hint = UNIMPLEMENTED[method]
    response_type = getattr(pb, request_type.DESCRIPTOR.name.replace("Request", "Response"))
    call = channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    error = failure(call, request_type())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    details = error.details() or ""
    assert f"inference.GRPCInferenceService/{method} is not implemented" in details and hint in details


def test_reflection_lists_the_oip_service_next_to_inferd_v1(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for s in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "inferd.v1.InferenceService"} <= services
