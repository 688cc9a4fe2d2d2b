"""The autoencoders a latent counterfactual generator edits in: one trained here (small, per dataset,
cached and shared by every scenario and seed), or a pretrained diffusers ``AutoencoderKL`` (e.g.
Stable Diffusion's VAE) from a local folder or a hub id, for online users and large images.

``load_autoencoder(spec)``: ``spec`` is an anomalens autoencoder file (``.safetensors`` written by
``save_autoencoder``), or ``kl:<folder or hub id>`` for an ``AutoencoderKL``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalens.checkpoints import build_checked, metadata_json, read_weights, write_weights
from anomalens.config import from_dict
from anomalens.device import autocast, prepare_cpu, resolve_device
from anomalens.errors import ConfigError
from anomalens.loop import Loop
from anomalens.nets.latent import AutoencoderConfig, LatentAutoencoder

log = logging.getLogger(__name__)
FORMAT = "anomalens.autoencoder/1"


@dataclass
class AutoencoderTraining:
    """How to train the latent autoencoder: MSE reconstruction with Adam, a step budget."""

    network: dict[str, Any] = field(default_factory=dict)  # AutoencoderConfig fields (widths, latent_channels)
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    bf16: bool = False
    device: str = "auto"
    log_every: int = 100
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or not 0 < self.lr <= 1:
            raise ConfigError(f"autoencoder training needs steps >= 1, batch_size >= 2 and lr in (0, 1]; got "
                              f"{self.steps}, {self.batch_size}, {self.lr}")


def train_autoencoder(images: Tensor, cfg: AutoencoderTraining, folder: str | Path | None = None,
                      progress: bool = True) -> LatentAutoencoder:
    """A ``LatentAutoencoder`` trained on ``images`` (N, C, H, W) in [0, 1] on the library's Loop
    (resumable from ``folder``)."""
    prepare_cpu()
    device = resolve_device(cfg.device)
    network = from_dict(AutoencoderConfig, {"channels": images.shape[1], **cfg.network}, "autoencoder network")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LatentAutoencoder(network).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    loop = Loop("autoencoder", cfg.steps, modules={"ae": model}, optimizers={"adam": optimizer}, generator=generator,
                folder=folder, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, progress=progress,
                lr_at=lambda step: cfg.lr * (0.1 if step >= 0.8 * cfg.steps else 1.0))
    loop.resume()
    cast = autocast(device, cfg.bf16)
    model.train()

    def step_fn(step: int) -> dict[str, float]:
        x = images[torch.randint(len(images), (cfg.batch_size,), generator=generator)].to(device)
        with cast:
            loss = F.mse_loss(model(x).float(), x)
        value = loop.check(loss, "reconstruction loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"mse": value}

    try:
        loop.run(step_fn)
    finally:
        model.eval()
    model.history = loop.history
    return model


def save_autoencoder(model: LatentAutoencoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    meta = {"format": FORMAT, "config": json.dumps(asdict(model.config)), "extra": json.dumps(extra or {})}
    return write_weights(path, model.state_dict(), meta)


class KLAutoencoder(nn.Module):
    """A diffusers ``AutoencoderKL`` behind the ``encode``/``decode`` of ``LatentAutoencoder``: images in
    [0, 1], the mean of the latent distribution scaled by the model's ``scaling_factor``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)

    def encode(self, x: Tensor) -> Tensor:
        return self.vae.encode(x * 2 - 1).latent_dist.mean * self.scale

    def decode(self, z: Tensor) -> Tensor:
        return ((self.vae.decode(z / self.scale).sample.float() + 1) / 2).clamp(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def load_autoencoder(spec: str) -> nn.Module:
    """The autoencoder named by ``spec``: an anomalens autoencoder file, or ``kl:<folder or hub id>``."""
    if spec.startswith("kl:"):
        from diffusers import AutoencoderKL

        source = spec[3:]
        try:
            vae = AutoencoderKL.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load an AutoencoderKL from {source!r} ({str(e)[:200]}). Fix: pass a local "
                              "folder holding config.json and the weights (e.g. a download of "
                              "stabilityai/sd-vae-ft-mse), or a hub id when online") from e
        return KLAutoencoder(vae.eval())
    path = Path(spec)
    writer = "anomalens' latent autoencoder training (explain --method counterfactual --generator latent)"
    tensors, meta = read_weights(path, "latent autoencoder", writer, FORMAT)
    config = from_dict(AutoencoderConfig, metadata_json(meta, "config", path, writer), f"{path}: config")
    return build_checked(lambda: LatentAutoencoder(config), tensors, path).eval()


def latent_shape(autoencoder: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """(channels, h, w) of the latent of one image of ``image_shape``."""
    probe = torch.zeros(1, *image_shape)
    with torch.no_grad():
        return tuple(autoencoder.encode(probe).shape[1:])
