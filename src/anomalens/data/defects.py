"""Built-in synthetic defects with pixel masks: an offline stand-in for MVTec-style inspection data.

Each "category" is a family of regular textures (stripes, a grid, or smooth noise) with random
phase, orientation and brightness; defective images carry one of three defect types drawn on top,
each with its exact mask: a ``scratch`` (thin bright or dark line), a ``spot`` (soft dark blob) and
a ``missing`` part (a patch replaced by the mean grey). Deterministic by seed, so heatmap methods
can be tested and compared anywhere against known ground truth.
"""

from __future__ import annotations

import numpy as np

from anomalens.data.images import DefectImages
from anomalens.errors import ConfigError

CATEGORIES = ("stripes", "grid", "noise")
DEFECT_TYPES = ("scratch", "spot", "missing")


def _texture(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if category == "stripes":
        angle = rng.uniform(-0.3, 0.3) + np.pi / 4
        freq = rng.uniform(5, 7)
        base = 0.5 + 0.35 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
    elif category == "grid":
        freq = rng.uniform(5, 6)
        phase = rng.uniform(0, 6.3, 2)
        base = 0.5 + 0.2 * (np.sin(2 * np.pi * freq * xx + phase[0]) + np.sin(2 * np.pi * freq * yy + phase[1]))
    elif category == "noise":
        coarse = rng.normal(0, 1, (size // 8 + 2, size // 8 + 2))
        ramp = np.linspace(0, coarse.shape[0] - 1.001, size)
        i, f = ramp.astype(int), ramp - ramp.astype(int)
        rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
        base = 0.5 + 0.12 * (rows[:, i] * (1 - f) + rows[:, i + 1] * f)
    else:
        raise ConfigError(f"unknown defect texture {category!r}. Fix: use one of {', '.join(CATEGORIES)}")
    base = base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, (size, size))
    return base.astype(np.float32)


def _defect(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool (size, size), value map): where the defect is and what it paints there."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.25, 0.5) * size
        width = max(1.0, size / 40)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width)
        value = np.full((size, size), 1.0 if rng.random() < 0.5 else 0.0, np.float32)
    elif kind == "spot":
        radius = rng.uniform(0.05, 0.1) * size
        dist = np.hypot(yy - cy, xx - cx)
        mask = dist <= radius
        value = np.full((size, size), rng.uniform(0.0, 0.15), np.float32)
    elif kind == "missing":
        h, w = rng.uniform(0.12, 0.25, 2) * size
        mask = (np.abs(yy - cy) <= h / 2) & (np.abs(xx - cx) <= w / 2)
        value = np.full((size, size), 0.5, np.float32)
    else:
        raise ConfigError(f"unknown defect type {kind!r}. Fix: use one of {', '.join(DEFECT_TYPES)}")
    return mask, value


def synthetic_defects(category: str = "stripes", n_train: int = 300, n_test_good: int = 60,
                      n_test_defect: int = 90, size: int = 64, seed: int = 0) -> DefectImages:
    """A defect dataset: ``n_train`` good training images, and a test set of good images followed by
    defective ones (defect types in turn), grayscale uint8, with 0/1 masks."""
    if size < 16 or min(n_train, n_test_good, n_test_defect) < 1:
        raise ConfigError(f"synthetic_defects: size={size} must be >= 16 and every count >= 1. "
                          "Fix: e.g. size=64, n_train=300")
    rng = np.random.default_rng(seed)
    train = np.stack([_texture(category, size, rng) for _ in range(n_train)])
    test = np.stack([_texture(category, size, rng) for _ in range(n_test_good + n_test_defect)])
    masks = np.zeros(test.shape, np.uint8)
    types = ["good"] * n_test_good
    for i in range(n_test_good, len(test)):
        kind = DEFECT_TYPES[(i - n_test_good) % len(DEFECT_TYPES)]
        mask, value = _defect(kind, size, rng)
        test[i][mask] = value[mask]
        masks[i] = mask
        types.append(kind)

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)[..., None]

    labels = np.asarray([t != "good" for t in types], np.int64)
    return DefectImages(to_uint8(train), to_uint8(test), labels, np.asarray(types), masks,
                        name=f"synthetic_defects/{category}")


def confetti_noise(images, n: int | None = None, seed: int = 0, blobs: tuple[int, int] = (1, 4),
                   size_fraction: tuple[float, float] = (0.08, 0.2)):
    """Synthetic anomalies for FCDD (Liznerski et al. 2021): copies of normal images (float tensor
    (N, C, H, W) in [0, 1]) with a few randomly coloured rectangles pasted on. Returns a tensor of
    ``n`` images (default: as many as given)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    n = len(images) if n is None else n
    if n < 1 or len(images) == 0:
        raise ConfigError(f"confetti_noise: need images and n >= 1, got {len(images)} images and n={n}")
    out = images[torch.randint(len(images), (n,), generator=generator)].clone()
    _, c, h, w = out.shape
    for img in out:
        for _ in range(int(torch.randint(blobs[0], blobs[1] + 1, (1,), generator=generator))):
            bh, bw = (int(max(1, f * s)) for f, s in zip(
                torch.empty(2).uniform_(*size_fraction, generator=generator).tolist(), (h, w)))
            top = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
            img[:, top:top + bh, left:left + bw] = torch.rand(c, 1, 1, generator=generator)
    return out
