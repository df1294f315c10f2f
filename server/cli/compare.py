"""``inferd compare MODEL``: the champion/challenger verdict. Per version: traffic share, shadow agreement,
drift and feedback score with a confidence interval; then, for each challenger, which version is ahead on
feedback and whether the difference is significant. Evidence only: promotion stays ``inferd traffic``.
Talks to the server only through the SDK (``inferd.quality`` holds the statistics)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from server.cli import shadow as shadow_command
from server.cli.connect import connect


def add_parser(sub: Any, add_address: Callable[[argparse.ArgumentParser], None]) -> None:
    compare = sub.add_parser(
        "compare",
        help="champion/challenger verdict: per version traffic share, shadow agreement, drift and feedback "
        "score with a confidence interval; which version is ahead and whether significantly",
    )
    compare.add_argument("model", help="the model's name")
    compare.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the tests and 1 - confidence (0.05)"
    )
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    add_address(compare)


def _ready_versions(status: Any) -> list[int]:
    from inferd.v1 import inference_pb2

    return sorted(v.version for v in status.versions if v.state == inference_pb2.VERSION_STATE_READY)


def traffic_shares(status: Any) -> dict[int, float]:
    """Share of unpinned requests each version answers, as the server routes them: the ``traffic`` split
    when set, else ``stable`` when READY, else the highest READY version (docs/config.md)."""
    labels = {label: v.version for v in status.versions for label in v.labels}
    ready = _ready_versions(status)
    weights = [(labels.get(t.label), t.weight) for t in status.traffic if t.weight]
    total = sum(w for _, w in weights)
    shares: dict[int, float] = {}
    if total:
        for version, weight in weights:
            if version is not None:
                shares[version] = shares.get(version, 0.0) + weight / total
        return shares
    default = labels.get("stable") if labels.get("stable") in ready else (ready[-1] if ready else None)
    return {default: 1.0} if default is not None else {}


def shadow_version(status: Any) -> int | None:
    if not status.HasField("shadow") or not status.shadow.fraction:
        return None
    if status.shadow.label:
        labels = {label: v.version for v in status.versions for label in v.labels}
        return labels.get(status.shadow.label)
    return int(status.shadow.version)


def drift_text(drift: Any) -> str:
    if not drift.reference:
        return "-"
    if not drift.drifting:
        return f"ok ({drift.window_rows} rows)"
    worst = [f for f in drift.features if f.drifting]
    names = ", ".join(f"{f.tensor}[{f.column}]" if f.column >= 0 else f.tensor for f in worst)
    return f"DRIFTING: {names}"


def report(status: Any, statistics: Sequence[Any], alpha: float) -> dict[str, Any]:
    """The comparison as plain data (what ``--json`` prints)."""
    from inferd.quality import compare, score

    shares = traffic_shares(status)
    champion = max(shares, key=lambda v: shares[v]) if shares else None
    shadow = shadow_version(status)
    by_version = {int(s.version): s for s in statistics}
    versions = []
    for version, stats in sorted(by_version.items()):
        role = "champion" if version == champion else ("shadow" if version == shadow else "challenger")
        if version != champion and version != shadow and version not in shares and not stats.feedback.scored:
            role = "idle"
        s = score(stats.feedback, alpha)
        versions.append(
            {
                "version": version,
                "role": role,
                "traffic_share": shares.get(version, 0.0),
                "shadow_fraction": status.shadow.fraction if version == shadow else 0.0,
                "agreement": shadow_command.agreement(stats),
                "drift": drift_text(stats.drift),
                "drifting": stats.drift.drifting,
                "score": None if s is None else {**s.__dict__, "text": s.text()},
            }
        )
    verdicts = []
    if champion in by_version:
        for row in versions:
            if row["role"] in ("shadow", "challenger"):
                v = compare(
                    by_version[champion].feedback,
                    by_version[row["version"]].feedback,
                    champion_version=champion,
                    challenger_version=row["version"],
                    alpha=alpha,
                )
                verdicts.append({**v.__dict__})
    return {"model": status.name, "alpha": alpha, "champion": champion, "versions": versions, "verdicts": verdicts}


def run(args: argparse.Namespace) -> int:
    from server.cli import client as client_commands

    if not 0.0 < args.alpha < 1.0:
        raise client_commands.UsageError(f"inferd compare: --alpha must be in (0, 1), got {args.alpha:g}")

    with connect(args) as client:
        statuses = [m for m in client.list_models() if m.name == args.model]
        statistics = client.statistics(args.model)
    if not statuses:
        raise client_commands.UsageError(f"inferd compare: no model '{args.model}'")
    data = report(statuses[0], statistics, args.alpha)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [("VERSION", "ROLE", "TRAFFIC", "SHADOW AGREEMENT", "DRIFT", f"FEEDBACK ({1 - args.alpha:.0%} CI)")]
    for v in data["versions"]:
        traffic = f"{v['traffic_share']:.0%}" + (f" + shadow {v['shadow_fraction']:g}" if v["shadow_fraction"] else "")
        rows.append(
            (
                str(v["version"]),
                v["role"],
                traffic,
                v["agreement"] or "-",
                v["drift"],
                v["score"]["text"] if v["score"] else "no feedback policy",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"model {data['model']}")
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not data["verdicts"]:
        print("verdict: no challenger to compare (add a shadow or a canary)")
    for verdict in data["verdicts"]:
        print(f"verdict: {verdict['text']}")
    return 0
