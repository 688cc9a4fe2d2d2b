"""Built-in synthetic data: "glyphs", MNIST-like images of digits and letters drawn from fonts.

Why: tests, tutorials and the counterfactual experiments need a labelled image set that exists on
every machine without a download, is byte-identical for a given seed, and has known generative
factors (character, font, stroke, colour) against which explanations can be checked.

How: each (font, character, stroke) is rendered once with Pillow at high resolution, fitted into a
20/28 box and cached as a mask at twice the output size. Every image is then a single random affine
warp of its mask (``torch.nn.functional.grid_sample`` over batches), box-filtered down 2x for
antialiasing, so 20,000 glyphs take about a second.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from anomalens.data.images import LabeledImages
from anomalens.errors import ConfigError

# Order matters: the 'colour' attr is an index into this dict, and the counterfactual paper's
# coloured variants use these seven colours in this order.
GLYPH_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "yellow": (255, 255, 0),
    "green": (0, 255, 0),
    "cyan": (0, 255, 255),
    "blue": (0, 0, 255),
    "pink": (255, 105, 180),
    "gray": (128, 128, 128),
}

GLYPH_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Fonts shipped with matplotlib (a dependency), so no download is needed. Fixed order: the 'font'
# attr indexes this tuple. Covers sans/serif/mono and regular/bold/italic.
GLYPH_FONTS: tuple[str, ...] = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSerif",
    "DejaVuSerif-Italic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "STIXGeneral",
)

STROKES = 3  # stroke levels 0 (font's own weight), 1, 2 (progressively bolder outlines)
_BOX = 20 / 28  # MNIST fits each digit's longer side into 20 of 28 pixels
_BATCH = 2048  # images warped per grid_sample call: bounds memory to some tens of MB


def _font_path(font: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{font}.ttf"


@functools.cache
def _has_glyph(font: str, char: str) -> bool:
    """Whether ``font`` maps ``char`` to a real glyph (Pillow would silently draw a .notdef box)."""
    from matplotlib.ft2font import FT2Font

    path = _font_path(font)
    return path.is_file() and FT2Font(str(path)).get_char_index(ord(char)) != 0


@functools.lru_cache(maxsize=4096)
def _glyph_mask(font: str, char: str, stroke: int, size: int) -> tuple[np.ndarray, float, float]:
    """The glyph as a float mask on a (2*size)^2 canvas and its centre of mass in [-1, 1] coordinates.

    Rendered large and downsampled once, so the per-image warp only resamples a smooth mask.
    """
    px = max(128, 5 * size)
    font_obj = ImageFont.truetype(str(_font_path(font)), px)
    canvas = Image.new("L", (3 * px, 3 * px))
    width = round(stroke * 0.02 * px)
    ImageDraw.Draw(canvas).text(
        (1.5 * px, 1.5 * px), char, font=font_obj, fill=255, anchor="mm", stroke_width=width, stroke_fill=255
    )
    bbox = canvas.getbbox()
    if bbox is None:
        raise ConfigError(f"character {char!r} draws nothing in font {font!r}. Fix: use visible characters")
    glyph = canvas.crop(bbox)
    side = 2 * size
    scale = side * _BOX / max(glyph.size)
    glyph = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.Resampling.BILINEAR
    )
    mask = np.zeros((side, side), np.float32)
    top, left = (side - glyph.height) // 2, (side - glyph.width) // 2
    mask[top : top + glyph.height, left : left + glyph.width] = np.asarray(glyph, np.float32) / 255.0
    rows, cols = np.indices(mask.shape)
    # pixel i's centre is at (2i + 1) / side - 1 in grid_sample's align_corners=False coordinates
    cy, cx = ((2 * (idx * mask).sum() / mask.sum() + 1) / side - 1 for idx in (rows, cols))
    mask.setflags(write=False)
    return mask, float(cx), float(cy)


def colourise(gray_images: np.ndarray, colour_index: np.ndarray) -> np.ndarray:
    """Tint white-on-black images: pixel value scales the colour, so strokes take it and black stays black.

    gray_images: (N, H, W) or (N, H, W, 1) uint8. colour_index: (N,) indices into ``GLYPH_COLOURS``.
    Returns (N, H, W, 3) uint8; a 255 pixel becomes exactly the colour.
    """
    gray = np.asarray(gray_images)
    if gray.ndim == 4 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 3 or gray.dtype != np.uint8:
        raise ConfigError(f"colourise: got {gray.dtype} images of shape {gray.shape}. Fix: pass uint8 (N, H, W)")
    index = np.asarray(colour_index)
    if index.shape != (len(gray),) or not np.issubdtype(index.dtype, np.integer):
        raise ConfigError(
            f"colourise: colour_index has shape {index.shape} and dtype {index.dtype}. "
            f"Fix: pass {len(gray)} integer indices, one per image"
        )
    palette = np.array(list(GLYPH_COLOURS.values()), np.uint32)
    if len(index) and (index.min() < 0 or index.max() >= len(palette)):
        bad = index[(index < 0) | (index >= len(palette))][0]
        raise ConfigError(f"colourise: colour index {bad} out of range. Fix: use 0..{len(palette) - 1}")
    # a (colour, value) -> RGB lookup table: 10x faster than per-pixel integer arithmetic
    values = np.arange(256, dtype=np.uint32)[None, :, None]
    lut = ((values * palette[:, None, :] + 127) // 255).astype(np.uint8)
    return lut[index[:, None, None], gray]


def _check_args(n: int, characters: Sequence[str], size: int, fonts: Sequence[str] | None) -> list[str]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"glyphs: n={n!r} is not a positive integer. Fix: ask for at least 1 image")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ConfigError(f"glyphs: size={size!r} is too small. Fix: use an integer size >= 8 (e.g. 28)")
    chars = list(characters)
    if not chars:
        raise ConfigError("glyphs: characters='' is empty. Fix: pass e.g. characters='0123456789'")
    for c in chars:
        if not isinstance(c, str) or len(c) != 1:
            raise ConfigError(f"glyphs: character {c!r} is not a single character. Fix: one per class")
    if len(set(chars)) != len(chars):
        raise ConfigError(f"glyphs: characters {''.join(chars)!r} repeat a character. Fix: list each once")
    for f in fonts if fonts is not None else ():
        if f not in GLYPH_FONTS:
            raise ConfigError(f"glyphs: unknown font {f!r}. Fix: choose from {', '.join(GLYPH_FONTS)}")
    if fonts is not None and not fonts:
        raise ConfigError(f"glyphs: fonts is empty. Fix: pass None or some of {', '.join(GLYPH_FONTS)}")
    return chars


def glyphs(
    n: int,
    *,
    seed: int = 0,
    characters: str | Sequence[str] = "0123456789",
    size: int = 28,
    coloured: bool = False,
    fonts: Sequence[str] | None = None,
    jitter: bool = True,
) -> LabeledImages:
    """``n`` white-on-black glyphs, centred by mass like MNIST; the same arguments give identical bytes.

    Classes are balanced (cycled, then shuffled). Per image: a font (among ``fonts`` that have the
    character), a stroke level, and with ``jitter`` an affine warp (rotation +-15 deg, scale 0.8-1.1,
    shear +-0.2, shift +-2 px at 28 px). ``coloured`` tints each image with a random
    ``GLYPH_COLOURS`` entry; the grayscale content is the same as with ``coloured=False``.
    attrs: 'font' (index into ``GLYPH_FONTS``), 'stroke' (0..2), 'colour' (when coloured).
    """
    chars = _check_args(n, characters, size, fonts)
    names = GLYPH_FONTS if fonts is None else dict.fromkeys(fonts)
    font_ids = [GLYPH_FONTS.index(f) for f in names]
    usable = [[i for i in font_ids if _has_glyph(GLYPH_FONTS[i], c)] for c in chars]
    for c, ids in zip(chars, usable, strict=True):
        if not ids:
            raise ConfigError(
                f"glyphs: character {c!r} is in none of the fonts {[GLYPH_FONTS[i] for i in font_ids]}. "
                f"Fix: drop it from characters or use other fonts of {GLYPH_FONTS}"
            )

    rng = np.random.default_rng(seed)
    n = int(n)
    labels = rng.permutation(np.arange(n) % len(chars))
    # a font per image among those having its character: a uniform draw scaled to each list's length
    pick = rng.random(n)
    font = np.empty(n, np.int64)
    for k, ids in enumerate(usable):
        font[labels == k] = np.asarray(ids)[(pick[labels == k] * len(ids)).astype(np.int64)]
    stroke = rng.integers(0, STROKES, n)
    if jitter:
        angle = np.deg2rad(rng.uniform(-15, 15, n))
        scale = rng.uniform(0.8, 1.1, n)
        shear = rng.uniform(-0.2, 0.2, n)
        shift = rng.uniform(-2, 2, (n, 2)) * size / 28
    else:
        angle, scale, shear, shift = np.zeros(n), np.ones(n), np.zeros(n), np.zeros((n, 2))

    # forward map (glyph -> image) in [-1, 1] coordinates: A = rotation @ shear @ scale, then shift
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shr = np.zeros((n, 2, 2))
    shr[:, 0, 0] = shr[:, 1, 1] = 1
    shr[:, 0, 1] = shear
    inv = np.linalg.inv(rot @ shr * scale[:, None, None])

    keys = np.stack([font, labels, stroke], 1)
    unique, which = np.unique(keys, axis=0, return_inverse=True)
    masks, centres = [], []
    for f, lab, s in unique:
        mask, cx, cy = _glyph_mask(GLYPH_FONTS[f], chars[lab], int(s), int(size))
        masks.append(mask)
        centres.append((cx, cy))
    masks_t = torch.from_numpy(np.stack(masks))
    # grid_sample wants, for each output point, its source point: inv @ (out - shift) + centre of mass
    offset = np.asarray(centres)[which.ravel()] - (inv @ (shift * 2 / size)[..., None])[..., 0]
    theta = torch.from_numpy(np.concatenate([inv, offset[..., None]], 2)).float()
    which_t = torch.from_numpy(which.ravel())

    images = np.empty((n, size, size), np.uint8)
    with torch.no_grad():
        for start in range(0, n, _BATCH):
            stop = min(start + _BATCH, n)
            src = masks_t[which_t[start:stop]].unsqueeze(1)
            shape = [stop - start, 1, 2 * size, 2 * size]
            grid = F.affine_grid(theta[start:stop], shape, align_corners=False)
            out = F.avg_pool2d(F.grid_sample(src, grid, align_corners=False), 2)
            images[start:stop] = out[:, 0].mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()

    attrs = {"font": font, "stroke": stroke.astype(np.int64)}
    if coloured:
        attrs["colour"] = rng.integers(0, len(GLYPH_COLOURS), n)
        return LabeledImages(colourise(images, attrs["colour"]), labels, chars, "colored_glyphs", attrs)
    return LabeledImages(images[..., None], labels, chars, "glyphs", attrs)


_SPLITS = {"train": (0, 20_000), "test": (1, 5_000)}


def glyph_dataset(
    split: str = "train",
    *,
    coloured: bool = False,
    n: int | None = None,
    seed: int = 0,
    characters: str | Sequence[str] = "0123456789",
    size: int = 28,
    fonts: Sequence[str] | None = None,
) -> LabeledImages:
    """The fixed "glyphs" / "colored_glyphs" train/test sets the dataset catalog serves.

    Each split draws from its own seed derived from (``seed``, split), so the splits are independent
    samples; jitter is always on, which makes an identical train and test image practically impossible.
    """
    if split not in _SPLITS:
        raise ConfigError(f"glyph_dataset: unknown split {split!r}. Fix: use 'train' or 'test'")
    key, default_n = _SPLITS[split]
    split_seed = int(np.random.SeedSequence([int(seed), key]).generate_state(1)[0])
    return glyphs(
        default_n if n is None else n,
        seed=split_seed,
        characters=characters,
        size=size,
        coloured=coloured,
        fonts=fonts,
    )
