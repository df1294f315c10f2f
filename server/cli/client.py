"""The client commands of ``inferd``: predict, models, health, metadata, stats, load/unload/traffic.

They talk to a running server through the Python SDK (or, for model control, the generated stub).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.cli import generate as generate_command
from server.cli import shadow as shadow_command
from server.cli.connect import connect


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
    from inferd.tensors import DTYPE_NAMES

    with connect(args) as client:
        meta = client.metadata(args.model, version=args.version)
        dtypes = {t.name: DTYPE_NAMES[t.data_type] for t in meta.inputs}
        if not dtypes or any(spec.partition("=")[0] not in dtypes for spec in args.input):
            problem = not_serving(client.list_models(), args.model)
            if problem is not None:
                raise SystemExit(f"inferd: {problem}")
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


def not_serving(models: list[Any], name: str) -> str | None:
    """Why a model (a ModelStatus among ``models``) has no READY version, or None when it has one."""
    from inferd.v1 import inference_pb2

    status = next((m for m in models if m.name == name), None)
    if status is None:
        return None
    if any(v.state == inference_pb2.VERSION_STATE_READY for v in status.versions):
        return None
    if not status.versions:
        return f"model '{name}' is FAILED: {status.reason}" if status.reason else f"model '{name}' is not loaded"
    states = "; ".join(
        f"version {v.version} {inference_pb2.VersionState.Name(v.state).removeprefix('VERSION_STATE_')}"
        + (f": {v.reason}" if v.reason else "")
        for v in status.versions
    )
    return f"model '{name}' is not serving ({states})"


def _load_problem(status: Any, versions: list[int]) -> str | None:
    """Why a LoadModel reply is not the outcome asked for (a version or the model FAILED), or None."""
    from inferd.v1 import inference_pb2

    failed = [
        v
        for v in status.versions
        if v.state == inference_pb2.VERSION_STATE_FAILED and (not versions or v.version in versions)
    ]
    if failed:
        return "; ".join(f"model '{status.name}' version {v.version} is FAILED: {v.reason}" for v in failed)
    if status.reason and any(v.state == inference_pb2.VERSION_STATE_READY for v in status.versions):
        return f"model '{status.name}' did not reload: {status.reason}"
    if status.reason:
        return f"model '{status.name}' is FAILED: {status.reason}"
    missing = sorted(set(versions) - {v.version for v in status.versions})
    if missing or not status.versions:
        return f"model '{status.name}' did not load version(s) {missing or 'any'}"
    return None


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
        if model.HasField("shadow"):
            rows.append((model.name, "", "", "", shadow_command.policy_text(model.shadow), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]).rstrip())


def models(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.list_models()
    _print_status(models)
    return 0


def health(args: argparse.Namespace) -> int:
    service = f"model/{args.model}" if args.model else args.service
    with connect(args) as client:
        status = client.health(service)
    print(status)
    return 0 if status == "SERVING" else 1


def stats(args: argparse.Namespace) -> int:
    if args.watch is not None or args.count is not None:
        from server.cli.stats_watch import watch

        return watch(args)
    from google.protobuf import json_format

    with connect(args) as client:
        statistics, workers = client.statistics_and_workers(args.model, args.version)
    if args.json:
        print(
            json.dumps([json_format.MessageToDict(s, preserving_proto_field_name=True) for s in statistics], indent=2)
        )
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
    for line in table_lines(shadow_command.with_agreement(rows, statistics)):
        print(line)
    for line in histograms:
        print(line)
    if workers:
        covered, _, of = workers.partition("/")
        print(f"workers: {covered} of {of} answered (the counts above are their sum)")
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
    from inferd import ModelControl

    problem: str | None = None
    with connect(args) as client:
        control = ModelControl(client)
        if args.command == "load":
            # LoadModel answers once every version is READY or FAILED (the load itself runs on the server)
            status = control.load(args.model, args.version)
            problem = _load_problem(status, args.version)
        elif args.command == "unload":
            labels = _labels_of(client.list_models(), args.model, args.version)
            status = control.unload(args.model, args.version or None)
            if labels:
                print(
                    f"inferd: warning: label(s) {', '.join(labels)} still point at the unloaded version "
                    f"{args.version}; requests naming them fail until 'inferd traffic' moves them",
                    file=sys.stderr,
                )
        else:
            routing, weights = _traffic_arguments(args)
            status = control.set_traffic(args.model, labels=routing, weights=weights)
    _print_status([status])
    if problem is not None:
        print(f"inferd: {problem}", file=sys.stderr)
        return 1
    return 0


def _labels_of(models: list[Any], name: str, version: int) -> list[str]:
    """The labels pointing at one version of a model (none for a whole-model unload)."""
    status = next((m for m in models if m.name == name), None)
    if status is None or not version:
        return []
    return [label for v in status.versions if v.version == version for label in v.labels]


def _traffic_arguments(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, int]]:
    """--label/--weight pairs; clearing everything takes an explicit --clear (exit 2 otherwise)."""
    labels, weights = _pairs(args.label, "--label"), _pairs(args.weight, "--weight")
    if args.clear and (labels or weights):
        raise UsageError("inferd traffic: --clear takes no --label or --weight")
    if not args.clear and not labels:
        raise UsageError(
            "inferd traffic: give --label LABEL=VERSION (and --weight LABEL=WEIGHT), "
            "or --clear to remove every label and the traffic split"
        )
    negative = [f"{k}={v}" for k, v in weights.items() if v < 0]
    if negative:
        raise UsageError(f"inferd traffic: a traffic weight cannot be negative: {', '.join(negative)}")
    return labels, weights


class UsageError(Exception):
    """A command line that asks for something unsafe or contradictory: printed, exit status 2."""


def metadata(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    with connect(args) as client:
        meta = client.metadata(args.model, version=args.version)
    print(json_format.MessageToJson(meta, preserving_proto_field_name=True))
    return 0
