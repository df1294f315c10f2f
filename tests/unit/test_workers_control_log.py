"""The supervisor's control log keeps state-changing calls in order (replayed to a restarted worker)."""

from __future__ import annotations

from server.workers.control_fanout import Failure, failure_status
from server.workers.control_log import CONTROL_METHODS, MUTATING_METHODS, ControlCall, ControlLog


def test_keeps_mutating_calls_in_order_and_skips_reads() -> None:
    log = ControlLog()
    log.record("/inferd.v1.ModelService/LoadModel", b"a")
    log.record("/inferd.v1.ModelService/RepositoryIndex", b"index")
    log.record("/inferd.v1.ModelService/SetTraffic", b"b")
    log.record("/inference.GRPCInferenceService/RepositoryModelUnload", b"c")
    assert log.calls() == (
        ControlCall("/inferd.v1.ModelService/LoadModel", b"a"),
        ControlCall("/inferd.v1.ModelService/SetTraffic", b"b"),
        ControlCall("/inference.GRPCInferenceService/RepositoryModelUnload", b"c"),
    )
    assert len(log) == 3


def test_every_model_service_method_is_fanned_out() -> None:
    from inferd.v1 import admin_pb2

    methods = admin_pb2.DESCRIPTOR.services_by_name["ModelService"].methods
    assert {f"/inferd.v1.ModelService/{m.name}" for m in methods} <= CONTROL_METHODS
    assert MUTATING_METHODS < CONTROL_METHODS


def test_a_failure_names_each_failing_worker_with_the_first_code() -> None:
    import grpc

    code, message = failure_status(
        [Failure(1, grpc.StatusCode.NOT_FOUND, "no model x"), Failure(2, grpc.StatusCode.UNAVAILABLE, "gone")]
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == "worker 1: NOT_FOUND: no model x; worker 2: UNAVAILABLE: gone"
