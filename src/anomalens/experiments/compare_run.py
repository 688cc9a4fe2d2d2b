"""``anomalens report RUN_DIR``: every explanation a run holds, side by side, for its test anomalies.

Loads the run's detector and trained explainers (``RunExplainers``), explains the first ``shown``
test anomalies with each (heatmap; counterfactuals at alpha = 0; guided repair), checks AR-Pro's
properties where the detector is decomposable, and writes ``RUN_DIR/explain/compare/``:
``report.html`` (the page), ``compare.json`` (the same numbers) and ``images/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from anomalens.atomic import atomic_write_json
from anomalens.experiments.run_explainers import RunExplainers
from anomalens.metrics.properties import METRICS, PROPERTIES
from anomalens.report.compare import AnomalyView, Panel, write_comparison
from anomalens.report.overlay import overlay

# metrics.json keys shown at the top: the run's, then each explanation's (nested keys as "guided.M_s_mean")
SUMMARY_KEYS = {
    "detector": ("ad_auroc", "score_distance", "pixel_auc", "pixel_f1", "pixel_iou"),
    "counterfactual": ("cf_auroc", "concept_acc", "oracle_validity", "fid_n", "sub_auroc", "l1_change"),
    "repair": ("guided.M_s_mean", "guided.M_d_mean", "guided.all_properties_rate", "guided.tnr"),
}
log = logging.getLogger(__name__)


def _lookup(metrics: dict[str, Any], key: str) -> Any:
    value: Any = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summary_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The headline numbers of the run's metrics.json files, exactly as stored."""
    files = {"detector": run_dir / "metrics.json", "counterfactual": run_dir / "explain" / "counterfactual" /
             "metrics.json", "repair": run_dir / "explain" / "repair" / "metrics.json"}
    rows = []
    for source, path in files.items():
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        rows += [{"source": source, "metric": key, "value": _lookup(metrics, key)}
                 for key in SUMMARY_KEYS[source] if _lookup(metrics, key) is not None]
    return rows


def _checks(properties: dict | None, i: int) -> dict[str, float | bool] | None:
    if properties is None:
        return None
    return {**{p: bool(properties[p][i]) for p in PROPERTIES}, **{m: float(properties[m][i]) for m in METRICS}}


def compare_run(run_dir: str | Path, shown: int = 6) -> Path:
    """Write the comparison report of the run's first ``shown`` test anomalies; returns its path."""
    run_dir = Path(run_dir)
    run = RunExplainers.load(run_dir)
    data = run.data()
    index = (data.test_y == 1).nonzero().flatten()[:shown]
    x = data.test_x[index]
    raw, bounded = run.detector.scores(x), run.detector.scores(x, raw=False)
    heat = run.heatmap(x)
    explained = []  # (caption, images (N, C, H, W), bounded scores (N,), raw scores (N,))
    if run.counterfactual is not None:
        cf = run.counterfactual.explain(x, alpha=0.0)
        explained += [(f"concept {k + 1}", cf.outputs[:, k], cf.score_after[:, k],
                       run.detector.scores(cf.outputs[:, k])) for k in range(cf.outputs.shape[1])]
    if run.repair is not None:
        log.info(f"repairing {len(x)} anomalies ...")
        repair = run.repair.explain(x)
        explained.append(("repair", repair.outputs[:, 0], repair.score_after[:, 0],
                          run.detector.scores(repair.outputs[:, 0])))
    properties = {caption: run.properties(x, images) for caption, images, _, _ in explained}
    heat_images = overlay(x, heat.maps)
    views = []
    for i in range(len(x)):
        panels = [Panel("input", x[i], float(bounded[i]), float(raw[i])),
                  Panel(f"heatmap ({heat.method})", heat_images[i])]
        panels += [Panel(caption, images[i], float(scores[i]), float(raws[i]), _checks(properties[caption], i))
                   for caption, images, scores, raws in explained]
        views.append(AnomalyView(f"Test anomaly {int(index[i])}", panels))
    out = run_dir / "explain" / "compare"
    notes = [f"Not shown: {why}" for why in run.missing.values()]
    if not run.decomposable:
        notes.append("No property checks: the detector is not decomposable (AR-Pro's P1-P4 need a score that is a "
                     "sum of per-pixel scores: ae, fcdd, aexad, flow).")
    atomic_write_json(out / "compare.json", {
        "run": str(run_dir), "summary": summary_rows(run_dir), "missing": run.missing,
        "anomalies": [{"test_index": int(index[i]), "panels": [
            {k: v for k, v in vars(p).items() if k != "image"} for p in view.panels]}
            for i, view in enumerate(views)]})
    path = write_comparison(out / "report.html", f"Every explanation of {run.name}",
                            f"{data.name}; the first {len(x)} test anomalies", views, summary_rows(run_dir), notes)
    log.info(f"{len(x)} anomalies x {2 + len(explained)} panels -> {path}")
    return path
