"""A fully convolutional network for FCDD: the output keeps a spatial layout, so each output
location scores one image region (its receptive field) and the score map is an explanation.

Layers: per width, conv (kernel, same padding) -> batch norm -> leaky ReLU, with 2x2 max-pooling
after the first ``pools`` blocks; then a 1x1 conv to one channel. No fully connected layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class FCNConfig:
    in_channels: int = 1
    widths: tuple[int, ...] = (16, 32, 64)
    kernel: int = 3
    pools: int = 2  # 28 px -> 7 x 7 score map with the default widths
    bias: bool = True

    @property
    def receptive_field(self) -> int:
        """Side of the input patch one output location sees (conv and pool arithmetic)."""
        field, jump = 1, 1
        for i, _ in enumerate(self.widths):
            field += (self.kernel - 1) * jump
            if i < self.pools:
                field += jump  # 2x2 max-pool, stride 2
                jump *= 2
        return field


class FCN(nn.Module):
    """x (B, C, H, W) -> score-map logits (B, 1, H / 2^pools, W / 2^pools)."""

    def __init__(self, config: FCNConfig):
        super().__init__()
        if config.pools > len(config.widths):
            raise ValueError(f"pools={config.pools} exceeds the {len(config.widths)} conv blocks")
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for i, width in enumerate(config.widths):
            layers += [nn.Conv2d(c, width, config.kernel, padding=config.kernel // 2, bias=config.bias),
                       nn.BatchNorm2d(width, affine=config.bias), nn.LeakyReLU(0.01)]
            if i < config.pools:
                layers.append(nn.MaxPool2d(2))
            c = width
        layers.append(nn.Conv2d(c, 1, 1, bias=config.bias))
        self.body = nn.Sequential(*layers)
        self.out_dim = 1
        self.receptive_field = config.receptive_field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def describe(self) -> dict[str, object]:
        return {"type": "fcn", **asdict(self.config)}
