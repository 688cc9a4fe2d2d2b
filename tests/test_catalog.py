"""Catalog: search order, layouts, clear errors; real shared/data counts when ANOMALENS_DATA is set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomalens.data import catalog
from anomalens.errors import DatasetNotFoundError

from conftest import needs_shared_data


def test_search_order_prefers_data_root(tmp_path: Path, tiny_mnist: Path, monkeypatch) -> None:
    other = tmp_path / "env_root"
    (other / "mnist").mkdir(parents=True)
    monkeypatch.setenv("ANOMALENS_DATA", str(other))
    roots = catalog.data_roots(tiny_mnist.parent)
    assert roots[:2] == [tiny_mnist.parent, other] and roots[2] == catalog.CACHE_DIR
    found = catalog.locate("mnist", "train", tiny_mnist.parent)
    assert found is not None and found.folder == tiny_mnist
    assert catalog.locate("mnist", "train") is None  # env root has an empty mnist folder


def test_load_reads_and_freezes(tiny_mnist: Path) -> None:
    train = catalog.load("mnist", "train", tiny_mnist.parent)
    assert train.images.shape == (50, 28, 28, 1) and train.class_names == [str(d) for d in range(10)]
    assert train.class_counts()["3"] == 5
    with pytest.raises(ValueError, match="read-only"):
        train.images[0, 0, 0, 0] = 1
    assert catalog.load("mnist", "train", tiny_mnist.parent) is train  # cached


def test_raw_idx_files_are_found(tmp_path: Path, tiny_mnist: Path) -> None:
    import gzip

    for gz in tiny_mnist.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert len(catalog.load("mnist", "test", tiny_mnist.parent)) == 20


def test_missing_dataset_message_names_files_and_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ANOMALENS_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        catalog.load("cifar10", "train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar10") in message
    assert "cifar10_subset.npz" in message and "anomalens data download cifar10" in message


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(DatasetNotFoundError, match="known: mnist"):
        catalog.load("imagenet21k")


def test_defect_and_class_datasets_are_not_confused() -> None:
    with pytest.raises(DatasetNotFoundError, match="load_defects"):
        catalog.load("magnetic_tile")
    with pytest.raises(DatasetNotFoundError, match="use load"):
        catalog.load_defects("mnist")
    with pytest.raises(DatasetNotFoundError, match="category"):
        catalog.load_defects("mvtec_ad")


def test_catalog_rows_cover_every_dataset(tiny_mnist: Path, monkeypatch) -> None:
    monkeypatch.delenv("ANOMALENS_DATA", raising=False)
    rows = {r["name"]: r for r in catalog.catalog_rows(tiny_mnist.parent)}
    assert set(rows) == set(catalog.DATASETS)
    assert rows["mnist"]["present"] == ["train", "test"]
    assert rows["glyphs"]["location"] == "built-in (generated)"
    assert rows["cifar10"]["present"] == [] and rows["cifar10"]["searched"][0] == str(tiny_mnist.parent / "cifar10")


def test_fashion_mnist_system_place_is_searched() -> None:
    dirs = catalog.get_spec("fashion_mnist").candidate_dirs()
    assert dirs[-1] == Path("/usr/share/datasets/fashion-mnist")


def test_builtin_glyphs_info() -> None:
    info = catalog.dataset_info("glyphs")
    assert info["splits"]["test"]["count"] == 5000
    assert info["splits"]["test"]["image_shape"] == [28, 28, 1]
    assert sum(info["splits"]["test"]["class_counts"].values()) == 5000


def test_image_folder_loader(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("ok", "scratch"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (12, 12)).save(tmp_path / cls / "a.png")
    data = catalog.load_image_folder(tmp_path)
    assert data.class_names == ["ok", "scratch"] and data.images.shape == (2, 12, 12, 3)


# ------------------------------------------------------------- the real files of shared/data


@needs_shared_data("mnist")
def test_shared_mnist_counts_match_manifest() -> None:
    train, test = catalog.load("mnist", "train"), catalog.load("mnist", "test")
    assert list(train.class_counts().values()) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(test.class_counts().values()) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_shared_data("kmnist")
def test_shared_kmnist() -> None:
    test = catalog.load("kmnist", "test")
    assert len(test) == 10000 and set(test.class_counts().values()) == {1000}
    assert catalog.available_splits("kmnist") == ["test"]


@needs_shared_data("cifar10", "cifar10_subset.npz")
def test_shared_cifar10_counts() -> None:
    test = catalog.load("cifar10", "test")
    assert test.images.shape == (10000, 32, 32, 3) and set(test.class_counts().values()) == {1000}
    assert test.class_names[0] == "airplane" and int(test.attrs["exact"].sum()) == 1000


@needs_shared_data("gtsrb", "gtsrb32_subset.npz")
def test_shared_gtsrb_counts() -> None:
    train, test = catalog.load("gtsrb", "train"), catalog.load("gtsrb", "test")
    assert len(train) == 4300 and set(train.class_counts().values()) == {100}
    counts = test.class_counts()
    assert len(test) == 2046 and counts[catalog.GTSRB_CLASSES[0]] == 39 and counts[catalog.GTSRB_CLASSES[27]] == 21


@needs_shared_data("tinyimagenet", "tinyimagenet32_subset.npz")
def test_shared_tinyimagenet_overlap_flags() -> None:
    train = catalog.load("tinyimagenet", "train")
    keep = (train.attrs["cifar10_overlap"] < 0) & ~train.attrs["cifar10_related"]
    assert len(train) == 10000 and int(keep.sum()) == 8000


@needs_shared_data("magnetic_tile", "magnetic_tile_256.npz")
def test_shared_magnetic_tile() -> None:
    d = catalog.load_defects("magnetic_tile")
    assert d.train.shape == (360, 256, 256, 1) and len(d.test) == 482
    assert d.defect_counts() == {"good": 90, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert np.all(d.test_masks[d.test_labels == 0] == 0)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(monkeypatch) -> None:
    monkeypatch.delenv("ANOMALENS_DATA", raising=False)
    train, test = catalog.load("fashion_mnist", "train"), catalog.load("fashion_mnist", "test")
    assert len(train) == 60000 and set(train.class_counts().values()) == {6000}
    assert len(test) == 10000 and test.class_names[9] == "Ankle boot"


@needs_shared_data("mnist")
def test_shared_colored_mnist_with_kmnist_oe() -> None:
    from anomalens.data.scenarios import build

    data = build("mnist", "red or one", colored=True, oe="kmnist", oe_size=256, seed=1)
    assert data.image_shape == (3, 28, 28) and data.train_oe.shape == (256, 3, 28, 28)
    colour, label = data.test_attrs["colour"], data.test_attrs["label"]
    assert bool(((data.test_y == 0) == ((colour == 0) | (label == 1))).all())
