"""The concept classifier R(x, x_bar) of the CE paper (appendix E.1).

It sees the pair channel-concatenated, so it classifies the *change* from x to x_bar, not the
image: two spectral-norm residual blocks (64 and 128 kernels, each halving the size), spatial sum,
linear to K logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from anomalens.nets.blocks import ResBlock, global_sum, sn


@dataclass
class ConceptConfig:
    channels: int = 1
    concepts: int = 2
    widths: tuple[int, int] = (64, 128)
    halvings: int = 2  # blocks that halve the size: 2 for images; fewer for a 7x7 latent code


class ConceptClassifier(nn.Module):
    def __init__(self, config: ConceptConfig):
        super().__init__()
        self.config = config
        w1, w2 = config.widths
        self.blocks = nn.Sequential(ResBlock(2 * config.channels, w1, config.halvings > 0, preactivate=False),
                                    ResBlock(w1, w2, config.halvings > 1))
        self.linear = sn(nn.Linear(w2, config.concepts))

    def forward(self, x: Tensor, x_bar: Tensor) -> Tensor:
        return self.linear(global_sum(self.blocks(torch.cat([x, x_bar], 1) * 2 - 1)))

    def describe(self) -> dict[str, object]:
        return asdict(self.config)
