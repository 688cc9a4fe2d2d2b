"""CUB-200-2011 and DTD from their official folder layouts (index files + JPEGs), written small by the
tests; hostile index files (a missing file, a row pointing outside the image folder, broken rows) end
in a DataFormatError naming the file, the line and the fix. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.data import catalog, download
from anomalens.data.listed_images import read_cub, read_dtd, square_image
from anomalens.errors import DataFormatError

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
DTD_CLASSES = ["banded", "braided"]


def _jpeg(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 40)).save(path, quality=95)


def make_cub(root: Path) -> Path:
    """ROOT/cub/CUB_200_2011/ as CUB_200_2011.tgz unpacks: 2 images per class, the second of each a test image."""
    base = root / "cub" / "CUB_200_2011"
    images, labels, split = [], [], []
    for c, name in enumerate(CUB_CLASSES, start=1):
        for k in range(2):
            image_id = len(images) + 1
            relative = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            _jpeg(base / "images" / relative, (90 + 10 * k, 70), 40 * c)  # landscape: centre-cropped
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 - k}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split),
                        ("classes.txt", [f"{i} {n}" for i, n in enumerate(CUB_CLASSES, start=1)])):
        (base / name).write_text("\n".join(lines) + "\n")
    return base


def make_dtd(root: Path) -> Path:
    """ROOT/dtd/dtd/ as dtd-r1.0.1.tar.gz unpacks: images/<class>/*.jpg and labels/{train,val,test}1.txt."""
    base = root / "dtd" / "dtd"
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c, name in enumerate(DTD_CLASSES):
        for k, split in enumerate(rows):
            relative = f"{name}/{name}_{k:04d}.jpg"
            _jpeg(base / "images" / relative, (80, 100), 60 + 100 * c)
            rows[split].append(relative)
    (base / "labels").mkdir()
    for split, lines in rows.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return base


def test_cub_reads_the_official_layout_through_the_catalog(tmp_path: Path) -> None:
    make_cub(tmp_path)
    train, test = catalog.load("cub", "train", tmp_path), catalog.load("cub", "test", tmp_path)
    assert train.images.shape == (3, 64, 64, 3) and test.images.shape == (3, 64, 64, 3)
    assert train.labels.tolist() == [0, 1, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.class_names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert abs(int(train.images[1, 32, 32, 0]) - 80) <= 2  # class 2's colour, JPEG-close
    assert catalog.available_splits("cub", tmp_path) == ["train", "test"]


def test_dtd_reads_fold_one_through_the_catalog(tmp_path: Path) -> None:
    make_dtd(tmp_path)
    for split in ("train", "val", "test"):
        data = catalog.load("dtd", split, tmp_path)
        assert data.images.shape == (2, 64, 64, 3) and data.labels.tolist() == [0, 1]
        assert data.class_names == DTD_CLASSES
    assert catalog.available_splits("dtd", tmp_path) == ["train", "val", "test"]


def test_square_image_crops_the_centre(tmp_path: Path) -> None:
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 20:40] = 255  # only the central 20 x 20 square is white
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    assert (square_image(tmp_path / "wide.png", 10) > 250).all()


@pytest.mark.parametrize("damage", ["missing_labels", "dotdot", "absolute", "symlink", "bad_flag", "bad_class",
                                    "unlisted_id", "missing_image", "short_row"])
def test_hostile_cub_index_files_are_refused(tmp_path: Path, damage: str) -> None:
    base = make_cub(tmp_path)
    secret = tmp_path / "secret.jpg"  # readable, outside the dataset: without the check it would be read
    _jpeg(secret, (10, 10), 9)
    images = (base / "images.txt").read_text().splitlines()
    culprit, line = base / "images.txt", "line 2"
    if damage == "missing_labels":
        (base / "image_class_labels.txt").unlink()
        culprit, line = base / "image_class_labels.txt", "missing"
    elif damage in ("dotdot", "absolute", "symlink"):
        name = {"dotdot": "../../../secret.jpg", "absolute": str(secret), "symlink": "link.jpg"}[damage]
        if damage == "symlink":
            (base / "images" / "link.jpg").symlink_to(secret)
        images[1] = f"2 {name}"
        (base / "images.txt").write_text("\n".join(images) + "\n")
        line = "points outside the image folder"
    elif damage == "bad_flag":
        (base / "train_test_split.txt").write_text("1 1\n2 yes\n3 1\n4 0\n5 1\n6 0\n")
        culprit = base / "train_test_split.txt"
    elif damage == "bad_class":
        (base / "image_class_labels.txt").write_text("1 1\n2 7\n3 2\n4 2\n5 3\n6 3\n")
        culprit = base / "image_class_labels.txt"
    elif damage == "unlisted_id":
        (base / "image_class_labels.txt").write_text("1 1\n3 2\n4 2\n5 3\n6 3\n")
        culprit, line = base / "image_class_labels.txt", "image id 2"
    elif damage == "missing_image":
        culprit = base / "images" / images[2].split()[1]
        culprit.unlink()
        line = "line 3 of images.txt"
    elif damage == "short_row":
        images[1] = "2"
        (base / "images.txt").write_text("\n".join(images) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_cub(tmp_path / "cub", "train")
    message = str(err.value)
    assert str(culprit) in message and line in message and "Fix:" in message, message


@pytest.mark.parametrize("damage", ["missing_index", "dotdot", "not_a_class", "missing_images"])
def test_hostile_dtd_index_files_are_refused(tmp_path: Path, damage: str) -> None:
    base = make_dtd(tmp_path)
    index = base / "labels" / "train1.txt"
    _jpeg(tmp_path / "secret.jpg", (10, 10), 9)
    culprit, line = index, "line 2"
    if damage == "missing_index":
        index.unlink()
        line = "missing"
    elif damage == "dotdot":
        index.write_text("banded/banded_0000.jpg\n../../../secret.jpg\n")
        line = "points outside the image folder"
    elif damage == "not_a_class":
        _jpeg(base / "images" / "stray.jpg", (10, 10), 9)
        index.write_text("banded/banded_0000.jpg\nstray.jpg\n")
    else:
        import shutil

        shutil.rmtree(base / "images")
        culprit, line = base / "images", "missing"
    with pytest.raises(DataFormatError) as err:
        read_dtd(tmp_path / "dtd", "train")
    message = str(err.value)
    assert str(culprit) in message and line in message and "Fix:" in message, message


def test_official_downloads_are_listed_with_their_md5() -> None:
    (cub,), (dtd,) = download.OFFICIAL_FILES["cub"], download.OFFICIAL_FILES["dtd"]
    assert cub.url == "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    assert cub.filename == "CUB_200_2011.tgz" and cub.md5 == "97eceeb196236b17998738112f37df78"
    assert dtd.url == "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"
    assert dtd.filename == "dtd-r1.0.1.tar.gz" and dtd.md5 == "fff73e5086ae6bdbea199a49dfb8a4c1"
    assert all(name.endswith(download.ARCHIVE_SUFFIXES) for name in (cub.filename, dtd.filename))
