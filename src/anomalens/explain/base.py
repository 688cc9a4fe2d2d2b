"""The interface every explainer shares, so that any explainer works on any detector and their
answers for one anomaly can be shown side by side.

``fit(detector, data)`` learns whatever the method needs (a GAN, a diffusion model, nothing for a
heatmap) and returns the explainer; ``explain(x)`` answers for a batch with an ``Explanation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from anomalens.data.addata import ADData


@dataclass
class Explanation:
    """What an explainer says about images ``inputs`` (N, C, H, W).

    ``outputs`` (N, K, C, H, W): images that answer "what would make it normal?" (K counterfactuals,
    one repair); ``maps`` (N, H, W): where it is anomalous; ``score_before`` (N,) and ``score_after``
    (N, K): the detector's bounded scores of the inputs and of the outputs; ``extras``: what is
    particular to a method (the repaired region ``omega``, the target ``alpha``, ...)."""

    inputs: Tensor
    score_before: Tensor
    outputs: Tensor | None = None
    score_after: Tensor | None = None
    maps: Tensor | None = None
    method: str = ""
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if self.outputs is not None and (self.outputs.dim() != 5 or len(self.outputs) != n):
            raise ValueError(f"outputs must be (N={n}, K, C, H, W), got {tuple(self.outputs.shape)}")
        if self.score_after is not None and self.outputs is not None \
                and tuple(self.score_after.shape) != tuple(self.outputs.shape[:2]):
            raise ValueError(f"score_after must be (N, K) = {tuple(self.outputs.shape[:2])}, "
                             f"got {tuple(self.score_after.shape)}")
        if self.maps is not None and (self.maps.dim() != 3 or len(self.maps) != n):
            raise ValueError(f"maps must be (N={n}, H, W), got {tuple(self.maps.shape)}")


@runtime_checkable
class Explainer(Protocol):
    """``Explainer.fit(detector, data) -> self``; ``explain(x) -> Explanation``."""

    def fit(self, detector, data: ADData) -> Explainer: ...

    def explain(self, x: Tensor) -> Explanation: ...
