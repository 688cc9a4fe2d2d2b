"""Building blocks of the counterfactual GAN: conditional batch norm and residual blocks.

The generator is steered by one categorical condition (target score x concept); conditional batch
norm (De Vries et al. 2017) injects it into every block as a per-class scale and shift, which is
cheaper and more effective than concatenating one-hot maps. Spectral normalisation (Miyato et al.
2018) bounds each layer's Lipschitz constant and keeps the adversarial game stable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """``module`` with spectral normalisation when ``enabled``."""
    return spectral_norm(module) if enabled else module


class ConditionalBatchNorm(nn.Module):
    """Batch norm without its own affine parameters; scale and shift are looked up per condition."""

    def __init__(self, channels: int, conditions: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(conditions, channels)
        self.shift = nn.Embedding(conditions, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        gamma = self.scale(condition)[:, :, None, None]
        beta = self.shift(condition)[:, :, None, None]
        return self.norm(x) * gamma + beta


class ConditionalResBlock(nn.Module):
    """Two (CBN, ReLU, 3x3 conv) sets with a 1x1 shortcut; ``resample`` is 'down', 'up' or None.

    Down-sampling average-pools after each convolution's set; up-sampling doubles the size
    (nearest neighbour) before the first convolution, as in appendix E.1 of the CE paper.
    """

    def __init__(self, c_in: int, c_out: int, conditions: int, resample: str | None = None,
                 spectral: bool = False):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")
        self.resample = resample
        self.norm1 = ConditionalBatchNorm(c_in, conditions)
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1), spectral)
        self.norm2 = ConditionalBatchNorm(c_out, conditions)
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1), spectral)
        self.shortcut = sn(nn.Conv2d(c_in, c_out, 1), spectral)

    def _resize(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        h = F.relu(self.norm1(x, condition))
        if self.resample == "up":
            h = self._resize(h)
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h, condition)))
        if self.resample == "down":
            h = self._resize(h)
        return h + self.shortcut(self._resize(x))


class ResBlock(nn.Module):
    """Spectral-norm residual block of the discriminator and concept classifier: (ReLU, conv) x 2
    with an optional average pool and a 1x1 shortcut. ``preactivate=False`` for the first block,
    whose input is the image itself."""

    def __init__(self, c_in: int, c_out: int, down: bool = True, preactivate: bool = True):
        super().__init__()
        self.down, self.preactivate = down, preactivate
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivate else x
        h = self.conv2(F.relu(self.conv1(h)))
        skip = self.shortcut(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


def global_sum(h: Tensor) -> Tensor:
    """ReLU then sum over the spatial dimensions: the SN-GAN read-out."""
    return torch.relu(h).sum(dim=(2, 3))
