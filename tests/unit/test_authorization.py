"""Authorization: every method the server registers has a rule; roles grant predict/read on globs and control;
model names read from raw request bytes as the parser would; the per-call cost of the interceptor."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from inferd.oip.v2 import grpc_service_pb2 as oip_pb2
from inferd.v1 import admin_pb2, inference_pb2, tensor_pb2
from server.core.principal import Principal
from server.security.auth_config import DEFAULT_OPEN_METHODS, parse_auth_config
from server.security.authenticator import Authenticator
from server.security.authorization import Authorizer
from server.security.interceptor import SecurityInterceptor, _Gate
from server.security.methods import CONTROL, OPEN_RULE, PREDICT, READ, RULES, Rule, model_of, rule_for
from server.security.tokens import hash_token
from server.security.wire_model import MalformedRequest, wire_model_name
from tests.support import SCALE_CONFIG, ServerThread, scale_model, write_model


def _registered_methods(address: str) -> list[str]:
    """Every method of every service the server's reflection lists (what a client can call)."""
    from google.protobuf.descriptor_pool import DescriptorPool

    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        return [
            f"/{name}/{method.name}"
            for name in database.get_services()
            for method in pool.FindServiceByName(name).methods
        ]


def test_every_registered_method_has_an_authorization_rule(tmp_path: Path):
    write_model(tmp_path, "scale", SCALE_CONFIG, {1: scale_model(2)})
    with ServerThread(tmp_path) as running:
        methods = _registered_methods(running.address)
    services = {m.rsplit("/", 1)[0] for m in methods}
    assert {"/inferd.v1.InferenceService", "/inferd.v1.ModelService", "/grpc.health.v1.Health"} <= services
    assert any(s.startswith("/grpc.reflection") for s in services)
    assert "/inference.GRPCInferenceService/ModelInfer" in methods  # the OIP service, when it is there
    # with no open methods at all, each still has a rule (so a config that closes health still works)
    missing = [m for m in methods if rule_for(m, ()) is None]
    assert missing == [], f"methods without an authorization rule: {missing}"
    open_by_default = sorted(m for m in methods if rule_for(m, DEFAULT_OPEN_METHODS) is OPEN_RULE)
    assert all(
        m.startswith(("/grpc.health", "/grpc.reflection", "/inference.GRPCInferenceService/Server"))
        for m in open_by_default
    )
    assert "/grpc.health.v1.Health/Check" in open_by_default


def test_a_method_without_a_rule_is_denied():
    assert rule_for("/inferd.v2.NewService/DoThings", DEFAULT_OPEN_METHODS) is None
    assert rule_for("/inference.GRPCInferenceService/NewThing", DEFAULT_OPEN_METHODS) is None


def test_rules_name_the_model_field_of_each_request():
    for method, rule in RULES.items():
        if rule.model_field is None:
            continue
        service = method.split("/")[1]
        module = {"inferd.v1.InferenceService": inference_pb2, "inference.GRPCInferenceService": oip_pb2}[service]
        name = method.rsplit("/", 1)[1]
        request_type = "ModelInferRequest" if name == "ModelStreamInfer" else f"{name}Request"
        descriptor = getattr(module, request_type).DESCRIPTOR
        assert rule.model_field in descriptor.fields_by_name, (method, rule.model_field)
    for field in ("name",):
        for message in (admin_pb2.LoadModelRequest, admin_pb2.UnloadModelRequest, admin_pb2.SetTrafficRequest):
            assert field in message.DESCRIPTOR.fields_by_name


def test_wire_scan_reads_the_model_name_as_the_parser_does():
    tensor = tensor_pb2.Tensor(name="x", raw_contents=b"\x01" * 100_000)
    request = inference_pb2.PredictRequest(model_name="fraud-a", inputs=[tensor])
    data = request.SerializeToString()
    assert wire_model_name(data) == "fraud-a"
    assert wire_model_name(oip_pb2.ModelInferRequest(model_name="ranker", id="x").SerializeToString()) == "ranker"
    assert wire_model_name(b"") == ""
    # a second field 1 wins, as in the protobuf parser
    twice = data + inference_pb2.PredictRequest(model_name="ranker").SerializeToString()
    assert inference_pb2.PredictRequest.FromString(twice).model_name == wire_model_name(twice) == "ranker"
    for bad in (b"\x0a\x10short", b"\xff", b"\x0b", b"\x0a\x02\xff\xfe"):
        with pytest.raises(MalformedRequest):
            wire_model_name(bad)


def _authorizer() -> Authorizer:
    config = parse_auth_config(
        "roles:\n  p: {predict: ['fraud-*', ranker]}\n  r: {read: ['*']}\n  op: {control: true}\n  some: {read: [a]}\n"
    )
    return Authorizer(config.roles)


def _principal(*roles: str) -> Principal:
    return Principal("who", frozenset(roles), "token")


@pytest.mark.parametrize(
    ("roles", "method", "model", "allowed"),
    [
        (("p",), "/inferd.v1.InferenceService/Predict", "fraud-a", True),
        (("p",), "/inferd.v1.InferenceService/Predict", "ranker", True),
        (("p",), "/inferd.v1.InferenceService/Predict", "rankers", False),
        (("p",), "/inferd.v1.InferenceService/ModelMetadata", "fraud-a", False),
        (("p", "r"), "/inferd.v1.InferenceService/ModelMetadata", "fraud-a", True),
        (("r",), "/inferd.v1.InferenceService/Predict", "fraud-a", False),
        (("r",), "/inferd.v1.InferenceService/ModelStatistics", "", True),
        (("some",), "/inferd.v1.InferenceService/ModelStatistics", "", False),
        (("some",), "/inferd.v1.InferenceService/ModelStatistics", "a", True),
        (("p",), "/inferd.v1.InferenceService/ListModels", None, True),
        ((), "/inferd.v1.InferenceService/ListModels", None, False),
        (("p", "r"), "/inferd.v1.ModelService/LoadModel", "fraud-a", False),
        (("op",), "/inferd.v1.ModelService/LoadModel", "anything", True),
        (("unknown-role",), "/inferd.v1.InferenceService/Predict", "fraud-a", False),
    ],
)
def test_roles_grant_actions_on_model_globs(roles: tuple[str, ...], method: str, model: str | None, allowed: bool):
    rule = rule_for(method, DEFAULT_OPEN_METHODS)
    assert rule is not None
    denial = _authorizer().check(_principal(*roles), method, rule, model)
    assert (denial is None) == allowed, denial
    if denial is not None:
        assert method in denial and "'who'" in denial
        if rule.action != CONTROL and model:
            assert repr(model) in denial


def test_model_of_typed_and_raw_requests():
    assert (
        model_of(Rule(PREDICT, "model_name"), inference_pb2.PredictRequest(model_name="m").SerializeToString()) == "m"
    )
    assert model_of(Rule(READ, "name"), inference_pb2.ModelMetadataRequest(name="m")) == "m"
    assert model_of(Rule(READ), inference_pb2.ListModelsRequest()) is None


class _Context:
    """The little of a ServicerContext the gate reads on an allowed call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


def test_per_call_cost_of_an_allowed_token_call(capsys: pytest.CaptureFixture[str]):
    """Authenticate (cached token) + authorize (cached glob) + rate limit, for one Predict: a few µs."""
    token = "t" * 43
    config = parse_auth_config(
        f'tokens:\n  - {{principal: svc, hash: "{hash_token(token)}", roles: [p]}}\n'
        'roles:\n  p: {predict: ["fraud-*"]}\n'
        "rate_limits:\n  default: {requests_per_second: 1000000000, burst: 1000000000}\n"
    )
    interceptor = SecurityInterceptor(Authenticator(config), Authorizer(config.roles), config.open_methods)
    from server.security.rate_limits import RateLimiter

    interceptor.limiter = RateLimiter.parse(config.rate_limits)
    gate = _Gate(
        interceptor, "/inferd.v1.InferenceService/Predict", rule_for("/inferd.v1.InferenceService/Predict", ())
    )
    request = inference_pb2.PredictRequest(
        model_name="fraud-a", inputs=[tensor_pb2.Tensor(name="x", raw_contents=b"\0" * 64)]
    ).SerializeToString()
    context: Any = _Context((("user-agent", "grpc-python"), ("authorization", f"Bearer {token}")))

    async def run(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await gate.admit(request, context)
        return (time.perf_counter() - started) / n

    asyncio.run(run(1000))
    per_call = min(asyncio.run(run(20_000)) for _ in range(3))
    with capsys.disabled():
        print(f"\nsecurity interceptor, allowed token call: {per_call * 1e6:.2f} µs")
    assert per_call < 50e-6
