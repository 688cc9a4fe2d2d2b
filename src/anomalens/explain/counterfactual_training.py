"""The training loop of the counterfactual explainer: one G + R update per batch, a D update every
``d_every`` batches, progress with every loss term and ETA, sample grids, collapse warnings,
checkpoints (resumable, also on Ctrl-C) and NaN detection.

Batches hold ``batch_size`` normal training samples and ``batch_size`` anomalies (the scenario's OE
and known anomalies), as in appendix E.1. Each sample gets a random target level alpha and a random
concept k.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.training import TrainingDivergedError, optimizer_state, restore_optimizer
from anomalens.explain.counterfactual import ALPHAS, CounterfactualExplainer, discretise, sample_grid
from anomalens.progress import format_seconds
from anomalens.runs import last_checkpoint, save_checkpoint

LOSS_TERMS = ("loss_d", "loss_g", "loss_phi", "loss_rec", "loss_cyc", "loss_con")


def anomaly_pool(data: ADData) -> Tensor | None:
    """The anomalous side of each batch: OE and known anomalies together (None when there are none,
    e.g. Deep SVDD without OE; G then learns from normal samples and their pseudo-anomalies)."""
    parts = [t for t in (data.train_oe, data.train_anomalies) if t is not None and len(t)]
    return torch.cat(parts) if parts else None


def _d_condition(level: Tensor) -> Tensor:
    """Projection class of a target level: 0 normal (alpha 0), 1 anomalous (alpha 1), -1 for alpha 0.5."""
    return torch.where(level == 0, 0, torch.where(level == len(ALPHAS) - 1, 1, -1))


def generator_losses(explainer: CounterfactualExplainer, detector: Detector, x: Tensor, generator: torch.Generator,
                     autocast) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """The G/R objective on batch ``x``: (total, terms, x_bar detached, target levels)."""
    cfg = explainer.config
    G, D, R = explainer.generator, explainer.discriminator, explainer.concept
    n = len(x)
    with torch.no_grad(), autocast:
        own = discretise(detector.score(x))
    level = torch.randint(len(ALPHAS), (n,), generator=generator)
    concept = torch.randint(cfg.concepts, (n,), generator=generator)
    alpha = torch.tensor(ALPHAS)[level]
    with autocast:
        x_bar = G(x, explainer.condition(level, concept))
        x_tilde = G(x_bar, explainer.condition(own, concept))
        x_rec = G(x, explainer.condition(own, concept))
        scored = x_bar + cfg.phi_noise * torch.randn(x_bar.shape, generator=generator) if cfg.phi_noise else x_bar
        phi = detector.score(scored)
        logits_fwd, logits_back = R(x, x_bar), R(x_bar, x_tilde)
        fake = D(x_bar, _d_condition(level) if cfg.conditional_d else None)
    terms = {
        "loss_g": -fake.float().mean(),
        "loss_phi": F.binary_cross_entropy(phi.float().clamp(1e-6, 1 - 1e-6), alpha),
        "loss_rec": (x - x_rec.float()).abs().mean(),
        "loss_cyc": (x - x_tilde.float()).abs().mean(),
        "loss_con": F.cross_entropy(logits_fwd.float(), concept) + F.cross_entropy(logits_back.float(), concept),
    }
    total = (cfg.lambda_gan * terms["loss_g"] + cfg.lambda_phi * terms["loss_phi"]
             + cfg.lambda_rec * (terms["loss_rec"] + terms["loss_cyc"]) + cfg.lambda_r * terms["loss_con"])
    return total, terms, x_bar.detach(), level


def warmup_loss(explainer: CounterfactualExplainer, x: Tensor, generator: torch.Generator, autocast) -> Tensor:
    """Reconstruction under a random condition: starts G at the identity, so that the GAN phase edits
    the input instead of drawing a prototype normal sample from scratch."""
    n = len(x)
    level = torch.randint(len(ALPHAS), (n,), generator=generator)
    concept = torch.randint(explainer.config.concepts, (n,), generator=generator)
    with autocast:
        out = explainer.generator(x, explainer.condition(level, concept))
    return (x - out.float()).abs().mean()


def discriminator_loss(explainer: CounterfactualExplainer, real: Tensor, real_anomalous: Tensor, fake: Tensor,
                       fake_level: Tensor, autocast) -> Tensor:
    """Hinge loss (Miyato & Koyama 2018): real samples above +1, generated ones below -1."""
    D, conditional = explainer.discriminator, explainer.config.conditional_d
    with autocast:
        d_real = D(real, real_anomalous.long() if conditional else None).float()
        d_fake = D(fake, _d_condition(fake_level) if conditional else None).float()
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


@torch.no_grad()
def collapse_warnings(explainer: CounterfactualExplainer, probe: Tensor, tolerance: float = 0.004) -> list[str]:
    """Plain-words warnings when G's outputs stop depending on what they should depend on."""
    G, cfg = explainer.generator, explainer.config
    was_training = G.training
    G.eval()
    n = len(probe)
    out = {(a, k): G(probe, explainer.condition(torch.full((n,), a), torch.full((n,), k)))
           for a in (0, len(ALPHAS) - 1) for k in range(cfg.concepts)}
    G.train(was_training)
    warnings = []
    if cfg.concepts > 1:
        gap = min((out[0, i] - out[0, j]).abs().mean().item()
                  for i in range(cfg.concepts) for j in range(i + 1, cfg.concepts))
        if gap < tolerance:
            warnings.append(f"concept collapse: two concepts give nearly the same image (mean change {gap:.4f}); "
                            "raise lambda_r or train longer")
    alpha_gap = max((out[0, k] - out[len(ALPHAS) - 1, k]).abs().mean().item() for k in range(cfg.concepts))
    if alpha_gap < tolerance:
        warnings.append(f"G ignores the target score: alpha 0 and alpha 1 give the same image (mean change "
                        f"{alpha_gap:.4f}); lower lambda_rec or raise lambda_phi")
    return warnings


def _checkpoint(folder: Path, explainer: CounterfactualExplainer, optimizers: dict, generator: torch.Generator) -> None:
    tensors = explainer.state_tensors()
    metas = {}
    for name, optimizer in optimizers.items():
        state, metas[name] = optimizer_state(optimizer, f"optim_{name}")
        tensors.update(state)
    tensors["rng"] = generator.get_state()
    save_checkpoint(folder, explainer.step, tensors, {"optimizers": metas, "history": explainer.history})


def _resume(folder: Path, explainer: CounterfactualExplainer, optimizers: dict, generator: torch.Generator) -> bool:
    found = last_checkpoint(folder)
    if found is None:
        return False
    step, tensors, meta = found
    explainer.load_state_tensors({k: v for k, v in tensors.items() if k.split(".")[0] in ("g", "d", "r")}, folder)
    for name, optimizer in optimizers.items():
        restore_optimizer(optimizer, tensors, meta["optimizers"][name], f"optim_{name}")
    generator.set_state(tensors["rng"])
    explainer.step, explainer.history = step, meta.get("history", [])
    return True


def train_explainer(explainer: CounterfactualExplainer, detector: Detector, data: ADData, log=print) -> None:
    """Train ``explainer`` in place against the frozen ``detector`` (see the module docstring)."""
    cfg = explainer.config
    torch.set_flush_denormal(True)  # denormal floats slow CPU convolutions down several-fold
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    normal, pool = data.train_normal, anomaly_pool(data)
    batch = min(cfg.batch_size, len(normal))
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    optimizers = explainer._optimizers()
    if folder is not None and _resume(folder, explainer, optimizers, generator):
        log(f"resumed the explainer at step {explainer.step} from {folder}")
    frozen = [(p, p.requires_grad) for p in detector.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    detector.eval()
    modules = explainer._modules().values()
    if cfg.channels_last:
        for m in modules:
            m.to(memory_format=torch.channels_last)
    for m in modules:
        m.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
    probe = (pool if pool is not None else normal)[:8]
    started, first_step = time.perf_counter(), explainer.step
    sums: dict[str, float] = {}
    try:
        while explainer.step < cfg.steps:
            step = explainer.step
            for optimizer in optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr_at(step)
            x = normal[torch.randint(len(normal), (batch,), generator=generator)]
            source = torch.zeros(batch)
            if pool is not None:
                x = torch.cat([x, pool[torch.randint(len(pool), (batch,), generator=generator)]])
                source = torch.cat([source, torch.ones(batch)])
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if step < cfg.warmup_steps:
                terms = {"loss_rec": warmup_loss(explainer, x, generator, autocast)}
                _finite(terms["loss_rec"], "warm-up", step, folder)
                optimizers["g"].zero_grad(set_to_none=True)
                terms["loss_rec"].backward()
                optimizers["g"].step()
            else:
                total, terms, x_bar, level = generator_losses(explainer, detector, x, generator, autocast)
                _finite(total, "generator", step, folder)
                optimizers["g"].zero_grad(set_to_none=True)
                optimizers["r"].zero_grad(set_to_none=True)
                total.backward()
                optimizers["g"].step()
                optimizers["r"].step()
                if step % cfg.d_every == 0:
                    loss_d = discriminator_loss(explainer, x, source, x_bar, level, autocast)
                    _finite(loss_d, "discriminator", step, folder)
                    optimizers["d"].zero_grad(set_to_none=True)
                    loss_d.backward()
                    optimizers["d"].step()
                    terms["loss_d"] = loss_d.detach()
            explainer.step += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().item()
                sums[key + "#"] = sums.get(key + "#", 0.0) + 1
            done = explainer.step
            elapsed = time.perf_counter() - started
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = {k: sums[k] / sums[k + "#"] for k in LOSS_TERMS if k in sums}
                explainer.history.append({"step": done, **means})
                sums.clear()
                if cfg.progress:
                    eta = elapsed / (done - first_step) * (cfg.steps - done)
                    log(f"explainer step {done}/{cfg.steps} | " + " ".join(f"{k[5:]} {v:.4f}" for k, v in means.items())
                        + f" | {elapsed / (done - first_step):.2f} s/step, ETA {format_seconds(eta)}")
            if cfg.sample_every and folder is not None and (done % cfg.sample_every == 0 or done == cfg.steps):
                sample_grid(folder.parent / "samples" / f"step_{done:06d}.png", explainer, detector, probe)
                for m in modules:
                    m.train()
                for warning in collapse_warnings(explainer, probe) if done > cfg.warmup_steps else []:
                    log(f"warning at step {done}: {warning}")  # during the warm-up G is the identity by design
            if folder is not None and done % cfg.checkpoint_every == 0:
                _checkpoint(folder, explainer, optimizers, generator)
            if cfg.minutes is not None and elapsed > cfg.minutes * 60:
                log(f"time budget of {cfg.minutes} min reached at step {done}/{cfg.steps}")
                break
    except KeyboardInterrupt:
        if folder is not None:
            _checkpoint(folder, explainer, optimizers, generator)
            log(f"interrupted at step {explainer.step}: run the same command again to resume from {folder}")
        raise
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        for m in modules:
            m.eval()
            if cfg.channels_last:
                m.to(memory_format=torch.contiguous_format)
    if folder is not None:
        _checkpoint(folder, explainer, optimizers, generator)


def _finite(loss: Tensor, name: str, step: int, folder: Path | None) -> None:
    value = loss.item()
    if not math.isfinite(value):
        where = f"; the last good checkpoint is in {folder}" if folder is not None else ""
        raise TrainingDivergedError(f"explainer {name} loss became {value} at step {step + 1}{where}. "
                                    "Fix: lower lr or lambda_phi")
