"""The training loop of the OE detectors: balanced batches, Adam, step-wise learning rate,
augmentation, progress, a checkpoint every epoch, resume, and NaN detection.

Every batch holds ``batch_size`` normal samples and ``batch_size`` training anomalies (OE or
known anomalies) as in both papers; a small anomaly pool (even a single image) is sampled with
replacement, i.e. repeated. One epoch is one pass over the normal training data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from anomalens.checkpoints import checkpoints
from anomalens.data.addata import ADData
from anomalens.data.augment import Augment
from anomalens.device import autocast, device_of, memory_format, prepare_cpu, resolve_device
from anomalens.errors import ConfigError
from anomalens.loop import Loop, TrainingDivergedError  # noqa: F401 - re-exported: detectors raise it

log = logging.getLogger(__name__)
FEW_STEPS = 50  # GTSRB pair at 12 steps: AuROC 0.56; 60 steps 0.91, blue signs at 72 steps 0.99 (RESULTS.md)


@dataclass
class TrainConfig:
    """How to train a detector. The defaults suit LeNet-sized nets on 28-32 px images on a CPU."""

    epochs: int = 20
    lr: float = 1e-3
    milestones: tuple[int, ...] = ()  # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1
    weight_decay: float = 1e-6
    batch_size: int = 128  # per side: 128 normal + 128 anomalies per step
    augment: str = "none"  # an Augment preset: none (MNIST), gray (Fashion-MNIST), natural (CIFAR-10)
    bf16: bool = False  # bfloat16 autocast: ~2x faster convolutions on CPUs with AVX512-BF16
    channels_last: bool = False
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | None = None  # a checkpoint per epoch here; an existing one is resumed
    max_steps_per_epoch: int | None = None  # cap for quick runs and tests
    pretrain_epochs: int = 0  # autoencoder pretraining of the network on normal data (Deep SVDD)
    pretrain_lr: float = 1e-3
    device: str = "auto"  # auto = CUDA, then MPS, then CPU

    def __post_init__(self) -> None:
        self.milestones = tuple(self.milestones)
        if self.epochs < 1 or self.batch_size < 2 or self.pretrain_epochs < 0:
            raise ConfigError(f"epochs must be >= 1, batch_size >= 2 and pretrain_epochs >= 0; got {self.epochs}, "
                              f"{self.batch_size}, {self.pretrain_epochs}. Fix: pass positive values")
        for name in ("lr", "pretrain_lr"):
            value = getattr(self, name)
            if not 0 < value <= 10:
                raise ConfigError(f"{name} must lie in (0, 10], got {value}. Fix: use e.g. 1e-3")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.milestones)


def run_epochs(model, optimizer: torch.optim.Optimizer, cfg: TrainConfig, n: int, steps: int,
               step_loss: Callable[[torch.Tensor, int], torch.Tensor], generator: torch.Generator,
               folder: Path | None, resume: bool = True) -> list[dict[str, float]]:
    """The epoch recipe every detector shares, on the library's one ``Loop``: the learning-rate
    schedule per epoch, a fresh random order of the ``n`` training items per epoch,
    ``step_loss(order, step_in_epoch)`` per step (checked for NaN and explosion before the update),
    a history entry and a resumable checkpoint per epoch. Leaves ``model`` in eval mode."""
    loop = Loop(model.name, cfg.epochs * steps, modules={"model": model}, optimizers={"optim": optimizer},
                generator=generator, folder=folder, checkpoint_every=steps, log_every=steps, progress=cfg.progress,
                lr_at=lambda step: cfg.lr_at(step // steps), steps_per_epoch=steps, save_on_interrupt=False)
    if resume:
        loop.resume()
    order: torch.Tensor | None = None  # checkpoints fall on epoch boundaries, where a new order is drawn
    model.train()

    def step_fn(step: int) -> dict[str, float]:
        nonlocal order
        if step % steps == 0:
            order = torch.randperm(n, generator=generator)
        loss = step_loss(order, step % steps)
        value = loop.check(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": value}

    try:
        history = loop.run(step_fn)
    finally:
        model.eval()
    model.history = history
    return history


def pretrain_autoencoder(detector, normal: torch.Tensor, cfg: TrainConfig,
                         generator: torch.Generator) -> list[dict[str, float]]:
    """Train the detector's network as the encoder of an autoencoder on normal data (MSE); the
    decoder is thrown away afterwards. Returns the history: the mean reconstruction error per epoch."""
    import torch.nn.functional as F

    from anomalens.nets.autoencoder import decoder_for

    device = device_of(detector)
    decoder = decoder_for(detector.net, tuple(normal.shape[1:])).to(device)
    params = list(detector.net.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(normal))
    steps = max(1, len(normal) // batch)
    pair = torch.nn.ModuleDict({"net": detector.net, "decoder": decoder})
    loop = Loop("autoencoder pretraining", cfg.pretrain_epochs * steps, modules={"pair": pair},
                optimizers={"optim": optimizer}, generator=generator, log_every=steps, progress=cfg.progress,
                steps_per_epoch=steps)
    order: torch.Tensor | None = None
    pair.train()

    def step_fn(step: int) -> dict[str, float]:
        nonlocal order
        if step % steps == 0:
            order = torch.randperm(len(normal), generator=generator)
        x = normal[order[(step % steps) * batch:(step % steps + 1) * batch]].to(device)
        loss = F.mse_loss(decoder(detector.net(x)), x)
        value = loop.check(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": value}

    return loop.run(step_fn)


def warn_few_steps(epochs: int, steps: int, normal: int, batch: int) -> None:
    """An epoch is one pass over the normal images, so a small normal set (100 images a class on the local
    GTSRB) turns a budget in epochs set for a large one into a handful of steps: say so before training."""
    needed = -(-FEW_STEPS // steps)
    log.warning("the detector will train only %d optimiser steps (%d epochs x %d steps: %d normal images, batch %d); "
                "it may stay near chance. Fix: epochs >= %d", epochs * steps, epochs, steps, normal, batch, needed)


def train(detector, data: ADData, cfg: TrainConfig) -> list[dict[str, float]]:
    """Train ``detector`` (an ``OEDetector``) in place; returns the per-epoch history.

    Interrupted runs resume from ``cfg.checkpoint_dir``; a NaN or exploding loss raises
    ``TrainingDivergedError`` and leaves the last good checkpoint in place.
    """
    prepare_cpu()
    device = resolve_device(cfg.device)
    detector.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    normal = data.train_normal
    anomalies = detector.training_anomalies(data)
    augment = Augment.preset(cfg.augment)
    layout = memory_format(cfg.channels_last)
    detector.to(memory_format=layout)
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    resumable = folder is not None and bool(checkpoints(folder))
    if cfg.pretrain_epochs and not resumable:
        pretrain_autoencoder(detector, normal.to(device), cfg, generator)
    detector.init_center(normal.to(device))
    optimizer = torch.optim.Adam(detector.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(normal))
    steps = max(1, len(normal) // batch)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    elif cfg.epochs * steps < FEW_STEPS:
        warn_few_steps(cfg.epochs, steps, len(normal), batch)
    y = torch.cat([torch.zeros(batch), torch.ones(batch if anomalies is not None else 0)]).to(device)

    def step_loss(order: torch.Tensor, step: int) -> torch.Tensor:
        x = normal[order[step * batch:(step + 1) * batch]]
        if anomalies is not None:
            x = torch.cat([x, anomalies[torch.randint(len(anomalies), (batch,), generator=generator)]])
        x = augment(x, generator).to(device).contiguous(memory_format=layout)
        with autocast(device, cfg.bf16):
            out = detector(x)
        return detector.objective.loss(out.float(), y)

    try:
        return run_epochs(detector, optimizer, cfg, len(normal), steps, step_loss, generator, folder, resumable)
    finally:
        detector.to(memory_format=torch.contiguous_format)
