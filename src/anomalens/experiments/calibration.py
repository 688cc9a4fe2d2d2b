"""The automatic decision threshold of a run: a split-conformal threshold on held-out normal scores.

``anomalens train`` stores the raw scores of the run's normal *test* images in ``calibration.json``.
They are held out from training (the detector never saw them), so they are exchangeable with new
normal images of the same source, which is all that split-conformal calibration needs: a new normal
image scores above the threshold with probability at most ``fpr`` (5% by default). They are not held
out from the run's evaluation, but ``ad_auroc`` does not depend on any threshold, so no reported
number is biased by it; a false-positive rate measured on those same test images is in-sample.
Choosing them keeps every training result unchanged (carving a calibration split out of the
training images would not).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalens.atomic import atomic_write_json
from anomalens.errors import ConfigError, DataFormatError
from anomalens.metrics.properties import conformal_threshold

CALIBRATION_FILE = "calibration.json"
DEFAULT_FPR = 0.05
SOURCE = "raw scores of the normal test images (held out from training)"
log = logging.getLogger(__name__)


def save_normal_scores(run_dir: str | Path, raw_scores: np.ndarray | torch.Tensor) -> Path:
    """Write the held-out normal raw scores the automatic threshold is computed from."""
    scores = np.asarray(raw_scores, dtype=np.float64).ravel()
    return atomic_write_json(Path(run_dir) / CALIBRATION_FILE,
                             {"source": SOURCE, "count": len(scores), "raw_scores": scores.tolist()})


def load_normal_scores(run_dir: str | Path) -> np.ndarray | None:
    """The stored held-out normal raw scores, or None for a run trained before they were stored."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        scores = np.asarray(json.loads(path.read_text())["raw_scores"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as e:
        raise DataFormatError(path, f"is not a calibration file ({e})",
                              "delete it; the next `anomalens predict` recomputes the scores from the run") from e
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise DataFormatError(path, "holds non-finite or nested scores", "delete it and predict again")
    return scores


@dataclass
class Threshold:
    """A raw-score threshold: an image is anomalous when its raw score is above ``value``."""

    value: float
    rule: str  # how it was chosen, written beside every verdict

    def verdict(self, raw_score: float) -> str:
        return "anomalous" if raw_score > self.value else "normal"


def resolve_threshold(run_dir: str | Path, spec: str | float = "auto", fpr: float = DEFAULT_FPR,
                      normal_scores: Callable[[], np.ndarray] | None = None) -> Threshold:
    """``spec`` "auto": the split-conformal threshold at false-positive rate ``fpr`` on the run's stored
    normal scores (for older runs, ``normal_scores()`` computes them, e.g. by rebuilding the task);
    a number: that raw-score threshold as given."""
    if not isinstance(spec, str) or spec != "auto":
        try:
            value = float(spec)
        except ValueError:
            raise ConfigError(f"--threshold {spec!r} is neither 'auto' nor a number. Fix: pass auto, or a raw score "
                              "such as 0.8 (the raw_score column of predictions.csv)") from None
        if not np.isfinite(value):
            raise ConfigError(f"--threshold {spec!r} is not finite. Fix: pass auto or a finite raw score")
        return Threshold(value, "given by the user (raw score)")
    if not 0 < fpr < 1:
        raise ConfigError(f"--fpr {fpr} must lie in (0, 1). Fix: pass e.g. 0.05 for a 5% false-positive rate")
    scores = load_normal_scores(run_dir)
    if scores is None:
        if normal_scores is None:
            raise ConfigError(f"{Path(run_dir) / CALIBRATION_FILE} is missing (the run predates it). Fix: pass "
                              "--threshold VALUE, or retrain the run")
        log.info(f"{Path(run_dir) / CALIBRATION_FILE} is missing (an older run): scoring its normal test images")
        scores = np.asarray(normal_scores(), dtype=np.float64)
        save_normal_scores(run_dir, scores)
    try:
        value = conformal_threshold(torch.from_numpy(scores), 1 - fpr)
    except ValueError as e:
        raise ConfigError(f"{e}. Fix: pass a larger --fpr or --threshold VALUE") from None
    return Threshold(value, f"auto: split-conformal, false-positive rate <= {fpr:g} on {len(scores)} held-out "
                            "normal test scores")
