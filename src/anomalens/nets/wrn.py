"""Pre-activation wide residual network (Zagoruyko & Komodakis 2016) for larger images.

The OE paper uses a ResNet-18-like backbone for 64-256 px images, where LeNet's fixed flatten size
and five-by-five pooling stack stop working. Global average pooling makes this network independent
of the input size. ``bias=False`` removes every bias and every batch-norm shift, as Deep SVDD
requires: a network with biases can map everything onto the centre and make the objective trivial.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class WRNConfig:
    """Plain data only: the config is stored as JSON and the network rebuilt from it."""

    in_channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64, 128)  # stem width, then one stage per remaining width
    blocks_per_stage: int = 2
    out_dim: int = 128
    bias: bool = True
    negative_slope: float = 0.0  # 0 = ReLU


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # Convolutions never carry a bias: the following batch norm would cancel it anyway.
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class _PreActBlock(nn.Module):
    """BN-act-conv-BN-act-conv plus shortcut; normalising before the convolution keeps the identity path clean."""

    def __init__(self, c_in: int, c_out: int, stride: int, bias: bool, slope: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, affine=bias)
        self.act1 = nn.LeakyReLU(slope)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out, affine=bias)
        self.act2 = nn.LeakyReLU(slope)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(x))
        # A projection takes the activated input (as in the original WRN); an identity keeps raw x.
        skip = x if self.shortcut is None else self.shortcut(h)
        h = self.conv2(self.act2(self.bn2(self.conv1(h))))
        return h + skip


class WideResNet(nn.Module):
    """x (B, C, H, W) -> features (B, out_dim), for any H, W >= 16 px."""

    def __init__(self, config: WRNConfig):
        super().__init__()
        if len(config.widths) < 2:
            raise ValueError(f"widths needs a stem width and at least one stage width, got {config.widths!r}")
        if config.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {config.blocks_per_stage}")
        self.config = config
        bias, slope = config.bias, config.negative_slope
        self.stem = _conv3x3(config.in_channels, config.widths[0])
        stages: list[nn.Module] = []
        c = config.widths[0]
        for i, width in enumerate(config.widths[1:]):
            blocks: list[nn.Module] = []
            for j in range(config.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(_PreActBlock(c, width, stride, bias, slope))
                c = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a convolution, so the trunk needs one last BN-act.
        self.head = nn.Sequential(nn.BatchNorm2d(c, affine=bias), nn.LeakyReLU(slope),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, config.out_dim, bias=bias))
        self.out_dim = config.out_dim
        self._init_weights(slope)

    def _init_weights(self, slope: float) -> None:
        """He initialisation suits the (leaky) ReLU; torch's default is tuned for neither."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def describe(self) -> dict[str, object]:
        return {"type": "wrn", **asdict(self.config)}
