"""The audit log on its own: what a line holds for each control request, the sampling of rate-limit
refusals, what never appears, and its flag. Against a real server: tests/integration/test_rate_limits.py
(rate-limit refusals) and the audit test there (control actions and denials with a real token)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferd.oip.v2 import grpc_service_pb2 as oip_pb2
from inferd.v1 import admin_pb2, model_config_pb2
from server.cli.main import build_parser
from server.cli.security_flags import SecurityFlagError, audit_options
from server.core.principal import Principal
from server.security.audit import (
    FIELDS,
    AuditLog,
    AuditLogError,
    AuditLogOptions,
    check_destination,
    control_target,
    request_id_from,
)

DEPLOYER = Principal("deployer", frozenset({"ops"}), "token")
SECRET = "file-content-secret-9a1f"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_control_action_is_one_line_with_principal_action_target_outcome_request_id_and_peer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditLogOptions(path))
    audit.control(
        DEPLOYER,
        "/inferd.v1.ModelService/LoadModel",
        admin_pb2.LoadModelRequest(name="ranker", versions=[3, 4]),
        "OK",
        request_id="req-1",
        peer="ipv4:10.0.0.7:5123",
    )
    audit.close()
    (line,) = lines(path)
    assert list(line) == list(FIELDS)
    assert line["time"].endswith("Z")
    assert line | {"time": None} == {
        "time": None,
        "principal": "deployer",
        "source": "token",
        "action": "/inferd.v1.ModelService/LoadModel",
        "target": {"model": "ranker", "versions": [3, 4]},
        "outcome": "OK",
        "request_id": "req-1",
        "peer": "ipv4:10.0.0.7:5123",
        "message": None,
        "repeats": 0,
    }


@pytest.mark.parametrize(
    ("request_", "target"),
    [
        (admin_pb2.UnloadModelRequest(name="ranker", version=2), {"model": "ranker", "version": 2}),
        (admin_pb2.UnloadModelRequest(name="ranker"), {"model": "ranker"}),
        (
            admin_pb2.SetTrafficRequest(
                name="ranker",
                version_labels={"stable": 1, "canary": 2},
                traffic=[
                    model_config_pb2.TrafficWeight(label="stable", weight=90),
                    model_config_pb2.TrafficWeight(label="canary", weight=10),
                ],
            ),
            {"model": "ranker", "labels": {"stable": 1, "canary": 2}, "traffic": {"stable": 90, "canary": 10}},
        ),
        (
            admin_pb2.SetShadowRequest(
                name="ranker", shadow=model_config_pb2.ShadowPolicy(label="canary", fraction=0.25)
            ),
            {"model": "ranker", "shadow": {"label": "canary", "version": None, "fraction": 0.25}},
        ),
        (admin_pb2.SetShadowRequest(name="ranker", off=True), {"model": "ranker", "shadow": "off"}),
        (admin_pb2.RepositoryIndexRequest(), None),
        (
            oip_pb2.RepositoryModelLoadRequest(
                model_name="ranker",
                parameters={"file:1/model.onnx": oip_pb2.ModelRepositoryParameter(bytes_param=SECRET.encode())},
            ),
            {"model": "ranker"},
        ),
        (
            oip_pb2.RepositoryModelUnloadRequest(repository_name="main", model_name="x"),
            {"model": "x", "repository": "main"},
        ),
    ],
)
def test_the_target_comes_from_a_fixed_list_of_fields_never_parameters(request_: Any, target: Any) -> None:
    assert control_target(request_) == target


def test_denials_are_logged_and_rate_limit_refusals_sampled_to_one_a_second_per_principal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog(AuditLogOptions(path), clock=clock)
    ids = iter(range(1000))

    def refuse(principal: Principal | None, outcome: str = "RESOURCE_EXHAUSTED", rate_limited: bool = True) -> None:
        audit.denied(
            principal,
            "/inferd.v1.InferenceService/Predict",
            outcome,
            request_id=f"r{next(ids)}",
            peer="ipv6:[::1]:1",
            model="ranker",
            message="rate limit exceeded",
            rate_limited=rate_limited,
        )

    alice = Principal("alice", frozenset(), "jwt")
    bob = Principal("bob", frozenset(), "token")
    for _ in range(100):
        refuse(alice)
        refuse(bob)
        clock.now += 0.005  # 100 refusals each in 0.5 s
    refuse(None, "UNAUTHENTICATED", rate_limited=False)  # every other denial is logged, each time
    refuse(None, "PERMISSION_DENIED", rate_limited=False)
    clock.now += 0.6
    refuse(alice)  # a second after alice's first line: logged, saying how many were left out
    audit.close()
    logged = lines(path)
    assert [(line["principal"], line["outcome"], line["repeats"]) for line in logged] == [
        ("alice", "RESOURCE_EXHAUSTED", 0),
        ("bob", "RESOURCE_EXHAUSTED", 0),
        (None, "UNAUTHENTICATED", 0),
        (None, "PERMISSION_DENIED", 0),
        ("alice", "RESOURCE_EXHAUSTED", 99),
    ]
    assert logged[0]["target"] == {"model": "ranker"} and logged[0]["source"] == "jwt"
    assert logged[0]["request_id"] == "r0" and logged[0]["message"] == "rate limit exceeded"


def test_the_sampling_table_stays_bounded_with_many_principals(tmp_path: Path) -> None:
    clock = FakeClock()
    audit = AuditLog(AuditLogOptions(tmp_path / "audit.jsonl", queue_lines=100_000), clock=clock)
    for i in range(30_000):
        audit.denied(
            Principal(f"sub-{i}", frozenset(), "jwt"),
            "/m",
            "RESOURCE_EXHAUSTED",
            request_id="",
            peer=None,
            rate_limited=True,
        )
        clock.now += 0.001
    assert len(audit._rate_limited) <= 10_000
    audit.close()


def test_request_ids_come_from_x_request_id_or_are_made() -> None:
    assert request_id_from((("authorization", "Bearer x"), ("x-request-id", "abc"))) == "abc"
    made = request_id_from((("authorization", "Bearer x"),))
    assert len(made) == 32 and made != request_id_from(None)
    assert len(request_id_from((("x-request-id", "z" * 1000),))) < 200


def test_an_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    with pytest.raises(AuditLogError, match=r"cannot write the audit log .*no-such-dir"):
        check_destination(AuditLogOptions(missing))
    with pytest.raises(AuditLogError, match="cannot write the audit log"):
        AuditLog(AuditLogOptions(missing))
    with pytest.raises(AuditLogError, match="empty"):
        AuditLogOptions("")
    check_destination(AuditLogOptions("-"))


def test_stdout_destination_writes_lines_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditLogOptions("-"))
    audit.control(
        None,
        "/inferd.v1.ModelService/UnloadModel",
        admin_pb2.UnloadModelRequest(name="m"),
        "NOT_FOUND",
        request_id="q",
        peer=None,
        message="model 'm' is not loaded",
    )
    audit.close()
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["outcome"] == "NOT_FOUND" and line["principal"] is None and line["message"].startswith("model")


def test_the_flag_checks_its_path_at_parse_time_and_needs_an_auth_config(tmp_path: Path) -> None:
    parser = build_parser()
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    with pytest.raises(SystemExit) as exit_code:
        parser.parse_args(["serve", "--repository", str(tmp_path), "--audit-log", str(missing)])
    assert exit_code.value.code == 2
    auth = tmp_path / "auth.yaml"
    auth.write_text("roles: {reader: {read: ['*']}}\n")
    path = tmp_path / "audit.jsonl"
    args = parser.parse_args(
        ["serve", "--repository", str(tmp_path), "--audit-log", str(path), "--auth-config", str(auth)]
    )
    assert audit_options(args) == AuditLogOptions(str(path))
    alone = parser.parse_args(["serve", "--repository", str(tmp_path), "--audit-log", str(path)])
    with pytest.raises(SecurityFlagError, match="--audit-log needs --auth-config"):
        audit_options(alone)
    assert audit_options(parser.parse_args(["serve", "--repository", str(tmp_path)])) is None
