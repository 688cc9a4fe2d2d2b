"""Low-pass and high-pass filtering of images in the Fourier domain (OE paper, appendices B-C).

Why: the paper asks which frequencies a detector relies on by filtering the images it sees. Its
definition of the cut-off, kept here, is a *magnitude* ``m`` counted in rows and columns of the
centred (``fftshift``-ed) 2-D spectrum:

- low pass (LPF): the first and last ``m`` rows and the first and last ``m`` columns are set to zero,
  so only the central ``(H - 2m) x (W - 2m)`` low frequencies remain (``m = 15`` on 32 px keeps 2 x 2);
- high pass (HPF): the central ``m x m`` block (DC included) is set to zero;
- ``m = 0`` leaves the image unchanged.

The inverse transform's real part is the filtered image. The library keeps images in [0, 1] (the
augmentations clamp there), so a low-passed image is clamped to [0, 1] (only ringing exceeds it), and
a high-passed image, which has lost its mean and swings around 0, is mapped by ``0.5 + x / 2`` before
clamping: an affine change a network absorbs, so the information content is what the paper's filter
leaves. Which images are filtered (``side``) is chosen per task: ``all`` (training normals, OE and test
images: the paper's set-up), ``test`` (the test images only: what a detector trained on full images
does when the test images lose a band) or ``oe`` (the OE images only: whether the OE images' band
carries what separates them from normal images).
"""

from __future__ import annotations

import torch
from torch import Tensor

from anomalens.data.addata import ADData
from anomalens.errors import ConfigError

FILTERS = ("low", "high")
SIDES = ("all", "test", "oe")


def check_cutoff(kind: str, cutoff: int, height: int, width: int) -> None:
    """Refuse a filter that is unknown or would remove every frequency of an H x W image."""
    if kind not in FILTERS:
        raise ConfigError(f"filter {kind!r} is unknown. Fix: one of {', '.join(FILTERS)} (or leave it out)")
    largest = (min(height, width) - 1) // 2 if kind == "low" else min(height, width)
    if not 0 <= cutoff <= largest:
        raise ConfigError(f"filter_cutoff {cutoff} is out of range for a {kind}-pass filter on {height}x{width} "
                          f"images: it must lie in [0, {largest}] (rows and columns of the spectrum removed; "
                          f"{'more leaves no frequency' if kind == 'low' else 'the spectrum has no more'}). "
                          f"Fix: e.g. {largest // 2}")


def spectrum_mask(kind: str, cutoff: int, height: int, width: int) -> Tensor:
    """The (H, W) 0/1 mask on the centred spectrum that the filter keeps."""
    check_cutoff(kind, cutoff, height, width)
    keep = torch.ones(height, width)
    if cutoff == 0:
        return keep
    if kind == "low":
        keep[:cutoff], keep[height - cutoff:] = 0, 0
        keep[:, :cutoff], keep[:, width - cutoff:] = 0, 0
    else:
        top, left = height // 2 - cutoff // 2, width // 2 - cutoff // 2  # the block holds DC at (H//2, W//2)
        keep[top:top + cutoff, left:left + cutoff] = 0
    return keep


def filter_images(images: Tensor, kind: str, cutoff: int, chunk: int = 2048) -> Tensor:
    """``images`` (N, C, H, W) in [0, 1] filtered per channel; the same shape, float32, in [0, 1]."""
    height, width = images.shape[-2:]
    keep = spectrum_mask(kind, cutoff, height, width)
    if cutoff == 0 or len(images) == 0:
        return images
    parts = []
    for x in images.split(chunk):  # bounded memory: complex spectra of 50k images would not fit
        spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1)) * keep
        filtered = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
        parts.append((filtered if kind == "low" else 0.5 + filtered / 2).clamp_(0, 1))
    return torch.cat(parts)


def filter_task(data: ADData, kind: str, cutoff: int, side: str = "all") -> ADData:
    """``data`` with the images of ``side`` filtered (see the module docstring); tensors are replaced,
    not changed in place, so cached arrays stay intact."""
    if side not in SIDES:
        raise ConfigError(f"filter_on {side!r} is unknown. Fix: one of {', '.join(SIDES)}")
    check_cutoff(kind, cutoff, *data.image_shape[1:])
    if side == "oe" and data.train_oe is None:
        raise ConfigError(f"{data.name}: filter_on oe, but the task has no OE images. Fix: set oe, or filter_on "
                          "all or test")
    if side in ("all", "test"):
        data.test_x = filter_images(data.test_x, kind, cutoff)
    if side in ("all", "oe") and data.train_oe is not None:
        data.train_oe = filter_images(data.train_oe, kind, cutoff)
    if side == "all":
        data.train_normal = filter_images(data.train_normal, kind, cutoff)
        if data.train_anomalies is not None:
            data.train_anomalies = filter_images(data.train_anomalies, kind, cutoff)
    data.name += f", {kind}-pass m={cutoff} on {side}"
    return data
