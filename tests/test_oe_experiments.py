"""The OE paper's remaining experiments as TrainJob keys (issue 15): Fourier filters (appendices B-C),
OE class diversity (appendix A), HSC's radial function (appendix E), and the curve layout with another
key on its x axis (figures 4, 7, 9-10, 14, Table 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalens.data import frequency
from anomalens.data.addata import ADData
from anomalens.data.images import LabeledImages
from anomalens.data.scenarios import choose_oe_classes
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import HSC, RADIALS
from anomalens.detectors.oe import OEDetector
from anomalens.errors import ConfigError, ScenarioError
from anomalens.experiments import collect
from anomalens.experiments.training_run import TrainJob

# ------------------------------------------------------------------------------- Fourier filters


def test_masks_follow_the_papers_magnitude() -> None:
    low, high = frequency.spectrum_mask("low", 15, 32, 32), frequency.spectrum_mask("high", 3, 32, 32)
    assert low.sum() == 4 and low[15:17, 15:17].all()  # m = 15 on 32 px: "just 4 pixels in the center remain"
    assert high.numel() - high.sum() == 9 and high[16, 16] == 0  # the central 3 x 3 block, DC included
    assert frequency.spectrum_mask("low", 0, 28, 28).all()
    for kind, cutoff in (("low", 14), ("high", 29), ("band", 2)):
        with pytest.raises(ConfigError, match="Fix:"):
            frequency.spectrum_mask(kind, cutoff, 28, 28)


def test_filters_keep_what_their_band_holds() -> None:
    flat = torch.full((2, 1, 28, 28), 0.3)
    checker = ((torch.arange(28)[:, None] + torch.arange(28)[None]) % 2).float().expand(2, 1, 28, 28)
    assert torch.allclose(frequency.filter_images(flat, "low", 6), flat, atol=1e-5)  # DC only: untouched
    assert torch.allclose(frequency.filter_images(flat, "high", 2), torch.full_like(flat, 0.5), atol=1e-5)
    assert torch.allclose(frequency.filter_images(checker, "low", 4), torch.full_like(checker, 0.5), atol=1e-5)
    assert frequency.filter_images(checker, "high", 4).std() > 0.2  # the highest frequency passes
    x = torch.rand(3, 3, 32, 32)
    for kind in frequency.FILTERS:
        y = frequency.filter_images(x, kind, 8)
        assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1


def _task(oe: bool = True) -> ADData:
    g = torch.Generator().manual_seed(0)
    return ADData(train_normal=torch.rand(4, 1, 28, 28, generator=g), test_x=torch.rand(6, 1, 28, 28, generator=g),
                  test_y=torch.tensor([0, 0, 1, 1, 1, 1]),
                  train_oe=torch.rand(5, 1, 28, 28, generator=g) if oe else None, name="toy")


@pytest.mark.parametrize("side,changed", [("all", {"train_normal", "train_oe", "test_x"}), ("test", {"test_x"}),
                                          ("oe", {"train_oe"})])
def test_filter_on_picks_the_filtered_images(side: str, changed: set[str]) -> None:
    before, after = _task(), frequency.filter_task(_task(), "low", 6, side)
    for key in ("train_normal", "train_oe", "test_x"):
        assert torch.equal(getattr(before, key), getattr(after, key)) != (key in changed), key
    assert "low-pass m=6" in after.name
    with pytest.raises(ConfigError, match="no OE images"):
        frequency.filter_task(_task(oe=False), "high", 2, "oe")


@pytest.mark.parametrize("keys,message", [
    ({"filter": "band", "filter_cutoff": 4}, "expected filter"), ({"filter": "low"}, "0 filters nothing"),
    ({"filter_cutoff": 4}, "without a filter"), ({"filter": "low", "filter_cutoff": 4, "filter_on": "oe"}, "OE set"),
    ({"oe_classes": 2}, "needs an oe set"), ({"oe": "kmnist", "oe_classes": 0}, "oe_classes must be >= 1"),
    ({"hsc_radial": "l3"}, "hsc_radial"),
])
def test_trainjob_refuses_bad_experiment_keys(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainJob(**keys)


# ------------------------------------------------------------------------------- OE diversity


def _pool(name: str, classes: int, per_class: int = 3) -> LabeledImages:
    labels = np.repeat(np.arange(classes), per_class)
    images = np.broadcast_to(labels[:, None, None, None].astype(np.uint8), (len(labels), 4, 4, 1))
    return LabeledImages(images.copy(), labels, [f"{name}{i}" for i in range(classes)], name)


def test_oe_classes_draws_whole_classes_nested_and_seeded() -> None:
    pools = [_pool("a", 5), _pool("b", 3)]
    drawn = {k: choose_oe_classes(pools, k, seed=4) for k in (1, 3, 8)}
    for k, chosen in drawn.items():
        classes = {(p.name, int(c)) for p in chosen for c in np.unique(p.labels)}
        assert len(classes) == k and all(len(p) == 3 * len(np.unique(p.labels)) for p in chosen)
        drawn[k] = classes
    assert drawn[1] <= drawn[3] <= drawn[8]  # k classes hold the draw for fewer
    assert drawn[3] == {(p.name, int(c)) for p in choose_oe_classes(pools, 3, 4) for c in np.unique(p.labels)}
    assert choose_oe_classes(pools, None, 0) == pools
    with pytest.raises(ScenarioError, match="exceeds the 8 classes"):
        choose_oe_classes(pools, 9, 0)


# ------------------------------------------------------------------------------- HSC radial function


def test_hsc_radials_are_the_papers_and_survive_save_and_load(tmp_path: Path) -> None:
    z = torch.tensor([[3.0, -4.0], [0.0, 0.0]], requires_grad=True)
    expected = {"l1": [7.0, 0.0], "l2": [5.0, 0.0], "l2_squared": [25.0, 0.0], "pseudo_huber": [26 ** 0.5 - 1, 0.0]}
    for radial, values in expected.items():
        objective = HSC(radial=radial)
        assert torch.allclose(objective.raw(z), torch.tensor(values), atol=1e-5)
        loss = objective.loss(z, torch.tensor([1, 0]))
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), radial  # l2 at z = 0 included
    assert set(RADIALS) == set(expected)
    with pytest.raises(ConfigError, match="pseudo_huber"):
        HSC(radial="cosine")
    detector = OEDetector.create("hsc", (1, 28, 28), hsc_radial="l1")
    detector.save(tmp_path / "d.safetensors")
    assert Detector.load(tmp_path / "d.safetensors").objective.radial == "l1"


# ------------------------------------------------------------------------------- curve layout


def _groups(points: list[tuple[dict, float]]) -> list[collect.Group]:
    runs = [({"train": {"dataset": "cifar10", "colored": False, "seed": 0, **train}, "explain": None},
             {"ad_auroc": auroc}) for train, auroc in points]
    return collect.group(runs)


def test_curve_puts_any_key_on_the_x_axis(tmp_path: Path) -> None:
    points = []
    for detector in ("bce", "hsc"):
        for normal in ("0", "8"):
            points.append(({"detector": detector, "normal": normal, "filter": None, "filter_cutoff": 0,
                            "filter_on": "all"}, 0.8))
            for cutoff in (4, 12):
                points.append(({"detector": detector, "normal": normal, "filter": "low", "filter_cutoff": cutoff,
                                "filter_on": "test"}, 0.9 - cutoff / 100 + (0.02 if normal == "8" else 0)))
    table = collect.curve(_groups(points), tmp_path / "curve.png", x="filter_cutoff")
    assert table.columns == ["0", "4", "12"] and (tmp_path / "curve.png").stat().st_size > 1000
    rows = dict(table.rows)
    assert rows["cifar10, detector bce, filter low, filter_on test"]["12"].mean == pytest.approx(0.79)
    baseline = rows["cifar10, detector bce, filter None, filter_on all"]["0"]
    assert baseline.mean == pytest.approx(0.8) and baseline.paper == pytest.approx((0.964 + 0.981) / 2)

    filtered = [t for t in collect.ce_tables(_groups(points)) if "filter low" in t.title]
    assert len(filtered) == 4 and all(cells["ad_auroc"].paper is None for t in filtered for _, cells in t.rows)

    diversity = [({"detector": "bce", "normal": "0", "oe_classes": k}, 0.7) for k in (None, 1, 4)]
    assert collect.curve(_groups(diversity), x="oe_classes").columns == ["1", "4", "all"]

    radial = [({"detector": "hsc", "normal": str(c), "augment": a, "hsc_radial": h}, 0.9)
              for c in range(10) for a in ("none", "natural") for h in ("pseudo_huber", "l1")]
    table = collect.curve(_groups(radial), tmp_path / "radial.png", x="hsc_radial")
    assert table.columns == ["pseudo_huber", "l1"]  # a categorical axis keeps the grid's order
    assert dict(table.rows)["cifar10, detector hsc, augment natural"]["l1"].paper == pytest.approx(0.925)
    assert "[0.96]" in collect.render([table], "md")  # Table 6: 96.1 with augmentation, pseudo-Huber
