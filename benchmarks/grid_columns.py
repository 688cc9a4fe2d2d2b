"""Any metrics of a grid's finished runs as a table: the columns `anomalens grid table` has no layout for.

Usage:
  python benchmarks/grid_columns.py DIR --preset bias      # grids/classifier_bias.yaml: AuROC per anomaly colour
  python benchmarks/grid_columns.py DIR --preset repair    # grids/repair.yaml: per dataset, then Delta
  python benchmarks/grid_columns.py DIR --columns ad_auroc,train_seconds [--split detector] [--median]
Options: --format md|csv|latex (default md).

It only reads the grid folder (each run's resolved.yaml and result.json, through the collector). A row
is one setting (the keys that vary, seeds left out), each cell the mean ± std over the seeds. A column
is a key of result.json (nested metrics are dotted: `guided.M_s_mean`). `--split KEY` makes one table
per value of KEY; `--median` adds a row with the median over the rows of the rows' means (the AR-Pro
paper's Delta, when the columns are improvements and the rows datasets).
"""

from __future__ import annotations

import argparse
import statistics

from anomalens.data.scenarios import COLOUR_NAMES
from anomalens.experiments.collect import Group, Stat, Table, finished_runs, group, render

COLOURS = ["blue", *(c for c in COLOUR_NAMES if c != "blue")]  # the colour the supervised classifier saw first
REPAIR_METRICS = ("M_s", "M_d", "M_omega", "M_omega_bar", "s_omega_fix")
PRESETS = {
    "bias": [{"columns": ["ad_auroc", *(f"ad_auroc_by_colour.{c}" for c in COLOURS), "train_seconds"]}],
    "repair": [
        {"columns": ["ad_auroc", "omega_iou", "plain.M_s_mean", "unguided.M_s_mean", "guided.M_s_mean",
                     "unguided.M_omega_bar_mean", "guided.M_omega_bar_mean", "guided.s_omega_fix_mean",
                     "guided.P4_rate", "plain.tnr", "unguided.tnr", "guided.tnr", "guided.seconds_per_image"]},
        *({"columns": [f"improvement_over_{b}.{m}" for m in REPAIR_METRICS] + [f"{b}.tnr", "guided.tnr"],
           "split": "detector", "median": True, "title": f"guided over {b}, %"} for b in ("unguided", "plain")),
    ],
}


def header(column: str) -> str:
    """A shorter column header: ``ad_auroc_by_colour.blue`` -> ``AuROC blue``, ``improvement_over_plain.M_s`` ->
    ``M_s %``."""
    if column.startswith("ad_auroc_by_colour."):
        return "AuROC " + column.partition(".")[2]
    if column.startswith("improvement_over_"):
        return column.partition(".")[2] + " %"
    return column


def row_keys(groups: list[Group], exclude: str | None) -> list[str]:
    """The keys that tell the settings apart, in config order, without those set by the keys before them
    (e.g. epochs when an override sets it per detector)."""
    keys: list[str] = []
    for key in dict.fromkeys(k for g in groups for k in g.config):
        distinct = len({tuple(str(g.config.get(k)) for k in keys) for g in groups})
        if key != exclude and len({tuple(str(g.config.get(k)) for k in (*keys, key)) for g in groups}) > distinct:
            keys.append(key)
    return keys


def tables(out: str, columns: list[str], split: str | None = None, median: bool = False,
           title: str = "") -> list[Table]:
    groups = group(finished_runs(out))
    split_key = f"train.{split}" if split and "." not in split else split
    keys = row_keys(groups, split_key)
    parts: dict[str, list[Group]] = {}
    for g in groups:
        parts.setdefault(f"{split} {g.config.get(split_key)}" if split else "", []).append(g)
    result = []
    for name, part in parts.items():
        rows: list[tuple[str, dict[str, Stat]]] = []
        for g in part:
            label = ", ".join(str(g.config[k]) for k in keys) or "all"
            rows.append((label, {header(c): s for c in columns if (s := g.stat(c))}))
        if median and len(rows) > 1:
            means = {h: [r[h].mean for _, r in rows if h in r] for h in map(header, columns)}
            rows.append(("median", {c: Stat(statistics.median(m), statistics.pstdev(m), len(m))
                                    for c, m in means.items() if m}))
        shown = [h for h in map(header, columns) if any(h in r for _, r in rows)]  # e.g. no red anomalies
        seeds = "/".join(map(str, sorted({len(g.seeds) for g in part})))
        notes = [f"rows: {', '.join(k.removeprefix('train.') for k in keys) or 'one setting'}; mean ± std over "
                 f"{seeds} seed(s)" + ("; median row: median ± std over the rows' means" if median else "")]
        result.append(Table(", ".join(filter(None, [title, name])) or out, "setting", shown, rows, notes))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="a grid folder (the --out of `anomalens grid run`)")
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--columns", help="comma-separated keys of result.json")
    parser.add_argument("--split", help="one table per value of this key, e.g. detector")
    parser.add_argument("--median", action="store_true", help="add the median over the rows")
    parser.add_argument("--format", default="md", choices=["md", "csv", "latex"])
    args = parser.parse_args()
    if not args.preset and not args.columns:
        parser.error("give --preset or --columns")
    specs = PRESETS[args.preset] if args.preset else [
        {"columns": args.columns.split(","), "split": args.split, "median": args.median}]
    print(render([t for spec in specs for t in tables(args.out, **spec)], args.format))


if __name__ == "__main__":
    main()
