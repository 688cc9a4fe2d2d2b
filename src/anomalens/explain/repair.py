"""AR-Pro: repair the anomalous region of an image with property-guided diffusion (Ji et al. 2024).

The anomalous region omega comes from a linearly decomposable detector and per-feature thresholds.
Starting from the input noised to a chosen level, every reverse-diffusion step (eqs. 4-6)

1. predicts the noise and the clean image x0^ with a DDPM trained on normal images;
2. nudges the step with the gradient of the property loss L = l1 L1 + l2 L2 + l3 L3 + l4 L4 (eq. 7),
   applied as a correction of the predicted noise scaled by sqrt(1 - abar_t) (classifier guidance,
   so eta_t grows with t as the paper asks);
3. samples x_{t-1} and pastes the *original*, noised to the same step t-1, outside omega
   (masked in-filling), so the last step returns the input unchanged outside the repaired region.

Only the steps from the start level down are run. The default sampler is DDIM with 50 steps (one
64x64 repair in ~1 s here); ``sampler="ddpm"`` runs the paper's ancestral sampler over every step
(~10x slower; on our benchmark it degrades the clean region a little less and lowers the score a
little less). Three choices differ from the paper, for reasons measured in benchmarks/RESULTS.md ("AR-Pro repairs"):
the loss is evaluated on x0^ rather than on the noisy x_t (the detector was trained on clean images),
its gradient is normalised per image (so one guidance scale suits detectors whose scores differ by
orders of magnitude), and delta_4 is relative to |s_omega_bar(x_bad)| for the same reason.

Windows of multivariate series go through the same code as one-channel images (1, F, T), with a
``SeriesDiffusionModel``: omega then marks features and steps, and the diffusion model supplies the
value range (every clip is done in its model space, [-1, 1], which is [0, 1] for images) and the axes
of the "mean" prefill (each feature over the rest of the window).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from anomalens.config import from_dict
from anomalens.data.addata import ADData
from anomalens.data.timeseries import SeriesData
from anomalens.detectors.base import Detector
from anomalens.detectors.decomposition import Decomposition, FeatureThresholds, decompose
from anomalens.device import device_of
from anomalens.errors import ConfigError
from anomalens.explain.base import Explanation
from anomalens.explain.diffusion import DiffusionConfig, DiffusionModel, train_diffusion
from anomalens.explain.registry import register
from anomalens.explain.series_diffusion import SeriesDiffusionConfig, SeriesDiffusionModel
from anomalens.progress import Progress

SAMPLERS = ("ddpm", "ddim")


@dataclass
class RepairConfig:
    """How to repair. The property weights are the paper's (all 1, sec. 4.2)."""

    strength: float = 0.5  # start level as a fraction of the diffusion's timesteps (1 = pure noise)
    sampler: str = "ddim"  # ddim: deterministic, few steps (10x faster, as good: RESULTS.md); ddpm: paper
    steps: int | None = None  # reverse steps from the start level; None = every timestep (ddpm) or 50 (ddim)
    guidance: float = 3.0  # guidance scale (best of 1, 3, 10: RESULTS.md); 0 = the unguided baseline
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # lambda_1..lambda_4
    delta4: float = 0.05  # P4 tolerance, relative to |s_omega_bar(x_bad)|
    prefill: str = "mean"  # fill omega before noising: "mean" colour of the rest of the image, or "none"
    infill: bool = True  # masked in-filling; False repaints the whole image (an off-the-shelf baseline)
    quantile: float = 0.9  # tau = this quantile of the training feature scores
    batch_size: int = 16
    seed: int = 0
    diffusion: dict[str, Any] = field(default_factory=dict)  # DiffusionConfig settings (profile, steps, bf16...)
    checkpoint_dir: str | None = None  # the diffusion model's checkpoints (resumed when present)
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise ConfigError(f"strength must lie in (0, 1], got {self.strength}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.prefill not in ("mean", "none"):
            raise ConfigError(f"prefill must be 'mean' or 'none', got {self.prefill!r}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if len(self.weights) != 4 or min(self.weights) < 0:
            raise ConfigError(f"weights are four non-negative lambdas, got {self.weights}")
        if not 0 < self.quantile < 1 or self.batch_size < 1 or self.guidance < 0:
            raise ConfigError(f"quantile must lie in (0, 1), batch_size >= 1 and guidance >= 0; got {self.quantile}, "
                              f"{self.batch_size}, {self.guidance}")
        if "image_shape" in self.diffusion:
            raise ConfigError("diffusion settings must not set image_shape: it comes from the data")
        self.weights = tuple(float(w) for w in self.weights)

    def diffusion_config(self, image_shape: tuple[int, int, int], series: bool = False) -> DiffusionConfig:
        """The diffusion model's config for images, or with ``series`` for windows of series."""
        cls = SeriesDiffusionConfig if series else DiffusionConfig
        return from_dict(cls, {"image_shape": tuple(image_shape), **self.diffusion}, "repair: diffusion")


def timesteps(cfg: RepairConfig, train_timesteps: int) -> list[int]:
    """The reverse steps, from the start level down to 0 (descending, no repeats)."""
    start = max(0, min(train_timesteps - 1, round(cfg.strength * train_timesteps) - 1))
    count = cfg.steps or (start + 1 if cfg.sampler == "ddpm" else 50)
    count = min(count, start + 1)
    return sorted({round(start * i / max(1, count - 1)) for i in range(count)} if count > 1 else {start},
                  reverse=True)


def property_loss(dec: Decomposition, x_fix: Tensor, x_bad: Tensor, omega: Tensor, s_omega_bad: Tensor,
                  s_rest_bad: Tensor, weights: tuple[float, ...], delta4: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. (7) per image (B,) and its four terms (sec. 3.1):
    L1 = s(x_fix); L2 = ||(1 - omega) (x_fix - x_bad)||; L3 = max(0, s_omega(x_fix) - s_omega(x_bad));
    L4 = max(0, s_rest(x_fix) - s_rest(x_bad) - delta4 |s_rest(x_bad)|)."""
    rest = 1 - omega
    terms = {
        "L1": dec.score,
        "L2": (rest[:, None] * (x_fix - x_bad)).flatten(1).norm(dim=1),
        "L3": torch.relu(dec.region(omega) - s_omega_bad),
        "L4": torch.relu(dec.region(rest) - s_rest_bad - delta4 * s_rest_bad.abs()),
    }
    total = sum(w * t for w, t in zip(weights, terms.values()))
    return total, terms


def _prefilled(x: Tensor, omega: Tensor, dims: tuple[int, ...] = (2, 3)) -> Tensor:
    """``x`` with the region omega replaced by the mean of the rest over ``dims``: the mean colour of the
    rest of an image (2, 3), or of each feature over the rest of a window (3,)."""
    rest = (1 - omega)[:, None]
    mean = (x * rest).sum(dims, keepdim=True) / rest.sum(dims, keepdim=True).clamp_min(1)
    return x * rest + mean * (1 - rest)


class _Guide:
    """The property-loss gradient at the predicted clean image, normalised per image."""

    def __init__(self, detector: Detector, diffusion: DiffusionModel, x_bad: Tensor, bad: Decomposition,
                 omega: Tensor, cfg: RepairConfig):
        self.detector, self.diffusion, self.x_bad, self.omega, self.cfg = detector, diffusion, x_bad, omega, cfg
        self.last_loss = 0.0
        self.s_omega_bad, self.s_rest_bad = bad.region(omega), bad.region(1 - omega)

    def gradient(self, x0_hat: Tensor) -> Tensor:
        """d L / d x0^ in model space, unit RMS per image over the pixels the repair may change."""
        with torch.enable_grad():
            x = self.diffusion.from_model(x0_hat.clamp(-1, 1)).detach().requires_grad_(True)
            loss, _ = property_loss(decompose(self.detector, x), x, self.x_bad, self.omega, self.s_omega_bad,
                                    self.s_rest_bad, self.cfg.weights, self.cfg.delta4)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        self.last_loss = float(loss.detach().mean())
        if self.cfg.infill:
            grad = grad * self.omega[:, None]  # the rest is overwritten by the noised original anyway
        rms = grad.pow(2).flatten(1).mean(1).sqrt()
        return grad / rms.clamp_min(1e-12)[:, None, None, None]


def _step(x_t: Tensor, eps: Tensor, ab_t: Tensor, ab_prev: Tensor, sampler: str,
          generator: torch.Generator | None) -> Tensor:
    """One reverse step from level t to the previous kept level (abar values given), DDPM posterior
    (respaced: beta' = 1 - abar_t / abar_prev) or deterministic DDIM, with x0^ clipped to [-1, 1]."""
    x0_hat = ((x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
    if sampler == "ddim":
        eps = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
        return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps
    beta = 1 - ab_t / ab_prev
    mean = (ab_prev.sqrt() * beta * x0_hat + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab_t)
    var = beta * (1 - ab_prev) / (1 - ab_t)
    noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
    return mean + var.sqrt() * noise


def _noised(x0: Tensor, ab: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, noise


def repair_batch(x_bad: Tensor, detector: Detector, diffusion: DiffusionModel, thresholds: FeatureThresholds,
                 cfg: RepairConfig, generator: torch.Generator | None = None, trace: list | None = None,
                 on_step: Callable[[float], None] | None = None) -> tuple[Tensor, Tensor]:
    """Repair one batch (B, C, H, W) in [0, 1] (windows: (B, 1, F, T) z-scores); returns (x_fix, omega
    (B, H, W)): x_fix equals x_bad outside omega and lies in the model's range ([0, 1] for images) inside.
    ``trace`` (a list) receives ``(t, x_t, original_noise)`` after every in-filling, for tests."""
    with torch.no_grad():
        bad = decompose(detector, x_bad)
        omega = thresholds.omega(bad.alpha.float())
    keep = (1 - omega)[:, None] if cfg.infill else torch.zeros_like(x_bad[:, :1])
    x0_bad = diffusion.to_model(x_bad)
    start_image = diffusion.to_model(_prefilled(x_bad, omega, diffusion.mean_dims)) if cfg.prefill == "mean" \
        else x0_bad
    guide = _Guide(detector, diffusion, x_bad, bad, omega, cfg) if cfg.guidance > 0 else None
    abar = diffusion.alphas_cumprod.to(x_bad.dtype)
    steps = timesteps(cfg, len(abar))
    x_t, _ = _noised(start_image, abar[steps[0]], generator)
    x_bad_t, noise = _noised(x0_bad, abar[steps[0]], generator)
    x_t = keep * x_bad_t + (1 - keep) * x_t
    if trace is not None:
        trace.append((steps[0], x_t.clone(), noise))
    for i, t in enumerate(steps):
        ab_t = abar[t]
        ab_prev = abar[steps[i + 1]] if i + 1 < len(steps) else torch.ones_like(ab_t)
        with torch.no_grad():
            eps = diffusion.predict_noise(x_t, torch.full((len(x_t),), t, dtype=torch.long, device=x_t.device)).float()
        if guide is not None:
            x0_hat = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
            eps = eps + (1 - ab_t).sqrt() * cfg.guidance * guide.gradient(x0_hat)
        with torch.no_grad():
            x_t = _step(x_t, eps, ab_t, ab_prev, cfg.sampler, generator)
            x_bad_t, noise = _noised(x0_bad, ab_prev, generator)  # the original at the *same* step
            x_t = keep * x_bad_t + (1 - keep) * x_t
        if trace is not None:
            trace.append((steps[i + 1] if i + 1 < len(steps) else -1, x_t.clone(), noise))
        if on_step is not None:
            on_step(guide.last_loss if guide is not None else 0.0)
    x_fix = diffusion.from_model(x_t.clamp(-1, 1))
    return torch.where(keep.bool().expand_as(x_bad), x_bad, x_fix), omega  # the input itself outside omega


@register("repair")
class RepairExplainer:
    """``RepairExplainer(config).fit(detector, data)`` fits the thresholds and trains the DDPM on the
    normal training images (skipped when a trained ``diffusion`` model is given); ``explain(x)``
    repairs a batch. ``explain(x, guidance=0)`` is the unguided baseline."""

    def __init__(self, config: RepairConfig | None = None, diffusion: DiffusionModel | None = None,
                 thresholds: FeatureThresholds | None = None):
        self.config = config or RepairConfig()
        self.diffusion, self.thresholds, self.detector = diffusion, thresholds, None

    @classmethod
    def from_options(cls, name: str, **options: Any) -> RepairExplainer:
        return cls(from_dict(RepairConfig, options, f"explainer {name}"))

    def fit(self, detector: Detector, data: ADData) -> RepairExplainer:
        decompose(detector, data.train_normal[:1].to(device_of(detector)))  # refuse a non-decomposable one first
        self.detector = detector.eval()
        if self.thresholds is None:
            self.thresholds = FeatureThresholds.fit(detector, data.train_normal, self.config.quantile)
        if self.diffusion is None:
            series = isinstance(data, SeriesData)
            diffusion_cfg = self.config.diffusion_config(tuple(data.image_shape), series)
            self.diffusion = (SeriesDiffusionModel if series else DiffusionModel)(diffusion_cfg)
            train_diffusion(self.diffusion, data.train_normal, diffusion_cfg, self.config.checkpoint_dir,
                            self.config.progress)
        return self

    def explain(self, x: Tensor, **overrides: Any) -> Explanation:
        """Repair ``x`` (N, C, H, W) in batches: ``outputs`` (N, 1, C, H, W), ``score_after`` (N, 1),
        ``extras["omega"]`` (N, H, W) the repaired region. ``overrides`` change config fields for this
        call (e.g. ``guidance=0`` for the unguided baseline, ``sampler="ddim", steps=25``)."""
        detector = self.detector
        if detector is None or self.diffusion is None or self.thresholds is None:
            raise RuntimeError("RepairExplainer is not fitted: call fit(detector, data) first")
        cfg = from_dict(RepairConfig, {**asdict(self.config), **overrides}, "repair overrides")
        detector.eval()
        frozen = [(p, p.requires_grad) for p in detector.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)  # the detector stays frozen; gradients flow to the image only
        generator = torch.Generator().manual_seed(cfg.seed)
        chunks = x.split(cfg.batch_size)
        n_steps = len(timesteps(cfg, len(self.diffusion.alphas_cumprod)))
        guided = cfg.guidance > 0
        bar = Progress(len(chunks) * n_steps, "repair" if guided else "unguided repair", every=n_steps,
                       enabled=cfg.progress)
        done = 0

        def on_step(loss: float) -> None:
            nonlocal done
            done += 1
            bar.update(done, {"property loss": loss} if guided else None)

        started = time.perf_counter()
        fixes, omegas = [], []
        try:
            for chunk in chunks:
                fix, omega = repair_batch(chunk.to(device_of(detector)), detector, self.diffusion, self.thresholds,
                                          cfg, generator, on_step=on_step)
                fixes.append(fix.cpu())
                omegas.append(omega.cpu())
        finally:
            bar.close()
            for p, flag in frozen:
                p.requires_grad_(flag)
        seconds = (time.perf_counter() - started) / max(1, len(x))
        x_fix = torch.cat(fixes)
        return Explanation(x, detector.scores(x, raw=False), outputs=x_fix[:, None],
                           score_after=detector.scores(x_fix, raw=False)[:, None], method="repair",
                           extras={"omega": torch.cat(omegas), "seconds_per_image": torch.tensor(seconds)})


def schedule_note(cfg: RepairConfig, train_timesteps: int) -> str:
    """A one-line description of the sampling schedule, for logs and reports."""
    steps = timesteps(cfg, train_timesteps)
    return f"{cfg.sampler}, {len(steps)} steps from t={steps[0]} of {train_timesteps}"
