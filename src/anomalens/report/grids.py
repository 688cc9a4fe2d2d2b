"""Image grids with row captions: the first thing to look at when judging data or explanations."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from anomalens.atomic import atomic_write_bytes


def image_grid(rows: Sequence[torch.Tensor], captions: Sequence[str] | None = None, scale: int = 3,
               pad: int = 2, caption_width: int = 110, labels: Sequence[Sequence[str]] | None = None) -> Image.Image:
    """A PIL image with one row per tensor (N, C, H, W) in [0, 1]; grayscale rows are shown gray.

    Rows may differ in length; every image is enlarged ``scale`` times (nearest) so pixels stay visible.
    ``labels[r][c]`` is a short text printed under image c of row r (e.g. the detector's score).
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    h, w = rows[0].shape[-2:]
    label_h = 12 if labels else 0
    cell_h, cell_w = h * scale + pad + label_h, w * scale + pad
    left = caption_width if captions else 0
    width = left + max(len(r) for r in rows) * cell_w + pad
    canvas = Image.new("RGB", (width, len(rows) * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        if tuple(row.shape[-2:]) != (h, w):
            raise ValueError(f"row {r} has images of size {tuple(row.shape[-2:])}, row 0 has {(h, w)}")
        pixels = (row.detach().cpu().clamp(0, 1) * 255).round().byte()
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        for c, img in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
            tile = Image.fromarray(np.ascontiguousarray(img)).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (left + pad + c * cell_w, pad + r * cell_h))
            if labels and r < len(labels) and c < len(labels[r]):
                draw.text((left + pad + c * cell_w + 1, pad + r * cell_h + h * scale), labels[r][c], fill=(0, 0, 0))
        if captions:
            draw.text((4, pad + r * cell_h + cell_h // 2 - 6), captions[r], fill=(0, 0, 0))
    return canvas


def save_grid(path: str | Path, rows: Sequence[torch.Tensor], captions: Sequence[str] | None = None,
              **kwargs) -> Path:
    """Write ``image_grid(rows, captions)`` as a PNG, atomically."""
    buffer = io.BytesIO()
    image_grid(rows, captions, **kwargs).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def explanation_grid(path: str | Path, explanation) -> Path:
    """An ``Explanation`` with output images as a grid: the inputs, then one row per output (concept or
    repair), the detector's bounded score under each image."""
    k = explanation.outputs.shape[1]
    name = "concept" if explanation.method == "counterfactual" else explanation.method
    rows = [explanation.inputs] + [explanation.outputs[:, i] for i in range(k)]
    captions = ["input"] + [f"{name} {i + 1}" if k > 1 else name for i in range(k)]
    scores = [explanation.score_before] + [explanation.score_after[:, i] for i in range(k)]
    return save_grid(path, rows, captions, labels=[[f"{s:.2f}" for s in row.tolist()] for row in scores])
