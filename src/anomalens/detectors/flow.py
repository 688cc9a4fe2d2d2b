"""A normalising-flow detector in the spirit of FastFlow (Yu et al. 2021), small enough to train on a CPU.

Frozen features f(x) (pixel patches or the first stages of an ImageNet ResNet-18) are mapped by a
fully convolutional 2-D flow z = g(f(x)) of affine coupling blocks to a standard normal at every
feature location. The anomaly score is the negative log-likelihood of the features,

    -log p(f) = sum over locations of -log N(z; 0, I)  -  sum of the coupling log-determinants,

which is linear in per-location terms (AR-Pro, Def. 2.1): alpha = the gaussian term of every
location, spread to input pixels, and beta = minus the log-determinant, one number per image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.registry import register
from anomalens.detectors.training import TrainConfig, run_epochs
from anomalens.device import prepare_cpu, resolve_device
from anomalens.maps import spread
from anomalens.nets.resnet import ResNetTrunk, load_trunk_weights

FEATURES = ("pixels", "resnet18")
_RESNET_STAGES = {4: 1, 8: 2, 16: 3}  # feature stride -> residual stages of ResNet-18
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Coupling(nn.Module):
    """One affine coupling block: channels ``change`` are scaled and shifted by a subnet that sees
    only channels ``keep``, so the block is invertible with a cheap (diagonal) log-determinant.

    The split is a fixed random one per block instead of a permutation of the tensor: the same
    mixing as "permute, couple, permute back", but z stays in feature order (identity at start)."""

    def __init__(self, channels: int, hidden: int, kernel: int, seed: int, clamp: float = 2.0):
        super().__init__()
        order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("keep", order[: channels // 2].sort().values)
        self.register_buffer("change", order[channels // 2:].sort().values)
        self.clamp = clamp
        pad = kernel // 2
        self.subnet = nn.Sequential(nn.Conv2d(len(self.keep), hidden, kernel, padding=pad), nn.ReLU(),
                                    nn.Conv2d(hidden, 2 * len(self.change), kernel, padding=pad))
        nn.init.zeros_(self.subnet[-1].weight)  # s = t = 0: the flow starts as the identity
        nn.init.zeros_(self.subnet[-1].bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y, log|det dy/dx| per location (B, h, w))."""
        s, t = self.subnet(x[:, self.keep]).chunk(2, dim=1)
        s = self.clamp * torch.tanh(s / self.clamp)  # bounded scales keep training stable
        y = x.index_copy(1, self.change, x[:, self.change] * s.exp() + t)
        return y, s.sum(1)


@register("flow")
class FlowDetector(Detector):
    """``FlowDetector(image_shape)``; ``fit(data)`` learns the density of ``data.train_normal`` only."""

    name = "flow"

    def __init__(self, image_shape: tuple[int, int, int], features: str = "pixels", downscale: int = 4,
                 steps: int = 8, hidden: int = 64, trunk_weights: str | Path | None = None):
        """``features="pixels"``: non-overlapping downscale x downscale patches (pixel_unshuffle);
        ``"resnet18"``: the ResNet-18 stages of stride ``downscale`` (4, 8 or 16), frozen, with ImageNet
        weights from the local file ``trunk_weights``. Without it the trunk stays random and ``fit``
        refuses to train; ``Detector.load`` builds it so, as the weights come with the saved detector."""
        super().__init__()
        self.image_shape, self.features, self.downscale = tuple(image_shape), features, int(downscale)
        self.steps, self.hidden = int(steps), int(hidden)
        channels = self.image_shape[0]
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if self.steps < 1 or self.downscale < 1:
            raise ValueError(f"steps and downscale must be >= 1, got {steps} and {downscale}")
        self._check_size(self.image_shape[-2:])
        self.trunk: ResNetTrunk | None = None
        if features == "pixels":
            dim = channels * self.downscale ** 2
        else:
            if self.downscale not in _RESNET_STAGES or channels not in (1, 3):
                raise ValueError(f"resnet18 features need 1 or 3 image channels and downscale 4, 8 or 16, got "
                                 f"{channels} channels and downscale {self.downscale}")
            self.trunk = ResNetTrunk(stages=_RESNET_STAGES[self.downscale])
            if trunk_weights is not None:
                if not Path(trunk_weights).is_file():
                    raise FileNotFoundError(f"ResNet-18 weights file {trunk_weights} not found. Fix: save "
                                            "torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict() "
                                            "there, or use features='pixels'")
                load_trunk_weights(self.trunk, trunk_weights)
            self.trunk.requires_grad_(False).eval()
            self.register_buffer("trunk_pretrained", torch.tensor(trunk_weights is not None))  # saved with it
            dim = self.trunk.out_channels
        if dim < 2:
            raise ValueError(f"a coupling flow needs >= 2 feature channels, got {dim}. Fix: downscale >= 2")
        self.dim = dim
        self.blocks = nn.ModuleList(Coupling(dim, self.hidden, 3 if i % 2 == 0 else 1, seed=i)
                                    for i in range(self.steps))  # 3x3 and 1x1 subnets alternate, as FastFlow
        self.register_buffer("score_mean", torch.zeros(()))
        self.register_buffer("score_std", torch.ones(()))
        self.history: list[dict[str, float]] = []

    def _check_size(self, size: tuple[int, ...]) -> None:
        h, w = size
        if h % self.downscale or w % self.downscale:
            raise ValueError(f"flow: image size {h}x{w} is not divisible by downscale={self.downscale}. Fix: resize "
                             f"the images to a multiple of {self.downscale} (e.g. image_size=) or pick a downscale "
                             "dividing both sides")

    def train(self, mode: bool = True) -> FlowDetector:
        super().train(mode)
        if self.trunk is not None:
            self.trunk.eval()  # frozen: keep the ImageNet batch-norm statistics
        return self

    # ------------------------------------------------------------------------------ the method

    def extract(self, x: Tensor) -> Tensor:
        """Frozen features (B, D, H / downscale, W / downscale) of images in [0, 1]."""
        self._check_size(x.shape[-2:])
        if self.trunk is None:
            return F.pixel_unshuffle(2 * x - 1, self.downscale)  # centred pixels, one patch per location
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                     for v in (_IMAGENET_MEAN, _IMAGENET_STD))
        return self.trunk((rgb - mean) / std)

    def flow(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(z, summed log-determinant per location (B, h, w)) of the feature map."""
        z, logdet = features, features.new_zeros(features.shape[0], *features.shape[-2:])
        for block in self.blocks:
            z, block_logdet = block(z)
            logdet = logdet + block_logdet
        return z, logdet

    def _parts(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(-log N(z; 0, I) per feature location (B, h, w), minus the total log-determinant (B,))."""
        z, logdet = self.flow(features)
        gaussian = 0.5 * z.pow(2).sum(1) + 0.5 * self.dim * math.log(2 * math.pi)
        return gaussian, -logdet.sum((1, 2))

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """alpha: the gaussian term of every feature location shared among its pixels (sums kept);
        beta: minus the log-determinant of the flow. ``alpha.sum((1, 2)) + beta == raw_score(x)``."""
        gaussian, beta = self._parts(self.extract(x))
        return spread(gaussian, tuple(x.shape[-2:])), beta

    def raw_score(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the features (nats): high for what the normals never showed."""
        gaussian, beta = self._parts(self.extract(x))
        return gaussian.sum((1, 2)) + beta

    def score(self, x: Tensor) -> Tensor:
        """sigmoid of the NLL standardised by the training normals: bounded, differentiable, 0.5 at
        their mean."""
        return torch.sigmoid(self.score_log_odds(x))

    def score_log_odds(self, x: Tensor) -> Tensor:
        return (self.raw_score(x) - self.score_mean) / self.score_std

    # --------------------------------------------------------------------------------- training

    def fit(self, data: ADData, cfg: TrainConfig | None = None) -> FlowDetector:
        """Maximum likelihood on ``data.train_normal``: Adam on the NLL per feature dimension (O(1))."""
        cfg = cfg or TrainConfig(epochs=20, lr=1e-3, weight_decay=1e-5, batch_size=32)
        normal = data.train_normal
        if not len(normal):
            raise ValueError(f"the flow learns the density of normal images; {data.name!r} has none in train_normal")
        if tuple(normal.shape[1:]) != self.image_shape:
            raise ValueError(f"detector built for images {self.image_shape}, data has {tuple(normal.shape[1:])}")
        if self.trunk is not None and not bool(self.trunk_pretrained):
            raise ValueError("features='resnet18' needs ImageNet weights to learn on. Fix: pass "
                             "trunk_weights=<local torchvision resnet18 file>")
        prepare_cpu()
        device = resolve_device(cfg.device)
        self.to(device)
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.eval()
        with torch.no_grad():  # the extractor is frozen: compute the features once
            features = torch.cat([self.extract(chunk.to(device)) for chunk in normal.split(256)])
        per_image = features[0].numel()
        optimizer = torch.optim.Adam(self.blocks.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        batch = min(cfg.batch_size, len(features))
        steps = max(1, len(features) // batch)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)

        def step_loss(order: Tensor, step: int) -> Tensor:
            chunk = features[order[step * batch:(step + 1) * batch]]
            if self.trunk is None:  # dequantise 8-bit pixels, or the density collapses onto their grid
                chunk = chunk + (torch.rand(chunk.shape, generator=generator) * (2 / 255)).to(device)
            gaussian, beta = self._parts(chunk)
            return (gaussian.sum((1, 2)) + beta).mean() / per_image

        run_epochs(self, optimizer, cfg, len(features), steps, step_loss, generator, folder)
        with torch.no_grad():
            gaussian, beta = zip(*(self._parts(chunk) for chunk in features.split(256)))
            raw = torch.cat(gaussian).sum((1, 2)) + torch.cat(beta)
            self.score_mean.copy_(raw.mean())
            self.score_std.copy_(raw.std().nan_to_num(1.0).clamp_min(1e-6))
        return self

    # ------------------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        return {"detector": "flow", "image_shape": list(self.image_shape), "features": self.features,
                "downscale": self.downscale, "steps": self.steps, "hidden": self.hidden}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], architecture: str = "small",
               trunk_weights: str | None = None, **options: Any) -> FlowDetector:
        """``architecture="resnet"``: frozen ResNet-18 features (needs ``trunk_weights``); else pixels."""
        return cls(image_shape, features="resnet18" if architecture == "resnet" else "pixels",
                   trunk_weights=trunk_weights)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlowDetector:
        return cls(tuple(config["image_shape"]), config["features"], config["downscale"], config["steps"],
                   config["hidden"])
