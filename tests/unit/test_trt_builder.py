"""The TensorRT builder's decisions, plan metadata, the plan cache and `inferd build` — all without a GPU.

Profiles, precision flags, compatibility and cache keys are pure functions; the plan cache is driven
with a fake builder; `inferd build` is run as a subprocess where TensorRT is not installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engines.base import BackendUnavailable, EngineError, LoadSpec, Signature, TensorSig, load_engine
from engines.plan_cache import TrtSettings, resolve_plan, trt_settings
from engines.plan_meta import (
    GpuIdentity,
    OptimizationProfile,
    PlanMetadata,
    PlanMetadataError,
    ShapeRange,
    cuda_index,
    file_sha256,
    metadata_path,
    plan_cache_key,
    plan_incompatibility,
    read_metadata,
    write_metadata,
)
from engines.trt_build import progress_line
from engines.trt_instance import bucket_for, graph_buckets, profile_index
from engines.trt_precision import PrecisionError, load_calibration, precision_flags
from engines.trt_profiles import (
    ProfileError,
    derive_profiles,
    describe_profiles,
    merge_dims,
    parse_batch_ranges,
    parse_dim_ranges,
    profiles_from_parameters,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None

# Fake GPUs: the capability table is all the precision logic looks at.
K80 = GpuIdentity("Tesla K80", 3, 7)
P100 = GpuIdentity("Tesla P100-PCIE-16GB", 6, 0)
T4 = GpuIdentity("Tesla T4", 7, 5)
A100 = GpuIdentity("NVIDIA A100-SXM4-80GB", 8, 0)
L4 = GpuIdentity("NVIDIA L4", 8, 9)
H100 = GpuIdentity("NVIDIA H100 80GB HBM3", 9, 0)


def rng(*dims: int) -> ShapeRange:
    return ShapeRange(tuple(dims), tuple(dims), tuple(dims))


# --- optimisation profiles ----------------------------------------------------------------------------


def test_a_batched_model_gets_one_profile_from_one_to_max_batch_size() -> None:
    (profile,) = derive_profiles([("x", (-1, 256))], 64)
    assert profile.shapes == (("x", ShapeRange((1, 256), (64, 256), (64, 256))),)
    assert profile.batch_range() == (1, 64)


def test_the_opt_batch_comes_from_the_largest_preferred_batch_size() -> None:
    (profile,) = profiles_from_parameters([("x", (-1, 4))], 64, {}, preferred_batch_sizes=(8, 32))
    assert profile.range_of("x") == ShapeRange((1, 4), (32, 4), (64, 4))
    (explicit,) = profiles_from_parameters([("x", (-1, 4))], 64, {"trt_opt_batch": "16"}, (8, 32))
    assert explicit.range_of("x") == ShapeRange((1, 4), (16, 4), (64, 4))


def test_several_batch_profiles_cover_every_input() -> None:
    inputs = [("ids", (-1, 128)), ("mask", (-1, 128))]
    profiles = derive_profiles(inputs, 64, batch_ranges=parse_batch_ranges("1-8, 9:32:64"))
    assert [p.batch_range() for p in profiles] == [(1, 8), (9, 64)]
    assert profiles[0].range_of("mask") == ShapeRange((1, 128), (8, 128), (8, 128))
    assert profiles[1].range_of("ids") == ShapeRange((9, 128), (32, 128), (64, 128))
    assert profile_index([p.batch_range() for p in profiles], 8) == 0
    assert profile_index([p.batch_range() for p in profiles], 9) == 1
    assert profile_index([p.batch_range() for p in profiles], 65) == -1


def test_dynamic_non_batch_dims_need_a_range() -> None:
    with pytest.raises(ProfileError, match=r"input 'ids' axis 1 is dynamic.*ids\.1=MIN:OPT:MAX"):
        derive_profiles([("ids", (-1, -1))], 8)
    (profile,) = derive_profiles([("ids", (-1, -1))], 8, dim_ranges=parse_dim_ranges("ids.1=16:64:512"))
    assert profile.range_of("ids") == ShapeRange((1, 16), (8, 64), (8, 512))


def test_an_unbatched_model_gets_fixed_or_ranged_shapes() -> None:
    assert derive_profiles([("x", (3, 4))], 0)[0].range_of("x") == rng(3, 4)
    (profile,) = derive_profiles([("x", (-1, 4))], 0, dim_ranges={("x", 0): (1, 2, 3)})
    assert profile.range_of("x") == ShapeRange((1, 4), (2, 4), (3, 4))
    with pytest.raises(ProfileError, match="need max_batch_size > 0"):
        derive_profiles([("x", (3, 4))], 0, batch_ranges=[(1, 1, 2)])


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([(0, 1, 8)], "1 <= min"),
        ([(4, 2, 8)], "1 <= min"),
        ([(1, 8, 128)], r"max_batch_size \(64\)"),
    ],
)
def test_impossible_batch_ranges_are_refused(ranges: list[tuple[int, int, int]], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        derive_profiles([("x", (-1, 4))], 64, batch_ranges=ranges)


def test_a_model_with_its_batch_dim_fixed_cannot_batch() -> None:
    with pytest.raises(ProfileError, match=r"batch dimension fixed at 1.*dynamic first axis"):
        derive_profiles([("x", (1, 4))], 8)


def test_dim_ranges_for_unknown_inputs_and_bad_syntax_are_refused() -> None:
    with pytest.raises(ProfileError, match=r"nope\.1"):
        derive_profiles([("x", (-1, 4))], 8, dim_ranges={("nope", 1): (1, 1, 1)})
    with pytest.raises(ProfileError, match=r"NAME\.AXIS=MIN:OPT:MAX"):
        parse_dim_ranges("ids=1:2:3")
    with pytest.raises(ProfileError, match="MIN-MAX or MIN:OPT:MAX"):
        parse_batch_ranges("1-x")
    assert parse_batch_ranges("4") == [(4, 4, 4)]
    assert parse_batch_ranges("") == []


def test_config_dims_narrow_dynamic_model_dims() -> None:
    assert merge_dims((-1, -1), (-1, 128)) == (-1, 128)
    assert merge_dims((-1, 64), (-1, -1)) == (-1, 64)
    assert merge_dims((-1, 64), None) == (-1, 64)


def test_profiles_print_readably() -> None:
    lines = describe_profiles(derive_profiles([("x", (-1, 2))], 4))
    assert lines == ["profile 0: x min [1, 2] opt [4, 2] max [4, 2]"]


# --- precision flags ----------------------------------------------------------------------------------


def test_fp32_is_strict_and_clears_tf32() -> None:
    plan = precision_flags("fp32", A100)
    assert plan.flags == () and plan.clear == ("TF32",)


def test_fp16_and_its_limits() -> None:
    assert precision_flags("fp16", T4).flags == ("FP16",)
    assert precision_flags("FP16", H100).notes == ()
    assert "no tensor cores" in precision_flags("fp16", P100).notes[0]
    with pytest.raises(PrecisionError, match=r"5\.3"):
        precision_flags("fp16", K80)


def test_bf16_and_tf32_need_ampere() -> None:
    assert precision_flags("bf16", A100).flags == ("BF16",)
    assert precision_flags("tf32", A100).flags == ("TF32",)
    with pytest.raises(PrecisionError, match=r"8\.0.*Tesla T4 \(compute capability 7\.5\)"):
        precision_flags("bf16", T4)
    with pytest.raises(PrecisionError, match=r"8\.0"):
        precision_flags("tf32", T4)


def test_int8_needs_calibration_or_qdq_and_allows_fp16_fallback() -> None:
    with pytest.raises(PrecisionError, match="calibration data"):
        precision_flags("int8", T4)
    calibrated = precision_flags("int8", T4, has_calibration=True)
    assert calibrated.flags == ("INT8", "FP16") and calibrated.needs_calibrator
    explicit = precision_flags("int8", A100, has_qdq=True, has_calibration=True)
    assert not explicit.needs_calibrator and "Q/DQ" in explicit.notes[0]
    with pytest.raises(PrecisionError, match=r"6\.1"):
        precision_flags("int8", P100, has_calibration=True)


def test_fp8_needs_ada_or_hopper_and_qdq_nodes() -> None:
    with pytest.raises(PrecisionError, match=r"8\.9"):
        precision_flags("fp8", A100, has_qdq=True)
    with pytest.raises(PrecisionError, match="cannot calibrate FP8"):
        precision_flags("fp8", H100, has_calibration=True)
    assert precision_flags("fp8", L4, has_qdq=True).flags == ("FP8", "FP16")


def test_unknown_precisions_and_ignored_calibration() -> None:
    with pytest.raises(PrecisionError, match="not one of"):
        precision_flags("int4", H100)
    assert "ignored for fp16" in precision_flags("fp16", H100, has_calibration=True).notes[0]


def test_progress_lines_show_elapsed_time() -> None:
    assert progress_line(12.345, "Building engine", 3, 10) == "[   12.3s] Building engine 3/10"
    assert progress_line(0.0, "parsing") == "[    0.0s] parsing"


# --- plan metadata and compatibility ------------------------------------------------------------------


def meta(**changes: object) -> PlanMetadata:
    base = PlanMetadata(
        tensorrt_version="10.3.0.26",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        onnx_sha256="ab" * 32,
        precision="fp16",
        profiles=tuple(derive_profiles([("x", (-1, 4))], 8)),
        build_seconds=12.5,
        builder_flags=("FP16",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_metadata_round_trips_through_json(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    path = write_metadata(plan, meta())
    assert path == metadata_path(plan) == tmp_path / "model.plan.json"
    assert read_metadata(plan) == meta()
    assert json.loads(path.read_text())["profiles"][0]["x"] == {"min": [1, 4], "opt": [8, 4], "max": [8, 4]}
    assert read_metadata(tmp_path / "other.plan") is None


def test_broken_metadata_is_an_error(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    metadata_path(plan).write_text("{not json")
    with pytest.raises(PlanMetadataError, match="cannot be read"):
        read_metadata(plan)
    metadata_path(plan).write_text(json.dumps({"format": 99}))
    with pytest.raises(PlanMetadataError, match="format 99"):
        read_metadata(plan)
    metadata_path(plan).write_text(json.dumps({"format": 1, "gpu_name": "x"}))
    with pytest.raises(PlanMetadataError, match="not inferd plan metadata"):
        read_metadata(plan)


def test_a_plan_for_this_gpu_and_tensorrt_is_accepted() -> None:
    assert plan_incompatibility(meta(), H100, "10.3.0.26") is None
    assert plan_incompatibility(meta(), H100, "10.3.0.30") is None, "build numbers do not matter"
    assert plan_incompatibility(meta(gpu_name="nvidia  h100 80gb hbm3"), H100, "10.3.0") is None


def test_a_plan_from_another_tensorrt_release_is_refused() -> None:
    reason = plan_incompatibility(meta(), H100, "10.4.0.1")
    assert reason is not None
    assert "TensorRT 10.3.0.26" in reason and "TensorRT 10.4.0.1" in reason


def test_a_plan_for_another_compute_capability_is_refused() -> None:
    reason = plan_incompatibility(meta(), A100, "10.3.0.26")
    assert reason is not None
    assert "compute capability 9.0 (NVIDIA H100 80GB HBM3)" in reason and "compute capability 8.0" in reason


def test_a_plan_for_another_gpu_model_is_refused_unless_relaxed() -> None:
    h100_pcie = GpuIdentity("NVIDIA H100 PCIe", 9, 0)
    reason = plan_incompatibility(meta(), h100_pcie, "10.3.0.26")
    assert reason is not None and "trt_strict_gpu" in reason
    assert plan_incompatibility(meta(), h100_pcie, "10.3.0.26", strict_gpu_name=False) is None


def test_the_cache_key_names_exactly_what_changes_a_plan() -> None:
    profiles = derive_profiles([("x", (-1, 4))], 8)
    key = plan_cache_key("ab" * 32, H100, "10.3.0.26", "fp16", profiles)
    assert key == plan_cache_key(
        "ab" * 32, dataclasses.replace(H100, index=3, total_bytes=1), "10.3.0.99", "fp16", profiles
    )
    others = {
        plan_cache_key("cd" * 32, H100, "10.3.0", "fp16", profiles),
        plan_cache_key("ab" * 32, A100, "10.3.0", "fp16", profiles),
        plan_cache_key("ab" * 32, GpuIdentity("NVIDIA H100 PCIe", 9, 0), "10.3.0", "fp16", profiles),
        plan_cache_key("ab" * 32, H100, "10.4.0", "fp16", profiles),
        plan_cache_key("ab" * 32, H100, "10.3.0", "fp32", profiles),
        plan_cache_key("ab" * 32, H100, "10.3.0", "fp16", derive_profiles([("x", (-1, 4))], 16)),
    }
    assert key not in others and len(others) == 6
    assert len(key) == 64


def test_cuda_index_reads_the_device() -> None:
    assert cuda_index("cuda:2") == 2
    assert cuda_index("cuda") == 0
    assert cuda_index("cpu") == 0


# --- the plan cache (fake builder) --------------------------------------------------------------------


class FakeBuilder:
    def __init__(self, gpu: GpuIdentity, version: str = "10.3.0.26") -> None:
        self.gpu = gpu
        self.version = version
        self.calls: list[tuple[Path, Path]] = []

    def __call__(self, onnx: Path, output: Path, profiles: Sequence[OptimizationProfile]) -> PlanMetadata:
        self.calls.append((onnx, output))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"fake plan")
        built = meta(
            tensorrt_version=self.version,
            gpu_name=self.gpu.name,
            compute_capability=self.gpu.compute_capability,
            onnx_sha256=file_sha256(onnx),
            profiles=tuple(profiles),
        )
        write_metadata(output, built)
        return built


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes")
    return folder


def profiles() -> list[OptimizationProfile]:
    return derive_profiles([("x", (-1, 4))], 8)


def test_a_matching_plan_is_used_as_it_is(version_dir: Path) -> None:
    plan = version_dir / "model.plan"
    plan.write_bytes(b"plan")
    write_metadata(plan, meta())
    build = FakeBuilder(H100)
    choice = resolve_plan(plan, H100, "10.3.0.26", TrtSettings(), profiles, build)
    assert choice.path == plan and not choice.built and build.calls == []


def test_a_foreign_plan_is_refused_with_the_reason_when_auto_build_is_off(version_dir: Path) -> None:
    plan = version_dir / "model.plan"
    plan.write_bytes(b"plan")
    write_metadata(plan, meta())
    with pytest.raises(EngineError, match=r"model.plan refused: .*compute capability 9\.0.*trt_auto_build"):
        resolve_plan(plan, A100, "10.3.0.26", TrtSettings(), profiles, FakeBuilder(A100))


def test_auto_build_rebuilds_a_foreign_plan_into_the_cache_and_reuses_it(version_dir: Path, tmp_path: Path) -> None:
    plan = version_dir / "model.plan"
    plan.write_bytes(b"plan")
    write_metadata(plan, meta())
    settings = TrtSettings(auto_build=True, cache_dir=tmp_path / "cache", precision="fp16")
    build = FakeBuilder(A100)
    first = resolve_plan(plan, A100, "10.3.0.26", settings, profiles, build)
    assert first.built and first.path.parent == tmp_path / "cache"
    assert (
        first.path.name
        == plan_cache_key(file_sha256(version_dir / "model.onnx"), A100, "10.3.0.26", "fp16", profiles()) + ".plan"
    )
    assert "model.plan refused" in first.notes[0] and "built a fp16 plan" in first.notes[1]
    second = resolve_plan(plan, A100, "10.3.0.26", settings, profiles, build)
    assert second.path == first.path and not second.built
    assert second.notes[-1].startswith("using the cached plan")
    assert len(build.calls) == 1, "the next start reuses the cached plan"
    # a new TensorRT release keys a new plan
    third = resolve_plan(plan, A100, "10.4.0", settings, profiles, FakeBuilder(A100, "10.4.0"))
    assert third.built and third.path != first.path


def test_auto_build_from_onnx_alone(version_dir: Path, tmp_path: Path) -> None:
    settings = TrtSettings(auto_build=True, cache_dir=tmp_path / "cache")
    build = FakeBuilder(H100)
    choice = resolve_plan(version_dir / "model.onnx", H100, "10.3.0.26", settings, profiles, build)
    assert choice.built and len(build.calls) == 1
    with pytest.raises(EngineError, match=r"no model\.plan; rebuild it"):
        resolve_plan(version_dir / "model.plan", H100, "10.3.0.26", TrtSettings(), profiles, build)


def test_a_changed_onnx_file_misses_the_cache(version_dir: Path, tmp_path: Path) -> None:
    settings = TrtSettings(auto_build=True, cache_dir=tmp_path / "cache")
    build = FakeBuilder(H100)
    resolve_plan(version_dir / "model.onnx", H100, "10.3.0.26", settings, profiles, build)
    (version_dir / "model.onnx").write_bytes(b"new onnx bytes")
    resolve_plan(version_dir / "model.onnx", H100, "10.3.0.26", settings, profiles, build)
    assert len(build.calls) == 2


def test_a_plan_without_metadata_is_used_with_a_note(version_dir: Path) -> None:
    plan = version_dir / "model.plan"
    plan.write_bytes(b"plan")
    choice = resolve_plan(plan, H100, "10.3.0.26", TrtSettings(), profiles, FakeBuilder(H100))
    assert choice.path == plan and choice.meta is None and "unchecked" in choice.notes[0]


def test_a_corrupt_cached_plan_is_rebuilt(version_dir: Path, tmp_path: Path) -> None:
    settings = TrtSettings(auto_build=True, cache_dir=tmp_path / "cache")
    build = FakeBuilder(H100)
    first = resolve_plan(version_dir / "model.onnx", H100, "10.3.0.26", settings, profiles, build)
    metadata_path(first.path).write_text("garbage")
    resolve_plan(version_dir / "model.onnx", H100, "10.3.0.26", settings, profiles, build)
    assert len(build.calls) == 2


def test_trt_settings_come_from_parameters(tmp_path: Path) -> None:
    settings = trt_settings(
        {"trt_auto_build": "yes", "trt_cache_dir": str(tmp_path), "trt_precision": "BF16", "trt_workspace_mb": "512"}
    )
    assert settings == TrtSettings(True, tmp_path, "bf16", True, 512)
    assert trt_settings({}).cache.name == "trt"
    with pytest.raises(EngineError, match="trt_auto_build"):
        trt_settings({"trt_auto_build": "maybe"})


# --- calibration data and CUDA-graph buckets ----------------------------------------------------------


def test_calibration_files_become_fixed_size_batches(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(20, dtype=np.float32).reshape(10, 2))
    np.save(tmp_path / "b.npy", np.arange(10, dtype=np.int64).reshape(10, 1))
    batches = load_calibration([f"x={tmp_path / 'a.npy'}", f"ids={tmp_path / 'b.npy'}"], ["x", "ids"], 4)
    assert len(batches) == 2 and batches[1]["x"].shape == (4, 2) and batches[1]["ids"][0, 0] == 4
    single = load_calibration([str(tmp_path / "a.npy")], ["x"], 32)
    assert len(single) == 1 and single[0]["x"].shape == (10, 2)
    with pytest.raises(EngineError, match=r"write NAME=FILE\.npy"):
        load_calibration([str(tmp_path / "a.npy")], ["x", "ids"], 4)
    with pytest.raises(EngineError, match="missing for inputs"):
        load_calibration([f"x={tmp_path / 'a.npy'}"], ["x", "ids"], 4)
    with pytest.raises(EngineError, match="not an input"):
        load_calibration([f"y={tmp_path / 'a.npy'}"], ["x"], 4)


def test_graph_buckets_cover_the_profiles() -> None:
    assert graph_buckets(64, [(1, 64)]) == [1, 2, 4, 8, 16, 32, 64]
    assert graph_buckets(48, [(1, 48)]) == [1, 2, 4, 8, 16, 32, 48]
    assert graph_buckets(64, [(9, 64)], "1,8,32,64") == [32, 64]
    with pytest.raises(EngineError, match="fits"):
        graph_buckets(64, [(9, 64)], "1,8")
    assert bucket_for(5, [1, 2, 4, 8]) == 8
    assert bucket_for(9, [1, 2, 4, 8]) is None


# --- without TensorRT ---------------------------------------------------------------------------------


def example_model(root: Path) -> Path:
    from examples.build import build_repository

    build_repository(root, ["mlp_ranker"])
    return root / "mlp_ranker"


def run_inferd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here: the missing-TensorRT path cannot be shown")
def test_inferd_build_without_tensorrt_exits_with_an_install_hint(tmp_path: Path) -> None:
    model = example_model(tmp_path)
    result = run_inferd("build", str(model), "--precision", "fp16", "--output", str(tmp_path / "out.plan"))
    assert result.returncode == 3, result.stderr
    assert "TensorRT is not installed here" in result.stderr
    assert "pip install tensorrt" in result.stderr
    assert not (tmp_path / "out.plan").exists()


def test_inferd_build_checks_its_target_before_tensorrt(tmp_path: Path) -> None:
    result = run_inferd("build", str(tmp_path / "missing"))
    assert result.returncode == 2 and "neither an .onnx file nor a folder" in result.stderr


def test_inferd_build_shows_profiles_anywhere(tmp_path: Path) -> None:
    model = example_model(tmp_path)
    result = run_inferd("build", str(model), "--show-profiles", "--profile", "1-8", "--profile", "9-32")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "profile 0: features min [1, 256] opt [8, 256] max [8, 256]"
    assert lines[1] == "profile 1: features min [9, 256] opt [32, 256] max [32, 256]"


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_the_tensorrt_engine_reports_the_missing_package(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a plan")
    sig = Signature((TensorSig("x", "FP32", (-1, 4)),), (TensorSig("y", "FP32", (-1, 4)),))
    spec = LoadSpec("m", 1, plan, sig, max_batch_size=8)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        load_engine("tensorrt", spec)
    from engines import trt

    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        trt.load(spec)
