"""``anomalens explain RUN_DIR``: explain the test anomalies of a finished training run.

The run folder holds everything needed: ``config.yaml`` rebuilds the same task (same seed, same
split), ``detector.safetensors`` the detector. Heatmaps are the detector's own anomaly maps (FCDD,
AE-XAD) or input-gradient maps; with ground-truth masks the pixel metrics are computed too.
Results go to ``RUN_DIR/explain/<method>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from anomalens.atomic import atomic_write_json, atomic_write_text
from anomalens.config import from_dict
from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.errors import ConfigError
from anomalens.experiments.training_run import TrainJob, build_data, evaluate_heatmaps
from anomalens.explain.heatmap import METHODS as EXPLAIN_METHODS

log = logging.getLogger(__name__)


def report_section(job: TrainJob, detector: Detector, metrics: dict[str, Any], image: str) -> str:
    """The run report's heatmap section, in Markdown: what was explained, how well, and the overlays."""
    lines = [f"## Heatmaps: {detector.config().get('objective', detector.config()['detector'])} on {job.dataset}",
             "", f"Method: {metrics['heatmap']}; {metrics['explained']} test anomalies shown.", ""]
    if "pixel_auc" in metrics:
        lines += [f"Pixel AUC: {metrics['pixel_auc']:.3f}", "", "| threshold | F1 | IoU |", "|---|---|---|"]
        lines += [f"| mean + {a[2:]} std | {v['pixel_f1']:.3f} | {v['pixel_iou']:.3f} |"
                  for a, v in metrics["thresholds"].items()]
    return "\n".join([*lines, "", f"![overlays]({image})", ""])


def load_run(run_dir: str | Path) -> tuple[TrainJob, Detector, ADData]:
    """The job, trained detector and task of a finished ``anomalens train`` run folder."""
    run_dir = Path(run_dir)
    for needed in ("config.yaml", "detector.safetensors"):
        if not (run_dir / needed).is_file():
            raise ConfigError(f"{run_dir / needed} is missing. Fix: pass the folder of a finished `anomalens train` "
                              "run")
    job = from_dict(TrainJob, yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir / "config.yaml"))
    return job, Detector.load(run_dir / "detector.safetensors"), build_data(job)


def explain_run(run_dir: str | Path, method: str = "heatmap", shown: int = 12) -> dict[str, Any]:
    """Write overlays (image, ground truth when known, heatmap, binary map) and metrics for a run."""
    run_dir = Path(run_dir)
    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; known: {', '.join(EXPLAIN_METHODS)}")
    job, detector, data = load_run(run_dir)
    out = run_dir / "explain" / method
    grid = out / "overlays.png"
    metrics = evaluate_heatmaps(detector, data, grid, shown, method)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", report_section(job, detector, metrics, grid.name))
    log.info(f"{method}: {metrics['explained']} anomalies explained -> {grid}"
        + (f"; pixel AUC {metrics['pixel_auc']:.3f}" if "pixel_auc" in metrics else ""))
    return metrics
