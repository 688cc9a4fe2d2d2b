"""FID with pluggable feature extractors: the FID Inception-v3 when its weights are on disk, else the oracle.

Why: the counterfactual paper judges how realistic counterfactual explanations (CEs) are by the FID
between CEs and normal samples, normalised by the FID between the anomalies and the normal samples
(appendix D): ``fid_n`` = 100% means "as realistic as the anomalies themselves". torchvision cannot
be imported here and nothing can be downloaded at run time, so Inception-v3 is written out below
(with torchvision's parameter names) and reads a local weights file. Three feature spaces exist, and
FIDs from different ones are not comparable, so every result names its space in ``fid_features``:

* ``inception-fid (pt_inception-2015-12-05)``: the network the papers' FIDs use (TTUR's TensorFlow
  graph, ported by pytorch-fid). It is torchvision's architecture with three changes: the average
  pools inside the Mixed blocks ignore the zero padding (``count_include_pad=False``, as TensorFlow
  does), the last block (Mixed_7c) max-pools in its pool branch, and the classifier has 1008 logits.
  Its weights are pytorch-fid's release file ``pt_inception-2015-12-05-6726825d.pth`` (URL in
  ``FID_WEIGHTS_URL``); its state dict has torchvision's names, no ``AuxLogits.*``, and
  ``fc.weight`` of shape (1008, 2048). pytorch-fid's source does not publish the file's full sha256;
  the ``6726825d`` in its name is, by torch.hub's naming convention, the sha256's first 8 hex digits,
  and the label says ``pt_inception-2015-12-05`` only for a file whose sha256 starts with them
  (other FID-shaped weights get ``inception-fid (other weights: NAME, sha256 XXXXXXXX)`` and a warning).
  Only this space gives ``fid_n`` values comparable with the papers.
* ``inception-torchvision (FILE)``: torchvision's ImageNet ``inception_v3`` weights. Same input
  handling, but other weights and average pools, so its FIDs differ from the papers'.
* ``classifier:HEADS``: the oracle classifier's penultimate features, the offline fallback.

Pass the weights file as ``--fid-features FILE`` or in ``$ANOMALENS_INCEPTION_WEIGHTS``; the variant
is read off the file's keys (``fc.weight`` with 1008 rows -> FID, 1000 rows or ``AuxLogits.*`` ->
torchvision) unless ``kind=`` says it. Input preprocessing is pytorch-fid's: grey images repeated to
3 channels (its loader converts to RGB), bilinear resize to 299 px (align_corners=False, no
antialiasing), then 2x - 1 to [-1, 1]; features are the 2048-d global average pool of Mixed_7c.
See docs/fid.md.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalens.errors import ConfigError, DataFormatError
from anomalens.metrics.oracle import LabelClassifier, WeightsNotFoundError

__all__ = ["ClassifierFeatures", "FeatureExtractor", "InceptionFeatures", "InceptionV3", "WeightsNotFoundError",
           "feature_extractor", "fid", "fid_n", "frechet_distance", "INCEPTION_ENV", "FID_WEIGHTS_FILE",
           "FID_WEIGHTS_URL", "KINDS", "detect_kind"]

INCEPTION_ENV = "ANOMALENS_INCEPTION_WEIGHTS"
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
FID_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its sha256's first 8 hex digits
FID_LOGITS = 1008  # the class count of TensorFlow's 2015 Inception graph (torchvision's has 1000)
KINDS = ("fid", "torchvision")
HOW_TO_GET_INCEPTION = (
    f"for FID comparable with the papers download pytorch-fid's {FID_WEIGHTS_FILE} ({FID_WEIGHTS_URL}) on a "
    f"machine with network access and copy it here; pass its path (--fid-features FILE) or set {INCEPTION_ENV}. "
    "torchvision's weights also load (FIDs then differ from the papers'): on a machine with torchvision run: "
    "import torch, torchvision; torch.save(torchvision.models.inception_v3(weights='IMAGENET1K_V1').state_dict(), "
    "'inception_v3.pth'). Either file may be converted to .safetensors. Offline fallback: "
    "ClassifierFeatures(oracle), the oracle classifier's features (FIDs then are not comparable to Inception FIDs)"
)


# --- Fréchet distance ----------------------------------------------------------------------------


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding-error negative eigenvalues -> 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet distance of two Gaussians.

    scipy is not a dependency, so tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)):
    the same eigenvalues, but of a symmetric PSD matrix, so no complex parts arise and singular
    covariances (fewer samples than dimensions) are fine. Should an eigen-decomposition still fail,
    eps * I is added to both covariances and it is retried, as pytorch-fid does.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataFormatError(None, f"Gaussian shapes differ: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/"
                              f"{sigma2.shape}", "compare features of the same extractor")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise DataFormatError(None, "means or covariances contain NaN or inf", "check the features for NaN/inf")
    try:
        cross = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        offset = np.eye(d) * eps
        cross = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    # a distance is >= 0; only rounding can push identical Gaussians a hair below
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * cross))


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    root = _psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def _gaussian(features: torch.Tensor | np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features,
                                                                                                      np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DataFormatError(None, f"{what}: expected features (N >= 2, d), got shape {f.shape}",
                              "pass at least 2 samples per set")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d); FID when the features are Inception's."""
    mu_a, sigma_a = _gaussian(features_a, "features_a")
    mu_b, sigma_b = _gaussian(features_b, "features_b")
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# --- feature extractors --------------------------------------------------------------------------


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images (N, C, H, W) in [0, 1] -> features (N, d); ``name`` says which space an FID was computed in."""

    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class ClassifierFeatures:
    """The oracle's penultimate features: the offline FID feature space (no download needed)."""

    def __init__(self, classifier: LabelClassifier, batch_size: int = 1024):
        self.classifier, self.batch_size = classifier, batch_size
        self.name = "classifier:" + ",".join(classifier.heads_spec)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x, batch_size=self.batch_size)


class BasicConv2d(nn.Module):
    """torchvision's unit: conv without bias, batch norm (eps 0.001), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


# The 3x3 stride-1 pools feeding the ``branch_pool`` convolution of the A, C and E blocks: the one
# place (besides the weights and the 1008 logits) where the FID network differs from torchvision's.
def _avg_pad_counted(x: torch.Tensor) -> torch.Tensor:
    """torchvision: border windows average over 9 cells, zero padding included."""
    return F.avg_pool2d(x, 3, stride=1, padding=1)


def _avg_pad_ignored(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow (so the FID network): border windows average over their real cells only."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max3(x: torch.Tensor) -> torch.Tensor:
    """The FID network's last block (Mixed_7c) max-pools here: a quirk of TF's 2015 graph, kept for comparability."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


BRANCH_POOLS = {"avg": _avg_pad_counted, "avg_no_pad": _avg_pad_ignored, "max": _max3}


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, c_in: int, pool_features: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool  # a key of BRANCH_POOLS; not a parameter, so the state dict is the same for every pool
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(BRANCH_POOLS[self.pool](x))], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: strided 3x3, strided double 3x3 and max-pool branches -> 384 + 96 + c_in."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1) of width c7 -> 768 channels."""

    def __init__(self, c_in: int, channels_7x7: int, pool: str = "avg"):
        super().__init__()
        c7 = channels_7x7
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(BRANCH_POOLS[self.pool](x))], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: strided 3x3, 7x7-then-strided-3x3 and max-pool branches -> 320 + 192 + c_in."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches -> 320 + 768 + 768 + 192 = 2048 channels."""

    def __init__(self, c_in: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                          self.branch_pool(BRANCH_POOLS[self.pool](x))], 1)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"Inception kind must be one of {KINDS}, got {kind!r}. Fix: pass kind='fid' for "
                          f"pytorch-fid's {FID_WEIGHTS_FILE}, kind='torchvision' for torchvision's weights, or "
                          "leave kind unset to read it off the weights file")
    return kind


class InceptionV3(nn.Module):
    """Inception-v3 up to the global average pool (pool3): (N, 3, H, W) in [-1, 1] -> (N, 2048).

    ``kind="torchvision"``: torchvision's network; module names equal torchvision's, so its state dict
    (minus ``AuxLogits.*`` and ``fc.*``, which FID does not use) loads with strict key matching.
    ``kind="fid"``: the FID network of TTUR / pytorch-fid (see the module docstring): pools that
    ignore padding, a max-pool in Mixed_7c and the 1008-logit ``fc``, kept so that pytorch-fid's
    weights file loads strictly (every key checked) and ``logits`` can be compared with TensorFlow's.
    """

    def __init__(self, kind: str = "torchvision"):
        super().__init__()
        self.kind = _check_kind(kind)
        pool = "avg_no_pad" if kind == "fid" else "avg"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32, pool=pool)
        self.Mixed_5c = InceptionA(256, pool_features=64, pool=pool)
        self.Mixed_5d = InceptionA(288, pool_features=64, pool=pool)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, pool=pool)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, pool=pool)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, pool=pool)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, pool=pool)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool=pool)
        self.Mixed_7c = InceptionE(2048, pool="max" if kind == "fid" else "avg")
        if kind == "fid":
            self.fc = nn.Linear(2048, FID_LOGITS)
        self.out_dim = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The FID network's 1008 class logits (dropout is inactive in eval mode, so fc(pool3))."""
        if self.kind != "fid":
            raise ConfigError("logits: the torchvision variant is built without its classifier. Fix: use "
                              "InceptionV3(kind='fid')")
        return self.fc(self(x))


# torchvision files carry classifier heads FID does not use; the FID file's fc is loaded (and checked)
_IGNORED_PREFIXES = {"torchvision": ("AuxLogits.", "fc."), "fid": ()}


def detect_kind(state: dict[str, torch.Tensor], source: Path | str | None = None) -> str:
    """Which variant a state dict holds, "fid" or "torchvision", read off its classifier keys.

    pytorch-fid's file has ``fc.weight`` of shape (1008, 2048) and no ``AuxLogits``; torchvision's has
    a 1000-row ``fc`` and ``AuxLogits.*``. An Inception trunk with neither (heads stripped) cannot be
    told apart: it is taken as torchvision's, as before this variant existed, with a warning. Anything
    else is taken as torchvision's too, and the strict key check then names what does not fit.
    """
    keys = {k.removeprefix("module."): v for k, v in state.items()}
    fc = keys.get("fc.weight")
    if fc is not None and fc.shape[0] == FID_LOGITS:
        return "fid"
    headless = fc is None and not any(k.startswith("AuxLogits.") for k in keys)
    if headless and "Mixed_7c.branch_pool.conv.weight" in keys:
        warnings.warn(f"{source if source is not None else '<state dict>'}: no classifier keys, so the Inception "
                      "variant cannot be told from the weights; assuming torchvision's. Pass kind='fid' if these "
                      "are pytorch-fid's weights", stacklevel=3)
    return "torchvision"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    fix = "save the state dict again as described: " + HOW_TO_GET_INCEPTION
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load / safetensors raise many unrelated types for a corrupt file
        raise DataFormatError(path, f"cannot read Inception-v3 weights ({type(e).__name__}: {e})", fix) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataFormatError(path, "does not hold a state dict (a mapping of names to tensors)", fix)
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d) of images in [0, 1], for FID.

    Input handling is pytorch-fid's: 1-channel images are repeated to 3 channels, resized bilinearly
    (align_corners=False) to ``resize`` px (299 as for FID) and scaled to [-1, 1] by 2x - 1. The
    same input suits torchvision's weights: ImageNet mean/std normalisation followed by
    ``transform_input=True`` (which torchvision sets with pretrained weights) reduces to (x - 0.5) / 0.5.

    ``InceptionFeatures(path)`` reads a state dict from a ``.pth``/``.pt`` (``torch.load(weights_only=True)``)
    or ``.safetensors`` file: pytorch-fid's FID weights or torchvision's ``inception_v3``, told apart
    by ``detect_kind`` unless ``kind`` is given. ``random_init=True`` builds an untrained network of
    ``kind`` (default torchvision; for tests only: its FIDs mean nothing). ``name`` is the label
    results carry as ``fid_features``.
    """

    def __init__(self, weights_path: str | Path | None = None, *, kind: str | None = None, random_init: bool = False,
                 batch_size: int = 50, resize: int = 299, seed: int = 0):
        if resize < 75:
            raise ConfigError(f"Inception-v3 needs inputs of at least 75 px, got resize={resize}")
        self.batch_size, self.resize = max(1, int(batch_size)), int(resize)
        path, state = None, None
        if not random_init:
            if weights_path is None:
                raise ConfigError(f"InceptionFeatures needs weights_path (or random_init=True for tests). Fix: "
                                  f"{HOW_TO_GET_INCEPTION}")
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise WeightsNotFoundError(f"{path}: Inception-v3 weights file not found. "
                                           f"Fix: {HOW_TO_GET_INCEPTION}")
            state = _read_state_dict(path)
        self.kind = _check_kind(kind) if kind is not None else (
            detect_kind(state, path) if state is not None else "torchvision")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = InceptionV3(self.kind).eval()
        self.source: Path | None = None
        self.name = f"inception-{self.kind} (random_init)"
        if state is not None:
            self.load_state_dict(state, source=path)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], kind: str | None = None,
                        **kwargs: Any) -> InceptionFeatures:
        """An extractor from an in-memory state dict of either variant (kind read off its keys if not given)."""
        kind = kind if kind is not None else detect_kind(state_dict)
        extractor = cls(random_init=True, kind=kind, **kwargs)
        extractor.load_state_dict(state_dict, source=None)
        return extractor

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], source: Path | None = None) -> None:
        """Strict load into this extractor's variant; names the source file and every kind of mismatch."""
        where = source if source is not None else "<state dict>"
        state = {k.removeprefix("module."): v for k, v in state_dict.items()}
        fc = state.get("fc.weight")
        if self.kind == "torchvision" and fc is not None and fc.shape[0] == FID_LOGITS:
            # dropping fc would load it silently into the wrong pools
            raise DataFormatError(where, f"holds the FID Inception's weights (fc.weight {tuple(fc.shape)}) but "
                                  "kind='torchvision' was asked for", "leave kind unset or pass kind='fid'")
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES[self.kind])}
        own = self.net.state_dict()
        for key, buffer in own.items():
            # weights saved before PyTorch 0.4.1 (both reference files) have no batch counters
            if key.endswith(".num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(buffer)
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong_shape:
            what = (f"pytorch-fid FID Inception weights ({FID_WEIGHTS_FILE} naming)" if self.kind == "fid"
                    else "torchvision inception_v3 weights")
            problem = (f"not {what}: {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected "
                       f"{unexpected[:3]}, {len(wrong_shape)} of wrong shape {wrong_shape[:3]}")
            raise DataFormatError(where, problem, HOW_TO_GET_INCEPTION)
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        self.source = source
        self.name = self._label(source)

    def _label(self, source: Path | None) -> str:
        """``fid_features``: the variant, and which weights (the FID file is recognised by its sha256 prefix)."""
        if source is None:
            return f"inception-{self.kind} (state_dict)"
        if self.kind == "torchvision":
            return f"inception-torchvision ({source.name})"
        digest = _sha256(source)
        if digest.startswith(FID_SHA256_PREFIX):
            return "inception-fid (pt_inception-2015-12-05)"
        warnings.warn(f"{source}: FID Inception weights whose sha256 ({digest[:8]}...) is not that of pytorch-fid's "
                      f"{FID_WEIGHTS_FILE}: FIDs are not comparable with the papers'. Fix: use the released file "
                      f"as downloaded ({FID_WEIGHTS_URL})", stacklevel=4)
        return f"inception-fid (other weights: {source.name}, sha256 {digest[:8]})"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] NCHW with 1 or 3 channels -> 3 x resize x resize in [-1, 1] (see the class docstring)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DataFormatError(None, f"expected images (N, 1 or 3, H, W), got {tuple(x.shape)}",
                                  "pass grey or RGB NCHW images in [0, 1]")
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x * 2 - 1

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        parts = [self.net(self.preprocess(x[i:i + self.batch_size]).to(device)).cpu()
                 for i in range(0, len(x), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.net.out_dim)


def feature_extractor(name_or_path: str | Path | None = None,
                      fallback: LabelClassifier | None = None) -> FeatureExtractor:
    """Inception-v3 features if a weights file is given (or in $ANOMALENS_INCEPTION_WEIGHTS) and present,
    else the oracle's features; ``"classifier"`` asks for the oracle explicitly.

    The file's keys choose the variant (pytorch-fid's FID network or torchvision's; see ``detect_kind``).
    A given but absent weights file falls back to the oracle with a warning (the result's
    ``fid_features`` then says "classifier:..."); with no fallback either, a ConfigError explains both ways.
    """
    if name_or_path is not None and str(name_or_path) == "classifier":
        if fallback is None:
            raise ConfigError("feature extractor 'classifier' asked for, but no oracle classifier was given. "
                              "Fix: train one with anomalens.metrics.oracle.train_oracle")
        return ClassifierFeatures(fallback)
    if name_or_path is None or str(name_or_path) in ("", "inception"):
        name_or_path = os.environ.get(INCEPTION_ENV) or None
    if name_or_path is not None:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return InceptionFeatures(path)
        if fallback is not None:
            warnings.warn(f"{path}: Inception-v3 weights not found; FID uses the oracle classifier's features "
                          "instead", stacklevel=2)
    if fallback is not None:
        return ClassifierFeatures(fallback)
    where = f"{name_or_path} does not exist" if name_or_path is not None else f"no path given and {INCEPTION_ENV} unset"
    raise ConfigError(f"no FID feature extractor: Inception-v3 weights: {where}, and no oracle classifier as "
                      f"fallback. Fix: {HOW_TO_GET_INCEPTION}")


def fid_n(extractor: FeatureExtractor, counterfactuals: torch.Tensor, normal: torch.Tensor,
          anomalies: torch.Tensor) -> dict[str, Any]:
    """FID(CEs, normal) / FID(anomalies, normal): 1.0 (100%) = the CEs are as realistic as the anomalies.

    Lower is better. NaN if the anomalies' FID is 0 (then nothing can be normalised).
    """
    f_normal = extractor(normal)
    fid_cf = fid(extractor(counterfactuals), f_normal)
    fid_anomalies = fid(extractor(anomalies), f_normal)
    ratio = fid_cf / fid_anomalies if fid_anomalies > 0 else float("nan")
    return {"fid_n": ratio, "fid_cf": fid_cf, "fid_anomalies": fid_anomalies, "fid_features": extractor.name}
