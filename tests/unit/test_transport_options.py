"""Each transport flag of ``inferd serve`` reaches the gRPC server's options, and the per-connection
PredictStream count admits, refuses and releases as it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api.connection_limits import ConnectionStreams
from server.api.transport import TransportLimits
from server.app import InferdServer, grpc_options
from server.cli.main import build_parser
from server.cli.serve import server_options
from server.core.errors import ResourceExhausted


def _options(tmp_path: Path, *flags: str) -> dict[str, int]:
    args = build_parser().parse_args(["serve", "--repository", str(tmp_path), *flags])
    return dict(grpc_options(server_options(args)))


@pytest.mark.parametrize(
    ("flags", "argument", "value"),
    [
        (["--max-connections", "12"], "grpc.max_allowed_incoming_connections", 12),
        (["--max-concurrent-streams", "7"], "grpc.max_concurrent_streams", 7),
        (["--keepalive-time-seconds", "30"], "grpc.keepalive_time_ms", 30_000),
        (["--keepalive-timeout-seconds", "2.5"], "grpc.keepalive_timeout_ms", 2_500),
        (["--keepalive-timeout-seconds", "2.5"], "grpc.http2.ping_timeout_ms", 2_500),
        (["--keepalive-min-ping-interval-seconds", "12"], "grpc.http2.min_ping_interval_without_data_ms", 12_000),
        (["--keepalive-min-ping-interval-seconds", "0"], "grpc.http2.min_ping_interval_without_data_ms", 0),
        (["--no-keepalive-permit-without-calls"], "grpc.keepalive_permit_without_calls", 0),
        (["--max-ping-strikes", "5"], "grpc.http2.max_ping_strikes", 5),
        (["--max-ping-strikes", "0"], "grpc.http2.max_ping_strikes", 0),
        (["--max-connection-idle-seconds", "0.25"], "grpc.max_connection_idle_ms", 250),
        (["--max-connection-age-seconds", "600"], "grpc.max_connection_age_ms", 600_000),
        (["--max-connection-age-grace-seconds", "45"], "grpc.max_connection_age_grace_ms", 45_000),
    ],
)
def test_each_transport_flag_reaches_the_grpc_server_options(
    tmp_path: Path, flags: list[str], argument: str, value: int
) -> None:
    assert _options(tmp_path, *flags)[argument] == value


def test_the_defaults_bound_every_connection(tmp_path: Path) -> None:
    options = _options(tmp_path)
    assert options["grpc.max_allowed_incoming_connections"] == 4096
    assert options["grpc.max_concurrent_streams"] == 1000
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 20_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.max_connection_age_ms"] == 1_800_000
    assert options["grpc.max_connection_age_grace_ms"] == 300_000
    assert options["grpc.max_receive_message_length"] > 64 * 1024 * 1024  # the message limits are still there


def test_without_flags_the_server_gets_its_own_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--repository", str(tmp_path)])
    assert server_options(args).transport == TransportLimits()


def test_zero_turns_the_connection_limits_off(tmp_path: Path) -> None:
    flags = ["--max-concurrent-streams", "0", "--max-connection-idle-seconds", "0", "--max-connection-age-seconds", "0"]
    options = _options(tmp_path, "--max-connections", "0", *flags)
    for argument in (
        "grpc.max_allowed_incoming_connections",
        "grpc.max_concurrent_streams",
        "grpc.max_connection_idle_ms",
        "grpc.max_connection_age_ms",
        "grpc.max_connection_age_grace_ms",
    ):
        assert argument not in options


def test_a_tiny_positive_duration_never_becomes_gRPCs_zero() -> None:
    options = dict(TransportLimits(max_connection_idle_s=0.0001, max_connection_age_grace_s=0).grpc_options())
    assert options["grpc.max_connection_idle_ms"] == 1
    assert options["grpc.max_connection_age_grace_ms"] == 1


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-concurrent-streams", "-1"],
        ["--max-predict-streams-per-connection", "-3"],
        ["--max-connection-age-seconds", "-1"],
        ["--keepalive-time-seconds", "0"],
        ["--keepalive-timeout-seconds", "nan"],
        ["--max-ping-strikes", "two"],
    ],
)
def test_a_negative_or_malformed_limit_is_a_usage_error(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--repository", str(tmp_path), *flags])
    assert exited.value.code == 2


def test_the_predict_stream_cap_flag_reaches_the_servicer(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "-r", str(tmp_path), "--max-predict-streams-per-connection", "9"])
    assert InferdServer(server_options(args)).servicer.connection_streams.limit == 9
    default = build_parser().parse_args(["serve", "-r", str(tmp_path)])
    assert InferdServer(server_options(default)).servicer.connection_streams.limit == 500


# -- ConnectionStreams --------------------------------------------------------------------------------------


def test_a_peer_at_the_cap_is_refused_naming_the_limit_and_the_flag() -> None:
    streams = ConnectionStreams(2)
    with streams.hold("ipv4:10.0.0.1:1000"), streams.hold("ipv4:10.0.0.1:1000"):
        with pytest.raises(ResourceExhausted, match=r"2 PredictStreams open.*--max-predict-streams-per-connection"):
            streams.hold("ipv4:10.0.0.1:1000")
        with streams.hold("ipv4:10.0.0.1:1001"):  # another connection of the same host
            assert streams.open_on("ipv4:10.0.0.1:1001") == 1
        assert streams.total == 2
    assert streams.total == 0 and streams.connections == 0  # no entry outlives its connection's streams


def test_a_stream_that_fails_releases_its_place() -> None:
    streams = ConnectionStreams(1)
    with pytest.raises(ValueError), streams.hold("peer"):
        raise ValueError("the stream failed")
    with streams.hold("peer"):
        assert streams.open_on("peer") == 1


def test_a_refused_stream_takes_no_place() -> None:
    streams = ConnectionStreams(1)
    with streams.hold("peer"):
        for _ in range(3):
            with pytest.raises(ResourceExhausted):
                streams.hold("peer")
        assert streams.open_on("peer") == 1
    assert streams.total == 0


def test_no_cap_still_counts() -> None:
    streams = ConnectionStreams(0)
    held = [streams.hold("peer") for _ in range(1000)]
    for place in held:
        place.__enter__()
    assert streams.open_on("peer") == 1000
    for place in held:
        place.__exit__(None, None, None)
    assert streams.total == 0
