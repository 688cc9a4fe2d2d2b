"""The user's own images, made to fit a trained detector: one policy for ``predict`` and ``serve``.

A detector takes images of one shape (C, H, W). An image of another size is resized (bicubic) and
one of another channel count converted (RGB -> grayscale by luminance, grayscale -> RGB by copying
the channel; an alpha channel is dropped), and the conversion is reported in words naming the
file, because it changes what the detector sees. Two cases are refused instead, since the result
would mean nothing: an aspect ratio more than ``MAX_ASPECT`` times off the detector's (resizing would
squash the content), and a side below ``MIN_SIDE`` pixels.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalens.data.formats import IMAGE_SUFFIXES, read_image
from anomalens.errors import DataFormatError

MAX_ASPECT = 2.0
MIN_SIDE = 4
NORMAL_CLASSES = ("good", "normal")  # class sub-folders holding normal images (AuROC: these vs the rest)


@dataclass
class ImageFile:
    """One input file and, in a class-folder layout, its class (the sub-folder's name)."""

    path: Path
    name: str  # relative to the input folder, with '/' separators
    label: str | None = None

    @property
    def is_normal(self) -> bool | None:
        return None if self.label is None else self.label.lower() in NORMAL_CLASSES


def list_images(folder: str | Path) -> list[ImageFile]:
    """The image files of ``folder``: directly inside it (flat), or in one sub-folder per class.
    Hidden files and files without an image suffix are skipped; an empty result is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, "is not a folder", "pass --images FOLDER, a folder of images (flat, or one "
                              "sub-folder per class such as good/ and defect/)")

    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in IMAGE_SUFFIXES)

    flat = images(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if flat and classes:
        raise DataFormatError(folder, f"holds both images and sub-folders ({', '.join(d.name for d in classes[:3])})",
                              "put every image into a class sub-folder, or keep the folder flat")
    found = [ImageFile(p, p.name) for p in flat]
    for d in classes:
        found += [ImageFile(p, f"{d.name}/{p.name}", d.name) for p in images(d)]
    if not found:
        raise DataFormatError(folder, f"holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                              "put images into it, directly or in one sub-folder per class")
    return found


def conform(image: np.ndarray, shape: tuple[int, int, int], name: str) -> tuple[torch.Tensor, str | None]:
    """An (H, W, C) uint8 image as a (C, H, W) float tensor of ``shape``, and a note saying what was
    converted (None when nothing was); images that cannot be converted meaningfully are refused."""
    c, h, w = shape
    ih, iw, ic = image.shape
    if min(ih, iw) < MIN_SIDE:
        raise DataFormatError(name, f"image is {iw}x{ih} pixels, too small to judge",
                              f"use an image of at least {MIN_SIDE}x{MIN_SIDE} pixels, ideally {w}x{h}")
    squash = (iw / ih) / (w / h)
    if max(squash, 1 / squash) > MAX_ASPECT:
        g = math.gcd(w, h)
        raise DataFormatError(name, f"image is {iw}x{ih} pixels but the detector sees {w}x{h}: resizing would "
                              f"distort it more than {MAX_ASPECT:g}x", f"crop it to about the aspect ratio "
                              f"{w // g}:{h // g} (width:height) around the part to check")
    notes = []
    pil = Image.fromarray(image[..., 0] if ic == 1 else image, "L" if ic == 1 else "RGB")
    if ic != c:
        pil = pil.convert("L" if c == 1 else "RGB")
        notes.append("RGB converted to grayscale" if c == 1 else "grayscale converted to RGB")
    if (ih, iw) != (h, w):
        pil = pil.resize((w, h), Image.BICUBIC)
        notes.append(f"resized from {iw}x{ih} to {w}x{h}")
    array = np.asarray(pil)
    array = array[..., None] if array.ndim == 2 else array
    tensor = torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(255.0)
    return tensor, (f"{name}: {', '.join(notes)} for the detector" if notes else None)


def load_image(path: str | Path, shape: tuple[int, int, int], name: str | None = None
               ) -> tuple[torch.Tensor, str | None]:
    """Read one image file and ``conform`` it; unreadable files raise ``DataFormatError`` naming them."""
    return conform(read_image(path), shape, name or str(path))


def decode_image_bytes(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded file's bytes as an (H, W, C) uint8 image, with the same checks as a file on disk,
    refusing images of more than ``max_pixels`` pixels before decoding them."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception as e:  # noqa: BLE001 - whatever Pillow raises on non-images, the answer is the same
        raise DataFormatError(name, f"cannot be read as an image ({type(e).__name__})",
                              f"upload a PNG, JPEG, BMP, TIFF or WebP image ({', '.join(IMAGE_SUFFIXES)})") from None
    if width * height > max_pixels:
        raise DataFormatError(name, f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
                              f"{max_pixels:,}", "downscale or crop it first")
    with tempfile.TemporaryDirectory(prefix="anomalens-upload-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        try:
            return read_image(path)
        except DataFormatError as e:  # name the upload, not the temporary file
            raise DataFormatError(name, e.problem, e.fix) from None
