"""The collector: a grid's finished runs as the papers' tables, mean ± std over seeds, with the paper's
figure beside ours where the setup (dataset, detector, normal definition) matches.

Runs are grouped by their resolved config minus the seeds. Layouts:

- ``ce``: CE paper Tables 5-24, one table per setting (dataset, detector, ...), one row per normal
  definition, columns ad_auroc, score_distance, cf_auroc, sub_auroc, fid_n, concept_acc,
  oracle_validity, oracle_accuracy, oracle_kept, l1_change, the explainer's steps and training seconds
  (columns no run has are left out), and a ``mean`` row;
- ``oe``: OE paper Table 1, rows = datasets, columns = detectors, ad_auroc averaged over the normal
  classes;
- ``curve``: OE paper Figures 2-3, ad_auroc against oe_size (``None`` = all), one line per setting,
  as a table and a PNG; the grid's ``curve_x`` puts another key on the axis (OE classes, filter
  cut-off, Focal gamma, HSC radial: Figures 4, 7, 9-10, 14 and Table 6).

Std is the population std (ddof=0) everywhere, as in both papers (checked: CE Table 5's score-distance
mean row, 0.1067, is the ddof=0 std of its rows, 0.1070; ddof=1 gives 0.113). Over seeds it is the std
of the seeds' values; a ``mean`` row or an ``oe``/``curve`` cell gives the std over the normal classes
of their seed means.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anomalens.errors import ConfigError
from anomalens.experiments import grid_state
from anomalens.experiments.grid import PLAN, RESOLVED, RESULT
from anomalens.experiments.paper_tables import ce_paper, oe_class_paper, oe_table1_paper, oe_table6_paper

CE_COLUMNS = ("ad_auroc", "score_distance", "cf_auroc", "sub_auroc", "fid_n", "concept_acc", "oracle_validity",
              "oracle_accuracy", "oracle_kept", "l1_change", "explain_steps", "explain_train_seconds")
HEADERS = {"ad_auroc": "AD AuROC", "score_distance": "Score distance", "cf_auroc": "CF AuROC",
           "sub_auroc": "Sub. AuROC", "fid_n": "FID_N", "concept_acc": "Concept Acc",
           "oracle_validity": "Oracle validity", "oracle_accuracy": "Oracle acc.", "oracle_kept": "Oracle kept",
           "l1_change": "L1 change", "explain_steps": "Steps", "explain_train_seconds": "Explainer s"}
WHOLE = ("explain_steps", "explain_train_seconds")  # counts and seconds: printed without decimals
SEEDS = ("train.seed", "explain.seed")
FORMATS = ("md", "csv", "latex")


@dataclass
class Stat:
    """mean ± std over ``n`` values, and the paper's figure for the same setup when it has one."""

    mean: float
    std: float
    n: int
    paper: float | None = None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, the papers' convention)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def stat(values: Sequence[float], paper: float | None = None) -> Stat:
    mean, std = mean_std(values)
    return Stat(mean, std, len(values), paper)


@dataclass
class Group:
    """The runs of one config that differ only in their seed."""

    config: dict[str, Any]  # flat dotted keys without the seeds
    seeds: list[int] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [float(m[metric]) for m in self.metrics if isinstance(m.get(metric), (int, float))
                and not isinstance(m.get(metric), bool) and math.isfinite(m[metric])]

    def stat(self, metric: str, paper: float | None = None) -> Stat | None:
        values = self.values(metric)
        return stat(values, paper) if values else None

    def get(self, key: str) -> Any:
        return self.config.get(key if "." in key else f"train.{key}")


@dataclass
class Table:
    title: str
    row_header: str
    columns: list[str]
    rows: list[tuple[str, dict[str, Stat]]]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ input


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict) and key in ("train", "explain"):
            out.update(flatten(value, f"{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def finished_runs(out: str | Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resolved config, metrics) of every finished run of the grid folder ``out``, in plan order.

    Reads each run's ``resolved.yaml`` + ``result.json``; a plain ``anomalens train`` folder (with
    ``config.yaml`` + ``metrics.json`` and a ``done`` marker) counts too, so hand-made run folders
    can be collected. Runs not in ``plan.json`` (from an older version of the grid) are left out."""
    out = Path(out)
    plan_path = out / PLAN
    if plan_path.is_file():
        names = [r["name"] for r in json.loads(plan_path.read_text())["runs"]]
    elif (out / "runs").is_dir():
        names = sorted(p.name for p in (out / "runs").iterdir())
    else:
        raise ConfigError(f"{out}: no {PLAN} and no runs/ folder. Fix: pass the --out folder of `anomalens grid run`")
    found = []
    for name in names:
        folder = out / "runs" / name
        if grid_state.status(folder) != grid_state.DONE:
            continue
        if (folder / RESOLVED).is_file() and (folder / RESULT).is_file():
            config = yaml.safe_load((folder / RESOLVED).read_text())
            metrics = json.loads((folder / RESULT).read_text())
        else:
            config = {"train": yaml.safe_load((folder / "config.yaml").read_text()), "explain": None}
            metrics = json.loads((folder / "metrics.json").read_text())
        found.append((config, metrics))
    return found


def group(runs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[Group]:
    """Runs grouped by config minus seeds, in first-seen order."""
    groups: dict[str, Group] = {}
    for config, metrics in runs:
        flat = flatten(config)
        seed = flat.get("train.seed", 0)
        key_config = {k: v for k, v in flat.items() if k not in SEEDS}
        key = json.dumps(key_config, sort_keys=True, default=str)
        entry = groups.setdefault(key, Group(key_config))
        entry.seeds.append(seed)
        entry.metrics.append(metrics)
    return list(groups.values())


def _varying(groups: Sequence[Group], exclude: Iterable[str]) -> list[str]:
    keys: list[str] = []
    for g in groups:
        keys += [k for k in g.config if k not in keys]
    excluded = set(exclude)
    return [k for k in keys if k not in excluded and len({json.dumps(g.config.get(k), default=str)
                                                         for g in groups}) > 1]


def _split(groups: Sequence[Group], keys: Sequence[str]) -> dict[tuple, list[Group]]:
    parts: dict[tuple, list[Group]] = {}
    for g in groups:
        parts.setdefault(tuple(g.config.get(k) for k in keys), []).append(g)
    return parts


def _title(g: Group, keys: Sequence[str], with_detector: bool = True) -> str:
    """"mnist, detector bce, OE kmnist, explain counterfactual" plus the other keys that vary."""
    parts = [f"{g.get('dataset')}{' (colored)' if g.get('colored') else ''}"]
    if with_detector:
        parts.append(f"detector {g.get('detector')}")
    if g.get("oe"):
        parts.append(f"OE {g.get('oe')}")
    if g.get("explain.method"):
        parts.append(f"explain {g.get('explain.method')}")
    shown = ("train.dataset", "train.colored", "train.detector", "train.oe", "explain.method")
    parts += [f"{k.removeprefix('train.')} {g.config.get(k)}" for k in keys if k not in shown]
    return ", ".join(parts)


def _label(value: Any, labels: dict[str, dict[str, str]], key: str = "normal") -> str:
    return labels.get(key, {}).get(str(value), str(value))


# ---------------------------------------------------------------------------------------- layouts


def _paper_row(g: Group) -> tuple[dict[str, float], str] | None:
    """The paper's figures for the group's scenario: the CE paper's row for counterfactual runs; for
    detection-only runs the OE paper's per-class AuROC, else the CE paper's detection columns."""
    dataset, colored, detector, normal = g.get("dataset"), bool(g.get("colored")), g.get("detector"), g.get("normal")
    method = g.get("explain.method")
    if any(g.get(k) not in (None, PAPER_SETUP[k]) for k in ("oe_classes", "filter_cutoff", "focal_gamma",
                                                            "hsc_radial")):
        return None  # filtered images, fewer OE classes, another gamma or radial: not the tables' set-up
    if method == "counterfactual":
        return ce_paper(dataset, colored, detector, normal)
    if method is not None:
        return None
    if not colored and (found := oe_class_paper(dataset, detector, normal)):
        return {"ad_auroc": found[0]}, found[1]
    if ce := ce_paper(dataset, colored, detector, normal):
        return {k: ce[0][k] for k in ("ad_auroc", "score_distance")}, ce[1]
    return None


def _mean_row(rows: list[tuple[str, dict[str, Stat]]], columns: Sequence[str]) -> dict[str, Stat]:
    """mean ± std over the rows' means; the paper's mean of the same rows when it has all of them."""
    out = {}
    for column in columns:
        cells = [r[column] for _, r in rows if column in r]
        if cells:
            papers = [c.paper for c in cells]
            paper = sum(papers) / len(papers) if all(p is not None for p in papers) else None
            out[column] = stat([c.mean for c in cells], paper)
    return out


def ce_tables(groups: Sequence[Group], labels: dict[str, dict[str, str]] | None = None) -> list[Table]:
    """CE paper Tables 5-24: one table per setting, a row per normal definition, a mean row."""
    labels = labels or {}
    keys = _varying(groups, ["train.normal"])
    tables = []
    for part in _split(groups, keys).values():
        rows, sources = [], set()
        for g in part:
            paper = _paper_row(g)
            if paper:
                sources.add(paper[1])
            cells = {c: s for c in CE_COLUMNS if (s := g.stat(c, (paper[0] if paper else {}).get(c)))}
            rows.append((_label(g.get("normal"), labels), cells))
        columns = [c for c in CE_COLUMNS if any(c in r for _, r in rows)]
        if len(rows) > 1:
            rows.append(("mean", _mean_row(rows, columns)))
        seeds = "/".join(map(str, sorted({len(g.seeds) for g in part})))
        notes = [f"mean ± std over {seeds} seed(s)" + ("; mean row: over the normal definitions" if len(rows) > 2
                                                          else "")]
        notes.append(f"[paper]: {', '.join(sorted(sources))} (its OE may differ from ours)" if sources
                     else "the papers have no matching rows")
        tables.append(Table(_title(part[0], keys), "normal", columns, rows, notes))
    return tables


def _over_normals(part: Sequence[Group]) -> Stat | None:
    """ad_auroc over the normal definitions of ``part`` (each a mean over seeds); paper: the mean of the
    paper's per-class figures for the same classes, or its Table 1 when every class is there."""
    means = [s.mean for g in part if (s := g.stat("ad_auroc"))]
    if not means:
        return None
    g = part[0]
    per_class = [oe_class_paper(g.get("dataset"), g.get("detector"), x.get("normal")) for x in part]
    if all(per_class):
        paper = sum(p[0] for p in per_class) / len(per_class)
    else:
        paper = oe_table1_paper(g.get("dataset"), g.get("detector")) if len(part) == 10 else None
    return stat(means, paper)


def oe_table(groups: Sequence[Group]) -> Table:
    """OE paper Table 1: rows = datasets (and other settings), columns = detectors. Keys that overrides
    set per detector or per dataset (Deep SVDD's OE and learning rate, a dataset's augmentation, ...)
    make no rows of their own."""
    by_detector = _split(groups, ["train.detector"]).values()
    keys: list[str] = []  # in config order (dataset first), each kept if it splits one detector's runs further
    for key in _varying(groups, ["train.normal", "train.detector"]):
        if any(len({json.dumps([g.config.get(k) for k in (*keys, key)], default=str) for g in part}) >
               len({json.dumps([g.config.get(k) for k in keys], default=str) for g in part}) for part in by_detector):
            keys.append(key)
    detectors = list(dict.fromkeys(g.get("detector") for g in groups))
    rows = []
    for part in _split(groups, keys).values():
        cells = {}
        for detector in detectors:
            of_detector = [g for g in part if g.get("detector") == detector]
            if of_detector and (cell := _over_normals(of_detector)):
                cells[detector] = cell
        first = part[0]
        if len({g.get("oe") for g in part}) > 1:  # OE differs by detector: not part of the row's title
            first = Group({**first.config, "train.oe": None})
        rows.append((_title(first, keys, with_detector=False), cells))
    notes = ["ad_auroc: mean ± std over the normal classes of each class's mean over seeds",
             "[paper]: OE paper Table 1 (all classes), or the mean of its per-class Tables 8/10/11/17 over "
             "the classes run here; its OE is 80MTI / EMNIST / grayscale CIFAR-100"]
    oe = {d: sorted({str(g.get("oe") or "none") for g in groups if g.get("detector") == d}) for d in detectors}
    if len({tuple(v) for v in oe.values()}) > 1:
        notes.append("OE per detector: " + "; ".join(f"{d} {', '.join(v)}" for d, v in oe.items()))
    return Table("Detection AuROC (OE paper Table 1 layout)", "setting", detectors, rows, notes)


#: x keys of the curve layout whose value at ``None`` means "every image / class" (shown as ``all``).
ALL_WHEN_NONE = ("oe_size", "oe_classes")
#: The x value at which a curve point has the setup of the OE paper's tables (all OE images, no filter,
#: the paper's Focal gamma and HSC radial): only there does the paper's table figure stand beside ours.
PAPER_SETUP = {"oe_size": None, "oe_classes": None, "filter_cutoff": 0, "focal_gamma": 2.0,
               "hsc_radial": "pseudo_huber"}


def _x_order(values: Iterable[Any]) -> list[Any]:
    """Numbers ascending (None last); anything else in first-seen order (a categorical axis)."""
    values = list(dict.fromkeys(values))
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return sorted(values, key=lambda v: math.inf if v is None else v)
    return values


def _curve_paper(part: Sequence[Group], x: str, value: Any, cell: Stat) -> float | None:
    """The paper's figure for one curve point: OE Table 6 for HSC's radial function, else the Table 1 /
    per-class figure that ``_over_normals`` found, kept only at the paper's setup (``PAPER_SETUP``)."""
    g = part[0]
    if x == "hsc_radial":
        return oe_table6_paper(g.get("dataset"), g.get("detector"), value, g.get("augment")) if len(part) == 10 \
            else None
    if x in PAPER_SETUP and value == PAPER_SETUP[x] and not g.get("filter"):
        return cell.paper
    return None


def curve(groups: Sequence[Group], png: Path | None = None, x: str = "oe_size") -> Table:
    """OE paper Figures 2-4, 7, 9-10, 14 and Table 6: ad_auroc against the key ``x`` (``oe_size`` by default;
    ``oe_classes``, ``filter_cutoff``, ``focal_gamma``, ``hsc_radial`` ...), one row (line) per setting of
    the other keys that vary; a PNG when ``png``."""
    key = x if "." in x else f"train.{x}"
    short = key.removeprefix("train.")
    keys = _varying(groups, ["train.normal", key])
    values = _x_order(g.config.get(key) for g in groups)
    names = [("all" if short in ALL_WHEN_NONE else "none") if v is None else str(v) for v in values]
    rows = []
    for part in _split(groups, keys).values():
        cells = {}
        for value, name in zip(values, names):
            at = [g for g in part if g.config.get(key) == value]
            cell = _over_normals(at)
            if cell is not None:
                cell.paper = _curve_paper(at, short, value, cell)
                cells[name] = cell
        rows.append((_title(part[0], keys), cells))
    numeric = all(v is None or isinstance(v, (int, float)) for v in values)
    notes = ["ad_auroc: mean ± std over the normal classes of each class's mean over seeds"]
    if short == "hsc_radial":
        notes.append("[paper]: OE paper Table 6 (CIFAR-10, 80MTI OE, every class), shown when all 10 classes ran")
    else:
        notes.append(f"[paper]: only at the paper's table set-up ({short} = {PAPER_SETUP.get(short, 'n/a')}: its "
                     "Table 1 / per-class tables); its curves are figures without numbers")
    if png is not None and rows:
        from anomalens.report.plots import line_plot

        if numeric:
            finite = [float(v) for v in values if v is not None]
            largest = max(finite or [1.0])
            xs = [2.0 * largest if v is None else float(v) for v in values]
            log_x = short in ALL_WHEN_NONE and min(finite or [1.0]) > 0
        else:
            xs, log_x = [float(i) for i in range(len(values))], False
        series = {label: [cells[n].mean if n in cells else math.nan for n in names] for label, cells in rows}
        errors = {label: [cells[n].std if n in cells else 0.0 for n in names] for label, cells in rows}
        xlabel = f"{short} (rightmost: all)" if None in values and short in ALL_WHEN_NONE else short
        line_plot(png, xs, series, xlabel, "mean AuROC", f"AuROC vs {short}", log_x=log_x, errors=errors,
                  ticks=None if numeric and log_x else names)
        notes.append(f"plot: {png}")
    title = ("AuROC vs number of OE samples (OE paper Figures 2-3)" if short == "oe_size"
             else f"AuROC vs {short}")
    return Table(title, "setting", names, rows, notes)


# -------------------------------------------------------------------------------------- rendering


def _cell(s: Stat | None, digits: int, pm: str = "±", paper: str = " [{}]", column: str = "") -> str:
    if s is None:
        return ""
    digits = 0 if column in WHOLE else digits
    text = f"{s.mean:.{digits}f} {pm} {s.std:.{digits}f}"
    return text + (paper.format(f"{s.paper:.2f}") if s.paper is not None else "")


def markdown(tables: Sequence[Table], digits: int = 3) -> str:
    out = []
    for t in tables:
        out += [f"### {t.title}", "", "| " + " | ".join([t.row_header, *(HEADERS.get(c, c) for c in t.columns)]) + " |",
                "|" + "---|" * (len(t.columns) + 1)]
        for label, cells in t.rows:
            name = f"**{label}**" if label == "mean" else label
            out.append("| " + " | ".join([name, *(_cell(cells.get(c), digits, column=c) for c in t.columns)]) + " |")
        out += [""] + [f"_{n}_  " for n in t.notes] + [""]
    return "\n".join(out)


def csv_text(tables: Sequence[Table]) -> str:
    """Long format, one line per cell: table, row, column, mean, std, n, paper."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "row", "column", "mean", "std", "n", "paper"])
    for t in tables:
        for label, cells in t.rows:
            for column in t.columns:
                if (s := cells.get(column)) is not None:
                    writer.writerow([t.title, label, column, repr(s.mean), repr(s.std), s.n,
                                     "" if s.paper is None else s.paper])
    return buffer.getvalue()


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def latex(tables: Sequence[Table], digits: int = 2) -> str:
    """booktabs tables; the paper's figure in parentheses after ours."""
    out = []
    for t in tables:
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(t.title)}}}",
                r"\begin{tabular}{l" + "c" * len(t.columns) + "}", r"\toprule",
                " & ".join([_tex(t.row_header), *(_tex(HEADERS.get(c, c)) for c in t.columns)]) + r" \\",
                r"\midrule"]
        for label, cells in t.rows:
            if label == "mean":
                out.append(r"\midrule")
            out.append(" & ".join([_tex(label), *(_cell(cells.get(c), digits, r"$\pm$", " ({})", c)
                                                  for c in t.columns)]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", *(f"% {n}" for n in t.notes), r"\end{table}", ""]
    return "\n".join(out)


def render(tables: Sequence[Table], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format {fmt!r}. Fix: one of {', '.join(FORMATS)}")
    return {"md": markdown, "csv": csv_text, "latex": latex}[fmt](tables)


def collect(out: str | Path, layout: str | None = None, x: str | None = None) -> list[Table]:
    """The tables of grid folder ``out`` in ``layout`` (default: the grid file's ``table``); the curve
    layout puts ``x`` (default: the grid file's ``curve_x``, else ``oe_size``) on its axis and also
    writes ``out/tables/curve.png``."""
    out = Path(out)
    plan = json.loads((out / PLAN).read_text()) if (out / PLAN).is_file() else {}
    layout = layout or plan.get("table", "ce")
    groups = group(finished_runs(out))
    if not groups:
        raise ConfigError(f"{out}: no finished run yet. Fix: `anomalens grid status {out}` shows progress")
    if layout == "ce":
        return ce_tables(groups, plan.get("labels"))
    if layout == "oe":
        return [oe_table(groups)]
    if layout == "curve":
        return [curve(groups, out / "tables" / "curve.png", x or plan.get("curve_x") or "oe_size")]
    raise ConfigError(f"unknown table layout {layout!r}. Fix: one of ce, oe, curve")
