"""A finished run folder with every explanation it holds, loaded once for one image at a time.

The comparison report and the what-if web app both show one anomaly explained three ways: the
detector's heatmap (always available), the K counterfactuals of a trained counterfactual explainer
(``explain/counterfactual/explainer.safetensors``) and the AR-Pro repair (``explain/repair/``, only
for decomposable detectors). A missing or unreadable explainer is not an error here: it is recorded
in ``missing`` with the command that makes it, so that what exists can still be shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from anomalens.config import from_dict
from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.decomposition import FeatureThresholds, is_decomposable
from anomalens.errors import AnomalensError
from anomalens.experiments.calibration import Threshold, resolve_threshold
from anomalens.experiments.explain_run import load_run
from anomalens.experiments.predict import load_detector
from anomalens.explain.base import Explanation
from anomalens.explain.counterfactual import CounterfactualExplainer
from anomalens.explain.diffusion import DiffusionModel
from anomalens.explain.heatmap import HeatmapConfig, HeatmapExplainer
from anomalens.explain.repair import RepairConfig, RepairExplainer
from anomalens.metrics.properties import property_metrics

log = logging.getLogger(__name__)


def _describe(detector: Detector) -> str:
    config = detector.config()
    return str(config.get("objective", config["detector"]))


@dataclass
class RunExplainers:
    """``RunExplainers.load(run_dir)``: the detector, its explainers, the decision threshold."""

    run_dir: Path
    detector: Detector
    counterfactual: CounterfactualExplainer | None
    repair: RepairExplainer | None
    missing: dict[str, str] = field(default_factory=dict)  # method -> why it is absent, and the fix
    _data: ADData | None = None
    _data_error: str | None = None
    _threshold: Threshold | None = None
    _feature_thresholds: FeatureThresholds | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> RunExplainers:
        run_dir = Path(run_dir)
        detector = load_detector(run_dir)
        missing: dict[str, str] = {}
        counterfactual = _load_counterfactual(run_dir, detector, missing)
        repair = _load_repair(run_dir, detector, missing)
        for method, why in missing.items():
            log.warning(f"{run_dir}: {method}: {why}")
        return cls(run_dir, detector, counterfactual, repair, missing)

    @property
    def name(self) -> str:
        return f"{_describe(self.detector)} ({self.run_dir.name})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.detector.config()["image_shape"])

    @cached_property
    def decomposable(self) -> bool:
        return is_decomposable(self.detector, self.image_shape)

    def data(self) -> ADData:
        """The run's task (rebuilt from config.yaml once); ``AnomalensError`` when its dataset is absent."""
        if self._data is None:
            if self._data_error is not None:
                raise AnomalensError(self._data_error)
            try:
                self._data = load_run(self.run_dir)[2]
            except (AnomalensError, OSError) as e:
                self._data_error = f"the run's data cannot be rebuilt: {e}"
                raise
        return self._data

    def threshold(self) -> Threshold:
        """The automatic split-conformal threshold (see ``experiments/calibration.py``)."""
        if self._threshold is None:
            self._threshold = resolve_threshold(
                self.run_dir, "auto", normal_scores=lambda: self.detector.scores(self.normal_test()).numpy())
        return self._threshold

    def normal_test(self) -> Tensor:
        data = self.data()
        return data.test_x[data.test_y == 0]

    def heatmap(self, x: Tensor) -> Explanation:
        return HeatmapExplainer(HeatmapConfig("heatmap")).fit(self.detector).explain(x)

    def feature_thresholds(self) -> FeatureThresholds | None:
        """tau for AR-Pro's properties: the repair's own, else fitted on the normal training images."""
        if not self.decomposable:
            return None
        if self._feature_thresholds is None:
            if self.repair is not None:
                self._feature_thresholds = self.repair.thresholds
            else:
                self._feature_thresholds = FeatureThresholds.fit(self.detector, self.data().train_normal)
        return self._feature_thresholds

    def properties(self, x_bad: Tensor, x_fix: Tensor) -> dict[str, Tensor] | None:
        """AR-Pro's per-image metrics and P1-P4 of explanations ``x_fix`` of ``x_bad``; None when the
        detector is not decomposable."""
        thresholds = self.feature_thresholds()
        if thresholds is None:
            return None
        delta4 = self.repair.config.delta4 if self.repair is not None else 0.05
        return property_metrics(self.detector, thresholds, x_bad, x_fix, delta4)


def _load_counterfactual(run_dir: Path, detector: Detector, missing: dict[str, str]) -> CounterfactualExplainer | None:
    path = run_dir / "explain" / "counterfactual" / "explainer.safetensors"
    if not path.is_file():
        missing["counterfactual"] = (f"no counterfactual explainer ({path} is missing). Fix: anomalens explain "
                                     f"{run_dir} --method counterfactual")
        return None
    try:
        explainer = CounterfactualExplainer.load(path, detector)
    except AnomalensError as e:
        missing["counterfactual"] = str(e)
        return None
    if tuple(explainer.image_shape) != tuple(detector.config()["image_shape"]):
        missing["counterfactual"] = (f"{path} was trained for images {explainer.image_shape}, the detector takes "
                                     f"{tuple(detector.config()['image_shape'])}. Fix: retrain it with anomalens "
                                     f"explain {run_dir} --method counterfactual")
        return None
    return explainer


def _load_repair(run_dir: Path, detector: Detector, missing: dict[str, str]) -> RepairExplainer | None:
    folder = run_dir / "explain" / "repair"
    if not is_decomposable(detector, tuple(detector.config()["image_shape"])):
        missing["repair"] = (f"the {_describe(detector)!r} detector is not decomposable, so AR-Pro repair is undefined "
                             "for it. Fix: train a decomposable detector (ae, fcdd, aexad, flow) to see repairs")
        return None
    needed = [folder / "diffusion.safetensors", folder / "thresholds.safetensors"]
    if not all(p.is_file() for p in needed):
        missing["repair"] = (f"no repair model ({', '.join(str(p) for p in needed if not p.is_file())} missing). "
                             f"Fix: anomalens explain {run_dir} --method repair")
        return None
    try:
        settings: dict[str, Any] = yaml.safe_load((folder / "config.yaml").read_text()) \
            if (folder / "config.yaml").is_file() else {}
        config = from_dict(RepairConfig, {**settings, "progress": False}, str(folder / "config.yaml"))
        explainer = RepairExplainer(config, DiffusionModel.load(needed[0]), FeatureThresholds.load(needed[1]))
    except (AnomalensError, yaml.YAMLError) as e:
        missing["repair"] = str(e)
        return None
    explainer.detector = detector.eval()  # both parts are trained: nothing left to fit
    return explainer

