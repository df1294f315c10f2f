"""bench/results/profile.md from bench/profile.py's measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.run import RESULTS, machine_meta

LABELS = {"floor": "gRPC floor", "mlp_off": "inferd, batching off", "mlp_on": "inferd, batching on"}


def _split_rows(results: dict[str, Any]) -> list[str]:
    categories: list[str] = []
    for checkout in results.values():
        for target in LABELS:
            for name in checkout[target].get("split") or {}:
                if name not in categories:
                    categories.append(name)
    if not categories:
        return ["", "(perf could not sample the server here: no split by library)"]
    columns = [(name, target) for name in results for target in LABELS]
    lines = [
        "",
        "Server CPU per request, µs, split by library (`perf record` shares of the server process × its CPU per"
        " request):",
        "",
        "| library | " + " | ".join(f"{LABELS[t]} ({n})" for n, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for category in [*categories, "total"]:
        cells = []
        for name, target in columns:
            point = results[name][target]
            if category == "total":
                cells.append(f"**{point['us_per_request']:.0f}**")
            else:
                share = (point.get("split") or {}).get(category, 0.0)
                cells.append(f"{share / 100 * point['us_per_request']:.0f}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return lines


def write_profile_report(results: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        **machine_meta(),
        "seconds_sampled": args.profile_seconds,
        "baseline": str(args.baseline) if args.baseline else None,
    }
    (RESULTS / "profile.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# profile benchmark",
        "",
        f"{meta['date']} · {meta['machine']} · server pinned to one core, h2load on the other · MLP ranker, 1 row, "
        f"concurrency 32 over 32 connections · {args.profile_seconds:g} s sampled per target after 2 s of load · "
        f"{args.rounds} interleaved rounds (every target of every checkout per round), medians; the library "
        "split averaged over the rounds",
        "",
        "| checkout | target | req/s | × floor | server CPU µs per request | server CPU use | req/s per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, checkout in results.items():
        floor = checkout["floor"]["req_per_s"]
        for target, label in LABELS.items():
            point = checkout[target]
            lines.append(
                f"| {name} | {label} | {point['req_per_s']:.0f} | {point['req_per_s'] / floor:.2f} | "
                f"{point['us_per_request']:.0f} | {point['cpu_share'] * 100:.0f} % | "
                f"{point.get('rounds_req_per_s', '-')} |"
            )
    lines += _split_rows(results)
    steps = {name: checkout.get("steps") for name, checkout in results.items()}
    if any(steps.values()):
        names = [n for n, s in steps.items() if s]
        keys = list(next(s for s in steps.values() if s))
        lines += [
            "",
            "inferd's own Predict steps, in-process (no gRPC), µs per request (mean of 20,000 MLP calls, one "
            "core; median of 5 runs alternating between the checkouts):",
            "",
            "| step | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(f"{steps[n][key]:.1f}" for n in names) + " |")
    lines += [
        "",
        "CPU per request counts every thread of the server process (the event loop, gRPC's event engine, engine",
        "threads) from /proc; under load the same Python runs several times slower per call than in the",
        "in-process loop (cold caches on a core shared with gRPC's threads), so both views are shown.",
    ]
    path = RESULTS / "profile.md"
    path.write_text("\n".join(lines) + "\n")
    return path
