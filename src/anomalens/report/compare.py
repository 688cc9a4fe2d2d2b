"""The comparison report: one page where each anomaly is explained by every method the run holds.

Per anomaly, side by side: the input, its heatmap, its K counterfactuals and its repair, each with
the detector's bounded score, then a table with the exact numbers and, for decomposable detectors,
AR-Pro's property checks (P1-P4 and their metrics) of every explanation that is an image. The page
is self-contained (embedded PNGs, inline CSS), like every anomalens report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anomalens.metrics.properties import METRICS, PROPERTIES
from anomalens.report.grids import save_grid
from anomalens.report.html import Report


@dataclass
class Panel:
    """One image shown for an anomaly: the input, its heatmap overlay, a counterfactual or a repair."""

    caption: str
    image: Tensor  # (C, H, W) in [0, 1]
    score: float | None = None  # the detector's bounded score of this image (None: not an image it scores)
    raw_score: float | None = None
    checks: Mapping[str, float | bool] | None = None  # P1-P4 and M_* where the detector is decomposable

    def row(self) -> dict[str, Any]:
        checks = self.checks or {}
        return {"explanation": self.caption, "score": self.score, "raw score": self.raw_score,
                **{p: ("yes" if checks[p] else "no") if p in checks else None for p in PROPERTIES},
                **{m: checks.get(m) for m in METRICS}}


@dataclass
class AnomalyView:
    title: str  # e.g. "test anomaly 3"
    panels: list[Panel]


def _label(panel: Panel) -> str:
    """The short text under a strip image: "concept 1 0.31" (details such as "(anomaly_map)" go to the table)."""
    name = panel.caption.split(" (")[0]
    return name if panel.score is None else f"{name} {panel.score:.2f}"


def _as_rgb(image: Tensor) -> Tensor:
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def write_comparison(path: str | Path, title: str, subtitle: str, views: Sequence[AnomalyView],
                     summary_rows: Sequence[Mapping[str, Any]], notes: Sequence[str] = ()) -> Path:
    """Render the page to ``path``; the side-by-side strips go to ``images/`` beside it (and are
    embedded, so the HTML file alone is the report)."""
    path = Path(path)
    report = Report(title, subtitle)
    if summary_rows:
        report.heading("Metrics of the run").metrics_table(
            summary_rows, ["source", "metric", "value"], caption="from metrics.json of the run and of each explanation")
    for note in notes:
        report.paragraph(note)
    columns = ["explanation", "score", "raw score", *PROPERTIES, *METRICS]
    for i, view in enumerate(views):
        h = view.panels[0].image.shape[-2]
        strip = save_grid(path.parent / "images" / f"anomaly_{i:03d}.png",
                          [torch.stack([_as_rgb(p.image) for p in view.panels])], scale=max(1, 112 // h),
                          labels=[[_label(p) for p in view.panels]])
        report.heading(view.title).image(strip, "left to right: " + ", ".join(p.caption for p in view.panels)
                                         + "; the detector's bounded score under each image")
        rows = [p.row() for p in view.panels]
        shown = [c for c in columns if any(r.get(c) is not None for r in rows)]
        report.metrics_table(rows, shown, caption="bounded and raw score of each image; P1-P4: AR-Pro's properties "
                             "(P1 lower score, P2 unchanged outside the anomalous region, P3 that region improved, "
                             "P4 the rest not degraded); M_*: their metrics, lower is better")
    return report.write(path)
