"""LeNet-style feature extractors of the papers (counterfactual paper, appendix E; OE paper, G.1).

Each conv layer is followed by batch norm, leaky ReLU and 2x2 max-pooling; then one hidden fully
connected layer (batch norm, leaky ReLU) and a final linear layer giving the feature vector.
``bias=False`` removes every bias and every batch-norm shift, as Deep SVDD requires: a network
with biases can map everything onto the centre and make the objective trivial.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Widths of the papers. mnist: CE paper E.2; colored_mnist: E.3; cifar: E.4/E.5 (also GTSRB);
# fmnist: OE paper G.1 (two conv layers of 16 and 32 kernels, otherwise as CIFAR-10).
PROFILES: dict[str, dict[str, object]] = {
    "mnist": {"conv": (4, 8, 16, 32), "fc": (64, 32), "kernel": 5},
    "colored_mnist": {"conv": (16, 32, 64), "fc": (64, 32), "kernel": 5},
    "fmnist": {"conv": (16, 32), "fc": (64, 32), "kernel": 5},
    "cifar": {"conv": (32, 64, 128), "fc": (512, 256), "kernel": 5},
}


@dataclass
class LeNetConfig:
    in_channels: int = 1
    image_size: int = 28
    conv: tuple[int, ...] = (4, 8, 16, 32)
    fc: tuple[int, ...] = (64, 32)
    kernel: int = 5
    bias: bool = True
    negative_slope: float = 0.01

    @classmethod
    def profile(cls, name: str, in_channels: int, image_size: int, bias: bool = True) -> LeNetConfig:
        if name not in PROFILES:
            raise ValueError(f"unknown LeNet profile {name!r}; known: {sorted(PROFILES)}")
        p = PROFILES[name]
        return cls(in_channels, image_size, tuple(p["conv"]), tuple(p["fc"]), int(p["kernel"]), bias)


class LeNet(nn.Module):
    """x (B, C, H, W) -> features (B, fc[-1])."""

    def __init__(self, config: LeNetConfig):
        super().__init__()
        self.config = config
        c, bias, slope = config.in_channels, config.bias, config.negative_slope
        layers: list[nn.Module] = []
        size = config.image_size
        for width in config.conv:
            if size < 2:
                raise ValueError(f"{len(config.conv)} conv+pool layers shrink a {config.image_size}px image "
                                 "below 1px; use fewer conv layers or larger images")
            layers += [nn.Conv2d(c, width, config.kernel, padding=config.kernel // 2, bias=bias),
                       nn.BatchNorm2d(width, eps=1e-4, affine=bias), nn.LeakyReLU(slope), nn.MaxPool2d(2)]
            c, size = width, size // 2
        self.conv = nn.Sequential(*layers)
        hidden, out = config.fc
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, hidden, bias=bias),
                                nn.BatchNorm1d(hidden, eps=1e-4, affine=bias), nn.LeakyReLU(slope),
                                nn.Linear(hidden, out, bias=bias))
        self.out_dim = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def describe(self) -> dict[str, object]:
        return {"type": "lenet", **asdict(self.config)}
