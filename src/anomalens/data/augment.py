"""Batched tensor augmentations of the OE paper (appendix G): random crop, horizontal flip,
colour jitter and gaussian pixel noise.

They work on whole (B, C, H, W) batches in [0, 1] with an explicit ``torch.Generator``, so a
training run is reproducible from its seed and a resumed run continues the same random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Augment:
    """Which augmentations to apply, and how strongly. ``Augment.preset(name)`` gives the papers' sets."""

    crop_padding: int = 0  # random crop of the original size after zero-padding by this many pixels
    flip: bool = False  # horizontal flip with probability 1/2
    jitter: float = 0.0  # brightness, contrast and saturation factors drawn from [1 - j, 1 + j]
    noise_std: float = 0.0  # gaussian pixel noise

    PRESETS = {
        "none": {},  # MNIST in both papers
        "gray": {"crop_padding": 2, "flip": True, "jitter": 0.2, "noise_std": 0.01},  # Fashion-MNIST
        "natural": {"crop_padding": 4, "flip": True, "jitter": 0.2, "noise_std": 0.01},  # CIFAR-10, GTSRB
    }

    @classmethod
    def preset(cls, name: str) -> Augment:
        if name not in cls.PRESETS:
            raise ValueError(f"unknown augmentation preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**cls.PRESETS[name])

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.jitter or self.noise_std)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return x
        b = x.shape[0]

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(x.device)

        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            h, w = x.shape[-2:]
            dy = (uniform(b) * (2 * p + 1)).long()
            dx = (uniform(b) * (2 * p + 1)).long()
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            batch = torch.arange(b, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            flip = uniform(b) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.jitter:
            j = self.jitter
            brightness = 1 + (uniform(b, 1, 1, 1) * 2 - 1) * j
            x = x * brightness
            contrast = 1 + (uniform(b, 1, 1, 1) * 2 - 1) * j
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean
            if x.shape[1] == 3:
                saturation = 1 + (uniform(b, 1, 1, 1) * 2 - 1) * j
                gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, True)
                x = (x - gray) * saturation + gray
        if self.noise_std:
            x = x + torch.randn(x.shape, generator=generator).to(x.device) * self.noise_std
        return x.clamp(0, 1)
