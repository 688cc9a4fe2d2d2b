"""FID with pluggable feature extractors: Inception-v3 pool3 when its weights are on disk, else the oracle.

Why: the counterfactual paper judges how realistic counterfactual explanations (CEs) are by the FID
between CEs and normal samples, normalised by the FID between the anomalies and the normal samples
(appendix D): ``fid_n`` = 100% means "as realistic as the anomalies themselves". The usual feature
space is Inception-v3's 2048-d pool3 output; torchvision cannot be imported here and nothing can be
downloaded at run time, so the network is written out below with torchvision's parameter names and
reads a locally saved torchvision ``inception_v3`` ImageNet state dict. Without one, the oracle
classifier's penultimate features (``ClassifierFeatures``) are the offline fallback; every result
records which features it used (``fid_features``), as the two kinds of FID are not comparable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalens.errors import ConfigError, DataFormatError
from anomalens.metrics.oracle import LabelClassifier, WeightsNotFoundError

__all__ = ["ClassifierFeatures", "FeatureExtractor", "InceptionFeatures", "InceptionV3", "WeightsNotFoundError",
           "feature_extractor", "fid", "fid_n", "frechet_distance", "INCEPTION_ENV"]

INCEPTION_ENV = "ANOMALENS_INCEPTION_WEIGHTS"
HOW_TO_GET_INCEPTION = (
    "on a machine with torchvision run: import torch, torchvision; torch.save(torchvision.models.inception_v3("
    "weights='IMAGENET1K_V1').state_dict(), 'inception_v3.pth') and copy the file here (or convert it to "
    f".safetensors); pass its path or set {INCEPTION_ENV}. Offline fallback: ClassifierFeatures(oracle), "
    "the oracle classifier's features (FIDs then are not comparable to Inception FIDs)"
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


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
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
                          self.branch_pool(_avg3(x))], 1)


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

    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
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
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


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

    def __init__(self, c_in: int):
        super().__init__()
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
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(_avg3(x))], 1)


class InceptionV3(nn.Module):
    """Inception-v3 up to the global average pool (pool3): (N, 3, 299, 299) in [-1, 1] -> (N, 2048).

    Module names equal torchvision's, so its state dict (minus ``AuxLogits.*`` and ``fc.*``, which
    FID does not use) loads with strict key matching.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.out_dim = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


_IGNORED_PREFIXES = ("AuxLogits.", "fc.")


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


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d) of images in [0, 1], for FID.

    Input handling: 1-channel images are repeated to 3 channels, resized bilinearly
    (align_corners=False) to ``resize`` px (299 as for FID) and scaled to [-1, 1] by 2x - 1. That is
    exactly what torchvision's ImageNet pipeline feeds the first convolution: ImageNet mean/std
    normalisation followed by ``transform_input=True`` (which torchvision sets with pretrained
    weights) reduces to (x - 0.5) / 0.5.

    ``InceptionFeatures(path)`` reads a torchvision ``inception_v3`` state dict from a ``.pth``/``.pt``
    (``torch.load(weights_only=True)``) or ``.safetensors`` file; ``random_init=True`` builds an
    untrained network (for tests only: its FIDs mean nothing).
    """

    def __init__(self, weights_path: str | Path | None = None, *, random_init: bool = False,
                 batch_size: int = 50, resize: int = 299, seed: int = 0):
        if resize < 75:
            raise ConfigError(f"Inception-v3 needs inputs of at least 75 px, got resize={resize}")
        self.batch_size, self.resize = max(1, int(batch_size)), int(resize)
        path = None
        if not random_init:
            if weights_path is None:
                raise ConfigError(f"InceptionFeatures needs weights_path (or random_init=True for tests). Fix: "
                                  f"{HOW_TO_GET_INCEPTION}")
            path = Path(weights_path).expanduser()
            if not path.is_file():
                raise WeightsNotFoundError(f"{path}: Inception-v3 weights file not found. "
                                           f"Fix: {HOW_TO_GET_INCEPTION}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = InceptionV3().eval()
        self.source: Path | None = None
        self.name = "inception_v3:random_init"
        if path is not None:
            self.load_state_dict(_read_state_dict(path), source=path)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], **kwargs: Any) -> InceptionFeatures:
        """An extractor from an in-memory torchvision-named state dict (``AuxLogits.*``/``fc.*`` ignored)."""
        extractor = cls(random_init=True, **kwargs)
        extractor.load_state_dict(state_dict, source=None)
        return extractor

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], source: Path | None = None) -> None:
        """Strict load after dropping the classifier heads; names the source file on a mismatch."""
        state = {k.removeprefix("module."): v for k, v in state_dict.items()}
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        for key, buffer in self.net.state_dict().items():
            # weights saved before PyTorch 0.4.1 (as torchvision's original file) have no batch counters
            if key.endswith(".num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(buffer)
        own = self.net.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong_shape:
            problem = (f"not torchvision inception_v3 weights: {len(missing)} missing keys {missing[:3]}, "
                       f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong_shape)} of wrong shape "
                       f"{wrong_shape[:3]}")
            raise DataFormatError(source if source is not None else "<state dict>", problem, HOW_TO_GET_INCEPTION)
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        self.source = source
        self.name = f"inception_v3:{source.name}" if source is not None else "inception_v3:state_dict"

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

    A given but absent weights file falls back to the oracle with a warning (the result's
    ``fid_features`` then says "classifier:..."); with no fallback either, a ConfigError explains both ways.
    """
    import warnings

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
