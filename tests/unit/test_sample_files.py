"""engines/samples.py: a version's warmup.npz is read without pickle, confined, and checked against the signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.base import EngineError, OutsideRepository, Signature, TensorSig
from engines.samples import load_samples, sample_batch

SIG = Signature(
    inputs=(TensorSig("x", "FP32", (-1, 2)), TensorSig("text", "BYTES", (-1,))),
    outputs=(TensorSig("y", "FP32", (-1,)),),
)


def _version(tmp_path: Path, **arrays: object) -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    np.savez(version / "warmup.npz", **arrays)  # type: ignore[arg-type]
    return version


def test_no_sample_file_means_no_samples(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    assert load_samples(tmp_path / "m" / "1", SIG, 8, tmp_path) is None


def test_strings_become_the_bytes_objects_requests_carry(tmp_path: Path) -> None:
    version = _version(tmp_path, x=np.ones((2, 2), np.float32), text=np.array(["a", "bé"]))
    samples = load_samples(version, SIG, 8, tmp_path)
    assert samples is not None
    assert samples["text"].dtype == object and samples["text"].tolist() == [b"a", "bé".encode()]
    assert sample_batch(samples, 3)["text"].tolist() == [b"a", "bé".encode(), b"a"]


def test_inputs_with_different_row_counts_are_refused(tmp_path: Path) -> None:
    version = _version(tmp_path, x=np.ones((2, 2), np.float32), text=np.array(["a", "b", "c"]))
    with pytest.raises(EngineError, match=r"version 1/warmup.npz: the inputs have different row counts"):
        load_samples(version, SIG, 8, tmp_path)


def test_more_rows_than_max_batch_size_are_refused(tmp_path: Path) -> None:
    version = _version(tmp_path, x=np.ones((3, 2), np.float32), text=np.array(["a", "b", "c"]))
    with pytest.raises(EngineError, match=r"3 rows exceed max_batch_size 2"):
        load_samples(version, SIG, 2, tmp_path)


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    version = _version(tmp_path, x=np.ones((2, 2), np.float32))
    with pytest.raises(EngineError, match=r"has no array for input 'text'"):
        load_samples(version, SIG, 8, tmp_path)


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    version = _version(tmp_path, x=np.ones((1, 2), np.float32), text=np.array([b"a"], dtype=object))
    with pytest.raises(EngineError, match=r"cannot be read as a numpy .npz archive without pickle"):
        load_samples(version, SIG, 8, tmp_path)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "warmup.npz").write_text("not a zip")
    with pytest.raises(EngineError, match=r"version 1/warmup.npz cannot be read"):
        load_samples(version, SIG, 8, tmp_path)


def test_a_sample_file_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    np.savez(outside / "warmup.npz", x=np.ones((1, 2), np.float32), text=np.array(["a"]))
    version = root / "m" / "1"
    version.mkdir(parents=True)
    (version / "warmup.npz").symlink_to(outside / "warmup.npz")
    with pytest.raises(OutsideRepository, match=r"warmup.npz' is a symlink that leads outside"):
        load_samples(version, SIG, 8, root.resolve())
