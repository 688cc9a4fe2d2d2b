"""``anomalens predict RUN_DIR --images FOLDER``: a trained detector on the user's own images.

Writes into ``--out`` (default ``RUN_DIR/predict/<folder name>/``):

- ``predictions.csv``: one row per image: file, class (the sub-folder, if any), raw score, bounded
  score, verdict, the threshold and the rule that chose it, the heatmap method, conversions made;
- ``maps/<file>.npy``: the raw anomaly map (H, W) float32 at the detector's resolution: the
  detector's own map (FCDD, AE-XAD, flow, AE) or else the input gradient of the bounded score;
- ``overlays/<file>.png``: the map, min-max scaled, over the image;
- ``summary.json``: counts, the threshold, and with ``good``/``normal`` class folders versus the rest
  the AuROC and the false/true-positive rates at the threshold.

The verdict is "anomalous" when the raw score is above the threshold: by default the split-conformal
threshold at a 5% false-positive rate (``experiments/calibration.py``), or ``--threshold VALUE``.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalens.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from anomalens.detectors.base import Detector
from anomalens.errors import ConfigError
from anomalens.experiments.calibration import DEFAULT_FPR, Threshold, resolve_threshold
from anomalens.experiments.user_images import NORMAL_CLASSES, ImageFile, list_images, load_image
from anomalens.explain.heatmap import HeatmapConfig, HeatmapExplainer
from anomalens.metrics.detection import auroc
from anomalens.report.overlay import overlay, png_bytes

COLUMNS = ("file", "class", "raw_score", "score", "verdict", "threshold", "threshold_rule", "heatmap", "map",
           "overlay", "note")
WARNED = 10  # conversion warnings named one by one; the rest are counted (every one is in the CSV)
log = logging.getLogger(__name__)


def load_detector(run_dir: Path) -> Detector:
    """The run's trained detector, with a message saying what to pass when the folder is not a run."""
    path = run_dir / "detector.safetensors"
    if not path.is_file():
        raise ConfigError(f"{path} is missing. Fix: pass the folder of a finished `anomalens train` run")
    detector = Detector.load(path).eval()
    if getattr(detector, "series", False):  # predict, report and serve take images
        raise ConfigError(f"{run_dir} holds a time-series detector; predict, report and serve work on image runs. "
                          "Fix: pass the folder of a run trained on images")
    return detector


def _held_out_normal_scores(run_dir: Path, detector: Detector):
    """For runs trained before ``calibration.json``: rebuild the run's task and score its normal test images."""
    def compute() -> np.ndarray:
        from anomalens.experiments.explain_run import load_run

        _, _, data = load_run(run_dir)
        return detector.scores(data.test_x[data.test_y == 0]).numpy()
    return compute


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _rows_for_batch(files: list[ImageFile], detector: Detector, explainer: HeatmapExplainer, threshold: Threshold,
                    out: Path, notes: list[str]) -> list[dict[str, Any]]:
    shape = tuple(detector.config()["image_shape"])
    loaded = [load_image(f.path, shape, f.name) for f in files]
    x = torch.stack([t for t, _ in loaded])
    raw, bounded = detector.scores(x), detector.scores(x, raw=False)
    heat = explainer.explain(x)
    overlays = overlay(x, heat.maps)
    rows = []
    for i, (f, (_, note)) in enumerate(zip(files, loaded)):
        if note:
            notes.append(note)
            if len(notes) <= WARNED:
                log.warning(f"converted {note}")
        map_file = f"maps/{f.name}.npy"  # the full name: a.png and a.jpg get different maps
        overlay_file = f"overlays/{f.name if f.path.suffix.lower() == '.png' else f.name + '.png'}"
        atomic_write_bytes(out / map_file, _npy_bytes(heat.maps[i].float().numpy()))
        atomic_write_bytes(out / overlay_file, png_bytes(overlays[i], min_side=128))
        rows.append({"file": f.name, "class": f.label or "", "raw_score": float(raw[i]), "score": float(bounded[i]),
                     "verdict": threshold.verdict(float(raw[i])), "threshold": threshold.value,
                     "threshold_rule": threshold.rule, "heatmap": heat.method, "map": map_file,
                     "overlay": overlay_file, "note": note or ""})
    return rows


def _summary(files: list[ImageFile], rows: list[dict[str, Any]], threshold: Threshold, notes: list[str]
             ) -> dict[str, Any]:
    summary: dict[str, Any] = {"images": len(rows), "anomalous": sum(r["verdict"] == "anomalous" for r in rows),
                               "threshold": threshold.value, "threshold_rule": threshold.rule,
                               "converted": len(notes), "heatmap": rows[0]["heatmap"]}
    labels = [f.is_normal for f in files]
    if any(v is not None for v in labels):
        classes = sorted({f.label for f in files})
        y = np.array([0 if normal else 1 for normal in labels])
        if 0 < y.sum() < len(y):
            raw = np.array([r["raw_score"] for r in rows])
            flagged = np.array([r["verdict"] == "anomalous" for r in rows])
            summary.update(ad_auroc=auroc(y, raw), normal_classes=[c for c in classes if c.lower() in NORMAL_CLASSES],
                           fpr_at_threshold=float(flagged[y == 0].mean()),
                           tpr_at_threshold=float(flagged[y == 1].mean()))
        else:
            summary["ad_auroc_note"] = (f"classes {', '.join(classes)}: AuROC needs class folders named good or normal "
                                        "(normal images) beside others (anomalies)")
    return summary


def predict(run_dir: str | Path, images: str | Path, out: str | Path | None = None, threshold: str | float = "auto",
            fpr: float = DEFAULT_FPR, method: str = "heatmap", batch_size: int = 64) -> dict[str, Any]:
    """Score, judge and map every image of ``images`` with the run's detector; returns the summary."""
    run_dir, images = Path(run_dir), Path(images)
    detector = load_detector(run_dir)
    files = list_images(images)
    explainer = HeatmapExplainer(HeatmapConfig(method)).fit(detector)
    chosen = resolve_threshold(run_dir, threshold, fpr, _held_out_normal_scores(run_dir, detector))
    out = Path(out) if out is not None else run_dir / "predict" / images.resolve().name
    log.info(f"{len(files)} images from {images}; threshold {chosen.value:.4g} ({chosen.rule})")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for start in range(0, len(files), batch_size):
        rows += _rows_for_batch(files[start:start + batch_size], detector, explainer, chosen, out, notes)
    if len(notes) > WARNED:
        log.warning(f"... and {len(notes) - WARNED} more images converted (see the note column of predictions.csv)")
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # floats in full precision (shortest repr), so the CSV reproduces the verdicts
    atomic_write_text(out / "predictions.csv", text.getvalue())
    summary = _summary(files, rows, chosen, notes)
    summary["csv"] = str(out / "predictions.csv")
    atomic_write_json(out / "summary.json", summary)
    auc = f"; AuROC {summary['ad_auroc']:.4f} (good/normal vs rest)" if "ad_auroc" in summary else ""
    log.info(f"{summary['anomalous']} of {len(rows)} images anomalous{auc} -> {out / 'predictions.csv'}")
    return summary
