"""Heatmaps for any detector: its own anomaly map where it has one (FCDD, AE-XAD, the flow, the
autoencoder), else input-gradient maps, i.e. where a small change of the input would change the
anomaly score most (``gradient``), or that sensitivity weighted by the input (``gradient_x_input``).
They give BCE/HSC/Deep SVDD runs a heatmap without a decomposable detector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from anomalens.config import from_dict
from anomalens.data.addata import ADData
from anomalens.device import device_of
from anomalens.errors import ConfigError
from anomalens.explain.base import Explanation
from anomalens.explain.registry import register

METHODS = ("heatmap", "gradient", "gradient_x_input")


@dataclass
class HeatmapConfig:
    method: str = "heatmap"  # the detector's own map (gradient if it has none), or a gradient method
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown heatmap method {self.method!r}. Fix: use one of {', '.join(METHODS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def gradient_maps(detector, x: Tensor, method: str = "gradient") -> tuple[Tensor, Tensor]:
    """(maps (B, H, W), bounded scores (B,)) of ``detector.score``: |d score / d x| (``gradient``) or
    |x * d score / d x| (``gradient_x_input``), summed over channels."""
    x = x.detach().clone().requires_grad_(True)
    score = detector.score(x)
    (grad,) = torch.autograd.grad(score.sum(), x)
    relevance = grad if method == "gradient" else grad * x
    return relevance.abs().sum(1).detach(), score.detach()


@register(*METHODS)
class HeatmapExplainer:
    """``HeatmapExplainer(HeatmapConfig(method)).fit(detector, data).explain(x)`` -> ``Explanation.maps``."""

    def __init__(self, config: HeatmapConfig | None = None):
        self.config = config or HeatmapConfig()
        self.detector = None

    @classmethod
    def from_options(cls, name: str, **options) -> HeatmapExplainer:
        return cls(from_dict(HeatmapConfig, {"method": name, **options}, f"explainer {name}"))

    def fit(self, detector, data: ADData | None = None) -> HeatmapExplainer:
        """Nothing to learn: remember the detector."""
        self.detector = detector
        return self

    def explain(self, x: Tensor) -> Explanation:
        if self.detector is None:
            raise RuntimeError("HeatmapExplainer is not fitted: call fit(detector, data) first")
        detector, method = self.detector, self.config.method
        was_training = detector.training
        detector.eval()
        device = device_of(detector)
        maps, scores = [], []
        used = method
        try:
            for chunk in x.split(self.config.batch_size):
                chunk = chunk.to(device)
                own = None
                if method == "heatmap":
                    with torch.no_grad():
                        own = detector.anomaly_map(chunk)
                if own is not None:
                    used = "anomaly_map"
                    with torch.no_grad():
                        maps.append(own.float().cpu())
                        scores.append(detector.score(chunk).float().cpu())
                else:
                    used = "gradient" if method == "heatmap" else method
                    m, s = gradient_maps(detector, chunk, used)
                    maps.append(m.cpu())
                    scores.append(s.float().cpu())
        finally:
            detector.train(was_training)
        return Explanation(x, torch.cat(scores), maps=torch.cat(maps), method=used)
