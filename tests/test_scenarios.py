"""Scenario splits: who is normal, what is held out, what OE and known anomalies contain."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from anomalens.data import scenarios
from anomalens.data.images import LabeledImages
from anomalens.errors import ScenarioError


def _digits(n: int, seed: int, name: str = "digits") -> LabeledImages:
    """Grayscale 'digits' whose pixels encode their own label and a serial, so splits are checkable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = labels * 20  # label readable from the image
    return LabeledImages(images, labels, [str(d) for d in range(10)], name)


@pytest.fixture
def split() -> tuple[LabeledImages, LabeledImages]:
    return _digits(200, 0), _digits(100, 1)


def _labels_of(x: torch.Tensor) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0].numpy() * 255 / 20).astype(int)


def test_one_vs_rest(split) -> None:
    train, test = split
    data = scenarios.one_vs_rest(train, test, 7)
    assert set(_labels_of(data.train_normal)) == {7} and len(data.train_normal) == 20
    anomalies = data.test_x[data.test_y == 1]
    assert 7 not in set(_labels_of(anomalies))  # no normal class among the anomalies
    assert int((data.test_y == 0).sum()) == 10 and len(data.test_x) == 100
    assert torch.equal(data.test_attrs["label"], torch.from_numpy(test.labels))


def test_class_by_word_and_multi_class(split) -> None:
    train, test = split
    assert torch.equal(scenarios.one_vs_rest(train, test, "seven").train_normal,
                       scenarios.one_vs_rest(train, test, 7).train_normal)
    data = scenarios.scenario(train, test, [1, 3])
    assert set(_labels_of(data.train_normal)) == {1, 3}
    assert data.normal_description == "classes 1, 3"


def test_leave_one_class_out(split) -> None:
    train, test = split
    data = scenarios.leave_one_class_out(train, test, 4)
    assert 4 not in set(_labels_of(data.train_normal)) and len(data.train_normal) == 180
    assert set(_labels_of(data.test_x[data.test_y == 1])) == {4}


def test_bad_rules_are_clear(split) -> None:
    train, test = split
    with pytest.raises(ScenarioError, match="'banana' is neither a class"):
        scenarios.scenario(train, test, "banana")
    with pytest.raises(ScenarioError, match="not coloured"):
        scenarios.scenario(train, test, "red or one")
    with pytest.raises(ScenarioError, match="no anomalies left"):
        scenarios.scenario(train, test, list(range(10)))


def test_coloured_predicate_keeps_true_factors(split) -> None:
    train, test = (scenarios.colored_variant(d, seed) for d, seed in zip(split, (0, 1)))
    assert train.images.shape[-1] == 3 and set(np.unique(train.attrs["colour"])) <= set(range(7))
    data = scenarios.scenario(train, test, "red or digit one")
    colour, label = data.test_attrs["colour"], data.test_attrs["label"]
    expected_normal = (colour == scenarios.COLOUR_NAMES.index("red")) | (label == 1)
    assert torch.equal(data.test_y == 0, expected_normal)
    both = scenarios.parse_normality("blue and 3", train.class_names)(train)
    assert np.array_equal(both, (train.attrs["colour"] == 4) & (train.labels == 3))
    plus = scenarios.parse_normality("cyan+one", train.class_names)(train)
    assert np.array_equal(plus, (train.attrs["colour"] == 3) | (train.labels == 1))


def test_colored_variant_all_colours(split) -> None:
    coloured = scenarios.colored_variant(split[1], all_colours=True)
    assert len(coloured) == 700 and np.bincount(coloured.attrs["colour"]).tolist() == [100] * 7
    red = coloured.images[coloured.attrs["colour"] == 0]
    assert red[..., 1:].max() == 0  # red copies have no green or blue


def test_oe_pool_size_seeded_nested_without_replacement() -> None:
    for size in (1, 2, 4, 64, 1024):
        index = scenarios.oe_indices(5000, size, seed=3)
        assert len(index) == size == len(set(index.tolist()))
    assert np.array_equal(scenarios.oe_indices(5000, 4, 3)[:2], scenarios.oe_indices(5000, 2, 3))
    assert not np.array_equal(scenarios.oe_indices(5000, 64, 3), scenarios.oe_indices(5000, 64, 4))
    with pytest.raises(ScenarioError, match="exceeds the 10 available"):
        scenarios.oe_indices(10, 11, 0)
    with pytest.raises(ScenarioError, match=">= 1"):
        scenarios.oe_indices(10, 0, 0)


def test_oe_must_be_disjoint_from_test_anomalies(split) -> None:
    train, test = split
    data = scenarios.one_vs_rest(train, test, 0)
    with pytest.raises(ScenarioError, match="is the test dataset itself"):
        scenarios.with_outlier_exposure(data, test, test, 8)
    leaky = LabeledImages(np.concatenate([_digits(50, 9).images, test.images[5:8]]),
                          np.zeros(53, np.int64), ["x"], "other")
    with pytest.raises(ScenarioError, match="shares 3 images with the test anomalies"):
        scenarios.with_outlier_exposure(data, leaky, test, 8)
    ok = scenarios.with_outlier_exposure(data, _digits(50, 9, "other"), test, 16)
    assert ok.train_oe is not None and ok.train_oe.shape == (16, 1, 6, 6)


def test_oe_is_converted_to_the_data_format(split) -> None:
    train, test = split
    rgb = LabeledImages(np.full((10, 12, 12, 3), (255, 0, 0), np.uint8), np.zeros(10, np.int64), ["x"], "rgb")
    data = scenarios.with_outlier_exposure(scenarios.one_vs_rest(train, test, 0), rgb, test, 4)
    assert data.train_oe.shape == (4, 1, 6, 6)
    assert torch.allclose(data.train_oe, torch.full_like(data.train_oe, 0.299), atol=1e-3)  # luma of red


def test_known_anomalies_only_blue(split) -> None:
    train, test = (scenarios.colored_variant(d, seed) for d, seed in zip(split, (0, 1)))
    data = scenarios.scenario(train, test, "red or one")
    data = scenarios.with_known_anomalies(data, train, "red or one", "blue", size=5, seed=0)
    assert data.train_anomalies.shape == (5, 3, 6, 6)
    pixels = data.train_anomalies.amax(dim=(2, 3))
    assert torch.all(pixels[:, :2] == 0)  # only the blue channel is lit
    labels = _labels_of(data.train_anomalies.amax(1, keepdim=True) * 255 / 255)
    assert 1 not in set(labels)  # ones are normal, never a known anomaly
    with pytest.raises(ScenarioError, match="no training anomaly matches"):
        scenarios.with_known_anomalies(data, train, "red or one", "red")


def test_build_glyphs_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # the built-in sets at a tenth of their size, in a cache of this test's own: generating the coloured sets
    # in full (2 x 25,000 images) costs ~10 s, and the path through catalog, rule and OE is the same
    from anomalens.data import catalog, synthetic

    monkeypatch.setattr(synthetic, "_SPLITS", {"train": (0, 2000), "test": (1, 500)})
    monkeypatch.setattr(catalog, "_cached_builtin", functools.lru_cache(maxsize=8)(catalog._cached_builtin.__wrapped__))
    data = scenarios.build("colored_glyphs", "red or one", oe="colored_glyph_letters", oe_size=32, seed=0)
    assert data.image_shape == (3, 28, 28) and data.train_oe.shape == (32, 3, 28, 28)
    assert len(data.test_x) == 500  # the smaller sets were used
    assert {"label", "colour", "font", "stroke"} <= set(data.test_attrs)
    assert 0.1 < float(data.test_y.float().mean()) < 0.9
    with pytest.raises(ScenarioError, match="test dataset itself"):
        scenarios.build("glyphs", 3, oe="glyphs", oe_size=8)


def test_oe_from_several_sources(split) -> None:
    train, test = split
    a, b = _digits(30, 5, "a"), _digits(20, 6, "b")
    data = scenarios.with_outlier_exposure(scenarios.one_vs_rest(train, test, 0), [a, b], test, None)
    assert data.train_oe.shape == (50, 1, 6, 6)
    data = scenarios.with_outlier_exposure(scenarios.one_vs_rest(train, test, 0), [a, b], test, 10, seed=2)
    pool = torch.cat([scenarios.match_format(a.images, (1, 6, 6)), scenarios.match_format(b.images, (1, 6, 6))])
    index = scenarios.oe_indices(50, 10, 2)
    assert torch.equal(data.train_oe, pool[np.sort(index)])


def test_oe_spec_names_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    # "name@split" draws one OE set from a named split, so both splits of a set can be OE together
    from anomalens.data import catalog, synthetic

    assert scenarios.oe_sources("kmnist+glyph_letters") == [("kmnist", None), ("glyph_letters", None)]
    assert scenarios.oe_sources("tinyimagenet@train+tinyimagenet@test") == [("tinyimagenet", "train"),
                                                                           ("tinyimagenet", "test")]
    for bad in ("tinyimagenet@val", "kmnist+", "@test"):
        with pytest.raises(ScenarioError, match="NAME@SPLIT"):
            scenarios.oe_sources(bad)
    monkeypatch.setattr(synthetic, "_SPLITS", {"train": (0, 300), "test": (1, 100)})
    monkeypatch.setattr(catalog, "_cached_builtin", functools.lru_cache(maxsize=8)(catalog._cached_builtin.__wrapped__))
    train_only = scenarios.build("glyphs", 3, oe="glyph_letters", seed=0).train_oe
    test_only = scenarios.build("glyphs", 3, oe="glyph_letters@test", seed=0).train_oe
    both = scenarios.build("glyphs", 3, oe="glyph_letters@train+glyph_letters@test", seed=0).train_oe
    assert len(train_only) == 300 and len(test_only) == 100 and len(both) == 400
    assert not torch.equal(train_only[:100], test_only)
