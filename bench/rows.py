"""Pure parts of the batching scenario's rows-per-request dimension: the ``--rows`` list, which cells a
round measures (and so how long a run takes), and the per-(model, rows) "batching never slower" verdict.

Kept apart from bench/batching.py so they are unit-tested without servers or h2load.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.patterns import label, measured

#: h2load start, ModelStatistics calls and printing per point, seconds; a 15-point smoke run (1 s + 1 s warm-up
#: each, MLP only) took 37 s on the 2-core dev box: ~0 s per point, ~7 s fixed (the encoder adds its build)
POINT_OVERHEAD_S = 0.1
#: servers' start, the bench repository and the in-process compute floors, seconds
FIXED_S = 20.0


def parse_rows(text: str) -> tuple[int, ...]:
    """``--rows 1,8`` → (1, 8); a non-positive or non-integer value is an argparse-style error."""
    try:
        values = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"--rows takes a comma list of positive integers; got {text!r}")
    return values


def point_seconds(args: argparse.Namespace) -> float:
    """Measured seconds per batching point: ``--batching-seconds`` (default 3), or ``--seconds`` if lower,
    so the default run fits ~10 minutes while a short ``--seconds 1`` smoke run stays short."""
    return float(min(args.seconds, getattr(args, "batching_seconds", args.seconds)))


def cells(
    models: list[str],
    rows: tuple[int, ...],
    concurrencies: list[int],
    patterns: tuple[str, ...],
    lean: bool = False,
) -> list[tuple[int, str, str, int]]:
    """Every h2load point of one round, in measuring order: (concurrency, pattern, target, rows); the
    floor ("floor", rows 1) once per concurrency and measured pattern, with ``lean`` the lean handler
    ("lean", rows 1) right after it, then each model at each rows."""
    out: list[tuple[int, str, str, int]] = []
    for c in concurrencies:
        for pattern in measured(patterns, c):
            out.append((c, pattern, "floor", 1))
            if lean:
                out.append((c, pattern, "lean", 1))
            out += [(c, pattern, model, r) for model in models for r in rows]
    return out


def estimated_seconds(
    models: list[str],
    rows: tuple[int, ...],
    concurrencies: list[int],
    patterns: tuple[str, ...],
    rounds: int,
    seconds: float,
    warmup: float,
    lean: bool = False,
) -> float:
    points = len(cells(models, rows, concurrencies, patterns, lean)) * rounds
    return points * (seconds + warmup + POINT_OVERHEAD_S) + FIXED_S


def verdict(ratios: dict[tuple[str, int], float]) -> tuple[bool, tuple[str, int], float]:
    """on/off req/s by (pattern, concurrency) → (never slower?, the worst cell, its ratio). Strict: a
    median ratio under 1.00 is "slower", noise or not — the report shows the figure beside the verdict."""
    worst = min(ratios, key=lambda cell: ratios[cell])
    return ratios[worst] >= 1.0, worst, ratios[worst]


def _by_int(mapping: dict[Any, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in mapping.items()}  # JSON round trips turn the keys into str


def rows_summary(inferd: dict[str, dict[str, dict[Any, dict[Any, Any]]]], patterns: list[str]) -> list[str]:
    """One line per (model, rows): on/off req/s in every cell, the never-slower verdict with the worst
    cell, and rows per engine call at the saturated cell (the top concurrency, many connections)."""
    models = {m for by_model in inferd.values() for m in by_model}
    bases = [m[: -len("_on")] for m in sorted(models) if m.endswith("_on") and f"{m[:-3]}_off" in models]
    lines: list[str] = []
    for base in bases:
        rows_values = sorted({int(r) for by_model in inferd.values() for r in by_model[f"{base}_on"]})
        for rows in rows_values:
            ratios: dict[tuple[str, int], float] = {}
            for pattern in patterns:
                on = _by_int(_by_int(inferd[pattern][f"{base}_on"]).get(rows, {}))
                off = _by_int(_by_int(inferd[pattern][f"{base}_off"]).get(rows, {}))
                for c in sorted(on):
                    if c in off and pattern in measured(tuple(patterns), c):
                        ratios[(pattern, c)] = on[c]["req_per_s"] / off[c]["req_per_s"]
            if not ratios:
                continue
            ok, (pattern, c), worst = verdict(ratios)
            shown = ", ".join(f"c={cc} {label(p, cc)}: {r:.2f}" for (p, cc), r in sorted(ratios.items(), key=_order))
            line = (
                f"- {base}, {rows} row{'s' if rows != 1 else ''}/request: batching on / off req/s at {shown}; "
                f"**never slower: {'yes' if ok else 'no'}** (worst: c={c} {label(pattern, c)}, {worst:.2f})"
            )
            line += _saturated(inferd, patterns, f"{base}_on", rows)
            lines.append(line)
    if lines:
        lines = ["", "## Batching on vs off, by rows per request", "", *lines]
    return lines


def _order(item: tuple[tuple[str, int], float]) -> tuple[int, str]:
    (pattern, c), _ratio = item
    return c, pattern


def _saturated(inferd: dict[str, dict[str, dict[Any, dict[Any, Any]]]], patterns: list[str], on: str, rows: int) -> str:
    """ "; c=32 many connections: N rows per engine call" — the saturated cell's batching figure."""
    if "many" not in patterns:
        return ""
    points = _by_int(_by_int(inferd["many"][on]).get(rows, {}))
    if not points:
        return ""
    top = max(points)
    p = points[top]
    return (
        f"; saturated (c={top}, {label('many', top)}): **{p['mean_batch_rows']:.1f} rows per engine call**, "
        f"{p['engine_calls_per_request']:.3f} engine calls/req"
    )
