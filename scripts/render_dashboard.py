"""Render the Grafana dashboard's panels from a live Prometheus into one PNG (docs/images/dashboard.png).

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        [--dashboard deploy/grafana/inferd-dashboard.json] [--output docs/images/dashboard.png] \\
        [--model mlp_ranker] [--last 300 | --start UNIX --end UNIX] [--rate-interval 30s]

Grafana itself is not needed: each panel's ``targets[].expr`` is sent to Prometheus' ``query_range`` with
the dashboard's template variables filled in (``$model`` from ``--model``, any other variable ``.*``;
``$__rate_interval`` from ``--rate-interval``) and drawn with matplotlib, one small chart per panel in
the dashboard's own order. Every query that Prometheus rejects is reported; ``--strict`` makes it fail.
Run by ``tests/e2e/test_prometheus_scrape.py`` against the test Prometheus after a mixed load.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "inferd-dashboard.json"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "images" / "dashboard.png"
#: series drawn per panel at most (the largest by mean); the legend says how many were left out
MAX_SERIES = 8
_VARIABLE = r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]"
_WHOLE_MATCHER = re.compile(r'(!?)=\s*"(?:' + _VARIABLE + r')"')
_ANY_VARIABLE = re.compile(_VARIABLE)
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class Series:
    labels: dict[str, str]
    name: str
    times: list[float]
    values: list[float]


@dataclass
class Query:
    expr: str
    legend: str = ""
    #: Grafana's "heatmap" format: cumulative ``le`` buckets drawn as per-bucket counts
    buckets: bool = False
    series: list[Series] = field(default_factory=list)
    error: str = ""


@dataclass
class Panel:
    title: str
    kind: str
    unit: str
    queries: list[Query]
    #: a heatmap's bucket axis unit (``options.yAxis.unit``)
    bucket_unit: str = ""


# -- the dashboard


def iter_panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Panels in reading order (by grid row, then column), descending into rows (collapsed ones hold theirs)."""

    def position(panel: Mapping[str, Any]) -> tuple[int, int]:
        grid = panel.get("gridPos") or {}
        return int(grid.get("y", 0)), int(grid.get("x", 0))

    flat: list[Mapping[str, Any]] = []
    for panel in panels:
        if panel.get("type") == "row":
            flat.extend(panel.get("panels") or [])
        else:
            flat.append(panel)
    yield from sorted(flat, key=position)


def substitute(expr: str, variables: Mapping[str, str], default: str = ".*") -> str:
    """Fill Grafana template variables in for Prometheus: ``label="$var"`` becomes a regex match, since
    a multi-value or "All" variable stands for a regex."""

    def name(match: re.Match[str], first: int) -> str:
        return next(group for group in match.groups()[first : first + 3] if group)

    def value(var: str) -> str:
        return variables.get(var, default)

    def whole(match: re.Match[str]) -> str:
        return f'{"!~" if match.group(1) else "=~"}"{value(name(match, 1))}"'

    expr = _WHOLE_MATCHER.sub(whole, expr)
    return _ANY_VARIABLE.sub(lambda match: value(name(match, 0)), expr)


def load_panels(dashboard: Mapping[str, Any], variables: Mapping[str, str]) -> list[Panel]:
    panels = []
    for raw in iter_panels(dashboard.get("panels") or []):
        targets = [t for t in raw.get("targets") or [] if t.get("expr") and not t.get("hide")]
        if not targets:
            continue
        unit = str(((raw.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or "")
        queries = [
            Query(substitute(str(t["expr"]), variables), str(t.get("legendFormat") or ""), t.get("format") == "heatmap")
            for t in targets
        ]
        bucket_unit = str(((raw.get("options") or {}).get("yAxis") or {}).get("unit") or "")
        title = str(raw.get("title") or "(untitled)")
        panels.append(Panel(title, str(raw.get("type") or ""), unit, queries, bucket_unit))
    return panels


# -- Prometheus


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    try:
        with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as reply:
            payload = json.load(reply)
    except urllib.error.HTTPError as err:
        payload = json.load(err)
    if payload.get("status") != "success":
        raise ValueError(f"{payload.get('errorType')}: {payload.get('error')}")
    return list(payload["data"]["result"])


def legend(labels: Mapping[str, str], template: str) -> str:
    if template and template != "__auto":
        return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template)
    shown = {k: v for k, v in labels.items() if k not in ("__name__", "job", "instance")}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or labels.get("__name__", "value")


def fetch(prometheus: str, panels: list[Panel], start: float, end: float, step: float) -> None:
    for panel in panels:
        for query in panel.queries:
            try:
                result = query_range(prometheus, query.expr, start, end, step)
            except ValueError as err:
                query.error = str(err)
                continue
            for item in result:
                times = [float(t) - end for t, _ in item["values"]]
                values = [float(v) for _, v in item["values"]]
                values = [v if math.isfinite(v) else math.nan for v in values]
                if any(not math.isnan(v) for v in values):
                    labels = item["metric"]
                    query.series.append(Series(labels, legend(labels, query.legend), times, values))


# -- drawing

#: Grafana unit -> (axis label, scale); seconds drawn in ms, ratios in %
_UNITS: dict[str, tuple[str, float]] = {
    "s": ("ms", 1e3),
    "ms": ("ms", 1.0),
    "bytes": ("MiB", 1 / 2**20),
    "decbytes": ("MB", 1e-6),
    "percentunit": ("%", 100.0),
    "percent": ("%", 1.0),
    "reqps": ("req/s", 1.0),
    "ops": ("ops/s", 1.0),
}


def _unit(unit: str) -> tuple[str, float]:
    return _UNITS.get(unit, (unit if unit not in ("", "short", "none") else "", 1.0))


def _bucket_label(le: float, unit: str) -> str:
    if math.isinf(le):
        return "+Inf"
    label, scale = _unit(unit)
    return f"{le * scale:g}{label and ' ' + label}"


def _per_bucket(series: list[Series]) -> tuple[list[float], list[list[float]]]:
    """Cumulative ``le`` series -> (bounds, counts per bucket per time), as Grafana's heatmap format does."""
    ordered = sorted(series, key=lambda s: float(s.labels.get("le", "inf")))
    bounds = [float(s.labels.get("le", "inf")) for s in ordered]
    rows = [[0.0 if math.isnan(v) else v for v in s.values] for s in ordered]
    width = min(len(row) for row in rows)
    counts = [[max(0.0, row[t] - (rows[i - 1][t] if i else 0.0)) for t in range(width)] for i, row in enumerate(rows)]
    return bounds, counts


def _draw_lines(ax: Any, panel: Panel, series: list[Series]) -> None:
    label, scale = _unit(panel.unit)
    series.sort(key=lambda s: -_mean(s.values))
    for item in series[:MAX_SERIES]:
        ax.plot(item.times, [v * scale for v in item.values], linewidth=1.2, label=item.name[:40])
    if len(series) > MAX_SERIES:
        ax.plot([], [], " ", label=f"+{len(series) - MAX_SERIES} more")
    ax.set_ylabel(label, fontsize=8)
    ax.set_xlabel("seconds before end", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=6, loc="best", framealpha=0.6)


def _draw_heatmap(ax: Any, panel: Panel, series: list[Series], unit: str) -> None:
    bounds, counts = _per_bucket(series)
    keep = [i for i, row in enumerate(counts) if any(row)] or list(range(len(bounds)))
    low, high = keep[0], keep[-1]
    grid = [counts[i] for i in range(low, high + 1)]
    times = series[0].times[: len(grid[0])]
    extent = (times[0], times[-1], -0.5, len(grid) - 0.5)
    ax.imshow(grid, aspect="auto", origin="lower", cmap="Oranges", extent=extent, interpolation="nearest")
    ticks = list(range(0, len(grid), max(1, len(grid) // 6)))
    ax.set_yticks(ticks, [_bucket_label(bounds[low + i], unit) for i in ticks])
    ax.set_xlabel("seconds before end", fontsize=7)


def _draw_bars(ax: Any, panel: Panel, series: list[Series]) -> None:
    bounds, counts = _per_bucket(series)
    last = [next((v for v in reversed(row) if v), 0.0) for row in counts]
    names = [_bucket_label(b, "") for b in bounds]
    ax.bar(range(len(last)), last, color="tab:purple")
    ax.set_xticks(range(len(last)), names, rotation=60, fontsize=6)
    ax.set_xlabel("le", fontsize=7)


def _draw_table(ax: Any, series: list[Series]) -> None:
    ax.axis("off")
    lines = []
    for item in sorted(series, key=lambda s: sorted(s.labels.items()))[:14]:
        shown = {k: v for k, v in item.labels.items() if k not in ("__name__", "job", "instance")}
        value = next((v for v in reversed(item.values) if not math.isnan(v)), math.nan)
        lines.append("  ".join(f"{k}={v}" for k, v in sorted(shown.items())) + f"   {value:g}")
    ax.text(0.02, 0.98, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7, transform=ax.transAxes)


def draw(panels: list[Panel], output: Path, title: str, columns: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.0 * rows), squeeze=False)
    figure.suptitle(title, fontsize=13)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel.title, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        drawn = [item for query in panel.queries for item in query.series]
        errors = [query.error for query in panel.queries if query.error]
        if not drawn:
            ax.text(0.5, 0.5, "query error" if errors else "no data", ha="center", va="center", color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
        elif panel.queries[0].buckets and panel.kind == "heatmap":
            _draw_heatmap(ax, panel, drawn, panel.bucket_unit)
        elif panel.queries[0].buckets:
            _draw_bars(ax, panel, drawn)
        elif panel.kind == "table":
            _draw_table(ax, drawn)
        else:
            _draw_lines(ax, panel, drawn)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)
    plt.close(figure)


def _mean(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else 0.0


# -- command line


def render(
    prometheus: str,
    dashboard_path: Path,
    output: Path,
    *,
    start: float,
    end: float,
    variables: Mapping[str, str],
    columns: int = 3,
) -> list[Panel]:
    """Query and draw every panel; returns the panels with their data and errors."""
    dashboard = json.loads(dashboard_path.read_text())
    panels = load_panels(dashboard, variables)
    step = max(1.0, round((end - start) / 240))
    fetch(prometheus, panels, start, end, step)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    title = f"{dashboard.get('title', 'inferd')} — {int(end - start)} s to {stamp}, from Prometheus (real scrape)"
    draw(panels, output, title, columns)
    return panels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    parser.add_argument("--model", default=".*", help="value (regex) for $model (default: every model)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="another variable's value")
    parser.add_argument("--last", type=float, default=300.0, help="seconds up to --end to draw (default 300)")
    parser.add_argument("--start", type=float, default=None, help="unix start time (overrides --last)")
    parser.add_argument("--end", type=float, default=None, help="unix end time (default now)")
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for (default 30s)")
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="exit 1 when Prometheus rejects any query")
    args = parser.parse_args(argv)

    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - args.last
    variables = {
        "model": args.model,
        "__rate_interval": args.rate_interval,
        "__interval": args.rate_interval,
        "__range": f"{int(end - start)}s",
        "__range_s": str(int(end - start)),
    }
    for item in args.var:
        name, _, value = item.partition("=")
        variables[name] = value
    panels = render(
        args.prometheus, args.dashboard, args.output, start=start, end=end, variables=variables, columns=args.columns
    )
    errors = [(p.title, q.expr, q.error) for p in panels for q in p.queries if q.error]
    empty = [p.title for p in panels if not any(q.series for q in p.queries)]
    print(f"{args.output}: {len(panels)} panels, {len(empty)} without data", file=sys.stderr)
    for title in empty:
        print(f"  no data: {title}", file=sys.stderr)
    for title, expr, error in errors:
        print(f"  query error in {title!r}: {expr}\n    {error}", file=sys.stderr)
    return 1 if errors and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
