"""The "oracle": an independent classifier that judges counterfactual explanations.

Why it exists: a counterfactual explainer claims to have turned an anomaly into a normal sample,
but its own detector is a biased judge. An independent classifier, trained on the dataset's own
labels (digit, colour, ...) and never seen by the explainer, labels each counterfactual; the share
of counterfactuals it puts in a normal class is the "oracle validity". Its penultimate features
also serve as the offline feature space for FID when no Inception-v3 weights are available
(see ``anomalens.metrics.features``).

The trunk is the library's LeNet (conv + batch norm + leaky ReLU + max-pool), with one linear head
per attribute, so a single network can label e.g. both digit and colour of Colored-MNIST.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalens.checkpoints import write_weights
from anomalens.device import prepare_cpu
from anomalens.errors import AnomalensError, ConfigError, DataFormatError
from anomalens.loop import Loop
from anomalens.nets.lenet import LeNet, LeNetConfig

FORMAT = "anomalens.label_classifier"
FORMAT_VERSION = 1


class WeightsNotFoundError(AnomalensError, FileNotFoundError):
    """A weights file (oracle checkpoint, Inception-v3 state dict) is not where it was said to be."""


class LabelClassifier(nn.Module):
    """LeNet trunk + one linear head per attribute: ``LabelClassifier((1, 28, 28), {"label": 10})``.

    ``conv``/``fc``/``kernel`` are the LeNet widths; the defaults suit 28 and 32 px images, and
    smaller widths make quick tests. ``seed`` fixes the initial weights without touching the
    global random state.
    """

    def __init__(self, image_shape: tuple[int, int, int], heads: Mapping[str, int],
                 conv: tuple[int, ...] = (32, 64, 128), fc: tuple[int, int] = (256, 128), kernel: int = 3,
                 seed: int | None = 0):
        super().__init__()
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ConfigError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        c, h, w = (int(s) for s in image_shape)
        if h != w:
            raise ConfigError(f"LabelClassifier needs square images (LeNet trunk), got {h}x{w}")
        if not heads:
            raise ConfigError("LabelClassifier needs at least one head, e.g. heads={'label': 10}")
        for name, n in heads.items():
            if not isinstance(name, str) or not name or int(n) < 2:
                raise ConfigError(f"head {name!r}: needs a non-empty name and >= 2 classes, got {n}")
        if len(fc) != 2:
            raise ConfigError(f"fc must hold two widths (hidden, feature), got {tuple(fc)}")
        self.image_shape = (c, h, w)
        self.heads_spec = {name: int(n) for name, n in heads.items()}
        self.trunk_config = LeNetConfig(in_channels=c, image_size=h, conv=tuple(int(v) for v in conv),
                                        fc=(int(fc[0]), int(fc[1])), kernel=int(kernel), bias=True)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            try:
                self.trunk = LeNet(self.trunk_config)
            except ValueError as e:
                raise ConfigError(f"LabelClassifier for {self.image_shape}: {e}") from e
            self.act = nn.LeakyReLU(self.trunk_config.negative_slope)
            self.heads = nn.ModuleDict({name: nn.Linear(self.trunk.out_dim, n) for name, n in self.heads_spec.items()})
        self.feature_dim = self.trunk.out_dim

    # --- description and I/O -------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the network before loading its weights."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "image_shape": list(self.image_shape),
                "heads": dict(self.heads_spec), "conv": list(self.trunk_config.conv),
                "fc": list(self.trunk_config.fc), "kernel": self.trunk_config.kernel}

    def save(self, path: str | Path) -> Path:
        """Write weights as safetensors with the config as a JSON metadata string (atomic write)."""
        return write_weights(path, self.state_dict(), {"config": json.dumps(self.config(), sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path) -> LabelClassifier:
        """Rebuild a classifier written by ``save``; raises naming ``path`` if it is missing or not one."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: oracle classifier checkpoint not found. Fix: train one with "
                                       "LabelClassifier.fit(...) / train_oracle(...) and save it there")
        fix = "re-train the oracle and save it with LabelClassifier.save"
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise DataFormatError(path, f"not a readable safetensors file ({e})", fix) from e
        try:
            config = json.loads(meta["config"])
            if config.get("format") != FORMAT:
                raise ValueError(f"format is {config.get('format')!r}, not {FORMAT!r}")
            model = cls(tuple(config["image_shape"]), config["heads"], conv=tuple(config["conv"]),
                        fc=tuple(config["fc"]), kernel=int(config["kernel"]), seed=None)
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(path, f"no valid LabelClassifier config in the metadata ({e})", fix) from e
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise DataFormatError(path, f"weights do not match the saved config ({e})", fix) from e
        return model.eval()

    # --- forward passes ------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataFormatError(None, f"expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                                  f"got {shape}", "pass float NCHW images in [0, 1] of the classifier's shape")
        return x.float()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: what every head sees (with gradients, in the current mode)."""
        return self.act(self.trunk(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.embed(x)
        return {name: head(z) for name, head in self.heads.items()}

    @torch.no_grad()
    def _batched(self, x: torch.Tensor, batch_size: int, fn) -> list[Any]:
        x = self._check_images(x)
        was_training = self.training
        self.eval()
        try:
            device = self._device()
            return [fn(x[i:i + batch_size].to(device)) for i in range(0, len(x), max(1, batch_size))]
        finally:
            self.train(was_training)

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> dict[str, torch.Tensor]:
        """Predicted class per head, as LongTensors of length N (eval mode, no gradients)."""
        parts = self._batched(x, batch_size, lambda b: {k: v.argmax(1).cpu() for k, v in self(b).items()})
        return {name: torch.cat([p[name] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
                for name in self.heads_spec}

    def features(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Penultimate features (N, feature_dim), eval mode, no gradients: the offline FID space."""
        parts = self._batched(x, batch_size, lambda b: self.embed(b).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, self.feature_dim)

    def accuracy(self, x: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Share of correct predictions per head present in ``targets``."""
        targets = self._check_targets(targets, len(x), require_all=False)
        pred = self.predict(x)
        return {name: float((pred[name] == t).float().mean()) for name, t in targets.items()}

    # --- training ------------------------------------------------------------------------------

    def _check_targets(self, targets: Mapping[str, torch.Tensor], n: int,
                       require_all: bool = True) -> dict[str, torch.Tensor]:
        fix = f"pass one LongTensor of length N per head {sorted(self.heads_spec)}"
        unknown = sorted(set(targets) - set(self.heads_spec))
        missing = sorted(set(self.heads_spec) - set(targets))
        if unknown or (require_all and missing) or not targets:
            raise DataFormatError(None, f"targets for heads {sorted(targets)} (unknown {unknown}, missing {missing})",
                                  fix)
        out = {}
        for name, t in targets.items():
            t = torch.as_tensor(t).long().reshape(-1).cpu()
            if len(t) != n:
                raise DataFormatError(None, f"head {name!r}: {len(t)} targets for {n} images", fix)
            if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.heads_spec[name]):
                raise DataFormatError(None, f"head {name!r}: targets outside [0, {self.heads_spec[name]})", fix)
            out[name] = t
        return out

    def fit(self, images: torch.Tensor, targets: Mapping[str, torch.Tensor], epochs: int = 3,
            batch_size: int = 128, lr: float = 1e-3, seed: int = 0, progress: bool = True,
            augment: bool = False) -> list[float]:
        """Adam on the sum of the heads' cross-entropies; returns the mean loss of each epoch.

        ``augment`` shifts each batch by up to 2 px (zero fill), which helps with small data sets.
        """
        images = self._check_images(images)
        targets = self._check_targets(targets, len(images))
        if epochs < 1 or batch_size < 2 or lr <= 0:
            raise ConfigError(f"fit needs epochs >= 1, batch_size >= 2, lr > 0 (got {epochs}, {batch_size}, {lr})")
        if len(images) < 2:
            raise DataFormatError(None, f"{len(images)} training images", "pass at least 2 (batch norm needs them)")
        prepare_cpu()
        device = self._device()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        n = len(images)
        starts = [s for s in range(0, n, batch_size) if n - s >= 2]  # a 1-sample batch breaks batch norm
        loop = Loop("oracle", epochs * len(starts), modules={"oracle": self}, optimizers={"adam": opt}, generator=gen,
                    log_every=len(starts), progress=progress, steps_per_epoch=len(starts))
        order = torch.zeros(0, dtype=torch.long)
        self.train()

        def step_fn(step: int) -> dict[str, float]:
            nonlocal order
            if step % len(starts) == 0:
                order = torch.randperm(n, generator=gen)
            idx = order[starts[step % len(starts)]:starts[step % len(starts)] + batch_size]
            x = _shift(images[idx], gen) if augment else images[idx]
            out = self(x.to(device))
            loss = sum(F.cross_entropy(out[name], t[idx].to(device)) for name, t in targets.items())
            value = loop.check(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": value}

        losses = [entry["loss"] for entry in loop.run(step_fn)]
        self.recalibrate_batch_norm(images, batch_size, seed=seed)
        self.eval()
        return losses

    @torch.no_grad()
    def recalibrate_batch_norm(self, images: torch.Tensor, batch_size: int = 128, max_images: int = 8192,
                               seed: int = 0) -> None:
        """Re-estimate batch-norm statistics with the final weights (a plain average over batches).

        Why: the running averages lag behind the weights; after a short training (few steps, fast
        falling loss) eval-mode predictions can be far worse than train-mode ones. One forward pass
        over up to ``max_images`` training images fixes that for a fraction of an epoch's cost.
        """
        images = self._check_images(images)
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or len(images) < 2:
            return
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:max_images]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        device = self._device()
        self.train()
        try:
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                if len(idx) >= 2:
                    self.embed(images[idx].to(device))
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.eval()


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate the whole batch by a random (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    h, w = x.shape[-2:]
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    return padded[..., max_shift - dy:max_shift - dy + h, max_shift - dx:max_shift - dx + w]


def train_oracle(images: torch.Tensor, targets: Mapping[str, torch.Tensor], image_shape: tuple[int, int, int],
                 epochs: int = 3, seed: int = 0, progress: bool = True,
                 heads: Mapping[str, int] | None = None, **kwargs: Any) -> LabelClassifier:
    """Build and fit an oracle; head sizes default to max(target) + 1 (pass ``heads`` if a class is absent).

    Extra keyword arguments go to ``fit`` (batch_size, lr, augment).
    """
    if heads is None:
        heads = {name: max(2, int(torch.as_tensor(t).max()) + 1) for name, t in targets.items()}
    model = LabelClassifier(image_shape, heads, seed=seed)
    model.fit(images, targets, epochs=epochs, seed=seed, progress=progress, **kwargs)
    return model
