"""Networks of the latent counterfactual generator: a small autoencoder with a spatial latent, and
the editor G' that moves a latent code towards a target score and concept.

Why a latent generator: on a CPU budget a pixel-space G learns faint adversarial patterns that
fool the detector while a person sees the same anomaly. Every output of ``LatentGenerator`` is a
*decoded* latent, so it lies on the autoencoder's image manifold, and a step costs the small
editor plus one decode instead of a full-resolution encoder-decoder (CE paper, section 3.2: the
route it takes with Stable Diffusion's autoencoder for high-resolution images).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from anomalens.errors import ConfigError
from anomalens.nets.blocks import ConditionalResBlock


@dataclass
class AutoencoderConfig:
    channels: int = 1
    widths: tuple[int, int] = (32, 64)
    latent_channels: int = 8  # the latent is (latent_channels, H / 4, W / 4)

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 2 or min(self.widths) < 1 or self.latent_channels < 1 or self.channels < 1:
            raise ConfigError(f"autoencoder widths must be two positive ints and latent_channels >= 1, got "
                              f"{self.widths}, {self.latent_channels}")


class LatentAutoencoder(nn.Module):
    """x in [0, 1] (sides divisible by 4) <-> z (latent_channels, H/4, W/4)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        c, (w1, w2), z = config.channels, config.widths, config.latent_channels
        act = nn.LeakyReLU(0.2)
        self.encoder = nn.Sequential(nn.Conv2d(c, w1, 3, padding=1), act, nn.Conv2d(w1, w1, 4, 2, 1), act,
                                     nn.Conv2d(w1, w2, 4, 2, 1), act, nn.Conv2d(w2, z, 1))
        self.decoder = nn.Sequential(nn.Conv2d(z, w2, 1), act, nn.ConvTranspose2d(w2, w1, 4, 2, 1), act,
                                     nn.ConvTranspose2d(w1, w1, 4, 2, 1), act, nn.Conv2d(w1, c, 3, padding=1))

    def encode(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ConfigError(f"the latent autoencoder halves images twice: sides must be divisible by 4, got "
                              f"{tuple(x.shape[-2:])}. Fix: resize the images")
        return self.encoder(x * 2 - 1)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def describe(self) -> dict[str, object]:
        return asdict(self.config)


@dataclass
class EditorConfig:
    latent_channels: int = 8
    conditions: int = 6  # len(alpha levels) * concepts
    width: int = 64
    blocks: int = 3


class LatentEditor(nn.Module):
    """G': (z, condition) -> z + delta, with conditional residual blocks. The last layer starts at
    zero, so G' starts as the identity and the GAN phase edits the input from the first step."""

    def __init__(self, config: EditorConfig):
        super().__init__()
        self.config = config
        z, w, m = config.latent_channels, config.width, config.conditions
        self.stem = nn.Conv2d(z, w, 3, padding=1)
        self.blocks = nn.ModuleList([ConditionalResBlock(w, w, m) for _ in range(config.blocks)])
        self.head = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, z, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, z: Tensor, condition: Tensor) -> Tensor:
        h = self.stem(z)
        for block in self.blocks:
            h = block(h, condition)
        return z + self.head(h)


class LatentGenerator(nn.Module):
    """G(x, condition) = decode(G'(encode(x), condition)) with the autoencoder frozen: the same call
    signature as the pixel ``Generator``, so every loss term of section 3.2 applies unchanged."""

    def __init__(self, autoencoder: nn.Module, editor: LatentEditor):
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.editor = editor

    def train(self, mode: bool = True) -> LatentGenerator:
        super().train(mode)
        self.autoencoder.eval()  # frozen, batch statistics included
        return self

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        return self.autoencoder.decode(self.editor(self.autoencoder.encode(x), condition)).clamp(0, 1)
