"""The loss terms of the counterfactual explainer (CE paper, section 3.2), its auto-encoder warm-up
and its collapse warnings. ``explainer`` is a ``CounterfactualExplainer`` (its ``generator``,
``discriminator``, ``concept`` networks, ``config`` and ``condition``); the training recipe that
combines these terms lives in ``explain/counterfactual.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalens.data.addata import ADData

ALPHAS = (0.0, 0.5, 1.0)  # the discretised target scores of appendix E.1
LOSS_TERMS = ("loss_d", "loss_g", "loss_phi", "loss_rec", "loss_cyc", "loss_con")


def discretise(scores: Tensor) -> Tensor:
    """Index of the nearest level in ALPHAS for each score."""
    levels = torch.tensor(ALPHAS, device=scores.device)
    return (scores.float()[:, None] - levels).abs().argmin(1)


def target_levels(weights: tuple[float, ...], n: int, generator: torch.Generator) -> Tensor:
    """Indices into ALPHAS for a batch of ``n``: uniform as in the paper, or weighted to train the
    counterfactual direction (alpha 0) more often than the others. Equal weights draw with ``randint``
    as before the option existed, so runs measured then replay step for step from their seed."""
    if len(set(weights)) == 1:
        return torch.randint(len(ALPHAS), (n,), generator=generator)
    return torch.multinomial(torch.tensor(weights), n, replacement=True, generator=generator)


def anomaly_pool(data: ADData) -> Tensor | None:
    """The anomalous side of each batch: OE and known anomalies together (None when there are none,
    e.g. Deep SVDD without OE; G then learns from normal samples and their pseudo-anomalies)."""
    parts = [t for t in (data.train_oe, data.train_anomalies) if t is not None and len(t)]
    return torch.cat(parts) if parts else None


def _d_condition(level: Tensor) -> Tensor:
    """Projection class of a target level: 0 normal (alpha 0), 1 anomalous (alpha 1), -1 for alpha 0.5."""
    return torch.where(level == 0, 0, torch.where(level == len(ALPHAS) - 1, 1, -1))


def generator_losses(explainer, detector, x: Tensor, generator: torch.Generator,
                     autocast) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor, Tensor]:
    """The G/R objective on batch ``x``: (total, terms, real and fake inputs of D (fake detached), target
    levels). With latent critics, R, D and the two reconstruction terms work on the codes G' edits
    (L1 relative to the codes' mean magnitude), and only x_bar is decoded, for the detector."""
    cfg = explainer.config
    G, D, R = explainer.generator, explainer.discriminator, explainer.concept
    n = len(x)
    with torch.no_grad(), autocast:
        own = discretise(detector.score(x))
    level = target_levels(cfg.level_weights, n, generator).to(x.device)
    concept = torch.randint(cfg.concepts, (n,), generator=generator).to(x.device)
    alpha = torch.tensor(ALPHAS, device=x.device)[level]
    with autocast:
        with torch.no_grad():
            real = explainer.critic_input(x).float()  # x itself, or its code
        if explainer.latent_critics:
            fake = G.editor(real, explainer.condition(level, concept))
            x_bar = G.autoencoder.decode(fake).clamp(0, 1)
            cycled = G.editor(fake, explainer.condition(own, concept))
            rebuilt = G.editor(real, explainer.condition(own, concept))
            scale = real.abs().mean()
        else:
            scale = 1.0
            fake = x_bar = G(x, explainer.condition(level, concept))
            cycled = G(x_bar, explainer.condition(own, concept))
            rebuilt = G(x, explainer.condition(own, concept))
        noise = torch.randn(x_bar.shape, generator=generator).to(x.device) if cfg.phi_noise else None
        scored = x_bar + cfg.phi_noise * noise if noise is not None else x_bar
        phi = detector.score_log_odds(scored)
        logits_fwd, logits_back = R(real, fake), R(fake, cycled)
        judged = D(fake, _d_condition(level) if cfg.conditional_d else None)
    terms = {
        "loss_g": -judged.float().mean(),
        "loss_phi": F.binary_cross_entropy_with_logits(phi.float(), alpha),  # on log-odds: never saturates
        "loss_rec": (real - rebuilt.float()).abs().mean() / scale,
        "loss_cyc": (real - cycled.float()).abs().mean() / scale,
        "loss_con": F.cross_entropy(logits_fwd.float(), concept) + F.cross_entropy(logits_back.float(), concept),
    }
    total = (cfg.lambda_gan * terms["loss_g"] + cfg.lambda_phi * terms["loss_phi"]
             + cfg.lambda_rec * (terms["loss_rec"] + terms["loss_cyc"]) + cfg.lambda_r * terms["loss_con"])
    return total, terms, real, fake.detach(), level


def warmup_loss(explainer, x: Tensor, generator: torch.Generator, autocast) -> Tensor:
    """Reconstruction under a random condition: starts G at the identity, so that the GAN phase edits
    the input instead of drawing a prototype normal sample from scratch."""
    n = len(x)
    level = torch.randint(len(ALPHAS), (n,), generator=generator).to(x.device)
    concept = torch.randint(explainer.config.concepts, (n,), generator=generator).to(x.device)
    with autocast:
        out = explainer.generator(x, explainer.condition(level, concept))
    return (x - out.float()).abs().mean()


def discriminator_loss(explainer, real: Tensor, real_anomalous: Tensor, fake: Tensor,
                       fake_level: Tensor, autocast) -> Tensor:
    """Hinge loss (Miyato & Koyama 2018): real samples above +1, generated ones below -1."""
    D, conditional = explainer.discriminator, explainer.config.conditional_d
    with autocast:
        d_real = D(real, real_anomalous.long() if conditional else None).float()
        d_fake = D(fake, _d_condition(fake_level) if conditional else None).float()
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


@torch.no_grad()
def collapse_warnings(explainer, probe: Tensor, tolerance: float = 0.004) -> list[str]:
    """Plain-words warnings when G's outputs stop depending on what they should depend on."""
    G, cfg = explainer.generator, explainer.config
    was_training = G.training
    G.eval()
    n = len(probe)
    out = {(a, k): G(probe, explainer.condition(torch.full((n,), a, device=probe.device),
                                                torch.full((n,), k, device=probe.device)))
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
