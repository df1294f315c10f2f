"""The ``inferd`` command: serve models, and talk to a running server (predict, models, health)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server import __version__
from server.cli import build as build_command
from server.cli import client as client_commands
from server.cli import compare as compare_command
from server.cli import (
    config_command,
    security_flags,
    stats_watch,
    telemetry_flags,
    token_command,
    transport_flags,
    workers_flags,
)
from server.cli import generate as generate_command
from server.cli import profile as profile_command
from server.cli import serve as serve_command
from server.cli import shadow as shadow_command
from server.cli.connect import add_connection_flags

DEFAULT_ADDRESS = os.environ.get("INFERD_ADDRESS", "127.0.0.1:8001")
#: --unload-drain-seconds (the same default as the server's; kept here so that --help stays cheap)
DEFAULT_UNLOAD_DRAIN_S = 30.0

EPILOG = """examples:
  inferd serve --repository models --port 8001
  inferd models
  inferd predict mlp_ranker --input features=features.npy
  inferd predict tokenizer --input 'text=["hello world"]'
  inferd generate tiny_lm "The lighthouse keeper" --max-tokens 40 --temperature 0.8 --seed 1
  inferd health --model mlp_ranker
  inferd stats mlp_ranker
  inferd load mlp_ranker
  inferd traffic mlp_ranker --label stable=1 --label canary=2 --weight stable=95 --weight canary=5
  inferd shadow mlp_ranker --label canary --fraction 0.1
  inferd compare mlp_ranker --alpha 0.05
  inferd profile --model-dir models/mlp_ranker/1 --data sample.npz
  inferd build models/mlp_ranker --precision fp16 --timing-cache trt.cache
"""


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="server HOST:PORT (default: $INFERD_ADDRESS or %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    add_connection_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferd",
        description="inferd: a gRPC inference server with dynamic batching and versioned model slots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inferd {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a model repository over gRPC")
    serve.add_argument("--repository", "-r", type=Path, required=True, help="model repository folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s; 0.0.0.0 for all)")
    serve.add_argument("--port", "-p", type=int, default=8001, help="port to bind (default %(default)s; 0 = any)")
    serve.add_argument(
        "--max-receive-message-mb",
        type=int,
        default=64,
        help="largest request accepted, MiB (default %(default)s)",
    )
    serve.add_argument(
        "--max-send-message-mb", type=int, default=64, help="largest response sent, MiB (default %(default)s)"
    )
    serve.add_argument(
        "--max-request-elements",
        type=int,
        default=64 * 1024 * 1024,
        help="most elements a request's input tensors may hold, checked before decoding (default %(default)s)",
    )
    serve.add_argument("--reuse-port", action="store_true", help="share the port with other processes (SO_REUSEPORT)")
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="on SIGTERM, report NOT_SERVING this long before closing the port (default %(default)s)",
    )
    serve.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, time in-flight requests get to finish once the port closes (default %(default)s)",
    )
    serve.add_argument(
        "--unload-drain-seconds",
        type=float,
        default=DEFAULT_UNLOAD_DRAIN_S,
        metavar="S",
        help="how long an unloaded or replaced version waits for its in-flight requests and open streams "
        "before they are ended with UNAVAILABLE (default %(default)s)",
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="serve inferd.v1.ModelService on this port bound to 127.0.0.1 instead of the main port",
    )
    serve.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="rescan the repository this often and load new, changed or removed models/versions",
    )
    serve.add_argument("--device", default="cpu", help="device for torch models, e.g. cuda:0 (default %(default)s)")
    serve.add_argument(
        "--trt-auto-build",
        action="store_true",
        help="build TensorRT plans from model.onnx (and rebuild plans made for another GPU or TensorRT) into a cache",
    )
    serve.add_argument(
        "--trt-cache-dir", type=Path, help="plan cache folder (default $INFERD_TRT_CACHE or ~/.cache/inferd/trt)"
    )
    serve.add_argument(
        "--gpu-memory-fraction",
        type=float,
        default=None,
        metavar="F",
        help="refuse GPU loads that would fill more than this share of a GPU's memory (default 0.9)",
    )
    transport_flags.add_transport_flags(serve)
    telemetry_flags.add_telemetry_flags(serve)
    security_flags.add_security_flags(serve)
    serve_command.add_engine_flags(serve)
    workers_flags.add_workers_flags(serve)
    serve.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)"
    )
    serve.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")

    predict = sub.add_parser("predict", help="run one prediction and print the outputs as JSON")
    predict.add_argument("model", help="the model's name")
    predict.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=FILE.npy|JSON",
        help="an input tensor from a .npy file or a JSON array (repeat per input)",
    )
    predict.add_argument("--version", type=int, default=None, help="a specific version")
    predict.add_argument("--label", default=None, help="a version label, e.g. stable")
    predict.add_argument("--save", type=Path, help="also save each output as NAME.npy in this folder")
    _add_address(predict)

    models = sub.add_parser("models", help="list models, versions and their states")
    _add_address(models)

    health = sub.add_parser("health", help="grpc.health.v1 status of the server or a model (exit 0 = SERVING)")
    health.add_argument("--model", help="a model name (checks service model/NAME)")
    health.add_argument("--service", default="", help="a raw health service name")
    _add_address(health)

    stats = sub.add_parser("stats", help="per-version counters: requests, batches, batch sizes, queue/compute time")
    stats.add_argument("model", nargs="?", default="", help="a model name (default: every model)")
    stats.add_argument("--version", type=int, default=None, help="one version (default: every version)")
    stats.add_argument("--json", action="store_true", help="print the raw ModelStatistics reply as JSON")
    stats_watch.add_flags(stats)
    _add_address(stats)

    load = sub.add_parser(
        "load", help="(re)load a model from the repository: new versions warm up before traffic moves"
    )
    load.add_argument("model", help="the model's name (its folder in the repository)")
    load.add_argument(
        "--version",
        type=int,
        action="append",
        default=[],
        help="a version to load (repeat; default: the versions its version_policy selects). The command waits "
        "for the outcome (--timeout) and exits 1 with the server's reason when a version ends FAILED",
    )
    _add_address(load)

    unload = sub.add_parser("unload", help="drain and unload a model, or one version of it")
    unload.add_argument("model", help="the model's name")
    unload.add_argument("--version", type=int, default=0, help="one version (default: the whole model)")
    _add_address(unload)

    traffic = sub.add_parser(
        "traffic",
        help="set a model's version labels and traffic weights, e.g. --label stable=3 --label canary=4 "
        "--weight stable=95 --weight canary=5",
    )
    traffic.add_argument("model", help="the model's name")
    traffic.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="LABEL=VERSION",
        help="point a label at a READY version (repeat); replaces every current label",
    )
    traffic.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="LABEL=WEIGHT",
        help="traffic weight of a label for requests that name no version or label (repeat; 0 or more, "
        "not all 0); none = no split",
    )
    traffic.add_argument(
        "--clear", action="store_true", help="remove every label and the traffic split (needed to clear)"
    )
    _add_address(traffic)

    build_command.add_parser(sub)
    profile_command.add_parser(sub)
    generate_command.add_parser(sub, _add_address)
    shadow_command.add_parser(sub, _add_address)
    compare_command.add_parser(sub, _add_address)
    config_command.add_parser(sub, _add_address)
    token_command.add_parser(sub)

    metadata = sub.add_parser("metadata", help="print a model's signature and versions")
    metadata.add_argument("model", help="the model's name")
    metadata.add_argument("--version", type=int, default=None, help="a specific version (default: the default one)")
    _add_address(metadata)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tokens = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(tokens)
    if args.command == "serve":
        args.serve_argv = tokens[tokens.index("serve") + 1 :]  # what a --workers supervisor passes on
        return serve_command.serve(args)
    if args.command == "build":
        return build_command.run(args)
    if args.command == "profile":
        return profile_command.run(args)
    if args.command == "token":
        return token_command.run(args)
    from inferd.errors import InferdError

    commands = {
        "predict": client_commands.predict,
        "generate": generate_command.run,
        "models": client_commands.models,
        "health": client_commands.health,
        "metadata": client_commands.metadata,
        "config": config_command.run,
        "stats": client_commands.stats,
        "load": client_commands.admin,
        "unload": client_commands.admin,
        "traffic": client_commands.admin,
        "shadow": shadow_command.run,
        "compare": compare_command.run,
    }
    try:
        return commands[args.command](args)
    except client_commands.UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except InferdError as exc:
        print(f"inferd: {exc}{_hint(args.command, exc)}", file=sys.stderr)
        return 1


#: commands answered by inferd.v1.InferenceService or grpc.health.v1, always on the main port
INFERENCE_COMMANDS = frozenset({"predict", "generate", "models", "health", "metadata", "config", "stats", "compare"})


def _hint(command: str, exc: Exception) -> str:
    """What to do about an error whose gRPC text alone does not say (e.g. UNIMPLEMENTED: Method not found!)."""
    from inferd.errors import DeadlineExceeded, Unimplemented

    if isinstance(exc, Unimplemented) and command not in INFERENCE_COMMANDS:
        return (
            "\ninferd: inferd.v1.ModelService is not on this port: a server started with --admin-port serves "
            "it there, bound to 127.0.0.1; pass --address 127.0.0.1:ADMIN_PORT"
        )
    if isinstance(exc, DeadlineExceeded) and command == "load":
        return "\ninferd: the load goes on on the server; raise --timeout to wait for it, or watch 'inferd models'"
    return ""
