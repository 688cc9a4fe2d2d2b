"""``OEDetector``: one network, one objective (BCE, Focal, HSC, Deep SAD, Deep SVDD, supervised).

The OE paper keeps the network fixed across methods to isolate the objective's effect (app. G.1);
so does this class: the objective is a strategy, the network comes from ``nets``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from anomalens.data.addata import ADData
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import OBJECTIVES, Objective, make_objective
from anomalens.detectors.registry import register
from anomalens.nets import build_net, default_net


@register(*OBJECTIVES)  # bce, focal, hsc, deepsad, dsvdd, supervised, fcdd: one network, seven objectives
class OEDetector(Detector):
    """A feature network plus an objective; ``fit`` trains it with balanced normal/anomaly batches.

    ``OEDetector("hsc", image_shape=(1, 28, 28))`` picks the papers' network for the image size;
    pass ``net=`` (a ``describe()`` dict or a LeNet profile name such as ``"fmnist"``) to choose.
    """

    def __init__(self, objective: str | Objective, image_shape: tuple[int, int, int],
                 net: dict[str, Any] | str | None = None, **objective_params: float):
        super().__init__()
        self.objective = objective if isinstance(objective, Objective) else make_objective(objective,
                                                                                          **objective_params)
        self.image_shape = tuple(image_shape)
        if net is None and self.objective.output == "map":
            net = "fcn"
        if net is None or isinstance(net, str):
            net = default_net(self.image_shape, net, bias=self.objective.bias)
        self.net_config = dict(net)
        self.net = build_net(self.net_config)
        bias = self.objective.bias
        self.head = nn.Linear(self.net.out_dim, 1, bias=bias) if self.objective.output == "logit" else None
        self.register_buffer("center", torch.zeros(self.net.out_dim) if self.objective.centred else None)
        self.history: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return self.objective.name

    # ---------------------------------------------------------------------------------- scoring

    def forward(self, x: Tensor) -> Tensor:
        """The objective's output: logits (B,) or features relative to the centre (B, d)."""
        features = self.net(x)
        if self.head is not None:
            return self.head(features).squeeze(1)
        return features - self.center if self.center is not None else features

    def raw_score(self, x: Tensor) -> Tensor:
        return self.objective.raw(self(x).float())

    def score(self, x: Tensor) -> Tensor:
        return self.objective.bounded(self(x).float())

    def score_log_odds(self, x: Tensor) -> Tensor:
        return self.objective.log_odds(self(x).float())

    def anomaly_map(self, x: Tensor) -> Tensor | None:
        """FCDD: the score map A(x) upsampled to the input with a gaussian over each location's
        receptive field; None for objectives without a spatial output."""
        if self.objective.output != "map":
            return None
        from anomalens.maps import receptive_upsample

        score_map = self.objective.score_map(self(x).float())
        return receptive_upsample(score_map, tuple(x.shape[-2:]), self.net.receptive_field)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """FCDD's score is the mean of A(x): each location contributes A_i / (h w), shared among the
        input pixels it upsamples to (the sum is kept). None for the other objectives."""
        if self.objective.output != "map":
            return None
        from anomalens.maps import spread

        score_map = self.objective.score_map(self(x).float())
        alpha = spread(score_map / score_map[0].numel(), tuple(x.shape[-2:]))
        return alpha, torch.zeros(len(x), dtype=alpha.dtype, device=alpha.device)

    @torch.no_grad()
    def init_center(self, normal: Tensor, batch_size: int = 512, eps: float = 0.1) -> None:
        """Fix the centre at the mean feature of the normal data under the initial network
        (Ruff et al. 2018); coordinates near zero are pushed to +-eps so that a trivial all-zero
        mapping cannot reach the centre."""
        if self.center is None:
            return
        was_training = self.training
        self.eval()
        mean = torch.cat([self.net(chunk) for chunk in normal.split(batch_size)]).mean(0)
        self.train(was_training)
        mean[(mean.abs() < eps) & (mean < 0)] = -eps
        mean[(mean.abs() < eps) & (mean >= 0)] = eps
        self.center.copy_(mean)

    # --------------------------------------------------------------------------------- training

    def training_anomalies(self, data: ADData) -> Tensor | None:
        """The anomalies this objective trains on: for OE objectives every anomaly the scenario has
        (OE and labelled anomalies together), for ``supervised`` only the labelled ones. A clear
        error when the scenario lacks them."""
        kind = self.objective.anomalies
        if kind == "none":
            return None
        sources = [data.train_oe, data.train_anomalies] if kind == "oe" else [data.train_anomalies]
        sources = [s for s in sources if s is not None and len(s)]
        pool = torch.cat(sources) if len(sources) > 1 else (sources[0] if sources else None)
        if pool is None:
            what = "an Outlier-Exposure set or labelled anomalies (oe=..., CLI --oe)" if kind == "oe" else \
                "known anomalies (known_anomalies=..., CLI --known-anomalies)"
            raise ValueError(f"{self.name} trains on {what}, but the scenario {data.name!r} has none")
        return pool

    def fit(self, data: ADData, cfg: Any = None) -> OEDetector:
        """Train on ``data`` with ``cfg`` (a ``TrainConfig``; defaults when None). See ``training.train``."""
        from anomalens.detectors.training import TrainConfig, train

        if tuple(data.image_shape) != self.image_shape:
            raise ValueError(f"detector built for images {self.image_shape}, data {data.name!r} has "
                             f"{tuple(data.image_shape)}")
        train(self, data, cfg or TrainConfig())
        return self

    # ------------------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        params = {k: v for k, v in asdict(self.objective).items()
                  if k not in ("name", "output", "anomalies", "centred", "bias")}
        return {"detector": "oe", "objective": self.objective.name, "objective_params": params,
                "image_shape": list(self.image_shape), "net": self.net_config}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], net: dict[str, Any] | str | None = None,
               focal_gamma: float = 2.0, hsc_radial: str = "pseudo_huber", **options: Any) -> OEDetector:
        params = {"focal": {"gamma": focal_gamma}, "hsc": {"radial": hsc_radial}}.get(name, {})
        return cls(name, image_shape, net, **params)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OEDetector:
        return cls(config["objective"], tuple(config["image_shape"]), config["net"],
                   **config.get("objective_params", {}))
