"""OIP model control (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) on a real server.

Served on the main port like inferd.v1.ModelService; with --admin-port only there, the main port then
answering PERMISSION_DENIED. Each test has its own repository, since loads and unloads change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inferd.oip.v2 import grpc_service_pb2 as pb
from inferd.oip.v2 import grpc_service_pb2_grpc as pb_grpc
from inferd.v1 import inference_pb2, inference_pb2_grpc
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model

BROKEN = "raise RuntimeError('boom at import')\n"


def repository(root: Path) -> Path:
    write_model(root, "alpha", SCALE_CONFIG, {1: scale_model(2)})
    write_model(root, "beta", SCALE_CONFIG + "version_policy { all {} }\n", {1: scale_model(1), 2: BROKEN})
    write_model(root, "badconfig", 'max_batch_size: 8\ninput { name: "x" data_typo: 3 }\n', {1: scale_model(1)})
    return root


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(repository(tmp_path)) as running:
        yield running


@pytest.fixture()
def oip(server: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def rows(index: pb.RepositoryIndexResponse) -> list[tuple[str, str, str]]:
    return [(m.name, m.version, m.state) for m in index.models]


def failure(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)  # type: ignore[operator]
    return caught.value


def test_repository_index_lists_every_model_with_its_versions_states_and_reasons(
    oip: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    index = oip.RepositoryIndex(pb.RepositoryIndexRequest())
    assert rows(index) == [
        ("alpha", "1", "READY"),
        ("badconfig", "", "UNAVAILABLE"),
        ("beta", "1", "READY"),
        ("beta", "2", "UNAVAILABLE"),
    ]
    reasons = {(m.name, m.version): m.reason for m in index.models}
    assert "config.pbtxt" in reasons[("badconfig", "")]
    assert "boom at import" in reasons[("beta", "2")]
    assert reasons[("alpha", "1")] == ""
    ready = oip.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    assert rows(ready) == [("alpha", "1", "READY"), ("beta", "1", "READY")]


def test_unload_then_load_over_oip_agrees_with_inferd_v1(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        oip = pb_grpc.GRPCInferenceServiceStub(channel)
        v1 = inference_pb2_grpc.InferenceServiceStub(channel)
        oip.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="alpha"), timeout=30)
        assert not oip.ModelReady(pb.ModelReadyRequest(name="alpha")).ready
        listed = v1.ListModels(inference_pb2.ListModelsRequest())
        assert "alpha" not in {m.name for m in listed.models}
        (row,) = [m for m in oip.RepositoryIndex(pb.RepositoryIndexRequest()).models if m.name == "alpha"]
        assert (row.version, row.state) == ("", "UNAVAILABLE")
        assert "not loaded" in row.reason

        oip.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="alpha"), timeout=30)
        assert oip.ModelReady(pb.ModelReadyRequest(name="alpha", version="1")).ready
        assert ("alpha", "1", "READY") in rows(oip.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)))


def test_load_a_model_written_after_start(server: ServerThread, oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert server.server is not None
    write_model(server.server.options.repository, "gamma", SCALE_CONFIG, {1: scale_model(5)})
    assert not oip.ModelReady(pb.ModelReadyRequest(name="gamma")).ready
    oip.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="gamma"), timeout=30)
    assert oip.ModelReady(pb.ModelReadyRequest(name="gamma")).ready


@pytest.mark.parametrize(
    ("request_", "code", "says"),
    [
        (
            pb.RepositoryModelLoadRequest(model_name="beta"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "model 'beta' version 2 is FAILED: ",
        ),
        (
            pb.RepositoryModelLoadRequest(model_name="badconfig"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "model 'badconfig' is FAILED: ",
        ),
        (pb.RepositoryModelLoadRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' is not in"),
        (pb.RepositoryModelLoadRequest(model_name="../x"), grpc.StatusCode.INVALID_ARGUMENT, "'../x' is not a valid"),
        (pb.RepositoryModelLoadRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty"),
        (
            pb.RepositoryModelLoadRequest(
                model_name="alpha", parameters={"config": pb.ModelRepositoryParameter(string_param="{}")}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "RepositoryModelLoad parameter 'config' is not supported: inferd loads the config.pbtxt",
        ),
        (pb.RepositoryModelUnloadRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        (pb.RepositoryModelUnloadRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty"),
        (
            pb.RepositoryModelUnloadRequest(
                model_name="alpha", parameters={"force": pb.ModelRepositoryParameter(bool_param=True)}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "RepositoryModelUnload parameter 'force' is not supported: RepositoryModelUnload takes unload_dependents",
        ),
    ],
)
def test_control_errors_carry_the_status_and_the_reason(
    oip: pb_grpc.GRPCInferenceServiceStub, request_: object, code: grpc.StatusCode, says: str
) -> None:
    call = oip.RepositoryModelLoad if isinstance(request_, pb.RepositoryModelLoadRequest) else oip.RepositoryModelUnload
    error = failure(call, request_)
    assert error.code() == code, error.details()
    assert says in (error.details() or "")


def test_a_failed_reload_leaves_the_serving_version_serving(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    failure(oip.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="beta"))
    assert oip.ModelReady(pb.ModelReadyRequest(name="beta", version="1")).ready


def test_unload_dependents_is_accepted(oip: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.RepositoryModelUnloadRequest(
        model_name="alpha", parameters={"unload_dependents": pb.ModelRepositoryParameter(bool_param=True)}
    )
    oip.RepositoryModelUnload(request, timeout=30)
    assert not oip.ModelReady(pb.ModelReadyRequest(name="alpha")).ready


def _services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for s in reply.list_services_response.service}


def test_with_an_admin_port_control_is_served_there_only(tmp_path: Path) -> None:
    with ServerThread(repository(tmp_path), admin_port=0) as server:
        assert server.server is not None and server.server.admin_port != server.server.port
        with grpc.insecure_channel(server.address) as channel:
            main = pb_grpc.GRPCInferenceServiceStub(channel)
            for call, request in (
                (main.RepositoryIndex, pb.RepositoryIndexRequest()),
                (main.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="alpha")),
                (main.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="alpha")),
            ):
                error = failure(call, request)
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "served on the admin port (--admin-port)" in (error.details() or "")
            assert main.ModelReady(pb.ModelReadyRequest(name="alpha")).ready  # nothing was unloaded
        with grpc.insecure_channel(f"127.0.0.1:{server.server.admin_port}") as admin_channel:
            admin = pb_grpc.GRPCInferenceServiceStub(admin_channel)
            assert ("alpha", "1", "READY") in rows(admin.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30))
            admin.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="alpha"), timeout=30)
            admin.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="alpha"), timeout=30)
            assert "inference.GRPCInferenceService" in _services(admin_channel)
            error = failure(admin.ModelReady, pb.ModelReadyRequest(name="alpha"))  # inference stays on main
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(server.address) as channel:
            assert pb_grpc.GRPCInferenceServiceStub(channel).ModelReady(pb.ModelReadyRequest(name="alpha")).ready
