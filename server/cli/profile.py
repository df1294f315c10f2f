"""`inferd profile`: write a version's drift reference (reference.npz) from a sample of its data.

An offline tool: it reads an .npz (one array per tensor name, rows first: the model's inputs, and its
outputs if their drift should be watched too) and writes the summaries that `drift {}` compares live
traffic with (inferd/profile.py; docs/quality.md#drift). No server is involved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    profile = sub.add_parser(
        "profile",
        help="write a version's drift reference profile (reference.npz) from sample data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("--model-dir", type=Path, required=True, help="the version folder, e.g. models/mlp/1")
    profile.add_argument("--data", type=Path, required=True, help="sample .npz: one array per input (or output) name")
    profile.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature (default 10)")
    profile.add_argument(
        "--max-features", type=int, default=32, help="columns of a 2-D tensor profiled at most (default 32)"
    )
    profile.add_argument("--output", "-o", type=Path, help="file to write (default: MODEL_DIR/reference.npz)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from inferd.profile import PROFILE_FILE, build_profile, save_profile

    if not args.model_dir.is_dir():
        print(f"inferd profile: {args.model_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        with np.load(args.data, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        profile = build_profile(arrays, bins=args.bins, max_features=args.max_features)
    except (OSError, ValueError) as exc:
        print(f"inferd profile: {args.data}: {exc}", file=sys.stderr)
        return 2
    out = args.output or args.model_dir / PROFILE_FILE
    save_profile(profile, out)
    tensors = sorted(profile.tensors)
    print(f"wrote {out}: {len(profile.features)} feature(s) of {', '.join(tensors)}, {profile.bins} bins")
    return 0
