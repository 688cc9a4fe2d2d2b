"""Built-in synthetic defects: deterministic, masks cover exactly the painted defects."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data import catalog
from anomalens.data.defects import CATEGORIES, synthetic_defects
from anomalens.errors import ConfigError


@pytest.mark.parametrize("category", CATEGORIES)
def test_defects_shapes_masks_and_types(category: str) -> None:
    d = synthetic_defects(category, n_train=8, n_test_good=4, n_test_defect=6, size=32, seed=3)
    assert d.train.shape == (8, 32, 32, 1) and d.test.shape == (10, 32, 32, 1) and d.test.dtype == np.uint8
    assert d.test_labels.tolist() == [0] * 4 + [1] * 6
    assert list(d.test_defect_type[4:]) == ["scratch", "spot", "missing"] * 2
    assert d.test_masks[:4].sum() == 0 and all(m.sum() > 0 for m in d.test_masks[4:])
    assert set(np.unique(d.test_masks)) <= {0, 1}


def test_defects_are_deterministic_and_seeded() -> None:
    a, b = synthetic_defects(seed=1, n_train=5), synthetic_defects(seed=1, n_train=5)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.test_masks, b.test_masks)
    assert not np.array_equal(a.test, synthetic_defects(seed=2, n_train=5).test)


def test_missing_part_is_flat_grey_inside_mask() -> None:
    d = synthetic_defects("stripes", n_train=2, n_test_good=1, n_test_defect=3, size=64, seed=0)
    missing = d.test[3, ..., 0][d.test_masks[3] == 1]
    assert d.test_defect_type[3] == "missing" and np.all(missing == 128)
    assert d.test[3, ..., 0][d.test_masks[3] == 0].std() > 20  # the texture outside is untouched


def test_bad_arguments_and_catalog() -> None:
    with pytest.raises(ConfigError, match="unknown defect texture 'wood'"):
        synthetic_defects("wood")
    with pytest.raises(ConfigError, match="size=8"):
        synthetic_defects(size=8)
    assert catalog.load_defects("synthetic_defects/noise").name == "synthetic_defects/noise"
