"""Reconstruction detectors for windows of multivariate series: ``series_ae`` and ``series_gpt2``.

A window is a one-channel image (1, F, T) (see ``data.timeseries``). Both detectors reconstruct it
from normal data and are linearly decomposable in the most literal way (AR-Pro, Def. 2.1 and
Example 2.2): alpha[f, t] = (x^[f, t] - x[f, t])^2 per feature and step, beta = 0, and the raw score
is sum(alpha). ``score`` = 1 - exp(-raw / s0), with s0 the mean raw score of the normal training
windows: bounded, differentiable, and in the same order as the raw score.

- ``series_ae``: a 1-D convolutional autoencoder with a 4x bottleneck (the small baseline);
- ``series_gpt2``: the paper's detector in spirit: the first layers of a GPT-2 stack (built from a
  ``transformers.GPT2Config``, randomly initialised and trained here; ``trunk_weights`` = a local
  folder or hub id loads pretrained GPT-2 and keeps its first 6 blocks, attention and MLP frozen as in
  "One Fits All"), reconstructing each step from the steps before it (``nets.series``).

The networks see the window through a soft clip, c tanh(x / c) with c = 5 normal standard
deviations, while alpha compares the reconstruction with x itself. A sensor jumping to 250 std (SKAB's
rotor imbalance after a quiet start) would otherwise be copied through by the network's nearly linear
response: alpha would stay small exactly where the anomaly is, omega would miss it, and the repair
would leave it in place (measured on skab/other with ``series_ae``: guided TNR 0.77 and M_omega_bar
+48,000 without the clip; 1.00 and -0.3 with it, AuROC 0.865 -> 0.874).

Both train with AdamW (AR-Pro's optimiser) on the library's epoch recipe (``training.run_epochs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import radial_log_odds
from anomalens.detectors.registry import register
from anomalens.detectors.training import TrainConfig, run_epochs
from anomalens.device import prepare_cpu, resolve_device
from anomalens.nets.series import GPT2Reconstructor, SeriesConvAE, load_pretrained_gpt2

SERIES_DETECTORS = ("series_ae", "series_gpt2")


class SeriesReconstruction(Detector):
    """The shared part: decomposition, bounded score, training. Subclasses build ``self.net``, which maps
    (B, F, T) to a reconstruction of the same shape."""

    series = True  # trains on windows of series; image detectors do not (``training_run`` checks)
    net: nn.Module

    def __init__(self, image_shape: tuple[int, int, int], input_clip: float = 5.0):
        super().__init__()
        if len(image_shape) != 3 or image_shape[0] != 1:
            raise ValueError(f"a series detector takes windows of shape (1, features, steps), got {tuple(image_shape)}")
        if not 0 < input_clip <= 1e6:
            raise ValueError(f"input_clip must be positive, got {input_clip}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.input_clip = float(input_clip)
        self.register_buffer("score_scale", torch.ones(()))
        self.history: list[dict[str, float]] = []

    def reconstruct(self, x: Tensor) -> Tensor:
        """(B, 1, F, T) -> its reconstruction, same shape, from the soft-clipped window."""
        c = self.input_clip
        return self.net(c * torch.tanh(x[:, 0] / c))[:, None]

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        alpha = (x - self.reconstruct(x)).float().pow(2)[:, 0]
        return alpha, torch.zeros(len(x), dtype=alpha.dtype, device=alpha.device)

    def raw_score(self, x: Tensor) -> Tensor:
        return self.decompose(x)[0].sum((1, 2))

    def score(self, x: Tensor) -> Tensor:
        return -torch.expm1(-self.raw_score(x) / self.score_scale)

    def score_log_odds(self, x: Tensor) -> Tensor:
        return radial_log_odds(self.raw_score(x) / self.score_scale)

    def anomaly_map(self, x: Tensor) -> Tensor:
        return self.decompose(x)[0]

    def fit(self, data: ADData, cfg: TrainConfig | None = None) -> SeriesReconstruction:
        """Learn to reconstruct ``data.train_normal`` (mean squared error), then set the score scale s0."""
        cfg = cfg or TrainConfig(epochs=20, lr=1e-3, batch_size=64)
        normal = data.train_normal
        if tuple(normal.shape[1:]) != self.image_shape:
            raise ValueError(f"the detector was built for windows {self.image_shape}, the task has "
                             f"{tuple(normal.shape[1:])}. Fix: build it with data.image_shape")
        prepare_cpu()
        device = resolve_device(cfg.device)
        self.to(device)
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        batch = min(cfg.batch_size, len(normal))
        steps = max(1, len(normal) // batch)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)

        def step_loss(order: Tensor, step: int) -> Tensor:
            x = normal[order[step * batch:(step + 1) * batch]].to(device)
            return (x - self.reconstruct(x)).pow(2).mean()

        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        run_epochs(self, optimizer, cfg, len(normal), steps, step_loss, generator, folder)
        with torch.no_grad():
            self.score_scale.copy_(self.scores(normal[:1024]).mean().clamp_min(1e-8).to(device))
        return self


@register("series_ae")
class SeriesAE(SeriesReconstruction):
    """``SeriesAE((1, F, T))``: the 1-D convolutional autoencoder baseline."""

    name = "series_ae"

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...] = (32, 64), latent: int = 8,
                 input_clip: float = 5.0):
        super().__init__(image_shape, input_clip)
        self.widths, self.latent = tuple(int(w) for w in widths), int(latent)
        self.net = SeriesConvAE(self.image_shape[1], self.widths, self.latent)

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "image_shape": list(self.image_shape), "widths": list(self.widths),
                "latent": self.latent, "input_clip": self.input_clip}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], **options: Any) -> SeriesAE:
        return cls(image_shape)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeriesAE:
        return cls(tuple(config["image_shape"]), tuple(config["widths"]), config["latent"],
                   float(config.get("input_clip", 5.0)))


@register("series_gpt2")
class SeriesGPT2(SeriesReconstruction):
    """``SeriesGPT2((1, F, T))``: a randomly initialised GPT-2 stack of ``layers`` blocks (CPU size by
    default); ``SeriesGPT2.pretrained(shape, "gpt2")`` starts from GPT-2's first 6 blocks."""

    name = "series_gpt2"

    def __init__(self, image_shape: tuple[int, int, int], d_model: int = 64, layers: int = 2, heads: int = 4,
                 positions: int | None = None, frozen: bool = False, pretrained: str | None = None,
                 backbone: nn.Module | None = None, input_clip: float = 5.0):
        super().__init__(image_shape, input_clip)
        window = self.image_shape[2]
        self.net = GPT2Reconstructor(self.image_shape[1], window, d_model, layers, heads, positions, backbone)
        gpt = self.net.gpt2.config
        self.d_model, self.layers, self.heads, self.positions = gpt.n_embd, gpt.n_layer, gpt.n_head, gpt.n_positions
        self.frozen, self.pretrained = bool(frozen), pretrained
        if self.frozen:  # "One Fits All": pretrained attention and MLP stay fixed, norms and positions adapt
            for block in self.net.gpt2.h:
                block.attn.requires_grad_(False)
                block.mlp.requires_grad_(False)

    @classmethod
    def pretrained(cls, image_shape: tuple[int, int, int], source: str | Path, layers: int = 6) -> SeriesGPT2:
        """GPT-2 weights from ``source`` (a local folder or a hub id such as ``gpt2``)."""
        backbone = load_pretrained_gpt2(source, layers)
        return cls(image_shape, frozen=True, pretrained=str(source), backbone=backbone)

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "image_shape": list(self.image_shape), "d_model": self.d_model,
                "layers": self.layers, "heads": self.heads, "positions": self.positions, "frozen": self.frozen,
                "pretrained": self.pretrained, "input_clip": self.input_clip}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], trunk_weights: str | None = None,
               **options: Any) -> SeriesGPT2:
        return cls.pretrained(image_shape, trunk_weights) if trunk_weights else cls(image_shape)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeriesGPT2:
        return cls(tuple(config["image_shape"]), config["d_model"], config["layers"], config["heads"],
                   config["positions"], bool(config.get("frozen", False)), config.get("pretrained"),
                   input_clip=float(config.get("input_clip", 5.0)))
