"""TensorRT optimisation profiles: parsed from model parameters, derived from input dims, described.

Pure functions kept apart from the build so they are unit-tested on machines without a GPU:
:func:`derive_profiles` turns the input dims (config.pbtxt merged over the ONNX graph) and
``max_batch_size`` into profiles (min/opt/max per input; several allowed); the plan cache keys on
what :func:`profiles_from_parameters` returns, so the build and the cache agree on one answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from engines.base import EngineError
from engines.plan_meta import OptimizationProfile, ShapeRange


class ProfileError(EngineError):
    """Optimisation profiles cannot be derived from the dims and parameters given."""


def parse_batch_ranges(text: str) -> list[tuple[int, int, int]]:
    """``"1-8,9-64"`` or ``"1:4:8,8:32:64"`` → [(min, opt, max), ...]; ``lo-hi`` optimises for ``hi``."""
    ranges: list[tuple[int, int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if ":" in part:
                lo, opt, hi = (int(x) for x in part.split(":"))
            elif "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                opt = hi
            else:
                lo = opt = hi = int(part)
        except ValueError:
            raise ProfileError(f"batch profile '{part}' must look like MIN-MAX or MIN:OPT:MAX") from None
        ranges.append((lo, opt, hi))
    return ranges


def parse_dim_ranges(text: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """``"input_ids.1=8:64:128, mask.1=8:64:128"`` → {(name, axis): (min, opt, max)}."""
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        name, dot, axis = key.strip().rpartition(".")
        try:
            if not sep or not dot or not name:
                raise ValueError
            lo, opt, hi = (int(x) for x in value.split(":"))
            out[(name, int(axis))] = (lo, opt, hi)
        except ValueError:
            raise ProfileError(f"dynamic dim '{part}' must look like NAME.AXIS=MIN:OPT:MAX") from None
    return out


def merge_dims(model_dims: Sequence[int], config_dims: Sequence[int] | None) -> tuple[int, ...]:
    """A dim fixed in config.pbtxt narrows a dynamic model dim; a dim fixed in the model wins otherwise."""
    if config_dims is None or len(config_dims) != len(model_dims):
        return tuple(int(d) for d in model_dims)
    return tuple(int(m) if m >= 0 else int(c) for m, c in zip(model_dims, config_dims, strict=True))


def derive_profiles(
    inputs: Sequence[tuple[str, Sequence[int]]],
    max_batch_size: int,
    *,
    batch_ranges: Sequence[tuple[int, int, int]] | None = None,
    dim_ranges: Mapping[tuple[str, int], tuple[int, int, int]] | None = None,
    opt_batch: int | None = None,
) -> list[OptimizationProfile]:
    """Optimisation profiles for ``inputs`` ((name, dims) with -1 for dynamic).

    - Batched models (``max_batch_size > 0``): axis 0 of every input is the batch. One profile per
      batch range; by default one range 1..max_batch_size optimised for ``opt_batch`` (else the max).
    - Other dynamic dims need a range in ``dim_ranges`` ((name, axis) → min/opt/max); fixed dims are
      min = opt = max.
    - Unbatched models get exactly one profile.
    """
    if not inputs:
        raise ProfileError("the network has no inputs")
    dim_ranges = dict(dim_ranges or {})
    batched = max_batch_size > 0
    if batched:
        if batch_ranges:
            ranges = list(batch_ranges)
        else:
            opt = opt_batch if opt_batch is not None else max_batch_size
            ranges = [(1, opt, max_batch_size)]
        for lo, opt, hi in ranges:
            if not 1 <= lo <= opt <= hi <= max_batch_size:
                raise ProfileError(
                    f"batch profile {lo}:{opt}:{hi} must satisfy 1 <= min <= opt <= max <= max_batch_size "
                    f"({max_batch_size})"
                )
    else:
        if batch_ranges:
            raise ProfileError("batch profiles need max_batch_size > 0 (the model has no batch dimension)")
        ranges = [(0, 0, 0)]
    known = {name for name, _ in inputs}
    unknown = sorted(f"{n}.{a}" for n, a in dim_ranges if n not in known)
    if unknown:
        raise ProfileError(f"dynamic dims given for inputs the network does not have: {', '.join(unknown)}")
    profiles: list[OptimizationProfile] = []
    for lo, opt, hi in ranges:
        shapes: list[tuple[str, ShapeRange]] = []
        for name, dims in inputs:
            mins: list[int] = []
            opts: list[int] = []
            maxs: list[int] = []
            for axis, dim in enumerate(dims):
                if batched and axis == 0:
                    if dim >= 0 and not (dim == hi == lo):
                        raise ProfileError(
                            f"input '{name}' has its batch dimension fixed at {dim} in the model but "
                            f"max_batch_size is {max_batch_size}: export the ONNX model with a dynamic "
                            "first axis (dynamic_axes / dynamic_shapes)"
                        )
                    mins.append(lo)
                    opts.append(opt)
                    maxs.append(hi)
                elif dim >= 0:
                    mins.append(dim)
                    opts.append(dim)
                    maxs.append(dim)
                else:
                    given = dim_ranges.get((name, axis))
                    if given is None:
                        raise ProfileError(
                            f"input '{name}' axis {axis} is dynamic: give its range with parameter "
                            f"trt_dynamic_dims (or --dynamic-dim) as {name}.{axis}=MIN:OPT:MAX, or fix it in "
                            "config.pbtxt"
                        )
                    dlo, dopt, dhi = given
                    if not 1 <= dlo <= dopt <= dhi:
                        raise ProfileError(f"dynamic dim {name}.{axis}={dlo}:{dopt}:{dhi} needs 1 <= min <= opt <= max")
                    mins.append(dlo)
                    opts.append(dopt)
                    maxs.append(dhi)
            shapes.append((name, ShapeRange(tuple(mins), tuple(opts), tuple(maxs))))
        profiles.append(OptimizationProfile(tuple(shapes)))
    return profiles


def profiles_from_parameters(
    inputs: Sequence[tuple[str, Sequence[int]]],
    max_batch_size: int,
    parameters: Mapping[str, str],
    preferred_batch_sizes: Sequence[int] = (),
) -> list[OptimizationProfile]:
    """The profiles a model's parameters ask for (``trt_profiles``, ``trt_dynamic_dims``, ``trt_opt_batch``)."""
    batch = parse_batch_ranges(parameters.get("trt_profiles", ""))
    dims = parse_dim_ranges(parameters.get("trt_dynamic_dims", ""))
    opt_raw = parameters.get("trt_opt_batch", "")
    try:
        opt = int(opt_raw) if opt_raw else (max(preferred_batch_sizes) if preferred_batch_sizes else None)
    except ValueError:
        raise ProfileError(f"parameter trt_opt_batch must be an integer, got '{opt_raw}'") from None
    return derive_profiles(inputs, max_batch_size, batch_ranges=batch or None, dim_ranges=dims, opt_batch=opt)


def describe_profiles(profiles: Iterable[OptimizationProfile]) -> list[str]:
    """Human-readable profile lines for ``inferd build --show-profiles`` and logs."""
    lines = []
    for index, profile in enumerate(profiles):
        parts = [f"{name} min {list(r.min)} opt {list(r.opt)} max {list(r.max)}" for name, r in profile.shapes]
        lines.append(f"profile {index}: " + "; ".join(parts))
    return lines


def volume(shape: Sequence[int]) -> int:
    return int(math.prod(shape))
