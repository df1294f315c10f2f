"""SDK errors built from real gRPC failures, and the hand-written health message codec."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from concurrent import futures

import grpc
import grpc.aio
import pytest

from inferd import errors, health
from inferd.errors import InferdError, from_rpc_error

ABORT = "/test.Abort/Abort"


def _abort(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Fail with the code and message the request names: b"NOT_FOUND|model 'x' not found"."""
    code, _, message = request.decode().partition("|")
    context.set_trailing_metadata((("x-note", "kept"), ("x-bin", b"\x01\x02")))
    context.abort(grpc.StatusCode[code], message)
    raise AssertionError("abort returns only by raising")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("test.Abort", {"Abort": grpc.unary_unary_rpc_method_handler(_abort)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def sync_error(address: str, code: str, message: str) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary(ABORT)(f"{code}|{message}".encode(), timeout=5)
        except grpc.RpcError as err:
            return err
    raise AssertionError("the call did not fail")


async def aio_error(address: str, code: str, message: str) -> grpc.RpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await channel.unary_unary(ABORT)(f"{code}|{message}".encode(), timeout=5)
        except grpc.RpcError as err:
            return err
    raise AssertionError("the call did not fail")


MAPPED = [
    ("INVALID_ARGUMENT", errors.InvalidArgument),
    ("NOT_FOUND", errors.NotFound),
    ("RESOURCE_EXHAUSTED", errors.ResourceExhausted),
    ("DEADLINE_EXCEEDED", errors.DeadlineExceeded),
    ("CANCELLED", errors.Cancelled),
    ("FAILED_PRECONDITION", errors.FailedPrecondition),
    ("UNAVAILABLE", errors.Unavailable),
    ("INTERNAL", errors.Internal),
    ("UNIMPLEMENTED", errors.Unimplemented),
    ("PERMISSION_DENIED", errors.PermissionDenied),
    ("UNAUTHENTICATED", errors.Unauthenticated),
    ("ALREADY_EXISTS", errors.AlreadyExists),  # Feedback for an id already scored
    # Codes without their own class stay the base class.
    ("ABORTED", InferdError),
    ("OUT_OF_RANGE", InferdError),
    ("DATA_LOSS", InferdError),
    ("UNKNOWN", InferdError),
]


@pytest.mark.parametrize(("code", "cls"), MAPPED)
def test_sync_error_maps_code_to_class(address: str, code: str, cls: type[InferdError]) -> None:
    error = from_rpc_error(sync_error(address, code, "model 'x' not found"))
    assert type(error) is cls
    assert error.code is grpc.StatusCode[code]
    assert error.message == "model 'x' not found"
    assert str(error) == f"{code}: model 'x' not found"
    assert error.request_id is None
    assert ("x-note", "kept") in error.trailing_metadata
    assert ("x-bin", b"\x01\x02") in error.trailing_metadata


@pytest.mark.parametrize(("code", "cls"), MAPPED[:3] + MAPPED[-2:])
async def test_aio_error_maps_code_to_class(address: str, code: str, cls: type[InferdError]) -> None:
    error = from_rpc_error(await aio_error(address, code, "queue full"))
    assert type(error) is cls
    assert error.code is grpc.StatusCode[code]
    assert str(error) == f"{code}: queue full"
    assert ("x-note", "kept") in error.trailing_metadata


def test_request_id_is_parsed_from_the_message(address: str) -> None:
    message = "internal error: engine crashed (request id 3f2a9c-01)"
    error = from_rpc_error(sync_error(address, "INTERNAL", message))
    assert isinstance(error, errors.Internal)
    assert error.request_id == "3f2a9c-01"
    assert error.message == message


def test_local_deadline_is_deadline_exceeded() -> None:
    # Nothing listens on this port; a wait_for_ready call can only run out of time.
    with grpc.insecure_channel("127.0.0.1:1") as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(ABORT)(b"", timeout=0.05, wait_for_ready=True)
    error = from_rpc_error(info.value)
    assert isinstance(error, errors.DeadlineExceeded)


def test_bare_rpc_error_becomes_unknown() -> None:
    error = from_rpc_error(grpc.RpcError("odd"))
    assert type(error) is InferdError
    assert error.code is grpc.StatusCode.UNKNOWN
    assert error.message == "odd"


def test_errors_can_be_raised_directly_and_pickled() -> None:
    error = errors.NotFound("model 'x' not found (request id r1)")
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.request_id == "r1"
    assert isinstance(error, InferdError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.NotFound
    assert str(copy) == str(error) and copy.request_id == "r1"


# --- grpc.health.v1 messages -------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "inferd.v1.InferenceService", "model/r\u00e9sum\u00e9", "m" * 300])
def test_health_request_round_trip(service: str) -> None:
    assert health.decode_request(health.encode_request(service)) == service


@pytest.mark.parametrize("status", ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"])
def test_health_response_round_trip(status: str) -> None:
    assert health.decode_response(health.encode_response(status)) == status


def test_health_wire_bytes() -> None:
    assert health.encode_request("") == b""
    assert health.encode_request("model/x") == b"\x0a\x07model/x"
    assert health.encode_response("SERVING") == b"\x08\x01"
    assert health.encode_response("UNKNOWN") == b""  # proto3 omits the default


def test_health_decode_skips_unknown_fields_and_values() -> None:
    # field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32, then status = 2
    data = b"\x10\x96\x01" + b"\x19" + b"\x00" * 8 + b"\x22\x02hi" + b"\x2d" + b"\x00" * 4 + b"\x08\x02"
    assert health.decode_response(data) == "NOT_SERVING"
    assert health.decode_response(b"\x08\x09") == "UNKNOWN"  # a status this client does not know


@pytest.mark.parametrize("data", [b"\x08", b"\x0a\x05ab", b"\x08\xff", b"\x0b"])
def test_health_decode_rejects_broken_messages(data: bytes) -> None:
    with pytest.raises(ValueError):
        health.decode_response(data)


def test_health_codec_matches_grpc_health_checking() -> None:
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    for service in ["", "model/x", "inferd.v1.InferenceService"]:
        ours = health.encode_request(service)
        assert ours == health_pb2.HealthCheckRequest(service=service).SerializeToString()
        assert health.decode_request(health_pb2.HealthCheckRequest(service=service).SerializeToString()) == service
    for number, name in health.STATUS_NAMES.items():
        assert health.encode_response(name) == health_pb2.HealthCheckResponse(status=number).SerializeToString()
        assert health.decode_response(health_pb2.HealthCheckResponse(status=number).SerializeToString()) == name
