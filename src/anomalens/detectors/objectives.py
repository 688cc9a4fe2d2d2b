"""Training objectives of the OE detectors, as interchangeable strategies.

An objective says what the network's output means (a logit, or a feature vector whose distance
to a centre is the score), how it is trained from normal samples (y = 0) and training anomalies
(y = 1: Outlier Exposure or known anomalies), and how the output becomes a raw and a bounded
score. Sources: OE paper sec. 3 and app. E-F; counterfactual paper sec. 3.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalens.errors import ConfigError

_EPS = 1e-6


@dataclass
class Objective:
    """Base: ``output`` is "logit" (a linear head on the features) or "features" (the features)."""

    name: str = ""
    output: str = "logit"  # "logit", "features" or "map" (a spatial score map, FCDD)
    anomalies: str = "oe"  # which training anomalies: "oe", "known" (labelled subset) or "none"
    centred: bool = False  # features are measured from a centre fixed at initialisation
    bias: bool = True  # Deep SVDD needs a bias-free network

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def raw(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def bounded(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def log_odds(self, out: Tensor) -> Tensor:
        """log(p / (1 - p)) of the bounded score p, without going through p where the objective allows:
        a confident detector saturates p to exactly 0 or 1 in float32, and the gradient with it."""
        return torch.logit(self.bounded(out), eps=1e-6)


@dataclass
class BCE(Objective):
    """Supervised OE: a binary classifier between normal samples and outliers."""

    name: str = "bce"

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(out, y.float())

    def raw(self, out: Tensor) -> Tensor:
        return out

    def bounded(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def log_odds(self, out: Tensor) -> Tensor:
        return out


@dataclass
class Supervised(BCE):
    """A classifier of normal samples vs a labelled subset of the anomalies (no OE): the biased
    baseline of the counterfactual paper's section 4.4."""

    name: str = "supervised"
    anomalies: str = "known"


@dataclass
class Focal(BCE):
    """Focal loss (Lin et al. 2017) with balanced batches: alpha = 0.5 as in the OE paper, app. F."""

    name: str = "focal"
    gamma: float = 2.0
    alpha: float = 0.5

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        y = y.float()
        log_p = F.logsigmoid(out)  # log P(anomaly)
        log_q = F.logsigmoid(-out)  # log P(normal)
        log_pt = y * log_p + (1 - y) * log_q
        alpha_t = y * self.alpha + (1 - y) * (1 - self.alpha)
        return -(alpha_t * (1 - log_pt.exp()).pow(self.gamma) * log_pt).mean()


def radial_log_odds(h: Tensor) -> Tensor:
    """log(p / (1 - p)) for p = 1 - exp(-h), h >= 0: log(exp(h) - 1), stable for small and large h."""
    h = h.clamp(min=1e-12)
    return h + torch.log(-torch.expm1(-h))


def pseudo_huber(z: Tensor) -> Tensor:
    """h(z) = sqrt(|z|^2 + 1) - 1: quadratic near 0, linear far away (robust to outlying features)."""
    return torch.sqrt(z.pow(2).sum(1) + 1) - 1


#: HSC's choices of h in the radial function l(z) = exp(-h(z)) compared in the OE paper's appendix E
#: (Table 6); the l2 norm is taken as sqrt(|z|^2 + 1e-12) so its gradient stays finite at z = 0.
RADIALS = {
    "pseudo_huber": pseudo_huber,
    "l1": lambda z: z.abs().sum(1),
    "l2": lambda z: (z.pow(2).sum(1) + 1e-12).sqrt(),
    "l2_squared": lambda z: z.pow(2).sum(1),
}


@dataclass
class HSC(Objective):
    """Hypersphere classifier: cross entropy with the radial l(z) = exp(-h(z)), h pseudo-Huber by default
    (``radial`` picks another h of ``RADIALS``, OE paper app. E); bounded score 1 - exp(-h)
    (counterfactual paper, sec. 3.3)."""

    name: str = "hsc"
    output: str = "features"
    radial: str = "pseudo_huber"

    def __post_init__(self) -> None:
        if self.radial not in RADIALS:
            raise ConfigError(f"hsc radial {self.radial!r} is unknown. Fix: one of {', '.join(RADIALS)}")

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        h = RADIALS[self.radial](out)
        y = y.float()
        anomalous = -torch.log(-torch.expm1(-h.clamp_min(_EPS)))  # -log(1 - exp(-h)), stable for small h
        return ((1 - y) * h + y * anomalous).mean()

    def raw(self, out: Tensor) -> Tensor:
        return RADIALS[self.radial](out)

    def bounded(self, out: Tensor) -> Tensor:
        return -torch.expm1(-RADIALS[self.radial](out))

    def log_odds(self, out: Tensor) -> Tensor:
        return radial_log_odds(RADIALS[self.radial](out))


def _squared_distance(out: Tensor) -> Tensor:
    return out.pow(2).sum(1)


@dataclass
class DeepSAD(Objective):
    """Deep SAD (Ruff et al. 2020): normal samples near the centre, anomalies pushed away through
    the inverse squared distance (eta = 1)."""

    name: str = "deepsad"
    output: str = "features"
    centred: bool = True

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        d = _squared_distance(out)
        y = y.float()
        return ((1 - y) * d + y / (d + _EPS)).mean()

    def raw(self, out: Tensor) -> Tensor:
        return _squared_distance(out)

    def bounded(self, out: Tensor) -> Tensor:
        d = _squared_distance(out)
        return d / (1 + d)

    def log_odds(self, out: Tensor) -> Tensor:
        return torch.log(_squared_distance(out).clamp(min=1e-12))


@dataclass
class DeepSVDD(DeepSAD):
    """Deep SVDD (Ruff et al. 2018) without OE, with the bounded objective d^2 / (1 + d^2) of the
    counterfactual paper; bias-free network, centre fixed at initialisation."""

    name: str = "dsvdd"
    anomalies: str = "none"
    bias: bool = False

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return self.bounded(out).mean()


@dataclass
class FCDD(HSC):
    """Fully convolutional data description (Liznerski et al. 2021): the network outputs a map,
    A(x) = sqrt(map^2 + 1) - 1 per location, and the HSC cross entropy is applied to the map's mean.
    Score = mean of A(x); the map itself, upsampled, is the explanation."""

    name: str = "fcdd"
    output: str = "map"

    @staticmethod
    def score_map(out: Tensor) -> Tensor:
        """(B, 1, h, w) network output -> (B, h, w) pseudo-Huber map A(x)."""
        return torch.sqrt(out[:, 0].pow(2) + 1) - 1

    def _mean(self, out: Tensor) -> Tensor:
        return self.score_map(out).mean(dim=(1, 2))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        m = self._mean(out)
        y = y.float()
        anomalous = -torch.log(-torch.expm1(-m.clamp_min(_EPS)))
        return ((1 - y) * m + y * anomalous).mean()

    def raw(self, out: Tensor) -> Tensor:
        return self._mean(out)

    def bounded(self, out: Tensor) -> Tensor:
        return -torch.expm1(-self._mean(out))

    def log_odds(self, out: Tensor) -> Tensor:
        return radial_log_odds(self._mean(out))


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (BCE, Focal, HSC, DeepSAD, DeepSVDD, Supervised,
                                                                    FCDD)}


def make_objective(name: str, **params: float) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown detector objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](**params)
