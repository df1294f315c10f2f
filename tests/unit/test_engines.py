"""The CPU engines (onnxruntime, torch, python) and the example models they serve.

Each engine is compared with its runtime called directly on the built artefact, and every load-time
check is driven with a config that disagrees with the artefact.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines import ort as ort_engine
from engines import pt as pt_engine
from engines import python as python_engine
from engines.base import (
    BackendUnavailable,
    Engine,
    EngineError,
    InvalidInput,
    LoadSpec,
    Signature,
    TensorSig,
    load_engine,
)
from examples.build import EXAMPLES, build_repository, parse_config
from inferd.tensors import DTYPE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]

# torch 2.13 deprecates TorchScript (torch.jit.*); the torch engine still loads it on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\..* is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_repository(root)
    return root


def spec_for(repo: Path, model: str, **changes: Any) -> LoadSpec:
    """A LoadSpec from the model's config.pbtxt, as the server would make it."""
    config = parse_config((repo / model / "config.pbtxt").read_text())

    def sigs(tensors: Any) -> tuple[TensorSig, ...]:
        return tuple(TensorSig(t.name, DTYPE_NAMES[t.data_type], tuple(t.dims)) for t in tensors)

    spec = LoadSpec(
        model_name=config.name,
        version=1,
        artifact=repo / model / "1" / EXAMPLES[model].artifact,
        signature=Signature(sigs(config.input), sigs(config.output)),
        max_batch_size=config.max_batch_size,
        parameters=dict(config.parameters),
    )
    return dataclasses.replace(spec, **changes)


def with_input(spec: LoadSpec, **changes: Any) -> LoadSpec:
    first = dataclasses.replace(spec.signature.inputs[0], **changes)
    return dataclasses.replace(spec, signature=Signature((first, *spec.signature.inputs[1:]), spec.signature.outputs))


def with_output(spec: LoadSpec, **changes: Any) -> LoadSpec:
    first = dataclasses.replace(spec.signature.outputs[0], **changes)
    return dataclasses.replace(spec, signature=Signature(spec.signature.inputs, (first, *spec.signature.outputs[1:])))


def read_only(array: np.ndarray) -> np.ndarray:
    """The server hands engines read-only zero-copy views over request bytes; mimic that."""
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


def plain_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- the example repository ---------------------------------------------------------------------------


def test_example_repository_has_a_parsable_config_and_artefact_per_model(repo: Path) -> None:
    assert sorted(p.name for p in repo.iterdir()) == sorted(EXAMPLES)
    for name, example in EXAMPLES.items():
        config = parse_config((repo / name / "config.pbtxt").read_text())
        assert config.name == name
        assert config.engine == example.engine
        assert all(t.dims[0] == -1 for t in [*config.input, *config.output]), "batch dim must be dynamic"
        assert (repo / name / "1" / example.artifact).is_file()


def test_build_command_writes_the_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.build", "--output", str(tmp_path), "--model", "tokenizer"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tokenizer" / "1" / "model.py").is_file()
    assert not (tmp_path / "text_encoder").exists()


def test_onnx_examples_are_reproducible_from_their_seed(tmp_path: Path, repo: Path) -> None:
    build_repository(tmp_path, ["mlp_ranker"])
    assert (tmp_path / "mlp_ranker/1/model.onnx").read_bytes() == (repo / "mlp_ranker/1/model.onnx").read_bytes()


# --- onnxruntime --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_engine_matches_onnxruntime_on_mlp_ranker(repo: Path, batch: int) -> None:
    spec = spec_for(repo, "mlp_ranker")
    engine = ort_engine.load(spec)
    features = np.random.default_rng(batch).standard_normal((batch, 256)).astype(np.float32)
    (expected,) = plain_session(spec.artifact).run(["score"], {"features": features})
    got = engine.infer({"features": read_only(features)})
    assert list(got) == ["score"]
    assert got["score"].shape == (batch, 1)
    np.testing.assert_allclose(got["score"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_engine_matches_onnxruntime_on_text_encoder(repo: Path, batch: int) -> None:
    spec = spec_for(repo, "text_encoder")
    engine = ort_engine.load(spec)
    ids = np.random.default_rng(batch).integers(0, 258, size=(batch, 128)).astype(np.int64)
    (expected,) = plain_session(spec.artifact).run(["logits"], {"input_ids": ids})
    got = engine.infer({"input_ids": read_only(ids)})
    assert got["logits"].shape == (batch, 8)
    np.testing.assert_allclose(got["logits"], expected, rtol=1e-4, atol=1e-5)


def test_onnx_engine_is_an_engine_and_uses_cpu_by_default(repo: Path) -> None:
    engine = ort_engine.load(spec_for(repo, "mlp_ranker"))
    assert isinstance(engine, Engine)
    assert engine.backend == "onnxruntime"
    assert engine.providers == ["CPUExecutionProvider"]


def test_onnx_engine_falls_back_to_cpu_when_requested_providers_are_missing(repo: Path) -> None:
    spec = spec_for(repo, "mlp_ranker", parameters={"providers": "NoSuchExecutionProvider"})
    assert ort_engine.load(spec).providers == ["CPUExecutionProvider"]


def test_onnx_engine_rejects_non_integer_thread_count(repo: Path) -> None:
    with pytest.raises(EngineError, match="intra_op_threads"):
        ort_engine.load(spec_for(repo, "mlp_ranker", parameters={"intra_op_threads": "two"}))


def test_onnx_engine_rejects_config_with_wrong_input_name(repo: Path) -> None:
    with pytest.raises(EngineError, match="'feats'") as err:
        ort_engine.load(with_input(spec_for(repo, "mlp_ranker"), name="feats"))
    assert "features" in str(err.value)  # says what the model has instead


def test_onnx_engine_rejects_config_with_wrong_input_dtype(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"input 'features'.*FP64.*FP32"):
        ort_engine.load(with_input(spec_for(repo, "mlp_ranker"), dtype="FP64"))


def test_onnx_engine_rejects_config_with_wrong_input_rank(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"input 'input_ids'.*rank 3.*rank 2"):
        ort_engine.load(with_input(spec_for(repo, "text_encoder"), dims=(-1, 128, 1)))


def test_onnx_engine_rejects_config_whose_fixed_dim_differs(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"input 'input_ids': dim 1 is 64.*fixed at 128"):
        ort_engine.load(with_input(spec_for(repo, "text_encoder"), dims=(-1, 64)))


def test_onnx_engine_rejects_config_with_unknown_output(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"output 'probability'.*score"):
        ort_engine.load(with_output(spec_for(repo, "mlp_ranker"), name="probability"))


def test_onnx_engine_rejects_config_with_wrong_output_dtype(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"output 'logits'.*FP16.*FP32"):
        ort_engine.load(with_output(spec_for(repo, "text_encoder"), dtype="FP16"))


def test_onnx_engine_reports_a_file_that_is_not_onnx(tmp_path: Path, repo: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EngineError, match=r"cannot load model\.onnx"):
        ort_engine.load(spec_for(repo, "mlp_ranker", artifact=bad))


def test_onnx_engine_passes_bytes_tensors_as_strings_and_returns_bytes(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])],
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()
    )
    signature = Signature((TensorSig("text", "BYTES", (-1,)),), (TensorSig("same", "BYTES", (-1,)),))
    engine = ort_engine.load(LoadSpec("echo", 1, path, signature, max_batch_size=4))
    texts = np.array([b"caf\xc3\xa9", b""], dtype=object)
    assert engine.infer({"text": texts})["same"].tolist() == [b"caf\xc3\xa9", b""]


def test_onnx_engine_serves_several_threads_at_once(repo: Path) -> None:
    engine = ort_engine.load(spec_for(repo, "mlp_ranker"))
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((3, 256)).astype(np.float32) for _ in range(8)]
    expected = [engine.infer({"features": b})["score"] for b in batches]
    results: list[np.ndarray | None] = [None] * len(batches)

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = engine.infer({"features": batches[i]})["score"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_onnx_engine_refuses_calls_after_close(repo: Path) -> None:
    engine = ort_engine.load(spec_for(repo, "mlp_ranker"))
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.infer({"features": np.zeros((1, 256), np.float32)})


def test_onnx_engine_answers_invalid_input_for_an_out_of_vocabulary_token(repo: Path) -> None:
    engine = ort_engine.load(spec_for(repo, "text_encoder"))
    ids = np.ones((2, 128), np.int64)
    ids[1, 3] = 5000  # the vocabulary has 1024 ids
    with pytest.raises(InvalidInput, match=r"onnxruntime refused the input values: .*idx=5000"):
        engine.infer({"input_ids": ids})
    assert engine.infer({"input_ids": ids[:1]})["logits"].shape == (1, 8)  # the session still serves


def test_onnx_engine_calls_skip_the_python_wrapper_of_the_session(repo: Path) -> None:
    """The wrapper's checks cost ~2.5 µs of an ~8 µs MLP call; the engine calls the C session directly."""
    engine = ort_engine.load(spec_for(repo, "mlp_ranker"))
    features = np.zeros((1, 256), np.float32)
    expected = engine.infer({"features": features})["score"]

    def wrapper_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Python wrapper ran")

    engine._session.run = wrapper_called  # type: ignore[method-assign,union-attr]
    np.testing.assert_array_equal(engine.infer({"features": features})["score"], expected)


def test_onnx_engine_failures_on_the_direct_path_still_go_through_the_wrapper(repo: Path) -> None:
    """A failed direct call is retried through onnxruntime's wrapper, whose own checks decide the error."""
    engine = ort_engine.load(spec_for(repo, "mlp_ranker"))
    with pytest.raises(EngineError, match=r"onnxruntime failed on model mlp_ranker: .*Required inputs"):
        engine.infer({"wrong": np.zeros((1, 256), np.float32)})


def test_onnx_invalid_argument_is_told_apart_from_other_failures() -> None:
    invalid = ort.capi.onnxruntime_pybind11_state.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : x")
    assert ort_engine.is_invalid_argument(invalid)
    assert ort_engine.is_invalid_argument(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad dims"))
    assert not ort_engine.is_invalid_argument(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : oom"))


# --- torch --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_torch_engine_matches_torchscript_on_tabular_torch(repo: Path, batch: int) -> None:
    spec = spec_for(repo, "tabular_torch")
    engine = pt_engine.load(spec)
    features = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.jit.load(str(spec.artifact))(torch.from_numpy(features)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read-only server arrays must not trigger torch's warning
        got = engine.infer({"features": read_only(features)})
    assert isinstance(engine, Engine)
    assert got["probabilities"].shape == (batch, 4)
    assert got["probabilities"].dtype == np.float32
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_torch_engine_rejects_config_with_wrong_input_dtype(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"'features' FP64"):
        pt_engine.load(with_input(spec_for(repo, "tabular_torch"), dtype="FP64"))


def test_torch_engine_rejects_config_with_wrong_input_rank(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"'features' FP32 \[2, 16, 1\]"):
        pt_engine.load(with_input(spec_for(repo, "tabular_torch"), dims=(-1, 16, 1)))


def test_torch_engine_rejects_config_with_more_inputs_than_forward_takes(repo: Path) -> None:
    spec = spec_for(repo, "tabular_torch")
    extra = TensorSig("mask", "FP32", (-1, 16))
    spec = dataclasses.replace(spec, signature=Signature((*spec.signature.inputs, extra), spec.signature.outputs))
    with pytest.raises(EngineError, match=r"forward\(features\).*features, mask"):
        pt_engine.load(spec)


def test_torch_engine_rejects_config_with_wrong_output_dtype(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"output 'probabilities' is float32.*FP16"):
        pt_engine.load(with_output(spec_for(repo, "tabular_torch"), dtype="FP16"))


def test_torch_engine_rejects_config_with_wrong_output_shape(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"output 'probabilities' has shape \[2, 4\].*\[-1, 3\]"):
        pt_engine.load(with_output(spec_for(repo, "tabular_torch"), dims=(-1, 3)))


def test_torch_engine_refuses_pickled_modules(tmp_path: Path, repo: Path) -> None:
    pickled = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(16, 4), pickled)
    with pytest.raises(EngineError, match="not a loadable TorchScript archive"):
        pt_engine.load(spec_for(repo, "tabular_torch", artifact=pickled))


def _script(tmp_path: Path, source: str) -> Path:
    """Save a TorchScript module whose forward is ``source`` (a method body on ``self``)."""
    module_file = tmp_path / "scripted_module.py"
    module_file.write_text("import torch\n\n\nclass M(torch.nn.Module):\n" + textwrap.indent(source, "    "))
    namespace: dict[str, Any] = {}
    exec(compile(module_file.read_text(), str(module_file), "exec"), namespace)
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(namespace["M"]()), str(path))
    return path


def test_torch_engine_maps_tuple_and_dict_outputs_to_declared_names(tmp_path: Path) -> None:
    signature = Signature(
        inputs=(TensorSig("a", "FP32", (-1, 2)), TensorSig("b", "FP32", (-1, 2))),
        outputs=(TensorSig("total", "FP32", (-1, 2)), TensorSig("diff", "FP32", (-1, 2))),
    )
    a = np.array([[1, 2], [3, 4]], np.float32)
    b = np.ones((2, 2), np.float32)
    (tmp_path / "t").mkdir()
    as_tuple = _script(
        tmp_path / "t",
        "def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:\n"
        "    return a + b, a - b\n",
    )
    (tmp_path / "d").mkdir()
    as_dict = _script(
        tmp_path / "d",
        "def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:\n"
        "    return {'diff': a - b, 'total': a + b}\n",
    )
    for artifact in (as_tuple, as_dict):
        spec = LoadSpec("pair", 1, artifact, signature, max_batch_size=8)
        got = pt_engine.load(spec).infer({"a": a, "b": b})
        np.testing.assert_array_equal(got["total"], a + b)
        np.testing.assert_array_equal(got["diff"], a - b)


def test_torch_engine_answers_invalid_input_for_an_index_outside_an_embedding(tmp_path: Path) -> None:
    artifact = _script(
        tmp_path,
        "def __init__(self) -> None:\n"
        "    super().__init__()\n"
        "    self.table = torch.nn.Embedding(10, 4)\n\n"
        "def forward(self, ids: torch.Tensor) -> torch.Tensor:\n"
        "    return self.table(ids).sum(1)\n",
    )
    signature = Signature(inputs=(TensorSig("ids", "INT64", (-1, 3)),), outputs=(TensorSig("y", "FP32", (-1, 4)),))
    engine = pt_engine.load(LoadSpec("lookup", 1, artifact, signature, max_batch_size=8))
    with pytest.raises(InvalidInput, match="torch refused the input values: index out of range"):
        engine.infer({"ids": np.array([[1, 2, 30]], np.int64)})
    assert engine.infer({"ids": np.array([[1, 2, 3]], np.int64)})["y"].shape == (1, 4)


def test_torch_errors_that_do_not_blame_the_input_stay_engine_errors() -> None:
    assert pt_engine.input_fault(IndexError("index out of range in self")) == "index out of range in self"
    assert pt_engine.input_fault(RuntimeError("trace...\nRuntimeError: index out of range in self")) is not None
    assert pt_engine.input_fault(RuntimeError("CUDA out of memory")) is None


# --- python -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_python_engine_matches_the_model_class_on_tokenizer(repo: Path, batch: int) -> None:
    spec = spec_for(repo, "tokenizer")
    engine = python_engine.load(spec)
    texts = np.empty(batch, dtype=object)
    texts[:] = [f"query number {i} ✓".encode() for i in range(batch)]
    namespace: dict[str, Any] = {}
    exec(compile(spec.artifact.read_text(), str(spec.artifact), "exec"), namespace)
    expected = namespace["Model"]().infer({"text": texts})["input_ids"]
    got = engine.infer({"text": texts})
    assert isinstance(engine, Engine)
    assert got["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(got["input_ids"], expected)


def test_tokenizer_maps_utf8_bytes_to_ids_after_bos_and_pads_to_128(repo: Path) -> None:
    engine = python_engine.load(spec_for(repo, "tokenizer"))
    texts = np.array([b"hi", "é".encode(), b"x" * 300, b""], dtype=object)
    ids = engine.infer({"text": texts})["input_ids"]
    assert ids.shape == (4, 128)
    assert ids[0, :4].tolist() == [1, ord("h") + 2, ord("i") + 2, 0]
    assert ids[1, :4].tolist() == [1, 0xC3 + 2, 0xA9 + 2, 0]
    assert ids[2].tolist() == [1] + [ord("x") + 2] * 127  # truncated to 127 bytes after BOS
    assert ids[3].tolist() == [1] + [0] * 127
    assert ids.max() < 1024  # stays inside text_encoder's vocabulary


def test_tokenizer_output_feeds_text_encoder(repo: Path) -> None:
    tokenizer = python_engine.load(spec_for(repo, "tokenizer"))
    encoder = ort_engine.load(spec_for(repo, "text_encoder"))
    ids = tokenizer.infer({"text": np.array([b"hello", bytes(range(256))], dtype=object)})["input_ids"]
    logits = encoder.infer({"input_ids": ids})["logits"]
    assert logits.shape == (2, 8)
    assert np.isfinite(logits).all()


def write_model_py(tmp_path: Path, source: str, version: int = 1) -> Path:
    version_dir = tmp_path / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.py"
    path.write_text(textwrap.dedent(source))
    return path


ECHO_SIGNATURE = Signature(
    inputs=(TensorSig("x", "FP32", (-1, 2)),),
    outputs=(TensorSig("y", "FP32", (-1, 2)),),
)


def echo_spec(artifact: Path, version: int = 1, **changes: Any) -> LoadSpec:
    spec = LoadSpec("echo", version, artifact, ECHO_SIGNATURE, max_batch_size=8)
    return dataclasses.replace(spec, **changes)


def test_python_engine_reports_a_syntax_error_in_model_py(tmp_path: Path) -> None:
    path = write_model_py(tmp_path, "class Model:\n    def infer(self, inputs)\n")
    with pytest.raises(EngineError, match=r"model\.py failed to import: SyntaxError"):
        python_engine.load(echo_spec(path))


def test_python_engine_reports_an_import_error_with_its_text(tmp_path: Path) -> None:
    path = write_model_py(tmp_path, "import no_such_module_for_inferd\n")
    with pytest.raises(
        EngineError, match=r"model\.py failed to import: ModuleNotFoundError.*no_such_module_for_inferd"
    ):
        python_engine.load(echo_spec(path))


def test_python_engine_reports_model_py_without_the_class(tmp_path: Path) -> None:
    path = write_model_py(tmp_path, "class Other:\n    def infer(self, inputs):\n        return {}\n")
    with pytest.raises(EngineError, match=r"model\.py defines no class 'Model'"):
        python_engine.load(echo_spec(path))


def test_python_engine_reports_a_class_without_infer(tmp_path: Path) -> None:
    path = write_model_py(tmp_path, "class Model:\n    pass\n")
    with pytest.raises(EngineError, match=r"model\.py.*no infer"):
        python_engine.load(echo_spec(path))


def test_python_engine_reports_an_exception_in_the_constructor(tmp_path: Path) -> None:
    path = write_model_py(
        tmp_path,
        """
        class Model:
            def __init__(self):
                raise RuntimeError("weights missing")
            def infer(self, inputs):
                return {}
        """,
    )
    with pytest.raises(EngineError, match=r"model\.py.*RuntimeError: weights missing"):
        python_engine.load(echo_spec(path))


def test_python_engine_rejects_model_missing_a_declared_output(tmp_path: Path) -> None:
    path = write_model_py(
        tmp_path,
        """
        class Model:
            def infer(self, inputs):
                return {"z": inputs["x"]}
        """,
    )
    with pytest.raises(EngineError, match=r"output 'y'"):
        python_engine.load(echo_spec(path))


def test_python_engine_rejects_config_with_wrong_output_dtype(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"output 'input_ids' is int64.*INT32"):
        python_engine.load(with_output(spec_for(repo, "tokenizer"), dtype="INT32"))


def test_python_engine_passes_spec_calls_hooks_and_honours_python_class(tmp_path: Path) -> None:
    path = write_model_py(
        tmp_path,
        """
        import numpy as np
        events = []

        class Doubler:
            def __init__(self, spec):
                events.append(("init", spec.model_name))
            def load(self):
                events.append(("load",))
            def infer(self, inputs):
                return {"y": inputs["x"] * 2}
            def infer_stream(self, inputs):
                yield self.infer(inputs)
            def close(self):
                events.append(("close",))
        """,
    )
    engine = python_engine.load(echo_spec(path, parameters={"python_class": "Doubler"}))
    x = np.array([[1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(engine.infer({"x": x})["y"], x * 2)
    assert engine.streams  # infer_stream found (run through start_stream / advance_stream)
    events = sys.modules[python_engine.module_name_for(engine.spec)].events
    engine.close()
    assert events == [("init", "echo"), ("load",), ("close",)]
    assert python_engine.module_name_for(engine.spec) not in sys.modules


def test_python_engine_keeps_two_versions_apart(tmp_path: Path) -> None:
    source = """
        import numpy as np
        FACTOR = {factor}

        class Model:
            thread_safe = True
            def infer(self, inputs):
                return {{"y": inputs["x"] * FACTOR}}
        """
    v1 = python_engine.load(echo_spec(write_model_py(tmp_path, source.format(factor=1), 1), version=1))
    v2 = python_engine.load(echo_spec(write_model_py(tmp_path, source.format(factor=3), 2), version=2))
    x = np.ones((1, 2), np.float32)
    assert v1.infer({"x": x})["y"].tolist() == [[1.0, 1.0]]
    assert v2.infer({"x": x})["y"].tolist() == [[3.0, 3.0]]


def test_python_engine_serialises_calls_unless_the_class_is_thread_safe(tmp_path: Path) -> None:
    path = write_model_py(
        tmp_path,
        """
        import threading, time

        class Model:
            def __init__(self):
                self.active = 0
                self.most = 0
                self.guard = threading.Lock()
            def infer(self, inputs):
                with self.guard:
                    self.active += 1
                    self.most = max(self.most, self.active)
                time.sleep(0.005)
                with self.guard:
                    self.active -= 1
                return {"y": inputs["x"]}
        """,
    )
    engine = python_engine.load(echo_spec(path))
    x = np.zeros((1, 2), np.float32)
    threads = [threading.Thread(target=engine.infer, args=({"x": x},)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.model.most == 1


# --- backend lookup -----------------------------------------------------------------------------------


def test_load_engine_rejects_an_unknown_backend(repo: Path) -> None:
    with pytest.raises(EngineError, match=r"unknown engine 'tflite'.*onnxruntime"):
        load_engine("tflite", spec_for(repo, "mlp_ranker"))


@pytest.mark.parametrize(
    "backend, model", [("onnxruntime", "mlp_ranker"), ("torch", "tabular_torch"), ("python", "tokenizer")]
)
def test_load_engine_loads_each_cpu_backend_by_name(repo: Path, backend: str, model: str) -> None:
    engine = load_engine(backend, spec_for(repo, model))
    assert engine.backend == backend
    engine.close()


def test_tensorrt_backend_says_it_is_unavailable_without_a_gpu(repo: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    spec = spec_for(repo, "mlp_ranker", artifact=repo / "mlp_ranker" / "1" / "model.plan")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        load_engine("tensorrt", spec)
    from engines import trt

    with pytest.raises(BackendUnavailable, match="NVIDIA GPU"):
        trt.load(spec)


def test_backends_are_imported_only_when_used() -> None:
    code = (
        "import sys, engines.base, engines.python, examples.build\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'tensorrt') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import engines.ort\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
