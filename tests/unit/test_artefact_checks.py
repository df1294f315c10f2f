"""The checks that keep a model's files inside the repository, one by one (the server-level cases are in
tests/integration/test_confinement.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from engines.base import LoadSpec, OutsideRepository, Signature, inside_root
from engines.onnx_external import MalformedModel, external_locations
from engines.ort import check_external_data
from engines.torchscript_guard import FileAccess, check_archive, check_module
from server.models.loader import LoadPolicy, confinement_problem


def _spec(artifact: Path, root: Path | None) -> LoadSpec:
    return LoadSpec("m", 1, artifact, Signature((), ()), root=root)


def test_inside_root_resolves_links_that_stay_inside(tmp_path):
    (tmp_path / "shared.bin").write_bytes(b"x")
    (tmp_path / "link.bin").symlink_to(tmp_path / "shared.bin")
    assert inside_root(tmp_path / "link.bin", tmp_path) == tmp_path / "shared.bin"


def test_inside_root_refuses_dot_dot_and_symlinks_out(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(OutsideRepository, match="'out/x' is a symlink that leads outside"):
        inside_root(root / "out" / "x", root)
    with pytest.raises(OutsideRepository, match="resolves outside the model repository"):
        inside_root(root / ".." / "x", root)


def test_companion_files_are_confined_too(tmp_path):
    root = tmp_path / "repo"
    (root / "m" / "1").mkdir(parents=True)
    (tmp_path / "vocab.txt").write_text("a")
    (root / "m" / "1" / "vocab.txt").symlink_to(tmp_path / "vocab.txt")
    spec = _spec(root / "m" / "1" / "model.py", root)
    with pytest.raises(OutsideRepository):
        spec.companion("vocab.txt")
    assert spec.companion("weights.npz") == root / "m" / "1" / "weights.npz"


def test_confinement_problem_names_a_nested_link_out(tmp_path):
    root = tmp_path / "repo"
    version = root / "m" / "1"
    (version / "tokenizer").mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"")
    assert confinement_problem(version, root) is None
    (version / "tokenizer" / "vocab.json").symlink_to("/etc/hostname")
    assert confinement_problem(version, root) == (
        "'m/1/tokenizer/vocab.json' is a symlink that leads outside the model repository; refused"
    )


def test_load_policy_names_the_flag():
    policy = LoadPolicy.of(Path("/"), ["torch", "onnxruntime"])
    assert policy.allows("torch") and not policy.allows("python")
    assert policy.refusal("python") == (
        "engine python is not allowed on this server (--allowed-engines onnxruntime,torch)"
    )
    assert LoadPolicy.of(Path("/")).allows("python")


# -- ONNX external data --------------------------------------------------------------------------


def _external(location: str) -> onnx.TensorProto:
    tensor = numpy_helper.from_array(np.ones(2, dtype=np.float32), "W")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def _model_with(locations: list[str], nested: str) -> onnx.ModelProto:
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_external(nested))],
        "branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [_external(loc) for loc in locations],
    )
    return helper.make_model(graph)


def test_external_locations_are_found_in_initializers_and_nested_graphs(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(_model_with(["a.bin", "b.bin"], "../../c.bin"), str(path))
    assert sorted(external_locations(path)) == ["../../c.bin", "../../c.bin", "a.bin", "b.bin"]


def test_external_locations_of_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(MalformedModel):
        external_locations(path)
    path.write_bytes(b"")
    assert external_locations(path) == []


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "by an absolute path '/etc/passwd'; refused"),
        ("../../../outside.bin", "resolves outside the model repository"),
    ],
)
def test_onnx_external_data_outside_the_repository_is_refused(tmp_path, location, message):
    root = tmp_path / "repo"
    (root / "m" / "1").mkdir(parents=True)
    artifact = root / "m" / "1" / "model.onnx"
    onnx.save(_model_with([location], "inside.bin"), str(artifact))
    with pytest.raises(Exception, match=message):
        check_external_data(_spec(artifact, root), artifact)


# -- TorchScript that touches files ----------------------------------------------------------------


class _Plain(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2


@torch.jit.script
def _read(x: torch.Tensor) -> torch.Tensor:
    return x + torch.from_file("/etc/hostname", size=1, dtype=torch.uint8).float()


class _Forked(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.jit.wait(torch.jit.fork(_read, x))


class _Saver(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def dump(self, x: torch.Tensor) -> None:
        torch.save(x, "/tmp/inferd-should-not-exist.pt")


def _saved(tmp_path: Path, module: torch.nn.Module) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.script(module).save(str(path))
    return path


def test_plain_torchscript_passes_both_checks(tmp_path):
    path = _saved(tmp_path, _Plain())
    check_archive(path)
    check_module(torch.jit.load(str(path)))


def test_from_file_in_a_forked_function_is_found_in_the_archive_and_the_graph(tmp_path):
    path = _saved(tmp_path, _Forked())
    with pytest.raises(FileAccess, match="from_file"):
        check_archive(path)
    with pytest.raises(FileAccess, match="aten::from_file"):
        check_module(torch.jit.load(str(path)))


def test_save_in_any_method_is_found_in_the_archive_and_the_graph(tmp_path):
    path = _saved(tmp_path, _Saver())
    with pytest.raises(FileAccess, match="save"):
        check_archive(path)
    with pytest.raises(FileAccess, match=r"model\.dump calls aten::save"):
        check_module(torch.jit.load(str(path)))


def test_a_file_that_is_not_a_zip_is_left_to_torch(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a zip")
    check_archive(path)


def test_confinement_problem_follows_folders_linked_inside_and_survives_loops(tmp_path):
    root = tmp_path / "repo"
    version, shared = root / "m" / "1", root / "shared"
    version.mkdir(parents=True)
    shared.mkdir()
    (version / "assets").symlink_to(shared, target_is_directory=True)
    (shared / "loop").symlink_to(shared, target_is_directory=True)
    assert confinement_problem(version, root) is None
    (shared / "vocab.txt").symlink_to("/etc/hostname")
    assert confinement_problem(version, root) == (
        "'m/1/assets/vocab.txt' is a symlink that leads outside the model repository; refused"
    )


def test_a_symlink_loop_is_refused_not_raised(tmp_path):
    root = tmp_path / "repo"
    version = root / "m" / "1"
    version.mkdir(parents=True)
    (version / "a").symlink_to(version / "b")
    (version / "b").symlink_to(version / "a")
    assert confinement_problem(version, root) == "'m/1/a' cannot be resolved (a symlink loop?); refused"
