"""Metrics of counterfactual explanations (CE paper, appendix D), plus oracle validity.

- ``cf_auroc``: AuROC of the detector's scores, normal test samples vs the counterfactuals of the
  test anomalies (0.5: the detector cannot tell them apart).
- ``concept_acc``: accuracy of the concept classifier R on the test counterfactuals.
- ``sub_auroc``: the detector recipe retrained with counterfactuals in place of the normal training
  set, evaluated on the true test set (are the counterfactuals normal enough to learn normality from?).
- ``fid_n``: FID(counterfactuals, normal) / FID(anomalies, normal) in a named feature space.
- ``oracle_validity``: the share of counterfactuals that an independent label classifier puts in a
  normal class. The paper lacks it; it is what tells a semantic edit from an adversarial one,
  which fools the detector (good CF AuROC) while a person sees the same anomaly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anomalens.data.addata import ADData
from anomalens.data.images import LabeledImages
from anomalens.data.scenarios import parse_normality
from anomalens.detectors.base import Detector
from anomalens.metrics.detection import auroc
from anomalens.metrics.oracle import LabelClassifier


def cf_auroc(detector: Detector, normal: Tensor, counterfactuals: Tensor) -> float:
    """AuROC of the detector's native scores: normal test samples (0) vs counterfactuals (1)."""
    scores = torch.cat([detector.scores(normal), detector.scores(counterfactuals)])
    labels = torch.cat([torch.zeros(len(normal)), torch.ones(len(counterfactuals))])
    return auroc(labels, scores)


@torch.no_grad()
def concept_accuracy(concept_logits: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, images: Tensor,
                     batch_size: int = 512) -> float:
    """Share of counterfactuals ``images`` (N, K, C, H, W) whose concept R recognises from (x, x_bar):
    ``concept_logits(x, x_bar)`` is the explainer's ``concept_logits``."""
    n, k = images.shape[:2]
    pairs_x = inputs.repeat_interleave(k, 0)
    flat = images.flatten(0, 1)
    predicted = torch.cat([concept_logits(a, b).argmax(1)
                           for a, b in zip(pairs_x.split(batch_size), flat.split(batch_size))])
    return (predicted.view(n, k) == torch.arange(k)).float().mean().item()


def normal_predicate(rule: str | int | Sequence[int | str], class_names: Sequence[str]) -> Callable[[dict], Tensor]:
    """The scenario's normality rule applied to predicted attributes ({"label": ..., "colour": ...})."""
    mask = parse_normality(rule, class_names)

    def is_normal(attrs: dict[str, Tensor]) -> Tensor:
        n = len(attrs["label"])
        fake = LabeledImages(np.zeros((n, 1, 1, 1), np.uint8), attrs["label"].numpy(), list(class_names),
                             attrs={k: v.numpy() for k, v in attrs.items() if k != "label"})
        return torch.from_numpy(mask(fake))
    return is_normal


def oracle_validity(oracle: LabelClassifier, inputs: Tensor, images: Tensor,
                    is_normal: Callable[[dict], Tensor]) -> dict[str, Any]:
    """The oracle's verdict on counterfactuals ``images`` (N, K, C, H, W) of ``inputs`` (N, ...).

    ``oracle_validity``: share judged normal; ``oracle_validity_per_concept``; and
    ``oracle_factor_changes``: per concept, the share whose predicted factor (digit, colour, ...)
    differs from the oracle's prediction for the input itself (so oracle errors on the input do not
    count as changes) — it tells which factor each concept edits."""
    n, k = images.shape[:2]
    before = oracle.predict(inputs)
    after = {key: value.view(n, k) for key, value in oracle.predict(images.flatten(0, 1)).items()}
    normal = is_normal({key: value.flatten() for key, value in after.items()}).view(n, k).float()
    changes = {f"concept_{j + 1}": {key: (after[key][:, j] != before[key]).float().mean().item() for key in after}
               for j in range(k)}
    input_normal = is_normal(before).float().mean().item()
    result = {"oracle_validity": normal.mean().item(),
              "oracle_validity_per_concept": normal.mean(0).tolist(),
              "oracle_factor_changes": changes,
              "oracle_inputs_normal": input_normal}
    heads = getattr(oracle, "heads_spec", None)
    if heads:
        result["oracle_kept"] = _kept(before, after, heads, is_normal).mean().item()
    return result


def _kept(before: dict[str, Tensor], after: dict[str, Tensor], heads: dict[str, int],
          is_normal: Callable[[dict], Tensor]) -> Tensor:
    """(N, K) whether each counterfactual keeps every factor that did not make its input anomalous.

    A factor made the input anomalous when some value of it alone turns the input (as the oracle sees
    it) normal, e.g. the colour of a blue 3 under "red or one". A factor that no value could fix, e.g.
    the colour under "one", must stay as it is: changing it is an edit the anomaly did not call for."""
    n = len(next(iter(before.values())))
    kept = torch.ones(after[next(iter(after))].shape, dtype=torch.bool)
    for factor, size in heads.items():
        responsible = torch.zeros(n, dtype=torch.bool)
        for value in range(size):
            responsible |= is_normal({**before, factor: torch.full((n,), value, dtype=torch.long)}).bool()
        same = after[factor] == before[factor][:, None]
        kept &= same | responsible[:, None]
    return kept.float()


def sub_auroc(data: ADData, counterfactuals: Tensor, train_detector: Callable[[ADData], Detector]) -> float:
    """Train a fresh detector with ``counterfactuals`` as its normal training set (same recipe as
    the explained detector, via ``train_detector``) and return its AuROC on the true test set."""
    substitute = ADData(train_normal=counterfactuals, test_x=data.test_x, test_y=data.test_y,
                        train_oe=data.train_oe, train_anomalies=data.train_anomalies,
                        name=f"{data.name} (normal training set = counterfactuals)",
                        normal_description=data.normal_description)
    detector = train_detector(substitute)
    return auroc(data.test_y, detector.scores(data.test_x))


def score_summary(scores: Tensor) -> dict[str, float]:
    """How the detector scores a set of images: calibration next to ranking (a saturated detector can
    rank counterfactuals above every normal sample while scoring them ~0)."""
    s = scores.float()
    return {"mean": s.mean().item(), "median": s.median().item(), "below_half": (s < 0.5).float().mean().item()}
