"""Authentication and authorization against a real server: static tokens, roles on model globs, open probes,
anonymous callers, mTLS identity, and what each refusal says (never the token)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from inferd.oip.v2 import grpc_service_pb2 as oip_pb2
from inferd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc, tensor_pb2
from server.security.auth_config import AuthConfig, parse_auth_config
from server.security.tokens import hash_token
from server.telemetry.access_log import AccessLogOptions
from server.telemetry.options import TelemetryOptions
from tests.support import SCALE_CONFIG, ServerThread, eventually, scale_model, write_model
from tests.tls_support import SPIFFE_ID, TlsFiles

PREDICTOR = "predictor-token-0123456789abcdefghijklmnopqrstuvw"
READER = "reader-token-0123456789abcdefghijklmnopqrstuvwxyz"
OPERATOR = "operator-token-0123456789abcdefghijklmnopqrstuv"

CONFIG = f"""
tokens:
  - {{principal: billing, hash: "{hash_token(PREDICTOR)}", roles: [predictor]}}
  - {{principal: dashboard, hash: "{hash_token(READER)}", roles: [reader]}}
  - {{principal: deployer, hash: "{hash_token(OPERATOR)}", roles: [operator]}}
roles:
  predictor: {{predict: ["fraud-*"]}}
  reader: {{read: ["*"]}}
  operator: {{control: true, read: ["*"]}}
"""


def _repository(root: Path) -> Path:
    for name in ("fraud-a", "ranker"):
        write_model(root, name, SCALE_CONFIG, {1: scale_model(2)})
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("auth")
    log = root / "access.log"
    telemetry = TelemetryOptions(access_log=AccessLogOptions(log))
    with ServerThread(_repository(root / "models"), auth=parse_auth_config(CONFIG), telemetry=telemetry) as running:
        running.access_log = log  # type: ignore[attr-defined]
        yield running


def _predict_request(model: str) -> inference_pb2.PredictRequest:
    tensor = tensor_pb2.Tensor(
        name="x",
        data_type=tensor_pb2.DATA_TYPE_FP32,
        shape=[1, 4],
        raw_contents=np.ones((1, 4), np.float32).tobytes(),
    )
    return inference_pb2.PredictRequest(model_name=model, inputs=[tensor])


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _predict(address: str, model: str, metadata: tuple[tuple[str, str], ...] = ()) -> inference_pb2.PredictResponse:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.Predict(_predict_request(model), metadata=metadata, timeout=10)


def _refused(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_a_valid_token_predicts_on_its_models(server: ServerThread):
    reply = _predict(server.address, "fraud-a", _bearer(PREDICTOR))
    assert reply.model_name == "fraud-a"


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ((), "no credentials: send 'authorization: Bearer <token>' metadata"),
        (_bearer("not-a-token-but-a-guess"), "the bearer token is not valid here"),
        (_bearer(PREDICTOR[:-1]), "the bearer token is not valid here"),
        ((("authorization", f"Basic {PREDICTOR}"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer a.b.c"),), "the bearer token is not valid here"),
    ],
)
def test_missing_or_wrong_credentials_are_unauthenticated(
    server: ServerThread, metadata: tuple[tuple[str, str], ...], words: str
):
    error = _refused(_predict, server.address, "fraud-a", metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert words in error.details()
    for _, value in metadata:  # the token is never echoed
        token = value.partition(" ")[2]
        assert not token or token not in error.details()


def test_a_predict_only_principal_is_denied_other_models_naming_method_and_model(server: ServerThread):
    error = _refused(_predict, server.address, "ranker", _bearer(PREDICTOR))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        "principal 'billing' may not call /inferd.v1.InferenceService/Predict on model 'ranker' "
        "(no role lets it predict with it)"
    )
    with grpc.insecure_channel(server.address) as channel:
        stream = inference_pb2_grpc.InferenceServiceStub(channel).PredictStream(
            inference_pb2.PredictStreamRequest(model_name="ranker"), metadata=_bearer(PREDICTOR), timeout=10
        )
        error = _refused(list, stream)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "PredictStream on model 'ranker'" in error.details()


def test_a_predict_only_principal_is_denied_model_control(server: ServerThread):
    with grpc.insecure_channel(server.address) as channel:
        stub = admin_pb2_grpc.ModelServiceStub(channel)
        error = _refused(stub.UnloadModel, admin_pb2.UnloadModelRequest(name="fraud-a"), metadata=_bearer(PREDICTOR))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "principal 'billing' may not call /inferd.v1.ModelService/UnloadModel" in error.details()
        assert "control: true" in error.details()
        # the operator may: RepositoryIndex answers
        index = stub.RepositoryIndex(admin_pb2.RepositoryIndexRequest(), metadata=_bearer(OPERATOR), timeout=10)
    assert {m.name for m in index.models} == {"fraud-a", "ranker"}


def test_read_roles(server: ServerThread):
    with grpc.insecure_channel(server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        everything = inference_pb2.ModelStatisticsRequest()
        assert stub.ModelStatistics(everything, metadata=_bearer(READER), timeout=10).statistics
        error = _refused(stub.ModelStatistics, everything, metadata=_bearer(PREDICTOR))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "for every model" in error.details()
        metadata = inference_pb2.ModelMetadataRequest(name="ranker")
        assert stub.ModelMetadata(metadata, metadata=_bearer(READER), timeout=10).name == "ranker"
        error = _refused(stub.ModelMetadata, metadata, metadata=_bearer(PREDICTOR))
        assert "ModelMetadata on model 'ranker'" in error.details()
        # a reader does not predict
        error = _refused(stub.Predict, _predict_request("fraud-a"), metadata=_bearer(READER))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_oip_infer_is_authorized_by_its_model_name(server: ServerThread):
    request = oip_pb2.ModelInferRequest(model_name="ranker")
    with grpc.insecure_channel(server.address) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=oip_pb2.ModelInferResponse.FromString,
        )
        error = _refused(infer, request, metadata=_bearer(PREDICTOR), timeout=10)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "/inference.GRPCInferenceService/ModelInfer on model 'ranker'" in error.details()
        live = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerLive",
            request_serializer=oip_pb2.ServerLiveRequest.SerializeToString,
            response_deserializer=oip_pb2.ServerLiveResponse.FromString,
        )
        assert live(oip_pb2.ServerLiveRequest(), timeout=10).live  # open without credentials


def test_health_and_reflection_need_no_credentials(server: ServerThread):
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "inferd.v1.InferenceService" in services


def test_the_access_log_names_the_principal(server: ServerThread):
    _predict(server.address, "fraud-a", (*_bearer(PREDICTOR), ("x-request-id", "whose-call")))
    log: Path = server.access_log  # type: ignore[attr-defined]

    def line() -> dict[str, object] | None:
        for text in log.read_text().splitlines() if log.exists() else ():
            entry = json.loads(text)
            if entry["x_request_id"] == "whose-call":
                return entry
        return None

    entry = eventually(line, what="the call's access-log line")
    assert entry["principal"] == "billing"
    assert PREDICTOR not in log.read_text()


def test_anonymous_callers_get_the_anonymous_roles_but_wrong_tokens_still_fail(tmp_path: Path):
    config = parse_auth_config(CONFIG + "  guest: {read: ['fraud-*']}\nanonymous: {roles: [guest]}\n")
    with ServerThread(_repository(tmp_path), auth=config) as running, grpc.insecure_channel(running.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        assert stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="fraud-a"), timeout=10).name == "fraud-a"
        error = _refused(stub.ModelMetadata, inference_pb2.ModelMetadataRequest(name="ranker"))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "principal 'anonymous'" in error.details()
        error = _refused(stub.ModelMetadata, inference_pb2.ModelMetadataRequest(name="fraud-a"), metadata=_bearer("x"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_no_auth_config_means_no_interceptor(tmp_path: Path):
    with ServerThread(_repository(tmp_path)) as running:
        assert running.server is not None and running.server.access is None
        assert _predict(running.address, "ranker").model_name == "ranker"


def _mtls_server(root: Path, tls_files: TlsFiles, config: AuthConfig) -> ServerThread:
    from server.security.tls import ServerTls

    tls = ServerTls(cert=tls_files.server_cert, key=tls_files.server_key, client_ca=tls_files.ca, client_auth="require")
    return ServerThread(_repository(root), tls=tls, auth=config)


def _mtls_channel(address: str, tls_files: TlsFiles, cert: Path, key: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(tls_files.ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    port = address.rsplit(":", 1)[1]
    return grpc.secure_channel(f"localhost:{port}", credentials)


def test_mtls_identity_from_the_spiffe_id_or_the_subject_cn(tmp_path: Path, tls_files: TlsFiles):
    config = parse_auth_config(
        CONFIG
        + f"mtls:\n  principal_from: san_uri\n  roles:\n    {SPIFFE_ID}: [predictor]\n  default_roles: [reader]\n"
    )
    with _mtls_server(tmp_path, tls_files, config) as running:
        with _mtls_channel(running.address, tls_files, tls_files.client_cert, tls_files.client_key) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            assert stub.Predict(_predict_request("fraud-a"), timeout=10).model_name == "fraud-a"
            error = _refused(stub.Predict, _predict_request("ranker"), timeout=10)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"principal '{SPIFFE_ID}'" in error.details()
            # a token on the same connection wins over the certificate
            reply = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="ranker"), metadata=_bearer(READER))
            assert reply.name == "ranker"
        with _mtls_channel(running.address, tls_files, tls_files.client_cn_cert, tls_files.client_cn_key) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            error = _refused(stub.Predict, _predict_request("fraud-a"), timeout=10)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "the client certificate has no URI SAN" in error.details()
    config = parse_auth_config(CONFIG + "mtls:\n  principal_from: subject_cn\n  default_roles: [reader]\n")
    with (
        _mtls_server(tmp_path / "cn", tls_files, config) as running,
        _mtls_channel(running.address, tls_files, tls_files.client_cn_cert, tls_files.client_cn_key) as channel,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="ranker"), timeout=10)
        assert reply.name == "ranker"
        error = _refused(stub.Predict, _predict_request("fraud-a"), timeout=10)
        assert "principal 'batch-job'" in error.details()


def _infer_request(model: str) -> oip_pb2.ModelInferRequest:
    tensor = oip_pb2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[1, 4], contents=oip_pb2.InferTensorContents(fp32_contents=[1, 2, 3, 4])
    )
    return oip_pb2.ModelInferRequest(model_name=model, inputs=[tensor])


def test_each_message_of_an_oip_stream_is_authorized(server: ServerThread):
    with grpc.insecure_channel(server.address) as channel:
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=oip_pb2.ModelStreamInferResponse.FromString,
        )
        replies = stream(iter([_infer_request("fraud-a")]), metadata=_bearer(PREDICTOR), timeout=10)
        assert [r.infer_response.model_name for r in replies] == ["fraud-a"]
        replies = stream(iter([_infer_request("fraud-a"), _infer_request("ranker")]), metadata=_bearer(PREDICTOR))
        with pytest.raises(grpc.RpcError) as info:
            list(replies)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ModelStreamInfer on model 'ranker'" in info.value.details()


def test_rate_limits_and_the_audit_log_through_the_interceptor(tmp_path: Path):
    from server.security.audit import AuditLogOptions

    config = parse_auth_config(
        CONFIG + "rate_limits:\n  principals:\n    dashboard: {requests_per_second: 0.01, burst: 1}\n"
    )
    audit = tmp_path / "audit.log"
    with ServerThread(_repository(tmp_path / "models"), auth=config, audit_log=AuditLogOptions(audit)) as running:
        with grpc.insecure_channel(running.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stub.ListModels(inference_pb2.ListModelsRequest(), metadata=_bearer(READER), timeout=10)
            call = stub.ListModels.with_call
            error = _refused(call, inference_pb2.ListModelsRequest(), metadata=_bearer(READER), timeout=10)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate limit exceeded for principal 'dashboard'" in error.details()
            pushback = dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"]
            assert int(pushback) > 1000
            admin = admin_pb2_grpc.ModelServiceStub(channel)
            admin.UnloadModel(admin_pb2.UnloadModelRequest(name="ranker"), metadata=_bearer(OPERATOR), timeout=30)
            _refused(admin.UnloadModel, admin_pb2.UnloadModelRequest(name="fraud-a"), metadata=_bearer(PREDICTOR))
            error = _refused(admin.UnloadModel, admin_pb2.UnloadModelRequest(name="nosuch"), metadata=_bearer(OPERATOR))

        def lines() -> list[dict[str, object]] | None:
            found = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
            return found if len(found) >= 4 else None

        entries = eventually(lines, what="four audit lines")
    by_outcome = {(e["principal"], e["action"], e["outcome"]) for e in entries}
    assert ("dashboard", "/inferd.v1.InferenceService/ListModels", "RESOURCE_EXHAUSTED") in by_outcome
    assert ("deployer", "/inferd.v1.ModelService/UnloadModel", "OK") in by_outcome
    assert ("billing", "/inferd.v1.ModelService/UnloadModel", "PERMISSION_DENIED") in by_outcome
    assert ("deployer", "/inferd.v1.ModelService/UnloadModel", error.code().name) in by_outcome
    text = audit.read_text()
    assert all(token not in text for token in (PREDICTOR, READER, OPERATOR))


def test_an_mtls_section_without_client_certificates_stops_the_start(tmp_path: Path):
    from server.app import StartupError

    config = parse_auth_config(CONFIG + "mtls: {principal_from: subject_cn}\n", tmp_path / "auth.yaml")
    with pytest.raises(StartupError, match=r"auth.yaml: the mtls: section needs client certificates"):
        ServerThread(_repository(tmp_path), auth=config).start()
