"""The counterfactual generator G(x, alpha, k) of the CE paper (appendix E.1).

An encoder-decoder residual network: stem (BN, conv), three encoder blocks (two halve the size),
three decoder blocks (two double it), BN, conv to the image, tanh. Every block's batch norm is
conditional on one categorical condition that joins the discretised target score and the concept.
The decoder is spectrally normalised. Widths are parameters: the paper's for GPUs, small ones for CPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from anomalens.nets.blocks import ConditionalResBlock, sn


@dataclass
class GeneratorConfig:
    channels: int = 1
    conditions: int = 6  # len(alpha levels) * concepts
    stem: int = 64
    widths: tuple[int, int, int] = (256, 512, 1024)  # encoder blocks; the decoder mirrors them


class Generator(nn.Module):
    """(x in [0, 1], condition index) -> image in [0, 1] of the same shape (sides divisible by 4)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        c, m = config.channels, config.conditions
        w1, w2, w3 = config.widths
        self.stem = nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, config.stem, 3, padding=1))
        self.encoder = nn.ModuleList([ConditionalResBlock(config.stem, w1, m, "down"),
                                      ConditionalResBlock(w1, w2, m, "down"),
                                      ConditionalResBlock(w2, w3, m)])
        self.decoder = nn.ModuleList([ConditionalResBlock(w3, w3, m, spectral=True),
                                      ConditionalResBlock(w3, w2, m, "up", spectral=True),
                                      ConditionalResBlock(w2, w1, m, "up", spectral=True)])
        self.head = nn.Sequential(nn.BatchNorm2d(w1), nn.ReLU(), sn(nn.Conv2d(w1, c, 3, padding=1)))

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"the generator halves the image twice: sides must be divisible by 4, got "
                             f"{tuple(x.shape[-2:])}")
        h = self.stem(x * 2 - 1)
        for block in (*self.encoder, *self.decoder):
            h = block(h, condition)
        return (torch.tanh(self.head(h).float()) + 1) / 2

    def describe(self) -> dict[str, object]:
        return asdict(self.config)
