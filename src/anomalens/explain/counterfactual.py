"""Concept-disentangled counterfactual explanations of anomaly detectors (CE paper, section 3.2).

A generator G(x, alpha, k) learns to turn a sample into one the frozen detector scores alpha, in K
different ways (concepts). For an anomaly x*, the counterfactuals G(x*, 0, 1..K) answer "what would
have to change for this to be normal?". The objective (paper, sec. 3.2):

    lambda_gan (L_D + L_G) + lambda_phi L_phi + lambda_rec (L_rec + L_cyc) + lambda_r L_con

L_phi is the binary cross entropy between the detector's bounded score of G's output and alpha,
with gradients flowing *through* the detector; L_rec and L_cyc keep the changes minimal; L_con
makes a concept classifier R recognise k from the pair (x, G(x, alpha, k)).

Two departures from the paper are options, both off in the ``paper`` recipe and measured in
benchmarks/RESULTS.md: a discriminator *conditioned* on normal vs anomalous (``conditional_d``), so
that a counterfactual must look like a real *normal* sample rather than any sample of the training
data (OE included), and an expectation over noise for L_phi (``phi_noise``), so that G cannot fool
the detector with faint high-frequency patterns.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anomalens.checkpoints import CheckpointError, metadata_json, read_weights, write_weights
from anomalens.config import from_dict
from anomalens.data.addata import ADData
from anomalens.device import autocast, device_of, memory_format, prepare_cpu, resolve_device
from anomalens.errors import ConfigError
from anomalens.explain.autoencoders import AutoencoderTraining, latent_shape, load_autoencoder, train_autoencoder
from anomalens.explain.base import Explanation
from anomalens.explain.counterfactual_losses import (
    ALPHAS,
    anomaly_pool,
    collapse_warnings,
    discriminator_loss,
    generator_losses,
    warmup_loss,
)
from anomalens.explain.registry import register
from anomalens.loop import Loop
from anomalens.nets.concept import ConceptClassifier, ConceptConfig
from anomalens.nets.discriminator import Discriminator, DiscriminatorConfig
from anomalens.nets.generator import Generator, GeneratorConfig
from anomalens.nets.latent import AutoencoderConfig, EditorConfig, LatentAutoencoder, LatentEditor, LatentGenerator

log = logging.getLogger(__name__)
FORMAT = "anomalens-counterfactual-1"
MAX_CONCEPTS = 64

# Widths of G (stem, three encoder blocks), D (four blocks) and R (two blocks). "paper" is appendix
# E.1; "cpu" trains in minutes on two cores (cost per step measured in benchmarks/RESULTS.md).
# "editor" is the latent generator's G' (width, residual blocks).
PROFILES: dict[str, dict[str, tuple[int, ...]]] = {
    "paper": {"g_stem": (64,), "g_widths": (256, 512, 1024), "d_widths": (64, 128, 256, 512), "r_widths": (64, 128),
              "editor": (256, 4)},
    "cpu": {"g_stem": (16,), "g_widths": (16, 64, 128), "d_widths": (16, 32, 64, 128), "r_widths": (16, 32),
            "editor": (64, 3)},
    "small": {"g_stem": (16,), "g_widths": (16, 32, 64), "d_widths": (16, 32, 64, 64), "r_widths": (16, 32),
              "editor": (32, 2)},
    "tiny": {"g_stem": (8,), "g_widths": (8, 16, 16), "d_widths": (8, 16, 16, 16), "r_widths": (8, 8),
             "editor": (8, 1)},
}
GENERATORS = ("pixel", "latent")
CRITICS = ("pixel", "latent")


RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"profile": "paper", "steps": 33_000, "d_every": 5, "lambda_rec": 100.0, "conditional_d": False},
    # measured (benchmarks/RESULTS.md): lambda_rec 20 / lambda_gan 1 gives adversarial edits; lambda_gan 5
    # without warm-up draws one prototype normal image per concept whatever the input; the auto-encoder
    # warm-up plus the conditional D gives semantic, input-specific edits; the small profile at 32 images
    # per side matched the cpu profile at 64 for a third of its FLOPs (validity 0.91 in 300 steps on glyphs)
    "cpu": {"profile": "small", "batch_size": 32, "steps": 600, "d_every": 1, "lambda_rec": 20.0,
            "lambda_gan": 5.0, "conditional_d": True, "warmup_steps": 200, "phi_noise": 0.05, "bf16": True,
            "channels_last": True},
    # G' edits the latent of a small autoencoder (trained once per dataset); it starts at the identity,
    # so no warm-up, and its outputs are decoded images (benchmarks/RESULTS.md, "latent generator")
    "latent": {"generator": "latent", "profile": "cpu", "steps": 800, "d_every": 1, "lambda_rec": 20.0,
               "lambda_gan": 5.0, "conditional_d": True, "warmup_steps": 0, "bf16": True},
}


@dataclass
class CEConfig:
    """How to train the explainer. Loss weights and optimiser follow appendix E.1 of the CE paper;
    ``steps`` replaces its 350 epochs (a CPU budget), and the learning rate drops 10x at
    ``milestones`` (fractions of ``steps``; the paper's 300/350 and 325/350)."""

    concepts: int = 2
    generator: str = "pixel"  # pixel: G as in appendix E.1; latent: G' edits an autoencoder's latent code
    autoencoder: str | None = None  # latent: an autoencoder file or "kl:<folder|hub id>"; None: train one at fit
    autoencoder_steps: int = 1500  # latent, autoencoder trained at fit: its step budget
    critics: str = "pixel"  # latent generator: D and R judge decoded images (pixel) or the edited codes (latent)
    profile: str = "cpu"
    lambda_gan: float = 1.0
    lambda_phi: float = 1.0
    lambda_rec: float = 100.0
    lambda_r: float = 10.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    batch_size: int = 64  # per side: 64 normal + 64 OE / known anomalies
    steps: int = 2000
    milestones: tuple[float, ...] = (300 / 350, 325 / 350)
    d_every: int = 5  # update D every n-th step (appendix E.1: 5)
    conditional_d: bool = False
    phi_noise: float = 0.0  # std of gaussian noise added to G's output before the detector scores it
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # how often G trains towards alpha 0 / 0.5 / 1 (paper: uniform)
    warmup_steps: int = 0  # first train G as an autoencoder (every condition reconstructs x), then the GAN
    bf16: bool = False
    channels_last: bool = False
    seed: int = 0
    minutes: float | None = None  # optional cap: stop (with a checkpoint) after this much training time
    progress: bool = True
    log_every: int = 50  # loss means (history) and a progress line every n steps
    sample_every: int = 250  # a sample grid every n steps (0: never)
    checkpoint_every: int = 250
    checkpoint_dir: str | None = None
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def recipe(cls, name: str = "cpu", **overrides: Any) -> CEConfig:
        """A named recipe plus overrides: ``paper`` is appendix E.1 (~33,000 steps = 350 MNIST epochs, GPU
        scale); ``cpu`` is what measured best on two CPU cores (benchmarks/RESULTS.md). A new ``steps``
        keeps the recipe's warm-up share, so ``--steps 100`` still trains the GAN after its warm-up."""
        if name not in RECIPES:
            raise ConfigError(f"unknown explainer recipe {name!r}. Fix: use one of {', '.join(RECIPES)}")
        base = RECIPES[name]
        if isinstance(overrides.get("steps"), int) and "warmup_steps" not in overrides and base.get("warmup_steps"):
            overrides["warmup_steps"] = round(base["warmup_steps"] * overrides["steps"] / base["steps"])
        return from_dict(cls, {**base, **overrides}, f"explainer recipe {name!r}")

    def __post_init__(self) -> None:
        self.betas, self.milestones = tuple(self.betas), tuple(self.milestones)
        self.level_weights = tuple(float(w) for w in self.level_weights)
        if len(self.level_weights) != len(ALPHAS) or min(self.level_weights) < 0 or sum(self.level_weights) <= 0:
            raise ConfigError(f"level_weights needs {len(ALPHAS)} non-negative weights (alpha {ALPHAS}), not all zero; "
                              f"got {self.level_weights}. Fix: e.g. level_weights [2, 1, 1]")
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown explainer profile {self.profile!r}. Fix: use one of {', '.join(PROFILES)}")
        if self.generator not in GENERATORS:
            raise ConfigError(f"unknown generator {self.generator!r}. Fix: use one of {', '.join(GENERATORS)}")
        if self.critics not in CRITICS or (self.critics == "latent" and self.generator != "latent"):
            raise ConfigError(f"critics must be one of {', '.join(CRITICS)}, and 'latent' needs the latent generator; "
                              f"got critics={self.critics!r} with generator={self.generator!r}. Fix: --generator "
                              "latent, or critics pixel")
        if not 1 <= self.concepts <= MAX_CONCEPTS or self.steps < 1 or self.batch_size < 2 or self.d_every < 1:
            raise ConfigError(f"concepts must lie in [1, {MAX_CONCEPTS}], steps >= 1, batch_size >= 2 and d_every "
                              f">= 1; got {self.concepts}, {self.steps}, {self.batch_size}, {self.d_every}. Fix: e.g. "
                              "--concepts 2 --steps 600")
        if not 0 < self.lr <= 1 or self.warmup_steps < 0 or (self.minutes is not None and self.minutes <= 0):
            raise ConfigError(f"lr must lie in (0, 1], warmup_steps >= 0 and minutes > 0; got {self.lr}, "
                              f"{self.warmup_steps}, {self.minutes}. Fix: e.g. --lr 2e-4")
        if min(self.log_every, self.checkpoint_every, self.autoencoder_steps) < 1 or self.sample_every < 0:
            raise ConfigError("log_every, checkpoint_every and autoencoder_steps must be >= 1 and sample_every >= 0. "
                              "Fix: use positive values")

    def lr_at(self, step: int) -> float:
        return self.lr * 0.1 ** sum(step >= m * self.steps for m in self.milestones)


@register("counterfactual")
class CounterfactualExplainer:
    """Trains and applies the generator for one frozen detector: ``CounterfactualExplainer(config)``,
    ``fit(detector, data)``, then ``explain(x)``. The networks are built for the data's image shape
    at ``fit`` (or at once when ``image_shape`` is given)."""

    def __init__(self, config: CEConfig | None = None, image_shape: tuple[int, int, int] | None = None,
                 on_sample: Callable[[int, Explanation], None] | None = None,
                 autoencoder: torch.nn.Module | None = None):
        self.config = config or CEConfig()
        self.image_shape: tuple[int, int, int] | None = None
        self.on_sample = on_sample  # called with (step, counterfactuals of a probe batch) during training
        self.autoencoder = autoencoder  # latent generator: the autoencoder G' edits in (frozen)
        self.history: list[dict[str, float]] = []
        self.step = 0
        self.detector = None
        if image_shape is not None:
            self._build(tuple(image_shape))

    @classmethod
    def from_options(cls, name: str, recipe: str = "cpu", **options: Any) -> CounterfactualExplainer:
        return cls(CEConfig.recipe(recipe, **options))

    def _build(self, image_shape: tuple[int, int, int]) -> None:
        self.image_shape = tuple(int(v) for v in image_shape)
        c = self.image_shape[0]
        widths = PROFILES[self.config.profile]
        k = self.config.concepts
        with torch.random.fork_rng(devices=[]):  # the same initial weights for the same seed
            torch.manual_seed(self.config.seed)
            if self.config.generator == "latent":
                if self.autoencoder is None:
                    self.autoencoder = load_autoencoder(self.config.autoencoder) if self.config.autoencoder else None
                if self.autoencoder is None:
                    raise ConfigError("the latent generator needs an autoencoder. Fix: pass autoencoder= (a file or "
                                      "kl:<folder>) or let fit(detector, data) train one")
                z = latent_shape(self.autoencoder, self.image_shape)
                width, blocks = widths["editor"]
                self.generator = LatentGenerator(self.autoencoder, LatentEditor(
                    EditorConfig(z[0], len(ALPHAS) * k, width, blocks)))
            else:
                self.generator = Generator(GeneratorConfig(c, len(ALPHAS) * k, widths["g_stem"][0],
                                                           tuple(widths["g_widths"])))
            critic_shape = latent_shape(self.autoencoder, self.image_shape) if self.latent_critics else self.image_shape
            halvings = int(math.log2(min(critic_shape[1:])))  # as many as keep the map at least 1x1
            self.discriminator = Discriminator(DiscriminatorConfig(critic_shape[0], tuple(widths["d_widths"]),
                                                                   2 if self.config.conditional_d else 0,
                                                                   min(3, halvings)))
            self.concept = ConceptClassifier(ConceptConfig(critic_shape[0], k, tuple(widths["r_widths"]),
                                                           min(2, halvings)))

    @property
    def latent_critics(self) -> bool:
        """D and R judge latent codes (cheap: a 7x7 code instead of a full image) rather than images."""
        return self.config.critics == "latent"

    def critic_input(self, x: Tensor) -> Tensor:
        """What D and R see of images ``x``: the images, or their latent codes."""
        return self.generator.autoencoder.encode(x) if self.latent_critics else x

    @torch.no_grad()
    def concept_logits(self, x: Tensor, x_bar: Tensor) -> Tensor:
        """R's logits for the change from images ``x`` to ``x_bar`` (eval mode): which concept made it."""
        self.concept.eval()
        return self.concept(self.critic_input(x), self.critic_input(x_bar))

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"g": self.generator, "d": self.discriminator, "r": self.concept}

    def condition(self, alpha_index: Tensor, concept: Tensor) -> Tensor:
        return alpha_index * self.config.concepts + concept

    # --------------------------------------------------------------------------------- inference

    @torch.no_grad()
    def explain(self, x: Tensor, alpha: float = 0.0, batch_size: int = 256) -> Explanation:
        """G(x, alpha, k) for every k, in eval mode (running batch-norm statistics), with the detector's
        bounded scores: ``outputs`` (N, K, C, H, W), ``score_after`` (N, K), ``score_before`` (N,).

        ``alpha=0`` gives counterfactuals of anomalies; ``alpha=1`` pseudo-anomalies of normal inputs."""
        if self.detector is None or self.image_shape is None:
            raise RuntimeError("the explainer has no detector: fit(detector, data) first, or "
                               "CounterfactualExplainer.load(path, detector)")
        if alpha not in ALPHAS:
            raise ConfigError(f"alpha must be one of {ALPHAS}, got {alpha}")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ConfigError(f"the explainer was trained on images {self.image_shape}, got {tuple(x.shape[1:])}. "
                              "Fix: resize the images to the training size")
        detector = self.detector
        layout = memory_format(self.config.channels_last)  # 1.75x faster on CPUs when trained so (RESULTS.md)
        self.generator.eval().to(memory_format=layout)
        detector.eval()
        device = device_of(self.generator)
        a = ALPHAS.index(alpha)
        images = []
        for chunk in x.split(batch_size):
            chunk = chunk.to(device).contiguous(memory_format=layout)
            n = len(chunk)
            per_k = [self.generator(chunk, self.condition(torch.full((n,), a, device=device),
                                                          torch.full((n,), k, device=device))).float().cpu()
                     for k in range(self.config.concepts)]
            images.append(torch.stack(per_k, 1).contiguous())
        images = torch.cat(images)
        scores = detector.scores(images.flatten(0, 1), raw=False).view(len(x), self.config.concepts)
        return Explanation(x, detector.scores(x, raw=False), outputs=images, score_after=scores,
                           method="counterfactual", extras={"alpha": torch.tensor(alpha)})

    # ---------------------------------------------------------------------------------- training

    def fit(self, detector, data: ADData) -> CounterfactualExplainer:
        """Train G, D and R against the frozen ``detector`` on ``data``'s normal training samples plus
        its OE (or known anomalies): one G + R update per batch, a D update every ``d_every`` batches,
        on the library's ``Loop`` (step budget, progress, checkpoints, resume, divergence checks)."""
        if self.image_shape is None:
            if self.config.generator == "latent" and self.autoencoder is None and not self.config.autoencoder:
                self.autoencoder = self._train_autoencoder(data)
            self._build(tuple(data.image_shape))
        elif tuple(data.image_shape) != self.image_shape:
            raise ConfigError(f"explainer built for images {self.image_shape}, data {data.name!r} has "
                              f"{tuple(data.image_shape)}. Fix: build a new explainer for this data")
        cfg = self.config
        prepare_cpu()
        device = resolve_device(cfg.device)
        self.detector = detector.to(device)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        normal, pool = data.train_normal, anomaly_pool(data)
        batch = min(cfg.batch_size, len(normal))
        layout = memory_format(cfg.channels_last)
        modules = self._modules()
        for m in modules.values():
            m.to(device, memory_format=layout).train()
        adam = lambda params: torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)  # noqa: E731
        optimizers = {name: adam(m.parameters()) for name, m in modules.items()}
        probe = (pool if pool is not None else normal)[:8]
        hooks = ((cfg.sample_every, lambda step: self._sample(step, probe)),) if cfg.sample_every else ()
        loop = Loop("explainer", cfg.steps, modules=modules, optimizers=optimizers, generator=generator,
                    folder=cfg.checkpoint_dir, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                    minutes=cfg.minutes, progress=cfg.progress, lr_at=cfg.lr_at, hooks=hooks,
                    fix="lower lr or lambda_phi")
        loop.resume()
        cast = autocast(device, cfg.bf16)

        def step_fn(step: int) -> dict[str, float]:
            x = normal[torch.randint(len(normal), (batch,), generator=generator)]
            source = torch.zeros(batch)
            if pool is not None:
                x = torch.cat([x, pool[torch.randint(len(pool), (batch,), generator=generator)]])
                source = torch.cat([source, torch.ones(batch)])
            x, source = x.to(device).contiguous(memory_format=layout), source.to(device)
            if step < cfg.warmup_steps:
                loss = warmup_loss(self, x, generator, cast)
                value = loop.check(loss, "warm-up loss")
                optimizers["g"].zero_grad(set_to_none=True)
                loss.backward()
                optimizers["g"].step()
                return {"loss_rec": value}
            total, terms, real, fake, level = generator_losses(self, detector, x, generator, cast)
            values = {"loss": loop.check(total, "generator loss")}
            optimizers["g"].zero_grad(set_to_none=True)
            optimizers["r"].zero_grad(set_to_none=True)
            total.backward()
            optimizers["g"].step()
            optimizers["r"].step()
            if step % cfg.d_every == 0:
                loss_d = discriminator_loss(self, real, source, fake, level, cast)
                terms["loss_d"] = torch.tensor(loop.check(loss_d, "discriminator loss"))
                optimizers["d"].zero_grad(set_to_none=True)
                loss_d.backward()
                optimizers["d"].step()
            values.update({k: float(v.detach().item()) for k, v in terms.items()})
            return values

        frozen = [(p, p.requires_grad) for p in detector.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        detector.eval()
        try:
            loop.run(step_fn)
        finally:
            self.step, self.history = loop.step, loop.history
            for p, flag in frozen:
                p.requires_grad_(flag)
            for m in modules.values():
                m.eval().to(memory_format=torch.contiguous_format)
        return self

    def _train_autoencoder(self, data: ADData) -> torch.nn.Module:
        """An autoencoder for this task's images (normal and anomalous side), when none was given: the
        experiments layer trains one per dataset instead and shares it (``experiments/latent_cache.py``)."""
        pool = anomaly_pool(data)
        images = data.train_normal if pool is None else torch.cat([data.train_normal, pool])
        cfg = AutoencoderTraining(steps=self.config.autoencoder_steps, seed=self.config.seed, bf16=self.config.bf16,
                                  device=self.config.device)
        folder = Path(self.config.checkpoint_dir).parent / "autoencoder" if self.config.checkpoint_dir else None
        log.info(f"training the latent autoencoder on {len(images)} images ({cfg.steps} steps)")
        return train_autoencoder(images, cfg, folder, self.config.progress)

    def _sample(self, step: int, probe: Tensor) -> None:
        """Training-time look at the explainer: the callback's sample grid, then collapse warnings."""
        if self.on_sample is not None:
            self.on_sample(step, self.explain(probe))
        if step > self.config.warmup_steps:  # during the warm-up G is the identity by design
            for warning in collapse_warnings(self, probe.to(device_of(self.generator))):
                log.warning(f"explainer step {step}: {warning}")
        for m in self._modules().values():
            m.train()

    # ------------------------------------------------------------------------------- persistence

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"{name}.{k}": v for name, module in self._modules().items() for k, v in module.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor], source: str | Path) -> None:
        for name, module in self._modules().items():
            own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            try:
                module.load_state_dict(own)
            except RuntimeError as e:
                raise CheckpointError(f"{source}: explainer weights do not fit this architecture ({str(e)[:200]}). "
                                      "Fix: use CounterfactualExplainer.load, which reads the file's config") from e

    def save(self, path: str | Path) -> Path:
        """Weights of G, D and R plus the config, in one safetensors file (atomic)."""
        if self.image_shape is None:
            raise RuntimeError("nothing to save: the explainer has not been fitted")
        meta = {"format": FORMAT, "image_shape": json.dumps(list(self.image_shape)),
                "config": json.dumps(asdict(self.config)), "step": str(self.step)}
        if isinstance(self.autoencoder, LatentAutoencoder):
            meta["autoencoder"] = json.dumps(asdict(self.autoencoder.config))
        return write_weights(path, self.state_tensors(), meta)

    @classmethod
    def load(cls, path: str | Path, detector=None) -> CounterfactualExplainer:
        """Rebuild a saved explainer (safetensors and JSON only); pass the ``detector`` it explains."""
        path = Path(path)
        writer = "`anomalens explain --method counterfactual`"
        tensors, meta = read_weights(path, "counterfactual explainer", writer, FORMAT)
        config = from_dict(CEConfig, metadata_json(meta, "config", path, writer), f"{path}: config")
        shape = metadata_json(meta, "image_shape", path, writer)
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and 0 < v <= 4096
                                                                     for v in shape)):
            raise CheckpointError(f"{path}: image_shape {shape!r} is not (C, H, W). Fix: pass a file written by "
                                  f"{writer}")
        autoencoder = None
        if config.generator == "latent" and "autoencoder" in meta:  # its weights are in the file, with G's
            ae_config = from_dict(AutoencoderConfig, metadata_json(meta, "autoencoder", path, writer),
                                  f"{path}: autoencoder")
            autoencoder = LatentAutoencoder(ae_config)
        explainer = cls(config, tuple(shape), autoencoder=autoencoder)
        explainer.load_state_tensors(tensors, path)
        explainer.step = int(meta.get("step", 0)) if str(meta.get("step", "0")).isdigit() else 0
        explainer.detector = detector
        explainer.generator.eval()
        return explainer
