"""Tracing's OTEL_* variables: off unless asked for, each variable honoured, bad values refused at start-up."""

from __future__ import annotations

import argparse
import logging

import pytest

from server.cli.telemetry_flags import add_telemetry_flags, telemetry_options
from server.telemetry.tracing_options import DEFAULT_ENDPOINT, TracingConfigError, TracingOptions

ENDPOINT = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}


def options(**env: str) -> TracingOptions | None:
    return TracingOptions.from_environment(env)


def on(**env: str) -> TracingOptions:
    found = TracingOptions.from_environment({**ENDPOINT, **env})
    assert found is not None
    return found


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SERVICE_NAME": "inferd-a", "OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4317"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_tracing_is_off_unless_the_environment_asks_for_it(env: dict[str, str]) -> None:
    assert TracingOptions.from_environment(env) is None


def test_an_otlp_endpoint_turns_tracing_on_with_opentelemetrys_defaults() -> None:
    found = options(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317")
    assert found == TracingOptions(endpoint="http://collector:4317")
    assert found.sampler == "parentbased_always_on" and found.exporters == ("otlp",)
    assert found.plaintext


def test_the_traces_endpoint_wins_over_the_generic_one() -> None:
    found = options(OTEL_EXPORTER_OTLP_ENDPOINT="http://all:4317", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://t:4317")
    assert found is not None and found.endpoint == "https://t:4317" and not found.plaintext


def test_the_exporter_variable_alone_uses_the_default_endpoint() -> None:
    assert options(OTEL_TRACES_EXPORTER="otlp") == TracingOptions(endpoint=DEFAULT_ENDPOINT)
    assert options(OTEL_TRACES_EXPORTER="console") == TracingOptions(exporters=("console",))
    assert options(OTEL_TRACES_EXPORTER="otlp, console") == TracingOptions(exporters=("otlp", "console"))


def test_samplers_and_their_ratio() -> None:
    assert on(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.01").sampler_arg == 0.01
    assert on(OTEL_TRACES_SAMPLER="TraceIdRatio", OTEL_TRACES_SAMPLER_ARG="0.5").sampler == "traceidratio"
    assert on(OTEL_TRACES_SAMPLER="parentbased_traceidratio").sampler_arg is None  # = 1, as the SDK
    assert on(OTEL_TRACES_SAMPLER="always_off", OTEL_TRACES_SAMPLER_ARG="0.5").sampler_arg is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "parentbased_jaeger_remote"}, "OTEL_TRACES_SAMPLER='parentbased_jaeger_remote'"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1%"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "from 0 to 1"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "not zipkin"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTLP/gRPC only"),
        ({"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "yes"}, "OTEL_EXPORTER_OTLP_TRACES_INSECURE must be true or false"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key"}, "not key=value"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "gzip or none"),
        ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-5"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT must be milliseconds"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE must be a whole number"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(TracingConfigError, match=message.replace("(", r"\(")):
        on(**env)


def test_every_exporter_setting_is_read() -> None:
    found = on(
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_EXPORTER_OTLP_HEADERS="Api-Key=s%3Dcret, tenant = a",
        OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="gzip",
        OTEL_EXPORTER_OTLP_TIMEOUT="2500",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_BSP_MAX_QUEUE_SIZE="100",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="10",
    )
    assert found.insecure is True
    assert found.headers == (("api-key", "s=cret"), ("tenant", "a"))
    assert found.compression == "gzip"
    assert found.timeout_s == 2.5  # the specification's milliseconds
    assert (found.schedule_delay_ms, found.max_queue_size, found.max_export_batch_size) == (200, 100, 10)
    assert on(OTEL_EXPORTER_OTLP_COMPRESSION="none").compression is None


def test_the_traces_variables_win_over_the_generic_ones() -> None:
    found = on(OTEL_EXPORTER_OTLP_TIMEOUT="1000", OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="3000")
    assert found.timeout_s == 3.0
    assert on(OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_EXPORTER_OTLP_TRACES_INSECURE="false").insecure is False


def test_a_scheme_less_endpoint_is_tls_unless_insecure() -> None:
    assert not TracingOptions(endpoint="collector:4317").plaintext
    assert TracingOptions(endpoint="collector:4317", insecure=True).plaintext
    assert not TracingOptions(endpoint="https://collector:4317", insecure=True).plaintext


def test_options_refuse_an_unknown_sampler_when_built_in_code_too() -> None:
    with pytest.raises(TracingConfigError, match="always_on, always_off, traceidratio"):
        TracingOptions(sampler="ratio")


def serve_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_telemetry_flags(parser)
    return parser.parse_args([])


def test_inferd_serve_reads_tracing_from_the_environment_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
    env["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    with caplog.at_level(logging.INFO, logger="inferd.telemetry"):
        telemetry = telemetry_options(serve_args(), env)
    assert telemetry.tracing == TracingOptions(
        endpoint="http://collector:4317", sampler="parentbased_traceidratio", sampler_arg=0.01
    )
    assert (
        "tracing on: spans to OTLP/gRPC to http://collector:4317 (plaintext), sampler parentbased_traceidratio 0.01"
        in caplog.messages
    )
    assert telemetry_options(serve_args(), {}).tracing is None


def test_inferd_serve_stops_with_a_clear_message_on_a_bad_sampler() -> None:
    with pytest.raises(SystemExit, match="inferd: tracing: OTEL_TRACES_SAMPLER='always'"):
        telemetry_options(serve_args(), {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always"})
