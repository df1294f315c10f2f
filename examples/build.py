"""Build the example model repository from code: ``python -m examples.build --output DIR``.

Everything is generated from fixed seeds (no downloads), so the repository is reproducible and
quick to make in CI. Layout: ``DIR/<model>/config.pbtxt`` and ``DIR/<model>/1/model.<ext>``.

Models:
  mlp_ranker     onnxruntime  features FP32 [-1, 256]  -> score FP32 [-1, 1]
  text_encoder   onnxruntime  input_ids INT64 [-1, 128] -> logits FP32 [-1, 8]   (~10 ms per row, one core)
  tabular_torch  torch        features FP32 [-1, 16]   -> probabilities FP32 [-1, 4]
  tokenizer      python       text BYTES [-1]          -> input_ids INT64 [-1, 128] (feeds text_encoder)
  tiny_lm        generative   prompt BYTES [-1] (one)  -> token_ids INT64 [-1], text BYTES [-1] per message
                              (PredictStream only: a tiny numpy transformer, see examples/tiny_lm.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from inferd.v1 import model_config_pb2

VERSION = 1


@dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: str  # inferd dtype name, e.g. "FP32"
    dims: tuple[int, ...]

    def pbtxt(self, kind: str) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'{kind} {{ name: "{self.name}" data_type: DATA_TYPE_{self.dtype} dims: [{dims}] }}'


@dataclass(frozen=True)
class Example:
    name: str
    engine: str
    artifact: str  # file name inside the version folder
    max_batch_size: int
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    write: Callable[[Path], None]  # writes the artefact to the given path
    extra: tuple[str, ...] = ()  # further config.pbtxt lines
    intra_op_threads: int | None = 1
    requires: str | None = None  # a package the build and the engine need (skipped by default without it)

    def config_text(self) -> str:
        lines = [
            f'name: "{self.name}"',
            f'engine: "{self.engine}"',
            f"max_batch_size: {self.max_batch_size}",
            *(t.pbtxt("input") for t in self.inputs),
            *(t.pbtxt("output") for t in self.outputs),
            "version_policy { latest { num_versions: 1 } }",
            *self.extra,
        ]
        if self.intra_op_threads is not None:
            lines.append(f'parameters {{ key: "intra_op_threads" value: "{self.intra_op_threads}" }}')
        return "\n".join(lines) + "\n"


def _write_onnx(builder_name: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from examples import onnx_graphs  # onnx is imported only when an ONNX example is built

        model = getattr(onnx_graphs, builder_name)()
        path.write_bytes(model.SerializeToString())

    return write


def _write_torch(path: Path) -> None:
    from examples.torch_models import save_tabular_torch

    save_tabular_torch(path)


def _write_tokenizer(path: Path) -> None:
    shutil.copyfile(Path(__file__).with_name("tokenizer_model.py"), path)


def _write_tiny_lm(path: Path) -> None:
    from examples.tiny_lm import write_model

    write_model(path.parent)  # model.py and weights.npz


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example(
            name="mlp_ranker",
            engine="onnxruntime",
            artifact="model.onnx",
            max_batch_size=64,
            inputs=(TensorDecl("features", "FP32", (-1, 256)),),
            outputs=(TensorDecl("score", "FP32", (-1, 1)),),
            write=_write_onnx("mlp_ranker"),
            extra=("dynamic_batching { max_queue_delay_microseconds: 500 }",),
        ),
        Example(
            name="text_encoder",
            engine="onnxruntime",
            artifact="model.onnx",
            max_batch_size=32,
            inputs=(TensorDecl("input_ids", "INT64", (-1, 128)),),
            outputs=(TensorDecl("logits", "FP32", (-1, 8)),),
            write=_write_onnx("text_encoder"),
        ),
        Example(
            name="tabular_torch",
            engine="torch",
            artifact="model.pt",
            max_batch_size=64,
            inputs=(TensorDecl("features", "FP32", (-1, 16)),),
            outputs=(TensorDecl("probabilities", "FP32", (-1, 4)),),
            write=_write_torch,
            extra=("dynamic_batching { max_queue_delay_microseconds: 500 }",),
            requires="torch",
        ),
        Example(
            name="tokenizer",
            engine="python",
            artifact="model.py",
            max_batch_size=64,
            inputs=(TensorDecl("text", "BYTES", (-1,)),),
            outputs=(TensorDecl("input_ids", "INT64", (-1, 128)),),
            write=_write_tokenizer,
            intra_op_threads=None,
        ),
        Example(
            name="tiny_lm",
            engine="generative",
            artifact="model.py",
            max_batch_size=0,
            inputs=(TensorDecl("prompt", "BYTES", (-1,)),),
            outputs=(TensorDecl("token_ids", "INT64", (-1,)), TensorDecl("text", "BYTES", (-1,))),
            write=_write_tiny_lm,
            extra=("streaming { max_active_streams: 16 max_waiting_streams: 64 }",),
            intra_op_threads=None,
        ),
    )
}


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text the way the server does; raises ParseError on a bad file."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def build_model(root: Path, example: Example) -> Path:
    """Write one model's config.pbtxt and version 1 artefact; returns the model folder."""
    text = example.config_text()
    config = parse_config(text)
    if config.name != example.name:
        raise AssertionError(f"config for {example.name} names {config.name}")
    model_dir = root / example.name
    version_dir = model_dir / str(VERSION)
    version_dir.mkdir(parents=True, exist_ok=True)
    example.write(version_dir / example.artifact)
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    return model_dir


def missing_requirement(example: Example) -> str | None:
    """The package ``example`` needs that is not installed (torch after ``make venv TORCH=none``), or None."""
    if example.requires is None or importlib.util.find_spec(example.requires) is not None:
        return None
    return example.requires


def build_repository(root: Path, models: Sequence[str] | None = None) -> list[str]:
    """Build the examples (by default all whose packages are installed) under ``root``; returns the names written.

    Naming a model whose package is missing still fails (with that package's ImportError).
    """
    names = list(models) if models is not None else [n for n, e in EXAMPLES.items() if missing_requirement(e) is None]
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        raise ValueError(f"unknown example models {unknown} (known: {', '.join(EXAMPLES)})")
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        build_model(root, EXAMPLES[name])
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", type=Path, required=True, help="model repository folder to write")
    parser.add_argument("--model", action="append", choices=sorted(EXAMPLES), help="build only this model (repeatable)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.model is None:
        for name, example in EXAMPLES.items():
            missing = missing_requirement(example)
            if missing:
                print(f"skipped {name}: {missing} is not installed (make venv without TORCH=none)", file=sys.stderr)
    for name in build_repository(args.output, args.model):
        example = EXAMPLES[name]
        print(f"{args.output / name}: {example.engine} ({example.artifact})")
    print(f"built in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
