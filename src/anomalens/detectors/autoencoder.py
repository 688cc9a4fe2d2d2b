"""A plain reconstruction autoencoder detector: the textbook linearly decomposable detector.

Trained on normal images only; the score is the squared reconstruction error summed over pixels,
so alpha_i = |x^_i - x_i|^2 (summed over channels) and beta = 0 (AR-Pro, Example 2.2). It shares
AE-XAD's network and training loop (AE-XAD's ``plain`` ablation), with the unsmoothed sum as score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from anomalens.detectors.aexad import AEXAD
from anomalens.detectors.registry import register


@register("ae")
class ReconstructionAE(AEXAD):
    """``ReconstructionAE(image_shape)``; ``fit(data)`` learns to reconstruct ``data.train_normal``."""

    name = "ae"

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__(image_shape, widths=widths, plain=True, smooth=False)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha = (x - self.autoencoder(x)).float().pow(2).sum(1)
        return alpha, torch.zeros(len(x), dtype=alpha.dtype, device=alpha.device)

    def raw_score(self, x: Tensor) -> Tensor:
        return self.decompose(x)[0].sum((1, 2))

    def decomposed_score(self, x: Tensor) -> Tensor:
        return self.raw_score(x)  # AE-XAD decomposes S^2; here the score itself is the sum

    def anomaly_map(self, x: Tensor) -> Tensor:
        return self.decompose(x)[0]

    def config(self) -> dict[str, Any]:
        return {"detector": "ae", "image_shape": list(self.image_shape), "widths": list(self.widths)}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], **options: Any) -> ReconstructionAE:
        return cls(image_shape)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ReconstructionAE:
        return cls(tuple(config["image_shape"]), tuple(config["widths"]))
