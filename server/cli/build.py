"""``inferd build``: turn a model's ONNX file into a TensorRT plan with metadata beside it.

The target may be a model folder (``config.pbtxt`` plus numbered versions: the highest version with
a ``model.onnx``, or ``--version``), one version folder, or a bare ``.onnx`` file. With a config the
profiles follow its dims, ``max_batch_size``, preferred batch sizes and ``trt_*`` parameters; a bare
ONNX file takes them from the flags. The plan goes to ``--output`` (default: ``model.plan`` beside
the ONNX file) and its metadata to ``<output>.json``.

Where ``tensorrt`` cannot be imported the command exits with status 3 and an install hint, after
checking its arguments (so ``--show-profiles`` works anywhere: it prints the profiles and the
precision decision it would use, and exits).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.plan_meta import GpuIdentity

EXIT_USAGE = 2
EXIT_NO_TENSORRT = 3
EXIT_BUILD_FAILED = 1


@dataclass(frozen=True)
class BuildTarget:
    onnx: Path
    output: Path
    max_batch_size: int
    inputs: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    preferred_batch_sizes: tuple[int, ...] = ()
    source: str = ""


def add_parser(sub: Any) -> None:
    build = sub.add_parser(
        "build",
        help="build a TensorRT plan (model.plan + model.plan.json) from a model's ONNX file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "target", type=Path, metavar="MODEL_DIR_OR_ONNX", help="model folder, version folder or .onnx file"
    )
    build.add_argument("--output", "-o", type=Path, help="plan file to write (default: model.plan beside the ONNX)")
    build.add_argument("--version", type=int, help="version folder to build (default: the highest with model.onnx)")
    build.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "tf32", "fp16", "bf16", "int8", "fp8"],
        help="plan precision (default: the config's trt_precision parameter, else fp16)",
    )
    build.add_argument(
        "--workspace-mb", type=int, default=0, help="builder workspace limit in MiB (0 = TensorRT's default)"
    )
    build.add_argument("--timing-cache", type=Path, help="read and update this TensorRT timing cache (faster rebuilds)")
    build.add_argument(
        "--calibration",
        nargs="+",
        default=[],
        metavar="NAME=FILE.npy",
        help="int8 calibration data: .npy arrays per input (FILE.npy alone for a one-input model)",
    )
    build.add_argument("--calibration-batch", type=int, default=8, help="rows per calibration batch (default 8)")
    build.add_argument("--calibration-cache", type=Path, help="read/write TensorRT's int8 calibration cache here")
    build.add_argument("--max-batch-size", type=int, help="batch dimension limit (default: config.pbtxt's)")
    build.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="MIN-MAX|MIN:OPT:MAX",
        help="a batch-size optimisation profile (repeat for several; default 1..max_batch_size)",
    )
    build.add_argument(
        "--dynamic-dim",
        action="append",
        default=[],
        metavar="NAME.AXIS=MIN:OPT:MAX",
        help="range of a dynamic non-batch dimension",
    )
    build.add_argument("--device", default="cuda:0", help="GPU to build for (default %(default)s)")
    build.add_argument(
        "--show-profiles",
        action="store_true",
        help="print the profiles and precision flags that would be used, then exit",
    )


def _usage(message: str) -> SystemExit:
    """Bad arguments: the message on stderr, exit status 2 (as argparse does)."""
    print(message, file=sys.stderr)
    return SystemExit(EXIT_USAGE)


def resolve_target(args: argparse.Namespace) -> BuildTarget:
    """Find the ONNX file, the config (when there is one) and the output path; SystemExit on bad input."""
    from server.models.config import CONFIG_FILE, ConfigError, load_config

    target: Path = args.target
    config_path: Path | None = None
    if target.is_file():
        if target.suffix != ".onnx":
            raise _usage(f"inferd build: {target} is not an .onnx file")
        onnx = target
        if (target.parent.parent / CONFIG_FILE).is_file() and target.parent.name.isdigit():
            config_path = target.parent.parent / CONFIG_FILE
    elif (target / "model.onnx").is_file():
        onnx = target / "model.onnx"
        if (target.parent / CONFIG_FILE).is_file():
            config_path = target.parent / CONFIG_FILE
    elif (target / CONFIG_FILE).is_file():
        config_path = target / CONFIG_FILE
        versions = sorted(
            (int(p.name) for p in target.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()), reverse=True
        )
        if args.version is not None:
            versions = [v for v in versions if v == args.version]
        if not versions:
            which = f"version {args.version}" if args.version is not None else "any version folder"
            raise _usage(f"inferd build: no model.onnx in {which} of {target}")
        onnx = target / str(versions[0]) / "model.onnx"
    else:
        raise _usage(f"inferd build: {target} is neither an .onnx file nor a folder with model.onnx or {CONFIG_FILE}")
    output = args.output or onnx.with_name("model.plan")
    if config_path is None:
        return BuildTarget(onnx, output, args.max_batch_size or 0, source=str(onnx))
    try:
        spec = load_config(config_path, model_name=config_path.parent.name)
    except ConfigError as exc:
        raise _usage(f"inferd build: {exc}") from None
    return BuildTarget(
        onnx,
        output,
        args.max_batch_size if args.max_batch_size is not None else spec.max_batch_size,
        [(s.name, s.dims) for s in spec.signature.inputs],
        dict(spec.parameters),
        spec.batching.preferred_batch_sizes if spec.batching else (),
        source=str(config_path),
    )


def _parameters(target: BuildTarget, args: argparse.Namespace) -> dict[str, str]:
    parameters = dict(target.parameters)
    if args.profile:
        parameters["trt_profiles"] = ",".join(args.profile)
    if args.dynamic_dim:
        parameters["trt_dynamic_dims"] = ",".join(args.dynamic_dim)
    return parameters


def run(args: argparse.Namespace) -> int:
    from engines.base import EngineError
    from engines.plan_meta import cuda_index, detect_gpu
    from engines.trt_build import BuildOptions, TensorRTMissing, build_plan, import_tensorrt
    from engines.trt_precision import load_calibration
    from engines.trt_profiles import describe_profiles, profiles_from_parameters

    target = resolve_target(args)
    parameters = _parameters(target, args)
    precision = (args.precision or parameters.get("trt_precision") or "fp16").lower()
    if args.show_profiles:
        if not target.inputs:
            print("inferd build: --show-profiles needs a config.pbtxt (a bare ONNX file's inputs come from TensorRT)")
            return EXIT_USAGE
        try:
            shapes = profiles_from_parameters(
                target.inputs, target.max_batch_size, parameters, target.preferred_batch_sizes
            )
        except EngineError as exc:
            print(f"inferd build: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for line in describe_profiles(shapes):
            print(line)
        gpu = detect_gpu(cuda_index(args.device))
        if gpu is None:
            print(f"precision {precision}: no GPU here to check it against")
        else:
            _print_precision(precision, gpu, bool(args.calibration))
        return 0
    try:
        import_tensorrt()
    except TensorRTMissing as exc:
        print(f"inferd build: {exc}", file=sys.stderr)
        return EXIT_NO_TENSORRT
    except EngineError as exc:
        print(f"inferd build: {exc}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    try:
        names = [n for n, _ in target.inputs] or _onnx_input_names(target.onnx)
        calibration = load_calibration(args.calibration, names, args.calibration_batch) if args.calibration else []
        options = BuildOptions(
            precision=precision,
            workspace_mb=args.workspace_mb,
            timing_cache=args.timing_cache,
            calibration=calibration,
            calibration_cache=args.calibration_cache,
            max_batch_size=target.max_batch_size,
            config_dims=dict(target.inputs),
            parameters=parameters,
            preferred_batch_sizes=target.preferred_batch_sizes,
            device_index=cuda_index(args.device),
        )
        meta = build_plan(target.onnx, target.output, options, report=lambda line: print(line, flush=True))
    except EngineError as exc:
        print(f"inferd build: {exc}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    print(
        f"built {target.output}: TensorRT {meta.tensorrt_version}, {meta.gpu_name} (sm {meta.compute_capability}), "
        f"{meta.precision}, {len(meta.profiles)} profile(s), {meta.build_seconds:.1f}s"
    )
    return 0


def _print_precision(precision: str, gpu: GpuIdentity, calibration: bool) -> None:
    from engines.base import EngineError
    from engines.trt_precision import precision_flags

    try:
        plan = precision_flags(precision, gpu, has_calibration=calibration, has_qdq=False)
    except EngineError as exc:
        print(f"precision {precision} on {gpu.name}: refused: {exc}")
        return
    print(f"precision {precision} on {gpu.name} (sm {gpu.compute_capability}): flags {list(plan.flags)}")
    for note in plan.notes:
        print(f"note: {note}")


def _onnx_input_names(path: Path) -> list[str]:
    """Graph inputs that are not initialisers (for calibration files named by input)."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(str(path), load_external_data=False)
    initialisers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initialisers]
