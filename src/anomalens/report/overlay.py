"""Heatmap overlays: the anomaly map coloured and laid over the image it explains.

A raw map's scale differs per detector (squared errors, -log p, gradients), so overlays show each
map min-max scaled to [0, 1]; the unscaled values are what ``predict`` saves as ``.npy``.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anomalens.maps import normalise

COLORMAP = "inferno"


def colorize(maps: Tensor) -> Tensor:
    """(N, H, W) maps -> (N, 3, H, W) RGB in [0, 1], each map min-max scaled first."""
    scaled = normalise(maps.detach().float().cpu()).clamp(0, 1).numpy()
    rgb = matplotlib.colormaps[COLORMAP](scaled)[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def overlay(images: Tensor, maps: Tensor, opacity: float = 0.55) -> Tensor:
    """(N, C, H, W) images in [0, 1] with their (N, H, W) maps blended on top: (N, 3, H, W)."""
    base = images.detach().float().cpu()
    base = base.expand(-1, 3, -1, -1) if base.shape[1] == 1 else base
    return ((1 - opacity) * base + opacity * colorize(maps)).clamp(0, 1)


def png_bytes(image: Tensor, min_side: int = 0) -> bytes:
    """One (C, H, W) image in [0, 1] as PNG bytes, enlarged (nearest, integer factor) to at least
    ``min_side`` pixels so that small images stay visible without blurring."""
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    picture = Image.fromarray(np.ascontiguousarray(array), "L" if pixels.shape[0] == 1 else "RGB")
    factor = max(1, -(-min_side // min(picture.size)))
    if factor > 1:
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
