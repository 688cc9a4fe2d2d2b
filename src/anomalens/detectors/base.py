"""The ``Detector`` interface every explainer works through, and the detector registry.

A detector maps images (B, C, H, W) in [0, 1] to anomaly scores. ``score`` is bounded in [0, 1]
and differentiable with respect to the input, because the counterfactual generator and the repair
guidance back-propagate through it; ``raw_score`` is the method's native score, used for AuROC.

Saved detectors are one ``.safetensors`` file: the weights, plus the JSON config needed to rebuild
the network in the file's metadata. Loading parses JSON and tensors only, never pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from anomalens.checkpoints import (
    CheckpointError,
    build_checked,
    load_checked,
    metadata_json,
    read_weights,
    write_weights,
)
from anomalens.data.addata import ADData
from anomalens.device import device_of

FORMAT = "anomalens.detector/1"
__all__ = ["CheckpointError", "Detector", "FORMAT"]


class Detector(nn.Module):
    """Base class. Subclasses implement ``fit``, ``raw_score``, ``score`` and ``config``."""

    kind: ClassVar[str] = "detector"

    def fit(self, data: ADData, cfg: Any = None) -> Detector:
        raise NotImplementedError

    def raw_score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def score_log_odds(self, x: Tensor) -> Tensor:
        """log(p / (1 - p)) of the bounded score p, differentiable: losses on the score (the counterfactual
        explainer's L_phi) use it so that their gradient survives where p rounds to 0 or 1. Detectors
        whose score is a sigmoid or 1 - exp(-h) override it with an exact, non-saturating form."""
        return torch.logit(self.score(x), eps=1e-6)

    def anomaly_map(self, x: Tensor) -> Tensor | None:
        """(B, H, W) heatmap explaining the score; by default the feature scores of ``decompose``
        (None when the detector is not decomposable)."""
        parts = self.decompose(x)
        return None if parts is None else parts[0]

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """Linear decomposition (AR-Pro, Def. 2.1): feature scores alpha (B, H, W) at input
        resolution and a regulariser beta (B,) with ``decomposed_score(x) = alpha.sum((1, 2)) + beta``.
        None for detectors whose score is not a sum of per-location scores (e.g. BCE, HSC)."""
        return None

    def decomposed_score(self, x: Tensor) -> Tensor:
        """The score that ``decompose`` splits; ``raw_score`` unless a detector says otherwise
        (AE-XAD decomposes its squared score). Same ranking as ``raw_score``."""
        return self.raw_score(x)

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Detector:
        raise NotImplementedError

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], **options: Any) -> Detector:
        """A fresh detector registered as ``name``; ``options`` are a train job's settings, of which a
        detector takes the ones it understands (see ``detectors.registry.create``)."""
        return cls(image_shape)

    @torch.no_grad()
    def scores(self, x: Tensor, batch_size: int = 1024, raw: bool = True) -> Tensor:
        """Scores of a whole tensor in eval mode, batched, without gradients (for evaluation)."""
        was_training = self.training
        self.eval()
        fn = self.raw_score if raw else self.score
        device = device_of(self)
        try:
            return torch.cat([fn(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write weights and config to ``path`` (one .safetensors file), atomically."""
        return write_weights(path, self.state_dict(), {"format": FORMAT, "config": json.dumps(self.config())})

    @staticmethod
    def load(path: str | Path, expect: str | None = None) -> Detector:
        """Rebuild a saved detector. ``expect`` (e.g. ``"hsc"``) refuses a file of another method.

        Nothing in the file is trusted: its weights must be finite, and its config must build a
        network whose size and shapes match the stored tensors before any memory is allocated."""
        from anomalens.detectors import registry

        path = Path(path)
        writer = "Detector.save or `anomalens train`"
        tensors, metadata = read_weights(path, "detector", writer, FORMAT)
        config = metadata_json(metadata, "config", path, writer)
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: the header's config is not a mapping. Fix: pass a file written by {writer}")
        method = config.get("objective", config.get("detector"))
        if expect is not None and expect not in (config.get("detector"), method):
            raise CheckpointError(f"{path}: holds a {method!r} detector, not {expect!r}. Fix: load it without "
                                  f"expect= or pass a {expect} checkpoint")
        if not isinstance(method, str) or method not in registry.names():
            raise CheckpointError(f"{path}: unknown detector {method!r}. Fix: pass a file of a known detector "
                                  f"({', '.join(registry.names())})")
        cls = registry.detector_class(method)
        detector = build_checked(lambda: cls.from_config(config), tensors, path)
        return detector.eval()

    def load_weights(self, tensors: dict[str, Tensor], source: str | Path = "weights") -> None:
        """Load a state dict, refusing any difference in names or shapes with a readable message."""
        load_checked(self, tensors, source)
