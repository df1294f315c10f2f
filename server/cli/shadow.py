"""``inferd shadow``: mirror a share of a model's traffic to another version, or stop; and the shadow
agreement column of ``inferd stats``. Talks to the server only through the SDK."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from server.cli.connect import connect


def add_parser(sub: Any, add_address: Callable[[argparse.ArgumentParser], None]) -> None:
    shadow = sub.add_parser(
        "shadow",
        help="mirror a fraction of a model's traffic to another version (answers compared, never returned), "
        "e.g. --label canary --fraction 0.1; or --off. Nothing reloads",
    )
    shadow.add_argument("model", help="the model's name")
    target = shadow.add_mutually_exclusive_group(required=True)
    target.add_argument("--label", help="mirror to the version this label points at (it follows the label)")
    target.add_argument("--version", type=int, help="mirror to this version")
    target.add_argument("--off", action="store_true", help="stop mirroring (the statistics so far stay)")
    shadow.add_argument(
        "--fraction", type=float, default=None, metavar="F", help="share of requests mirrored, in (0, 1]"
    )
    add_address(shadow)


def run(args: argparse.Namespace) -> int:
    """SetShadow through the SDK's ModelControl; prints the model's status like ``inferd traffic``."""
    from server.cli import client as client_commands  # which imports this module for `inferd stats`

    if args.off and args.fraction is not None:
        raise client_commands.UsageError("inferd shadow: --off takes no --fraction")
    if not args.off and args.fraction is None:
        raise client_commands.UsageError("inferd shadow: give --fraction F (in (0, 1]) with --label or --version")
    from inferd import ModelControl

    with connect(args) as client:
        control = ModelControl(client)
        if args.off:
            status = control.clear_shadow(args.model)
        else:
            status = control.set_shadow(args.model, fraction=args.fraction, label=args.label, version=args.version)
    client_commands._print_status([status])
    return 0


def policy_text(shadow: Any) -> str:
    """A ShadowPolicy for the status table, e.g. ``shadow: label canary, fraction 0.1``."""
    target = f"label {shadow.label}" if shadow.label else f"version {shadow.version}"
    return f"shadow: {target}, fraction {shadow.fraction:g}"


def agreement(statistics: Any) -> str:
    """How a shadow version's answers agreed with its primary's (VersionStatistics ``shadow``), or ""."""
    parts = []
    for c in statistics.shadow:
        argmax = f"argmax {c.argmax_agree_rows / c.rows:.1%}" if c.rows else "argmax -"
        extra = "".join(f", {n} {what}" for n, what in ((c.errors, "errors"), (c.dropped, "dropped")) if n)
        parts.append(
            f"vs v{c.primary_version} {c.output}: {c.compared} compared, {argmax}, mean|diff| {c.mean_abs_diff:.3g}"
            + extra
        )
    return "; ".join(parts)


def with_agreement(rows: Sequence[tuple[str, ...]], statistics: Sequence[Any]) -> list[tuple[str, ...]]:
    """The stats table with a SHADOW AGREEMENT column when some version shadows another (else unchanged);
    ``rows`` is a header and then one row per VersionStatistics."""
    cells = [agreement(s) for s in statistics]
    if not any(cells):
        return list(rows)
    return [(*rows[0], "SHADOW AGREEMENT"), *((*row, cell) for row, cell in zip(rows[1:], cells, strict=True))]
