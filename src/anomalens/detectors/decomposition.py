"""Linear decomposition of anomaly scores (AR-Pro, sec. 2): feature scores, regions, thresholds.

A decomposable detector splits its score into feature scores alpha(x) (one per pixel here) and a
regulariser beta(x): s(x) = sum_i alpha_i(x) + beta(x). Binarising alpha with per-feature thresholds
tau gives the anomalous region omega(x); the region score s_z(x) = beta(x) + sum_{z_i = 1} alpha_i(x)
then says how anomalous any part of the image is. Repairs and their property checks build on this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from anomalens.checkpoints import read_weights, write_weights
from anomalens.detectors.base import Detector
from anomalens.device import device_of
from anomalens.errors import AnomalensError

DECOMPOSABLE = ("ae", "fcdd", "aexad", "flow", "series_ae", "series_gpt2")  # the last two for time series
THRESHOLDS_FORMAT = "anomalens.thresholds/1"


class NotDecomposableError(AnomalensError, ValueError):
    """The detector's score is not a sum of per-pixel scores, so AR-Pro's properties are undefined."""


@dataclass
class Decomposition:
    """alpha (B, H, W) feature scores and beta (B,) regulariser of a batch of images."""

    alpha: Tensor
    beta: Tensor

    @property
    def score(self) -> Tensor:
        """s(x) = sum(alpha) + beta, (B,)."""
        return self.alpha.sum((1, 2)) + self.beta

    def region(self, z: Tensor) -> Tensor:
        """s_z(x) = beta + sum of alpha where z = 1; z is a (B, H, W) 0/1 mask."""
        return self.beta + (self.alpha * z).sum((1, 2))


def decompose(detector: Detector, x: Tensor) -> Decomposition:
    """The detector's decomposition of ``x``, or a ``NotDecomposableError`` saying which detectors work."""
    parts = detector.decompose(x)
    if parts is None:
        kind = detector.config().get("objective", detector.config().get("detector"))
        raise NotDecomposableError(
            f"the {kind!r} detector's score is not a sum of per-pixel scores, so anomaly repair and its "
            f"properties are undefined for it. Fix: use a decomposable detector ({', '.join(DECOMPOSABLE)}), "
            "e.g. `anomalens train --detector flow`")
    return Decomposition(*parts)


def is_decomposable(detector: Detector, image_shape: tuple[int, ...]) -> bool:
    """Whether ``detector`` decomposes images of this (C, H, W) shape (tries one blank image)."""
    with torch.no_grad():
        return detector.decompose(torch.zeros(1, *image_shape)) is not None


@dataclass
class FeatureThresholds:
    """Per-feature thresholds tau (H, W): omega(x) = alpha(x) >= tau. The paper takes tau_i as the
    ``quantile`` (90%) of feature i's scores over the normal training images."""

    tau: Tensor
    quantile: float = 0.9

    @classmethod
    @torch.no_grad()
    def fit(cls, detector: Detector, normal: Tensor, quantile: float = 0.9, batch_size: int = 64) -> FeatureThresholds:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
        if not len(normal):
            raise ValueError("feature thresholds need normal images; got none")
        was_training = detector.training
        detector.eval()
        device = device_of(detector)
        alpha = torch.cat([decompose(detector, chunk.to(device)).alpha.float().cpu()
                           for chunk in normal.split(batch_size)])
        detector.train(was_training)
        return cls(torch.quantile(alpha, quantile, dim=0), quantile)

    def omega(self, alpha: Tensor) -> Tensor:
        """The anomalous region, a float 0/1 mask (B, H, W)."""
        if alpha.shape[-2:] != self.tau.shape:
            raise ValueError(f"feature scores of size {tuple(alpha.shape[-2:])} but thresholds fitted for "
                             f"{tuple(self.tau.shape)}: fit the thresholds on images of the same size")
        return (alpha >= self.tau.to(alpha)).to(alpha.dtype)

    def save(self, path: str | Path) -> Path:
        return write_weights(path, {"tau": self.tau}, {"format": THRESHOLDS_FORMAT, "quantile": str(self.quantile)})

    @classmethod
    def load(cls, path: str | Path) -> FeatureThresholds:
        tensors, metadata = read_weights(Path(path), "feature-thresholds file", "FeatureThresholds.save "
                                         "(thresholds.safetensors in a repair folder)", THRESHOLDS_FORMAT)
        return cls(tensors["tau"], float(metadata["quantile"]))
