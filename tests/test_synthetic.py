"""Tests of the built-in synthetic glyphs: determinism, layout, labels matching drawings, colours, errors."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data.images import LabeledImages
from anomalens.data.synthetic import (
    GLYPH_CHARACTERS,
    GLYPH_COLOURS,
    GLYPH_FONTS,
    colourise,
    glyph_dataset,
    glyphs,
)
from anomalens.errors import ConfigError


@pytest.fixture(scope="module")
def gray() -> LabeledImages:
    return glyphs(400, seed=3)


@pytest.fixture(scope="module")
def coloured() -> LabeledImages:
    return glyphs(400, seed=3, coloured=True)


def test_constants():
    assert list(GLYPH_COLOURS) == ["red", "yellow", "green", "cyan", "blue", "pink", "gray"]
    assert GLYPH_CHARACTERS == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert 6 <= len(GLYPH_FONTS) <= 8 and len(set(GLYPH_FONTS)) == len(GLYPH_FONTS)


@pytest.mark.parametrize("is_coloured", [False, True])
def test_same_seed_same_bytes_other_seed_differs(is_coloured):
    a, b = glyphs(300, seed=7, coloured=is_coloured), glyphs(300, seed=7, coloured=is_coloured)
    assert a.images.tobytes() == b.images.tobytes()
    np.testing.assert_array_equal(a.labels, b.labels)
    for key in a.attrs:
        np.testing.assert_array_equal(a.attrs[key], b.attrs[key])
    c = glyphs(300, seed=8, coloured=is_coloured)
    assert a.images.tobytes() != c.images.tobytes()
    assert not np.array_equal(a.labels, c.labels)


def test_grayscale_layout(gray):
    assert gray.images.shape == (400, 28, 28, 1) and gray.images.dtype == np.uint8
    assert gray.labels.dtype == np.int64 and gray.name == "glyphs"
    assert gray.class_names == list("0123456789")
    assert set(gray.attrs) == {"font", "stroke"}
    # white glyph on black: corners are background, every image has a bright stroke
    assert (gray.images[:, 0, 0] == 0).mean() > 0.95
    assert (gray.images.reshape(400, -1).max(1) > 150).all()
    small = glyphs(10, size=16, jitter=False)
    assert small.images.shape == (10, 16, 16, 1)


def test_coloured_layout(coloured):
    assert coloured.images.shape == (400, 28, 28, 3) and coloured.images.dtype == np.uint8
    assert coloured.name == "colored_glyphs"
    assert set(coloured.attrs) == {"font", "stroke", "colour"}
    assert set(np.unique(coloured.attrs["colour"])) == set(range(len(GLYPH_COLOURS)))


def test_labels_balanced_and_in_range(gray):
    np.testing.assert_array_equal(np.bincount(gray.labels, minlength=10), np.full(10, 40))
    letters = glyphs(7, characters=["A", "B", "C"], seed=1)
    assert letters.class_names == ["A", "B", "C"]
    assert sorted(np.bincount(letters.labels).tolist()) == [2, 2, 3]
    assert not np.array_equal(gray.labels, np.sort(gray.labels)), "labels must be shuffled"


def test_attrs_ranges(gray, coloured):
    for data in (gray, coloured):
        assert data.attrs["font"].min() >= 0 and data.attrs["font"].max() < len(GLYPH_FONTS)
        assert set(np.unique(data.attrs["font"])) == set(range(len(GLYPH_FONTS)))
        assert set(np.unique(data.attrs["stroke"])) == {0, 1, 2}
    assert coloured.attrs["colour"].min() >= 0 and coloured.attrs["colour"].max() < len(GLYPH_COLOURS)
    chosen = glyphs(50, fonts=["DejaVuSerif", "DejaVuSansMono"])
    assert set(np.unique(chosen.attrs["font"])) == {
        GLYPH_FONTS.index("DejaVuSerif"),
        GLYPH_FONTS.index("DejaVuSansMono"),
    }


def test_fonts_lacking_a_glyph_are_skipped():
    # the contour integral sign is only in some fonts: images of it must use those, '0' may use any
    data = glyphs(200, characters=["0", "\u222e"], seed=2)
    fonts_of_integral = {GLYPH_FONTS[i] for i in data.attrs["font"][data.labels == 1]}
    assert fonts_of_integral and not fonts_of_integral & {"DejaVuSerif", "DejaVuSansMono"}
    assert len(np.unique(data.attrs["font"][data.labels == 0])) == len(GLYPH_FONTS)


def test_glyphs_are_centred_by_mass(gray):
    weights = gray.images[..., 0].astype(float)
    rows, cols = np.indices((28, 28))
    cy = (weights * rows).sum((1, 2)) / weights.sum((1, 2))
    cx = (weights * cols).sum((1, 2)) / weights.sum((1, 2))
    assert abs(cy.mean() - 13.5) < 0.5 and abs(cx.mean() - 13.5) < 0.5
    assert np.abs(cy - 13.5).max() < 3.5 and np.abs(cx - 13.5).max() < 3.5  # shift is at most 2 px


def test_jitter_off_repeats_each_font_char_stroke():
    data = glyphs(60, characters="7", fonts=["DejaVuSans"], jitter=False)
    for s in range(3):
        same = data.images[data.attrs["stroke"] == s]
        assert len(same) > 1 and (same == same[0]).all()
    jittered = glyphs(60, characters="7", fonts=["DejaVuSans"])
    same = jittered.images[jittered.attrs["stroke"] == 0]
    assert len({img.tobytes() for img in same}) == len(same)


def test_stroke_level_thickens(gray):
    ink = (gray.images[..., 0] > 127).mean((1, 2))
    by_stroke = [ink[gray.attrs["stroke"] == s].mean() for s in range(3)]
    assert by_stroke[0] < by_stroke[1] < by_stroke[2]


def test_colourise_white_black_and_ordering():
    n = len(GLYPH_COLOURS)
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8), (n, 1, 256)).copy()
    out = colourise(ramp[..., None], np.arange(n))  # (N, H, W, 1) input is accepted too
    assert out.shape == (n, 1, 256, 3) and out.dtype == np.uint8
    for i, rgb in enumerate(GLYPH_COLOURS.values()):
        assert tuple(out[i, 0, 255]) == rgb
        assert tuple(out[i, 0, 0]) == (0, 0, 0)
        total = out[i, 0].astype(int).sum(1)
        assert (np.diff(total) >= 0).all() and total[200] > total[100] > total[50]
    np.testing.assert_array_equal(colourise(ramp, np.zeros(n, int)), out[[0] * n])


def test_coloured_pixels_have_the_attr_colour(gray, coloured):
    # same seed: the coloured set is exactly the grayscale set tinted with the drawn colours
    np.testing.assert_array_equal(coloured.images, colourise(gray.images, coloured.attrs["colour"]))
    palette = np.array(list(GLYPH_COLOURS.values()), float)
    for img, colour in zip(coloured.images, coloured.attrs["colour"], strict=True):
        rgb = palette[colour]
        stroke = img[img.max(-1) > rgb.max() / 2].astype(float)  # well inside the stroke
        assert len(stroke) > 0
        pattern = stroke / stroke.max(-1, keepdims=True)
        np.testing.assert_allclose(pattern, np.broadcast_to(rgb / rgb.max(), pattern.shape), atol=0.03)


def test_labels_match_drawings_nearest_mean():
    """A nearest-class-mean classifier beats 50% on 10 classes only if each label draws its character."""
    train, test = glyphs(500, seed=11), glyphs(500, seed=12)
    x_train = train.images.reshape(500, -1).astype(float)
    x_test = test.images.reshape(500, -1).astype(float)
    means = np.stack([x_train[train.labels == k].mean(0) for k in range(10)])
    predicted = ((x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == test.labels).mean() > 0.5
    assert np.abs(means[0] - means[1]).mean() > 10


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"n": 0}, "n=0"),
        ({"n": 5, "size": 4}, "size=4"),
        ({"n": 5, "characters": ""}, "characters=''"),
        ({"n": 5, "fonts": ["ComicSans"]}, "'ComicSans'"),
        ({"n": 5, "characters": "0\u4e2d"}, "'\u4e2d'"),
        ({"n": 5, "characters": ["AB"]}, "'AB'"),
        ({"n": 5, "characters": "11"}, "'11'"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, shown):
    with pytest.raises(ConfigError, match="Fix:") as info:
        glyphs(**kwargs)
    assert shown in str(info.value)


def test_colourise_rejects_bad_input():
    with pytest.raises(ConfigError, match="7"):
        colourise(np.zeros((2, 4, 4), np.uint8), np.array([0, 7]))
    with pytest.raises(ConfigError, match="float"):
        colourise(np.zeros((2, 4, 4)), np.array([0, 1]))
    with pytest.raises(ConfigError, match="shape"):
        colourise(np.zeros((2, 4, 4), np.uint8), np.array([0]))


def test_glyph_dataset_splits_are_fixed_and_disjoint():
    train, test = glyph_dataset("train"), glyph_dataset("test")
    assert len(train) == 20_000 and len(test) == 5_000
    assert train.images.shape[1:] == (28, 28, 1) and train.name == "glyphs"
    train_hashes = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_hashes for img in test.images)
    again = glyph_dataset("test", n=100)
    assert again.images.tobytes() == glyph_dataset("test", n=100).images.tobytes()
    assert glyph_dataset("test", n=100, seed=1).images.tobytes() != again.images.tobytes()
    small = glyph_dataset("train", coloured=True, n=50)
    assert small.name == "colored_glyphs" and small.images.shape == (50, 28, 28, 3)
    with pytest.raises(ConfigError, match="'val'"):
        glyph_dataset("val")
