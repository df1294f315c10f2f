"""Sample inputs for the load-time dry run and warm-up: ``<version>/warmup.npz`` (Triton's ``input_data_file``).

Zeros and empty strings are what a model with real pre-processing rejects (``float('')``), so a version
folder may hold one ``warmup.npz`` with one array per input, named after the input
(``np.savez("1/warmup.npz", x=...)``). When it is there, the dry run, the default warm-up and the
parity check feed it instead of zeros. It is read without pickle (object arrays are refused: save
strings as ``str`` or ``bytes`` arrays), must lie inside the model repository, and is checked against
the signature here, so a wrong shape or dtype fails the load naming the file and the input.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from engines.base import SAMPLES_FILE, EngineError, Signature, inside_root
from inferd.tensors import numpy_dtype

__all__ = ["SAMPLES_FILE", "Samples", "check_samples", "load_samples", "sample_batch", "sample_rows"]

Samples = dict[str, np.ndarray]


def load_samples(version_dir: Path, signature: Signature, max_batch_size: int, root: Path | None) -> Samples | None:
    """The version's sample inputs, validated against ``signature``; None when it has no sample file."""
    path = version_dir / SAMPLES_FILE
    if not path.exists() and not path.is_symlink():
        return None
    shown = f"version {version_dir.name}/{SAMPLES_FILE}"
    resolved = inside_root(path, root)  # OutsideRepository names the file
    try:
        with np.load(resolved, allow_pickle=False) as archive:
            raw = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EngineError(
            f"{shown} cannot be read as a numpy .npz archive without pickle ({exc}); "
            "write it with np.savez(path, input_name=array) and save strings as str/bytes arrays, not dtype=object"
        ) from exc
    return check_samples(raw, signature, max_batch_size, shown)


def check_samples(raw: dict[str, np.ndarray], signature: Signature, max_batch_size: int, shown: str) -> Samples:
    """Each input has exactly one array of its dtype and shape; batched inputs agree on their row count."""
    names = [t.name for t in signature.inputs]
    extra = sorted(set(raw) - set(names))
    if extra:
        raise EngineError(f"{shown} has array(s) {extra} that are not inputs of the model (inputs: {names})")
    out: Samples = {}
    for sig in signature.inputs:
        if sig.name not in raw:
            raise EngineError(f"{shown} has no array for input '{sig.name}' (arrays: {sorted(raw)})")
        array = raw[sig.name]
        if sig.dtype == "BYTES":
            if array.dtype.kind not in "US":
                raise EngineError(
                    f"{shown}: input '{sig.name}' is {array.dtype} but config.pbtxt declares BYTES "
                    "(save a str or bytes array)"
                )
            array = _as_bytes(array)
        elif array.dtype != numpy_dtype(sig.dtype):
            raise EngineError(
                f"{shown}: input '{sig.name}' is {array.dtype} but config.pbtxt declares {sig.dtype} "
                f"(save it with .astype(np.{numpy_dtype(sig.dtype).name}))"
            )
        if not sig.accepts_shape(tuple(array.shape)) or 0 in array.shape:
            raise EngineError(
                f"{shown}: input '{sig.name}' has shape {list(array.shape)}; config.pbtxt declares {list(sig.dims)}"
            )
        out[sig.name] = array
    if max_batch_size > 0 and out:
        rows = {name: int(a.shape[0]) for name, a in out.items()}
        if len(set(rows.values())) > 1:
            raise EngineError(f"{shown}: the inputs have different row counts {rows}; the first dim is the batch")
        count = next(iter(rows.values()))
        if count > max_batch_size:
            raise EngineError(f"{shown}: {count} rows exceed max_batch_size {max_batch_size}")
    return out


def sample_rows(samples: Samples) -> int:
    """How many rows (first dim) the samples hold."""
    return int(next(iter(samples.values())).shape[0]) if samples else 1


def sample_batch(samples: Samples, size: int) -> Samples:
    """``size`` rows taken from the samples in turn (repeated when there are fewer), for a warm-up batch size."""
    index = np.arange(size) % sample_rows(samples)
    return {name: np.take(array, index, axis=0) for name, array in samples.items()}


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """A str/bytes array as the object array of bytes that BYTES inputs arrive as."""
    flat = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)
