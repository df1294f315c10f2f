"""Property-based: no request a client can send gets INTERNAL or UNKNOWN, and the server keeps serving.

Requests are generated from the protobuf descriptors (every field of PredictRequest and
PredictStreamRequest, so a field added to the contract is fuzzed too), biased towards what reaches
deep: the real model and tensor names, the real dtypes and extreme dimensions, contents that fit the
declared shape, and the generation parameters. A real in-process server serves python models (one
takes BYTES), a streaming generator, and two generative models (the tiny_lm example, and one whose
prompts are token ids). Derandomized, with a bounded number of examples: the same cases run every
time, within about half a minute.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferd.tensors import (
    NUMPY_DTYPES,
    TensorError,
    decode_bytes_array,
    encode_bytes_elements,
    from_numpy,
    to_numpy,
)
from inferd.v1 import inference_pb2, tensor_pb2
from server.api.wire import split_payloads
from tests.fuzz.descriptors import Overrides, message_strategy, oneof_strategy, scalar_strategy
from tests.integration.test_hostile_requests import build_repository
from tests.support import ServerThread, write_model

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
CALL_TIMEOUT_S = 20.0
SETTINGS = settings(
    max_examples=150,
    deadline=None,  # each call has its own gRPC deadline
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

GENERATOR_CONFIG = """
max_batch_size: 0
input { name: "start" data_type: DATA_TYPE_INT64 dims: [1] }
output { name: "n" data_type: DATA_TYPE_INT64 dims: [1] }
"""
GENERATOR_MODEL = """
import numpy as np

from engines.base import InvalidInput

class Model:
    def infer_stream(self, inputs, parameters):
        count = parameters.get("count", 3)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 16:
            raise InvalidInput("parameter 'count' must be an integer in [0, 16]")
        start = np.asarray(inputs["start"], dtype=np.int64).reshape(-1)[:1]
        for i in range(count):
            yield {"n": start + np.int64(i)}
"""
PAIR_CONFIG = """
max_batch_size: 4
input { name: "a" data_type: DATA_TYPE_INT32 dims: [-1, 2] }
input { name: "b" data_type: DATA_TYPE_FP16 dims: [-1] }
output { name: "sum" data_type: DATA_TYPE_FP32 dims: [-1] }
"""
PAIR_MODEL = """
import numpy as np

class Model:
    def infer(self, inputs):
        a = np.asarray(inputs["a"], dtype=np.float32).sum(axis=1)
        return {"sum": a + np.asarray(inputs["b"], dtype=np.float32)}
"""

#: model name → input name → (dtype, dims), for requests that fit a real signature
SIGNATURES: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {
    "scale": {"x": ("FP32", (-1, 4))},
    "text": {"text": ("BYTES", (-1,))},
    "blob": {"blob": ("BYTES", (-1,))},
    "pair": {"a": ("INT32", (-1, 2)), "b": ("FP16", (-1,))},
    "counter": {"start": ("INT64", (1,))},
    "ids_lm": {"prompt": ("BYTES", (-1,))},
    "tiny_lm": {"prompt": ("BYTES", (-1,))},
}
OUTPUTS = ["y", "n", "sum", "token_ids", "text"]
PARAMETERS = [
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stop",
    "stop.1",
    "ignore_eos",
    "count",
    "priority",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = build_repository(tmp_path_factory.mktemp("fuzz-repo"))
    write_model(root, "counter", GENERATOR_CONFIG, {1: GENERATOR_MODEL})
    write_model(root, "pair", PAIR_CONFIG, {1: PAIR_MODEL})
    with ServerThread(root, max_request_elements=1_000_000) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as chan:
        yield chan


# -- the biases that reach deep ---------------------------------------------------------------------

_DTYPES = {name: getattr(tensor_pb2, f"DATA_TYPE_{name}") for name in NUMPY_DTYPES}
tensor_names = st.sampled_from(sorted({n for sig in SIGNATURES.values() for n in sig})) | st.text(max_size=12)
dimension = st.sampled_from([0, 1, 2, 3, 4, 8, 2**31, 2**62, 2**63 - 1]) | st.integers(0, 12)
huge = st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1])
shapes = st.one_of(
    st.lists(dimension, max_size=5),
    st.lists(st.sampled_from([0, 1]), min_size=30, max_size=70),  # more dimensions than arrays have
    st.tuples(st.lists(huge, min_size=1, max_size=3), st.integers(0, 3)).map(  # empty, yet overflowing
        lambda t: [*t[0][: t[1]], 0, *t[0][t[1] :]]
    ),
    st.sampled_from([[-1], [1, -5], [2**63 - 1]]),
)


@st.composite
def fitting_tensor(draw: st.DrawFn) -> tensor_pb2.Tensor:
    """A tensor whose contents fit its declared dtype and shape (raw or typed), with hostile values."""
    name = draw(tensor_names)
    dtype = draw(st.sampled_from(sorted(_DTYPES)))
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    count = math.prod(shape)
    if dtype == "BYTES":
        items = draw(
            st.lists(
                st.binary(max_size=12) | st.sampled_from([b"1 2 3", b"3 99", b"-1", b"1" * 30]),
                min_size=count,
                max_size=count,
            )
        )
        array = np.empty(count, dtype=object)
        array[:] = items
        array = array.reshape(shape)
    else:
        raw = draw(
            st.binary(min_size=count * NUMPY_DTYPES[dtype].itemsize, max_size=count * NUMPY_DTYPES[dtype].itemsize)
        )
        array = np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype]).reshape(shape)
        if dtype == "BOOL":
            array = array.view(np.uint8).astype(bool)
    return from_numpy(name, array, raw=draw(st.booleans()))


@st.composite
def signature_inputs(draw: st.DrawFn, model: str) -> list[tensor_pb2.Tensor]:
    """Inputs that match ``model``'s signature in dtype and shape (values still hostile)."""
    rows = draw(st.integers(0, 6))
    tensors = []
    for name, (dtype, dims) in SIGNATURES[model].items():
        shape = [
            rows if d == -1 and i == 0 else (draw(st.integers(0, 3)) if d == -1 else d) for i, d in enumerate(dims)
        ]
        count = math.prod(shape)
        if dtype == "BYTES":
            words = st.binary(max_size=40) | st.sampled_from([b"3 1 4", b"15 15", b"16", b"-2", b"9" * 25, b"x"])
            array = np.empty(count, dtype=object)
            array[:] = draw(st.lists(words, min_size=count, max_size=count))
            array = array.reshape(shape)
        else:
            size = count * NUMPY_DTYPES[dtype].itemsize
            array = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), NUMPY_DTYPES[dtype]).reshape(shape)
        tensors.append(from_numpy(name, array, raw=draw(st.booleans())))
    return tensors


_TYPED_FIELDS = [f for f in tensor_pb2.Tensor.DESCRIPTOR.fields if f.is_repeated and f.name != "shape"]


@st.composite
def generic_tensor(draw: st.DrawFn) -> tensor_pb2.Tensor:
    """Any Tensor, its typed fields (at most one, as a well-meaning client sends) drawn apart."""
    overrides: Overrides = {
        "inferd.v1.Tensor.name": lambda: tensor_names,
        "inferd.v1.Tensor.shape": lambda: shapes,
        "inferd.v1.Tensor.data_type": lambda: st.one_of(
            *[st.sampled_from(sorted(_DTYPES.values()))] * 3, st.integers(-3, 40)
        ),
        "inferd.v1.Tensor.raw_contents": lambda: st.just(b"") | st.binary(max_size=96),
        **{field.full_name: lambda: st.just([]) for field in _TYPED_FIELDS},
    }
    required = frozenset({"name", "data_type", "shape"})
    tensor = draw(message_strategy(tensor_pb2.Tensor.DESCRIPTOR, overrides, required=required))
    for field in draw(st.lists(st.sampled_from(_TYPED_FIELDS), max_size=2, unique=True)):
        getattr(tensor, field.name).extend(draw(st.lists(scalar_strategy(field), max_size=6)))
    return tensor


def _tensor_strategy() -> st.SearchStrategy[Any]:
    return st.lists(generic_tensor() | fitting_tensor(), max_size=3)


def _parameter_strategy() -> st.SearchStrategy[Any]:
    values = oneof_strategy(tensor_pb2.Parameter.DESCRIPTOR, "value") | st.sampled_from(
        [
            tensor_pb2.Parameter(int64_param=-1),
            tensor_pb2.Parameter(int64_param=2),
            tensor_pb2.Parameter(int64_param=2**63 - 1),
            tensor_pb2.Parameter(double_param=math.nan),
            tensor_pb2.Parameter(double_param=0.0),
            tensor_pb2.Parameter(string_param="e"),
            tensor_pb2.Parameter(bool_param=True),
        ]
    )
    return st.dictionaries(st.sampled_from(PARAMETERS) | st.text(max_size=10), values, max_size=4)


def request_strategy(cls: type[Message]) -> st.SearchStrategy[Any]:
    full = cls.DESCRIPTOR.full_name
    overrides: Overrides = {
        f"{full}.model_name": lambda: st.sampled_from(sorted(SIGNATURES)) | st.text(max_size=16),
        f"{full}.inputs": _tensor_strategy,
        f"{full}.requested_outputs": lambda: st.lists(st.sampled_from(OUTPUTS) | st.text(max_size=8), max_size=2),
        f"{full}.parameters": _parameter_strategy,
        f"{full}.model_version": lambda: st.sampled_from([0, 0, 0, 1, 2, -1, 2**63 - 1]),
        f"{full}.chunk_rows": lambda: st.sampled_from([0, 0, 1, 2, -1, 2**63 - 1]),
    }
    generic = message_strategy(cls.DESCRIPTOR, overrides, required=frozenset({"model_name"}))

    @st.composite
    def fitting(draw: st.DrawFn) -> Message:
        """A request for a real model whose inputs fit its signature, other fields generic."""
        model = draw(st.sampled_from(sorted(SIGNATURES)))
        message = draw(generic)
        message.model_name = model
        message.model_version = 0
        message.version_label = ""
        del message.inputs[:]
        message.inputs.extend(draw(signature_inputs(model)))
        if draw(st.booleans()):
            del message.requested_outputs[:]
        return message

    return generic | fitting()


# -- the properties ---------------------------------------------------------------------------------


def _assert_allowed(err: grpc.RpcError, request: object) -> None:
    assert err.code() not in FORBIDDEN, f"{err.code()}: {err.details()}\nfor {request}"


def _assert_serving(server: ServerThread, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    predict = channel.unary_unary(
        "/inferd.v1.InferenceService/Predict",
        request_serializer=inference_pb2.PredictRequest.SerializeToString,
        response_deserializer=inference_pb2.PredictResponse.FromString,
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    reply = predict(inference_pb2.PredictRequest(model_name="scale", inputs=[from_numpy("x", x)]), timeout=10)
    np.testing.assert_array_equal(to_numpy(reply.outputs[0]), x * 2)


@SETTINGS
@given(request=request_strategy(inference_pb2.PredictRequest))
def test_predict_never_answers_internal(server, channel, request):
    call = channel.unary_unary("/inferd.v1.InferenceService/Predict")
    try:
        call(request.SerializeToString(), timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as err:
        _assert_allowed(err, request)


@SETTINGS
@given(request=request_strategy(inference_pb2.PredictStreamRequest))
def test_predict_stream_never_answers_internal(server, channel, request):
    call = channel.unary_stream("/inferd.v1.InferenceService/PredictStream")
    try:
        for _ in call(request.SerializeToString(), timeout=CALL_TIMEOUT_S):
            pass
    except grpc.RpcError as err:
        _assert_allowed(err, request)


@SETTINGS
@given(data=st.binary(max_size=256) | request_strategy(inference_pb2.PredictRequest).flatmap(lambda r: _mutations(r)))
def test_malformed_request_bytes_never_answer_internal(server, channel, data):
    for method in ("Predict", "PredictStream"):
        call = channel.unary_stream(f"/inferd.v1.InferenceService/{method}")
        try:
            for _ in call(data, timeout=CALL_TIMEOUT_S):
                pass
        except grpc.RpcError as err:
            _assert_allowed(err, data)
    _assert_serving(server, channel)


def _mutations(request: Message) -> st.SearchStrategy[bytes]:
    """The serialised request cut short, with bytes flipped, or with garbage appended."""
    data = request.SerializeToString()

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            if out and draw(st.booleans()):
                out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
            elif out and draw(st.booleans()):
                del out[draw(st.integers(0, len(out) - 1)) :]
            else:
                out += draw(st.binary(min_size=1, max_size=8))
        return bytes(out)

    return mutate()


@settings(SETTINGS, max_examples=300)
@given(
    request=request_strategy(inference_pb2.PredictRequest),
    payload=st.binary(max_size=64) | st.sampled_from([struct.pack("<I", 1) + b"a", b"\x80" * 12]),
    tail=st.binary(max_size=8),
)
def test_wire_split_agrees_with_the_protobuf_parser(request, payload, tail):
    for tensor in request.inputs:
        tensor.raw_contents = tensor.raw_contents or payload
    for data in (request.SerializeToString(), request.SerializeToString() + tail):
        split = split_payloads(data)
        try:
            expected = inference_pb2.PredictRequest.FromString(data)
        except DecodeError:
            expected = None
        if split is None:
            continue
        stripped, payloads = split
        try:
            got = inference_pb2.PredictRequest.FromString(stripped)
        except DecodeError:
            assert expected is None, "the split request does not parse but the request does"
            continue
        assert expected is not None, "the split request parses but the request does not"
        assert len(payloads) == len(got.inputs)
        for tensor, raw in zip(got.inputs, payloads, strict=True):
            assert not tensor.raw_contents
            tensor.raw_contents = bytes(raw)
        assert got == expected


@settings(SETTINGS, max_examples=300)
@given(
    items=st.lists(st.binary(max_size=9), max_size=40)
    | st.integers(0, 6).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), max_size=40)),
    cut=st.integers(-6, 6),
)
def test_bytes_elements_decode_to_what_was_encoded(items, cut):
    raw = encode_bytes_elements(items)
    decoded = decode_bytes_array("t", raw, len(items))
    assert decoded.dtype == object
    assert decoded.tolist() == items
    damaged = raw[:cut] if cut < 0 else raw + b"\x00" * cut
    if damaged != raw:
        with pytest.raises(TensorError, match="tensor 't'"):
            decode_bytes_array("t", damaged, len(items))


def test_the_server_is_serving_after_the_fuzzing(server, channel):
    _assert_serving(server, channel)
