"""A DDPM of the normal training images, the prior with which AR-Pro repairs anomalous regions.

As in AR-Pro, the noise predictor is a HuggingFace ``UNet2DModel`` trained with AdamW (lr 1e-4) to
predict the noise added to normal images (Ho et al. 2020, epsilon objective, linear betas 1e-4..0.02).
The UNet is always built from a config: nothing is downloaded.

Two spaces: images enter and leave the public API in [0, 1], like everywhere in anomalens, but the
diffusion itself runs in [-1, 1] ("model space", where the forward process ends in N(0, I)).
``to_model`` / ``from_model`` convert; ``predict_noise`` and ``add_noise`` take model-space tensors,
because the repair module runs its own reverse loop with them and ``alphas_cumprod``.

An exponential moving average (EMA) of the weights is kept next to the trained UNet and every
inference call (``predict_noise``, ``sample``) uses it: after a short CPU training the raw weights
still jump from step to step, and their average denoises markedly better.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalens.checkpoints import CheckpointError, build_checked, metadata_json, read_weights, write_weights
from anomalens.config import from_dict
from anomalens.device import autocast, memory_format, prepare_cpu, resolve_device
from anomalens.errors import ConfigError
from anomalens.loop import Loop

try:
    from diffusers import DDPMScheduler, UNet2DModel
except ImportError as e:  # an optional dependency: only the repair explainer needs it
    raise ImportError("the diffusion model needs the `diffusers` package. Fix: pip install diffusers") from e

FORMAT = "anomalens.diffusion/1"

# UNet widths per resolution level, residual blocks per level, levels with self-attention (the middle
# block has attention whenever some level has). "paper" is DDPM's 256-px UNet (Ho et al. 2020, also the
# HuggingFace DDPM recipe AR-Pro builds on): attention at 16x16 for 256-px images. "cpu" puts attention
# only at the lowest resolution, where it is cheap; "tiny" is for tests.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"block_out_channels": (128, 128, 256, 256, 512, 512), "layers_per_block": 2, "attention": (4,),
              "norm_groups": 32},
    "cpu": {"block_out_channels": (32, 64, 64, 128), "layers_per_block": 1, "attention": (3,), "norm_groups": 16},
    "tiny": {"block_out_channels": (16, 32, 32), "layers_per_block": 1, "attention": (), "norm_groups": 8},
}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_ARCHITECTURE = ("image_shape", "profile", "train_timesteps", "beta_schedule")


@dataclass
class DiffusionConfig:
    """The UNet (``image_shape``, ``profile``), the noise schedule and how to train. lr and AdamW follow
    AR-Pro; ``steps`` is a CPU budget (the paper trains for epochs on a GPU)."""

    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    image_shape: tuple[int, int, int]
    profile: str = "cpu"
    train_timesteps: int = 1000
    beta_schedule: str = "linear"  # DDPM's betas, 1e-4 .. 0.02
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01  # AdamW's default
    grad_clip: float = 1.0  # max gradient norm as in DDPM (0: off)
    ema_decay: float = 0.999  # 0: the "EMA" is a plain copy of the trained weights
    flip: bool = True  # random horizontal and vertical flips: textures look the same flipped
    bf16: bool = False  # bfloat16 autocast, ~1.8x faster on CPUs with AVX512-BF16
    channels_last: bool = False  # measured slower for this UNet on CPU
    seed: int = 0
    minutes: float | None = None  # optional cap: stop (with a checkpoint) after this much training time
    log_every: int = 50  # a history entry (mean loss) and a progress line every n steps
    checkpoint_every: int = 250
    device: str = "auto"

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.validate()

    @property
    def architecture(self) -> dict[str, Any]:
        return self.profiles[self.profile]

    def validate(self) -> None:
        if self.profile not in self.profiles:
            raise ConfigError(f"unknown diffusion profile {self.profile!r}; known: {', '.join(self.profiles)}")
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(f"image_shape must be (channels, height, width), got {self.image_shape}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"unknown beta_schedule {self.beta_schedule!r}; known: {', '.join(BETA_SCHEDULES)}")
        if self.train_timesteps < 2 or self.steps < 1 or self.batch_size < 1:
            raise ConfigError("train_timesteps must be >= 2, steps and batch_size >= 1; got "
                              f"{self.train_timesteps}, {self.steps}, {self.batch_size}")
        if len(self.image_shape) == 3 and max(self.image_shape) > 4096:
            raise ConfigError(f"image_shape {self.image_shape} is larger than 4096 px. Fix: resize the images")
        if not 0 <= self.ema_decay < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("ema_decay must be in [0, 1), log_every and checkpoint_every >= 1; got "
                              f"{self.ema_decay}, {self.log_every}, {self.checkpoint_every}")
        self.validate_shape()

    def validate_shape(self) -> None:
        """The UNet halves height and width once per level below the first."""
        levels = len(self.architecture["block_out_channels"])
        factor = 2 ** (levels - 1)
        _, h, w = self.image_shape
        if h % factor or w % factor:
            fit = f"{math.ceil(h / factor) * factor}x{math.ceil(w / factor) * factor}"
            raise ConfigError(f"the {self.profile!r} diffusion UNet halves the image {levels - 1} times, so height "
                              f"and width must be divisible by {factor}; got {h}x{w}. Fix: resize or pad the images "
                              f"to e.g. {fit}, or use a profile with fewer levels")


class DiffusionModel(nn.Module):
    """The UNet noise predictor, its EMA copy (used for inference), the DDPM scheduler and its
    ``alphas_cumprod`` (buffer, float32, one value per training timestep).

    Subclasses diffuse other data (``series_diffusion``: windows of sensor series) by changing the
    network (``network``), the map to model space (``to_model`` / ``from_model``: model space is where
    the valid data range is [-1, 1]), the training data's range check (``input_range``) and the axes
    the repair's "mean" prefill averages over (``mean_dims``)."""

    config_class: ClassVar[type[DiffusionConfig]] = DiffusionConfig
    input_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)  # None: any finite values
    mean_dims: ClassVar[tuple[int, ...]] = (2, 3)  # an image's mean colour: over height and width

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        config.validate()
        self.config = config
        with torch.random.fork_rng(devices=[]):  # the same initial weights for the same seed
            torch.manual_seed(config.seed)
            self.unet = self.network(config)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.scheduler = DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                                       beta_start=1e-4, beta_end=0.02)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.step = 0  # training steps done
        self.history: list[dict[str, float]] = []
        self.eval()

    @staticmethod
    def network(config: DiffusionConfig) -> nn.Module:
        """The noise predictor: ``network(config)(x_t, t).sample`` is epsilon for (B, C, H, W) inputs."""
        arch = config.architecture
        c, h, w = config.image_shape
        levels = len(arch["block_out_channels"])
        attention = set(arch["attention"])
        return UNet2DModel(
            sample_size=(h, w), in_channels=c, out_channels=c,
            block_out_channels=arch["block_out_channels"], layers_per_block=arch["layers_per_block"],
            down_block_types=tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels)),
            up_block_types=tuple("AttnUpBlock2D" if levels - 1 - i in attention else "UpBlock2D"
                                 for i in range(levels)),
            add_attention=bool(attention), norm_num_groups=arch["norm_groups"])

    def train(self, mode: bool = True) -> DiffusionModel:
        super().train(mode)
        self.ema.eval()  # the EMA is never trained
        return self

    # --------------------------------------------------------------------------------- inference

    @staticmethod
    def to_model(x: Tensor) -> Tensor:
        """Images in [0, 1] to the model's [-1, 1]."""
        return x * 2 - 1

    @staticmethod
    def from_model(x: Tensor) -> Tensor:
        """Model-space [-1, 1] back to images in [0, 1] (not clamped)."""
        return (x + 1) / 2

    def timesteps(self, t: int | Tensor, n: int) -> Tensor:
        """``t`` as a (n,) long tensor on the model's device, checked against the schedule."""
        t = torch.as_tensor(t, dtype=torch.long, device=self.alphas_cumprod.device)
        t = t.expand(n) if t.dim() == 0 else t
        if t.shape != (n,):
            raise ValueError(f"t must be an int or a ({n},) tensor, got shape {tuple(t.shape)}")
        if len(t) and (t.min() < 0 or t.max() >= self.config.train_timesteps):
            raise ValueError(f"timesteps must be in [0, {self.config.train_timesteps - 1}], "
                             f"got {t.min().item()}..{t.max().item()}")
        return t

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """The forward process q(x_t | x_0) in model space: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        abar = self.alphas_cumprod[self.timesteps(t, len(x0))].view(-1, *[1] * (x0.dim() - 1))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_noise(self, x_t: Tensor, t: int | Tensor, bf16: bool | None = None) -> Tensor:
        """Epsilon predicted by the EMA weights for model-space ``x_t`` (B, C, H, W) at timestep(s) ``t``;
        float32. Differentiable in ``x_t`` (for guidance): wrap in ``torch.no_grad()`` when not needed.
        ``bf16`` (autocast) defaults to the config's."""
        if tuple(x_t.shape[1:]) != self.config.image_shape:
            raise ValueError(f"diffusion model built for images {self.config.image_shape}, got {tuple(x_t.shape[1:])}")
        t = self.timesteps(t, len(x_t))
        bf16 = self.config.bf16 if bf16 is None else bf16
        with autocast(x_t.device, bf16):
            return self.ema(x_t, t).sample.float()

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images in [0, 1] by ancestral DDPM sampling from pure noise, with ``steps`` evenly
        spaced timesteps (default all): a sanity check of what the model has learnt."""
        scheduler = DDPMScheduler.from_config(self.scheduler.config)  # set_timesteps changes the scheduler
        scheduler.set_timesteps(steps or self.config.train_timesteps)
        x = torch.randn((n, *self.config.image_shape), generator=generator, device=self.alphas_cumprod.device)
        for t in scheduler.timesteps:
            x = scheduler.step(self.predict_noise(x, int(t)), t, x, generator=generator).prev_sample
        return self.from_model(x.clamp(-1, 1))

    # ---------------------------------------------------------------------------------- training

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA towards the trained weights. The decay warms up as (1 + step) / (10 + step) so
        that the random initial weights are forgotten within a short CPU training."""
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for ema, live in zip(self.ema.state_dict().values(), self.unet.state_dict().values()):
            if ema.is_floating_point():
                ema.lerp_(live, 1 - decay)
            else:
                ema.copy_(live)

    # ------------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Weights (trained and EMA) plus the config as JSON, in one safetensors file (atomic)."""
        meta = {"format": FORMAT, "config": json.dumps(asdict(self.config)), "step": str(self.step),
                "history": json.dumps(self.history)}
        return write_weights(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path) -> DiffusionModel:
        """Rebuild a saved model from its file alone (safetensors and JSON: no code is executed). A model
        of windows of series (config ``kind: series``) loads with ``SeriesDiffusionModel.load``."""
        path = Path(path)
        tensors, meta = read_weights(path, "diffusion model", "DiffusionModel.save", FORMAT)
        raw = metadata_json(meta, "config", path, "DiffusionModel.save")
        kind = raw.get("kind", "image") if isinstance(raw, dict) else "image"
        if kind != getattr(cls.config_class, "kind", "image"):
            raise CheckpointError(f"{path}: a diffusion model of {kind} data. Fix: load it with "
                                  f"{'SeriesDiffusionModel' if kind == 'series' else 'DiffusionModel'}.load")
        config = from_dict(cls.config_class, raw, f"{path}: config")
        weights = {k: v for k, v in tensors.items() if k.startswith(("unet.", "ema."))}
        model = build_checked(lambda: cls(config), weights, path)
        model.step = int(meta.get("step", 0))
        model.history = metadata_json(meta, "history", path, "DiffusionModel.save")
        return model.eval()


# -------------------------------------------------------------------------------------- training


def _check_images(images: Tensor, shape: tuple[int, int, int],
                  value_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != shape:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"training images must be a (N, {', '.join(map(str, shape))}) tensor, got {got}. "
                         "Fix: pass the normal training images of the shape the DiffusionConfig was built for")
    if len(images) == 0:
        raise ConfigError("no training images: the diffusion model learns the normal images, pass at least one")
    lo, hi = images.min().item(), images.max().item()
    if value_range is None:
        if not bool(torch.isfinite(images).all()):
            raise ConfigError("training data hold NaN or infinite values. Fix: clean or drop those samples")
    elif not (value_range[0] <= lo and hi <= value_range[1]):  # also catches NaN
        raise ConfigError(f"training images must be in [0, 1], got values in [{lo}, {hi}]. "
                         "Fix: scale them (e.g. divide uint8 images by 255)")


def _flip(x: Tensor, generator: torch.Generator) -> Tensor:
    for dim in (-1, -2):
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(dim), x)
    return x


def train_diffusion(model: DiffusionModel, images: Tensor, cfg: DiffusionConfig | None = None,
                    checkpoint_dir: str | Path | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` in place on ``images`` (N, C, H, W) in [0, 1], the normal training images, to
    predict the noise of x_t from uniformly random t (MSE), on the library's ``Loop``. ``cfg``
    (default the model's) must match the model's architecture; it becomes the model's config.
    Resumes from the newest checkpoint in ``checkpoint_dir``, writes one every ``checkpoint_every``
    steps, at the end and on Ctrl-C; a NaN or exploding loss or gradient raises
    ``TrainingDivergedError``. Returns the history: the mean loss every ``log_every`` steps."""
    cfg = cfg or model.config
    cfg.validate()
    changed = [k for k in _ARCHITECTURE if getattr(cfg, k) != getattr(model.config, k)]
    if changed:
        raise ConfigError(f"cfg differs from the model's architecture in {', '.join(changed)}. "
                          "Fix: build the model from this config, DiffusionModel(cfg)")
    _check_images(images, cfg.image_shape, model.input_range)
    model.config = cfg
    prepare_cpu()
    device = resolve_device(cfg.device)
    model.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = Loop("diffusion", cfg.steps, modules={"model": model}, optimizers={"optim": optimizer},
                generator=generator, folder=checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
                log_every=cfg.log_every, minutes=cfg.minutes, progress=progress, fix="lower lr or turn bf16 off")
    loop.step, loop.history = model.step, model.history
    loop.resume()
    for group in optimizer.param_groups:  # the config wins over the checkpoint's values
        group.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
    cast = autocast(device, cfg.bf16)
    layout = memory_format(cfg.channels_last)
    model.unet.to(memory_format=layout).train()

    def step_fn(step: int) -> dict[str, float]:
        x0 = images[torch.randint(len(images), (cfg.batch_size,), generator=generator)].float()
        if cfg.flip:
            x0 = _flip(x0, generator)
        t = torch.randint(cfg.train_timesteps, (cfg.batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x0, t, noise = model.to_model(x0).to(device), t.to(device), noise.to(device)
        x_t = model.add_noise(x0, noise, t).contiguous(memory_format=layout)
        with cast:
            predicted = model.unet(x_t, t).sample
        loss = F.mse_loss(predicted.float(), noise)
        value = loop.check(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.unet.parameters(), cfg.grad_clip or math.inf)
        loop.check(norm, "gradient norm")  # before NaNs reach the weights
        optimizer.step()
        model.step = step + 1
        model.update_ema()
        return {"loss": value}

    try:
        loop.run(step_fn)
    finally:
        model.step, model.history = loop.step, loop.history
        model.unet.to(memory_format=torch.contiguous_format)
        model.eval()
    return model.history
