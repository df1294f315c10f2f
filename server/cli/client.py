"""The client commands of ``inferd``: predict, models, health, metadata, stats, load/unload/traffic.

They talk to a running server through the Python SDK (or, for model control, the generated stub).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.cli import generate as generate_command


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


def predict(args: argparse.Namespace) -> int:
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


def models(args: argparse.Namespace) -> int:
    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        models = client.list_models()
    _print_status(models)
    return 0


def health(args: argparse.Namespace) -> int:
    from inferd import Client

    service = f"model/{args.model}" if args.model else args.service
    with Client(args.address, timeout=args.timeout) as client:
        status = client.health(service)
    print(status)
    return 0 if status == "SERVING" else 1


def stats(args: argparse.Namespace) -> int:
    if args.watch is not None or args.count is not None:
        from server.cli.stats_watch import watch

        return watch(args)
    from google.protobuf import json_format

    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        statistics = client.statistics(args.model, args.version)
    if args.json:
        print(json.dumps([json_format.MessageToDict(s) for s in statistics], indent=2))
        return 0
    from inferd.statistics import latency_quantile

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
                bound_ms(latency_quantile(s.latency_buckets, 0.5)),
                bound_ms(latency_quantile(s.latency_buckets, 0.99)),
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
    for line in table_lines(rows):
        print(line)
    for line in histograms:
        print(line)
    return 0


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns, two spaces apart (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def bound_ms(bound_us: float) -> str:
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


def admin(args: argparse.Namespace) -> int:
    """load / unload / traffic: inferd.v1.ModelService calls through the SDK's ModelControl."""
    from inferd import Client, ModelControl

    with Client(args.address, timeout=args.timeout) as client:
        control = ModelControl(client)
        if args.command == "load":
            status = control.load(args.model, args.version)
        elif args.command == "unload":
            status = control.unload(args.model, args.version or None)
        else:
            status = control.set_traffic(
                args.model, labels=_pairs(args.label, "--label"), weights=_pairs(args.weight, "--weight")
            )
    _print_status([status])
    return 0


def metadata(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from inferd import Client

    with Client(args.address, timeout=args.timeout) as client:
        meta = client.metadata(args.model, version=args.version)
    print(json_format.MessageToJson(meta))
    return 0
