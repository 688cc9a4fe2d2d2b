"""AE-XAD: a semi-supervised autoencoder whose reconstruction error *is* the explanation
(Angiulli et al., ``ae-xad-semi-supervised-autoencoder-heatmaps.md``).

Training (eq. 1): normal pixels are reconstructed as they are, pixels inside the masks of a few
labelled anomalies are pushed towards F(x) (F(x) = v = 2 by default, or 1 - x), each term divided by
the largest possible error (F(x) - x)^2, anomalous pixels weighted by lambda_y = D / |y|_1.
Inference (sec. 4.3): e = (x - x~)^2, normalised error e~ = e / (F(x) - x)^2, an automatic gaussian
size k per image, heatmap h = F_k(e~), score S = ||e * F_k(e)|| (eq. 4), binary map at mean + std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import radial_log_odds
from anomalens.detectors.registry import register
from anomalens.detectors.training import TrainConfig, run_epochs
from anomalens.device import prepare_cpu, resolve_device
from anomalens.maps import auto_kernel_size, binarize, gaussian_filter
from anomalens.nets.autoencoder import ConvAutoencoder
from anomalens.nets.resnet import ResNetAutoencoder

_MIN_DENOMINATOR = 1e-2  # (F(x) - x)^2 vanishes for F = 1 - x at x = 0.5: keep the division finite


def _random_shift(image: Tensor, mask: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Move the masked region to a random place where it still fits in the image."""
    rows, cols = mask.nonzero(as_tuple=True)
    h, w = mask.shape
    dy = int(torch.randint(-int(rows.min()), h - int(rows.max()), (1,), generator=generator))
    dx = int(torch.randint(-int(cols.min()), w - int(cols.max()), (1,), generator=generator))
    return image.roll((dy, dx), dims=(-2, -1)), mask.roll((dy, dx), dims=(-2, -1))


def augment_anomalies(anomalies: Tensor, masks: Tensor, backgrounds: Tensor, generator: torch.Generator,
                      copies: int = 5, pastes: int = 10) -> tuple[Tensor, Tensor]:
    """Sec. 4.2: each anomaly ``copies`` times as it is, plus ``pastes`` cut-and-paste copies of its
    anomalous region (randomly rotated by a multiple of 90 degrees, flipped and moved) into random
    background images (normal ones; the anomalies themselves in the anomalies-only scenario)."""
    images, out_masks = [anomalies.repeat(copies, 1, 1, 1)], [masks.repeat(copies, 1, 1)]
    square = anomalies.shape[-1] == anomalies.shape[-2]
    for image, mask in zip(anomalies, masks):
        if mask.sum() == 0:
            continue
        for _ in range(pastes):
            img, m = image, mask
            if square:
                k = int(torch.randint(4, (1,), generator=generator))
                img, m = img.rot90(k, (-2, -1)), m.rot90(k, (-2, -1))
            if torch.rand(1, generator=generator) < 0.5:
                img, m = img.flip(-1), m.flip(-1)
            img, m = _random_shift(img, m, generator)
            background = backgrounds[int(torch.randint(len(backgrounds), (1,), generator=generator))]
            images.append((background * (1 - m) + img * m)[None])
            out_masks.append(m[None])
    return torch.cat(images), torch.cat(out_masks)


@register("aexad")
class AEXAD(Detector):
    """``AEXAD(image_shape)``; ``fit(data)`` needs ``data.train_anomalies`` and their masks."""

    def __init__(self, image_shape: tuple[int, int, int], target: str = "v", v: float = 2.0,
                 widths: tuple[int, ...] = (32, 64, 128), plain: bool = False, smooth: bool = True,
                 architecture: str = "small", trunk_weights: str | None = None):
        """``plain=True`` is the ablation baseline: an ordinary autoencoder trained on normal images
        only; ``smooth=False`` drops the gaussian filter from heatmap and score (paper, Table 1).
        ``architecture="resnet"`` is the paper's sec. 5.1 autoencoder on a ResNet-18 trunk, frozen
        with ImageNet weights from ``trunk_weights`` (a local file), else trained from scratch."""
        super().__init__()
        if target not in ("v", "negative"):
            raise ValueError(f"target must be 'v' (F(x) = v) or 'negative' (F(x) = 1 - x), got {target!r}")
        if target == "v" and 0 <= v <= 1:
            raise ValueError(f"v={v} lies inside the pixel range [0, 1]; choose v outside it, e.g. 2")
        self.image_shape, self.target, self.v, self.widths = tuple(image_shape), target, v, tuple(widths)
        self.plain, self.smooth = plain, smooth
        if architecture not in ("small", "resnet"):
            raise ValueError(f"architecture must be 'small' or 'resnet', got {architecture!r}")
        self.architecture = architecture
        self.autoencoder = ConvAutoencoder(image_shape[0], self.widths) if architecture == "small" else \
            ResNetAutoencoder(image_shape[0], trunk_weights)
        self.register_buffer("score_scale", torch.ones(()))
        self.history: list[dict[str, float]] = []

    name = "aexad"

    # ------------------------------------------------------------------------------ the method

    def transform(self, x: Tensor) -> Tensor:
        """F(x): where anomalous pixels are reconstructed to."""
        return torch.full_like(x, self.v) if self.target == "v" else 1 - x

    def _denominator(self, x: Tensor) -> Tensor:
        return (self.transform(x) - x).pow(2).clamp_min(_MIN_DENOMINATOR)

    def loss(self, x: Tensor, reconstruction: Tensor, masks: Tensor) -> Tensor:
        """Eq. (1) summed over the D pixel values of each image, averaged over the batch (eq. 2);
        the plain autoencoder's squared error when ``plain``."""
        if self.plain:
            return (x - reconstruction).pow(2).flatten(1).sum(1).mean()
        y = masks[:, None].expand_as(x)
        d = x[0].numel()
        ones = y.flatten(1).sum(1)
        lam = torch.where(ones > 0, d / ones.clamp_min(1), torch.ones_like(ones))[:, None, None, None]
        denominator = self._denominator(x)
        normal = (1 - y) * (x - reconstruction).pow(2) / denominator
        anomalous = lam * y * (self.transform(x) - reconstruction).pow(2) / denominator
        return (normal + anomalous).flatten(1).sum(1).mean()

    def error_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(e, e~): per-pixel squared error and normalised error, averaged over channels, (B, H, W)."""
        reconstruction = self.autoencoder(x)
        e = (x - reconstruction).pow(2)
        return e.mean(1), e.mean(1) if self.plain else (e / self._denominator(x)).mean(1)

    def explain_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Heatmaps h = F_k(e~), binary maps, the automatic k, the score S of every image and the
        per-pixel terms e * F_k(e) whose norm S is (eq. 4)."""
        e, e_norm = self.error_maps(x)
        ks = [auto_kernel_size(m.detach()) if self.smooth else 0 for m in e_norm]
        heat = torch.stack([gaussian_filter(m, k) for m, k in zip(e_norm, ks)])
        smoothed = torch.stack([gaussian_filter(m, k) for m, k in zip(e, ks)])
        terms = e * smoothed
        return {"heatmap": heat, "binary": binarize(heat.detach(), 1.0), "k": torch.tensor(ks),
                "score": terms.flatten(1).norm(dim=1), "terms": terms}

    def raw_score(self, x: Tensor) -> Tensor:
        return self.explain_maps(x)["score"]

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """S is a norm, so its *square* is the linear decomposition: alpha_i = (e_i F_k(e)_i)^2."""
        alpha = self.explain_maps(x)["terms"].pow(2)
        return alpha, torch.zeros(len(x), dtype=alpha.dtype, device=alpha.device)

    def decomposed_score(self, x: Tensor) -> Tensor:
        return self.raw_score(x).pow(2)

    def score(self, x: Tensor) -> Tensor:
        """1 - exp(-S / s0), s0 the mean score of the normal training images: bounded, differentiable."""
        return -torch.expm1(-self.raw_score(x) / self.score_scale)

    def score_log_odds(self, x: Tensor) -> Tensor:
        return radial_log_odds(self.raw_score(x) / self.score_scale)

    def anomaly_map(self, x: Tensor) -> Tensor:
        return self.explain_maps(x)["heatmap"]

    # --------------------------------------------------------------------------------- training

    def fit(self, data: ADData, cfg: TrainConfig | None = None) -> AEXAD:
        """Train with batches of 1/3 (augmented) anomalies and 2/3 normals; ``cfg.batch_size``
        normals and half as many anomalies per step (only anomalies in the D* scenario)."""
        cfg = cfg or TrainConfig(epochs=50, lr=1e-3, weight_decay=1e-4, batch_size=32)
        if self.plain:
            if not len(data.train_normal):
                raise ValueError(f"a plain autoencoder learns from normal images; {data.name!r} has none")
            empty = data.train_normal[:0]
            data = ADData(data.train_normal, data.test_x, data.test_y, train_anomalies=empty,
                          train_anomaly_masks=empty[:, 0], name=data.name)
        elif data.train_anomalies is None or data.train_anomaly_masks is None or not len(data.train_anomalies):
            raise ValueError(f"AE-XAD learns from labelled anomalies with masks; {data.name!r} has none. "
                             "Build the task with scenarios.defect_scenario")
        prepare_cpu()
        device = resolve_device(cfg.device)
        self.to(device)
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        normal = data.train_normal
        backgrounds = normal if len(normal) else data.train_anomalies
        anomalies, masks = augment_anomalies(data.train_anomalies, data.train_anomaly_masks.float(), backgrounds,
                                             generator) if len(data.train_anomalies) else (None, None)
        trainable = [p for p in self.parameters() if p.requires_grad]  # a pretrained trunk stays frozen
        optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        n_normal = min(cfg.batch_size, len(normal))
        n_anomalous = 0 if anomalies is None else (max(1, cfg.batch_size // 2) if n_normal else cfg.batch_size)
        steps = max(1, (len(normal) if n_normal else len(anomalies)) // (n_normal or n_anomalous))
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        blank = torch.zeros(n_normal, *normal.shape[-2:])

        def step_loss(order: Tensor, step: int) -> Tensor:
            x, y = normal[:0], blank[:0]
            if anomalies is not None:
                pick = torch.randint(len(anomalies), (n_anomalous,), generator=generator)
                x, y = anomalies[pick], masks[pick]
            if n_normal:
                x = torch.cat([normal[order[step * n_normal:(step + 1) * n_normal]], x])
                y = torch.cat([blank[: len(x) - len(y)], y])
            x, y = x.to(device), y.to(device)
            return self.loss(x, self.autoencoder(x), y)

        run_epochs(self, optimizer, cfg, len(normal), steps, step_loss, generator, folder)
        reference = normal if len(normal) else data.train_anomalies
        with torch.no_grad():
            self.score_scale.copy_(self.scores(reference[:512]).mean().clamp_min(1e-8).to(device))
        return self

    # ------------------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        return {"detector": "aexad", "image_shape": list(self.image_shape), "target": self.target, "v": self.v,
                "widths": list(self.widths), "plain": self.plain, "smooth": self.smooth,
                "architecture": self.architecture}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], architecture: str = "small",
               trunk_weights: str | None = None, **options: Any) -> AEXAD:
        return cls(image_shape, architecture=architecture, trunk_weights=trunk_weights)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AEXAD:
        return cls(tuple(config["image_shape"]), config["target"], config["v"], tuple(config["widths"]),
                   config.get("plain", False), config.get("smooth", True), config.get("architecture", "small"))
