"""The pure parts of ``inferd serve --workers``: restart backoff, a worker's command line, the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli.main import build_parser
from server.workers.process import SUPERVISOR_DESTS, Backoff, WorkerSpec, strip_options, worker_argv


def serve_args(*argv: str) -> list[str]:
    """What the supervisor passes on of ``inferd serve argv…``."""
    args = build_parser().parse_args(["serve", *argv])
    return strip_options(args.serve_parser, list(argv), SUPERVISOR_DESTS)


def test_backoff_doubles_to_ten_seconds_and_resets_after_thirty_seconds_up() -> None:
    backoff = Backoff()
    assert [backoff.delay(1.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(30.0) == 0.5
    assert backoff.delay(29.9) == 1.0


def test_supervisor_flags_are_not_passed_on_in_any_spelling() -> None:
    kept = serve_args(
        "-r",
        "models",
        "--workers=4",
        "--pin-workers",
        "-p8001",
        "--port-file",
        "p",
        "--metrics-port",
        "9000",
        "--metrics-port-file=m",
        "--metrics-host",
        "0.0.0.0",
        "--admin-port",
        "9001",
        "--reuse-port",
        "--pin-w",  # a unique prefix of --pin-workers, as argparse accepts it
        "--drain-seconds",
        "1",
        "--allowed-engines",
        "onnxruntime",
        "--no-metrics",
    )
    assert kept == ["-r", "models", "--drain-seconds", "1", "--allowed-engines", "onnxruntime", "--no-metrics"]


def test_a_value_that_looks_like_a_dropped_flag_is_kept_with_its_option() -> None:
    parser = build_parser().parse_args(["serve", "-r", "m"]).serve_parser
    assert strip_options(parser, ["--log-level", "INFO", "-r", "--port"], SUPERVISOR_DESTS) == [
        "--log-level",
        "INFO",
        "-r",
        "--port",
    ]


def test_worker_command_line() -> None:
    spec = WorkerSpec(
        index=1,
        serve_args=("-r", "models"),
        port=8001,
        control_socket="/d/worker-1.sock",
        supervisor_socket="/d/supervisor.sock",
        metrics_port_file="/d/metrics-1.port",
        control_elsewhere=True,
    )
    argv = worker_argv(spec, python="py")
    assert argv == [
        "py", "-m", "server", "serve", "-r", "models", "--port", "8001", "--reuse-port",
        "--metrics-port", "0", "--metrics-port-file", "/d/metrics-1.port",
        "--worker-index", "1", "--worker-control", "unix:/d/worker-1.sock", "--supervisor", "unix:/d/supervisor.sock",
        "--worker-control-elsewhere",
    ]  # fmt: skip
    # the worker's own parse: it is worker 1, on the shared port, with its metrics on a private port
    args = build_parser().parse_args(argv[3:])
    assert (args.worker_index, args.port, args.reuse_port, args.metrics_port) == (1, 8001, True, 0)
    assert args.metrics_port_file == Path("/d/metrics-1.port") and args.workers == 1


def test_worker_without_metrics_serves_none_rather_than_the_default_port() -> None:
    spec = WorkerSpec(0, (), 8001, "/d/w.sock", "/d/s.sock", None, False)
    argv = worker_argv(spec, python="py")
    assert "--no-metrics" in argv and "--metrics-port" not in argv and "--worker-control-elsewhere" not in argv


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_workers_flag_refuses_bad_counts(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "-r", "m", "--workers", bad])
    assert "--workers" in capsys.readouterr().err


def test_workers_flag_defaults_to_one_process_and_takes_auto() -> None:
    assert build_parser().parse_args(["serve", "-r", "m"]).workers == 1
    assert build_parser().parse_args(["serve", "-r", "m", "--workers", "auto"]).workers == "auto"
    assert build_parser().parse_args(["serve", "-r", "m", "--workers", "3"]).workers == 3
