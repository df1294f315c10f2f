"""The ``inferd`` command: serve models, and talk to a running server (predict, models, health)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server import build_command, generate_command

DEFAULT_ADDRESS = os.environ.get("INFERD_ADDRESS", "127.0.0.1:8001")

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
  inferd build models/mlp_ranker --precision fp16 --timing-cache trt.cache
"""


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help="server HOST:PORT (default: $INFERD_ADDRESS or %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferd",
        description="inferd: a gRPC inference server with dynamic batching and versioned model slots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        help="time in-flight requests get to finish (default %(default)s)",
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
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")

    predict = sub.add_parser("predict", help="run one prediction and print the outputs as JSON")
    predict.add_argument("model")
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
    stats.add_argument("--version", type=int, default=None)
    stats.add_argument("--json", action="store_true", help="print the raw ModelStatistics reply as JSON")
    _add_address(stats)

    load = sub.add_parser(
        "load", help="(re)load a model from the repository: new versions warm up before traffic moves"
    )
    load.add_argument("model")
    load.add_argument("--version", type=int, action="append", default=[], help="a version to load (repeat)")
    _add_address(load)

    unload = sub.add_parser("unload", help="drain and unload a model, or one version of it")
    unload.add_argument("model")
    unload.add_argument("--version", type=int, default=0, help="one version (default: the whole model)")
    _add_address(unload)

    traffic = sub.add_parser(
        "traffic",
        help="set a model's version labels and traffic weights, e.g. --label stable=3 --label canary=4 "
        "--weight stable=95 --weight canary=5",
    )
    traffic.add_argument("model")
    traffic.add_argument("--label", action="append", default=[], metavar="LABEL=VERSION")
    traffic.add_argument("--weight", action="append", default=[], metavar="LABEL=WEIGHT")
    _add_address(traffic)

    build_command.add_parser(sub)
    generate_command.add_parser(sub, _add_address)

    metadata = sub.add_parser("metadata", help="print a model's signature and versions")
    metadata.add_argument("model")
    metadata.add_argument("--version", type=int, default=None)
    _add_address(metadata)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from server.app import InferdServer, ServerOptions, StartupError
    from server.repository import RepositoryError

    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = ServerOptions(
        repository=args.repository,
        host=args.host,
        port=args.port,
        max_receive_message_mb=args.max_receive_message_mb,
        max_send_message_mb=args.max_send_message_mb,
        reuse_port=args.reuse_port,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
        admin_port=args.admin_port,
        poll_interval=args.poll_interval,
        device=args.device,
        trt_auto_build=args.trt_auto_build,
        trt_cache_dir=args.trt_cache_dir,
        gpu_memory_fraction=args.gpu_memory_fraction,
    )

    abandoned: list[bool] = []

    async def run() -> int:
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        try:
            server = InferdServer(options)
        except RepositoryError as exc:
            print(f"inferd: {exc}", file=sys.stderr)
            return 2
        starting = loop.create_task(server.start())
        first_signal = loop.create_task(signals.get())
        await asyncio.wait({starting, first_signal}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            try:
                port = starting.result()
            except StartupError as exc:
                print(f"inferd: {exc}", file=sys.stderr)
                return 2
            if args.port_file:
                partial = args.port_file.with_name(args.port_file.name + ".tmp")
                partial.write_text(str(port))
                os.replace(partial, args.port_file)  # readers never see an empty file
            await first_signal
        else:
            # nothing has been SERVING yet: abandon the loads (their threads finish in the background)
            logging.getLogger("inferd").warning("signal during start-up: stopping without loading the rest")
            abandoned.append(True)
            starting.cancel()
            results = await asyncio.gather(starting, return_exceptions=True)
            if isinstance(results[0], StartupError):
                print(f"inferd: {results[0]}", file=sys.stderr)
                return 2
        # first signal: graceful drain; a second one while draining stops at once
        stopping = loop.create_task(server.stop(drain=starting.done() and not starting.cancelled()))
        second_signal = loop.create_task(signals.get())
        await asyncio.wait({stopping, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            logging.getLogger("inferd").warning("second signal: stopping without waiting for in-flight requests")
            os._exit(1)
        second_signal.cancel()
        return 0

    code = asyncio.run(run())
    if abandoned:
        # model loads abandoned at start-up may still be running in their threads: do not wait for them
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _parse_input(spec: str, dtypes: dict[str, str]) -> tuple[str, np.ndarray]:
    from inferd.tensors import numpy_dtype

    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"inferd: --input needs NAME=FILE.npy or NAME=JSON, got '{spec}'")
    if name not in dtypes:
        raise SystemExit(f"inferd: the model has no input '{name}' (inputs: {', '.join(dtypes)})")
    path = Path(value)
    if value.endswith(".npy") and path.is_file():
        return name, np.load(path, allow_pickle=False)
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"inferd: input '{name}' is neither an existing .npy file nor JSON: {exc}") from None
    if dtypes[name] == "BYTES":
        array = np.array(data, dtype=object)
        flat = [x.encode() if isinstance(x, str) else x for x in array.reshape(-1)]
        return name, np.array(flat, dtype=object).reshape(array.shape)
    return name, np.asarray(data, dtype=numpy_dtype(dtypes[name]))


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in array.reshape(-1)]
    return array.tolist()


def _predict(args: argparse.Namespace) -> int:
    from inferd import Client
    from inferd.tensors import DTYPE_NAMES

    with Client(args.address, timeout=args.timeout) as client:
        meta = client.metadata(args.model, version=args.version)
        dtypes = {t.name: DTYPE_NAMES[t.data_type] for t in meta.inputs}
        inputs = dict(_parse_input(spec, dtypes) for spec in args.input)
        result = client.predict_response(args.model, inputs, version=args.version, label=args.label)
    out = {
        "model": result.model,
        "version": result.version,
        "id": result.id,
        "outputs": {
            name: {"shape": list(a.shape), "dtype": str(a.dtype), "data": _jsonable(a)}
            for name, a in result.outputs.items()
        },
    }
    print(json.dumps(out))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, array in result.outputs.items():
            np.save(args.save / f"{name}.npy", array, allow_pickle=False)
    return 0


def _print_status(models: list[Any]) -> None:
    from inferd.v1 import inference_pb2

    rows = [("MODEL", "VERSION", "STATE", "ENGINE", "LABELS", "REASON")]
    for model in models:
        if not model.versions:
            rows.append((model.name, "-", "FAILED" if model.reason else "-", "-", "-", model.reason))
        for v in model.versions:
            state = inference_pb2.VersionState.Name(v.state).removeprefix("VERSION_STATE_")
            reason = v.reason or "; ".join(v.engine_notes)
            rows.append((model.name, str(v.version), state, v.engine or "-", ",".join(v.labels) or "-", reason))
        if model.traffic:
            split = ", ".join(f"{w.label}={w.weight}" for w in model.traffic)
            rows.append((model.name, "", "", "", f"traffic: {split}", model.reason if model.versions else ""))
        elif model.versions and model.reason:
            rows.append((model.name, "", "", "", "", model.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]).rstrip())


def _models(args: argparse.Namespace) -> int:
    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        models = client.list_models()
    _print_status(models)
    return 0


def _health(args: argparse.Namespace) -> int:
    from inferd import Client

    service = f"model/{args.model}" if args.model else args.service
    with Client(args.address, timeout=args.timeout) as client:
        status = client.health(service)
    print(status)
    return 0 if status == "SERVING" else 1


def _stats(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        statistics = client.statistics(args.model, args.version)
    if args.json:
        print(json.dumps([json_format.MessageToDict(s) for s in statistics], indent=2))
        return 0
    from server.stats import latency_quantile

    rows = [
        (
            "MODEL",
            "VERSION",
            "ENGINE",
            "OK",
            "FAILED",
            "P50 ms≤",
            "P99 ms≤",
            "BATCHES",
            "ROWS/BATCH",
            "QUEUE ms/req",
            "COMPUTE ms/batch",
        )
    ]
    histograms = []
    for s in statistics:
        failed = sum(s.failure_count.values())
        answered = max(1, s.success_count + failed)
        batches = max(1, s.execution_count)
        rows.append(
            (
                s.name,
                str(s.version),
                s.engine or "-",
                str(s.success_count),
                str(failed) + (f" {dict(s.failure_count)}" if failed else ""),
                _bound_ms(latency_quantile([b.count for b in s.latency_buckets], 0.5)),
                _bound_ms(latency_quantile([b.count for b in s.latency_buckets], 0.99)),
                str(s.execution_count),
                f"{s.inference_count / batches:.1f}",
                f"{s.queue_time_ns / answered / 1e6:.3f}",
                f"{s.compute_time_ns / batches / 1e6:.3f}",
            )
        )
        if s.batch_sizes:
            sizes = " ".join(f"{b.batch_size}:{b.count}" for b in s.batch_sizes)
            histograms.append(f"{s.name} v{s.version} batch sizes (rows:calls): {sizes}")
        if s.streaming.streams_started or s.streaming.streams_rejected:
            histograms.append(generate_command.stream_summary(s))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for line in histograms:
        print(line)
    return 0


def _bound_ms(bound_us: float) -> str:
    """A latency bucket bound for display: "-" when nothing was measured."""
    if bound_us == 0:
        return "-"
    return "inf" if bound_us == float("inf") else f"{bound_us / 1000:g}"


def _pairs(items: list[str], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value.lstrip("-").isdigit():
            raise SystemExit(f"inferd: {what} must look like NAME=NUMBER, got '{item}'")
        out[key] = int(value)
    return out


def _admin(args: argparse.Namespace) -> int:
    """load / unload / traffic: inferd.v1.ModelService calls."""
    import grpc

    from inferd.errors import from_rpc_error
    from inferd.v1 import admin_pb2, admin_pb2_grpc, model_config_pb2

    with grpc.insecure_channel(args.address) as channel:
        stub = admin_pb2_grpc.ModelServiceStub(channel)
        try:
            if args.command == "load":
                reply = stub.LoadModel(
                    admin_pb2.LoadModelRequest(name=args.model, versions=args.version), timeout=args.timeout
                )
            elif args.command == "unload":
                reply = stub.UnloadModel(
                    admin_pb2.UnloadModelRequest(name=args.model, version=args.version), timeout=args.timeout
                )
            else:
                weights = [
                    model_config_pb2.TrafficWeight(label=k, weight=v)
                    for k, v in _pairs(args.weight, "--weight").items()
                ]
                reply = stub.SetTraffic(
                    admin_pb2.SetTrafficRequest(
                        name=args.model, version_labels=_pairs(args.label, "--label"), traffic=weights
                    ),
                    timeout=args.timeout,
                )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
    _print_status([reply.status])
    return 0


def _metadata(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        meta = client.metadata(args.model, version=args.version)
    print(json_format.MessageToJson(meta))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "build":
        return build_command.run(args)
    from inferd.errors import InferdError

    commands = {
        "predict": _predict,
        "generate": generate_command.run,
        "models": _models,
        "health": _health,
        "metadata": _metadata,
        "stats": _stats,
        "load": _admin,
        "unload": _admin,
        "traffic": _admin,
    }
    try:
        return commands[args.command](args)
    except InferdError as exc:
        print(f"inferd: {exc}", file=sys.stderr)
        return 1
