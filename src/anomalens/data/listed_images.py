"""Readers for the image datasets whose splits are given by index files: CUB-200-2011 and DTD.

Why a module of their own: unlike the array formats of ``formats.py``, these datasets are folders of
JPEGs of every size plus text files that say which image belongs to which class and split, so the
reader must check the index files against each other and against the folder. Every problem (a missing
index file, a malformed row, an id without a label, a row naming a file outside the image folder, a
missing image) is a ``DataFormatError`` naming the file, the line and the fix, before any image is read.

Images are centre-cropped to a square and resized to ``SIZE`` x ``SIZE`` RGB (bicubic): the OE paper
trains these datasets like ImageNet at 224 px on a GPU; 64 px keeps all 11,788 CUB images in 145 MB
of memory and trains on a CPU (pass ``size=`` for another size).

- CUB-200-2011 (``CUB_200_2011/`` of the official ``CUB_200_2011.tgz``): ``images.txt`` (``<image_id>
  <path under images/>``), ``image_class_labels.txt`` (``<image_id> <class_id>``, 1-based),
  ``train_test_split.txt`` (``<image_id> <1 = train, 0 = test>``) and ``classes.txt`` (``<class_id>
  <nnn.Name>``); 200 classes, 5,994 train and 5,794 test images.
- DTD (``dtd/`` of the official ``dtd-r1.0.1.tar.gz``): ``images/<class>/*.jpg`` and
  ``labels/{train,val,test}<fold>.txt`` (one ``<class>/<file>`` per line); 47 classes, 40 images per
  class and split in each of the ten folds (fold 1 is read, as in the OE paper's 40 training images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anomalens.data.formats import read_image
from anomalens.errors import DataFormatError

SIZE = 64
_RESTORE = "restore the file from the official archive (anomalens data download {name})"


def square_image(path: Path, size: int = SIZE) -> np.ndarray:
    """One image as (size, size, 3) uint8: the central square, resized (bicubic)."""
    pixels = read_image(path, "RGB")
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(pixels[top:top + side, left:left + side])
    return np.asarray(square.resize((size, size), Image.BICUBIC) if side != size else square)


def _rows(path: Path, columns: int, name: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated index file; ``columns`` fields per line, the last
    one may hold spaces. Blank lines are skipped."""
    if not path.is_file():
        raise DataFormatError(path, "index file is missing", _RESTORE.format(name=name))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot be read as UTF-8 text ({e})", _RESTORE.format(name=name)) from e
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            fields = line.split(maxsplit=columns - 1)
            if len(fields) != columns:
                raise DataFormatError(path, f"line {number}: expected {columns} fields, found {line!r}",
                                      _RESTORE.format(name=name))
            rows.append((number, fields))
    if not rows:
        raise DataFormatError(path, "index file is empty", _RESTORE.format(name=name))
    return rows


def _ids(path: Path, name: str) -> dict[int, tuple[int, str]]:
    """``<integer id> <value>`` rows as {id: (line, value)}, refusing non-integer and repeated ids."""
    out: dict[int, tuple[int, str]] = {}
    for number, (key, value) in _rows(path, 2, name):
        if not key.isdigit() or int(key) in out:
            problem = "is not a positive integer id" if not key.isdigit() else "appears twice"
            raise DataFormatError(path, f"line {number}: {key!r} {problem}", _RESTORE.format(name=name))
        out[int(key)] = (number, value.strip())
    return out


def _inside(root: Path, relative: str, index: Path, line: int, name: str) -> Path:
    """``root / relative``, refused when it lies outside ``root`` (``..``, an absolute path, a symlink
    leading out), so a crafted index file cannot make the reader open other files."""
    path = root / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise DataFormatError(index, f"line {line}: {relative!r} points outside the image folder {root}; nothing "
                              "was read", f"use the index files of the official archive ({name})")
    if not path.is_file():
        raise DataFormatError(path, f"listed on line {line} of {index.name} but missing",
                              _RESTORE.format(name=name))
    return path


def _read_all(paths: list[Path], size: int) -> np.ndarray:
    images = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = square_image(path, size)
    return images


def cub_base(folder: Path) -> Path:
    """The folder holding ``images.txt``: ``folder/CUB_200_2011`` as the archive unpacks, or ``folder``."""
    return folder / "CUB_200_2011" if (folder / "CUB_200_2011").is_dir() else folder


def read_cub(folder: str | Path, split: str, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CUB-200-2011's ``split`` (train or test): images, 0-based labels, the 200 class names."""
    base = cub_base(Path(folder))
    classes = _ids(base / "classes.txt", "cub")
    paths = _ids(base / "images.txt", "cub")
    labels = _ids(base / "image_class_labels.txt", "cub")
    splits = _ids(base / "train_test_split.txt", "cub")
    order = sorted(classes)
    if order != list(range(1, len(order) + 1)):
        raise DataFormatError(base / "classes.txt", f"class ids are not 1..{len(order)}", _RESTORE.format(name="cub"))
    names = [classes[i][1].split(".", 1)[-1].replace("_", " ") for i in order]  # "001.Black_footed_Albatross"
    wanted = {"train": "1", "test": "0"}[split]
    chosen, targets = [], []
    for image_id, (line, relative) in sorted(paths.items()):
        for table, path in ((labels, base / "image_class_labels.txt"), (splits, base / "train_test_split.txt")):
            if image_id not in table:
                raise DataFormatError(path, f"image id {image_id} (line {line} of images.txt) has no row",
                                      _RESTORE.format(name="cub"))
        flag = splits[image_id][1]
        if flag not in ("0", "1"):
            raise DataFormatError(base / "train_test_split.txt", f"line {splits[image_id][0]}: is_training_image "
                                  f"is {flag!r}, expected 0 or 1", _RESTORE.format(name="cub"))
        label_line, label = labels[image_id]
        if not label.isdigit() or not 1 <= int(label) <= len(order):
            raise DataFormatError(base / "image_class_labels.txt", f"line {label_line}: class id {label!r} is not "
                                  f"in 1..{len(order)}", _RESTORE.format(name="cub"))
        path = _inside(base / "images", relative, base / "images.txt", line, "cub")  # every row: refuse a bad index
        if flag == wanted:
            chosen.append(path)
            targets.append(int(label) - 1)
    if not chosen:
        raise DataFormatError(base / "train_test_split.txt", f"no image is in the {split} split",
                              _RESTORE.format(name="cub"))
    return _read_all(chosen, size), np.asarray(targets, np.int64), names


def dtd_base(folder: Path) -> Path:
    """The folder holding ``images/`` and ``labels/``: ``folder/dtd`` as the archive unpacks, or ``folder``."""
    return folder / "dtd" if (folder / "dtd").is_dir() else folder


def read_dtd(folder: str | Path, split: str, size: int = SIZE, fold: int = 1
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """DTD's ``split`` (train, val or test) of ``fold``: images, labels, the 47 class names (the sorted
    folder names under ``images/``)."""
    base = dtd_base(Path(folder))
    index = base / "labels" / f"{split}{fold}.txt"
    rows = _rows(index, 1, "dtd")
    if not (base / "images").is_dir():
        raise DataFormatError(base / "images", "image folder is missing", _RESTORE.format(name="dtd"))
    classes = sorted(d.name for d in (base / "images").iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, targets = [], []
    for line, (relative,) in rows:
        relative = relative.strip()
        path = _inside(base / "images", relative, index, line, "dtd")
        kind = Path(relative).parts[0]
        if kind not in classes or len(Path(relative).parts) != 2:
            raise DataFormatError(index, f"line {line}: {relative!r} is not <class>/<file> of a class folder under "
                                  f"{base / 'images'}", _RESTORE.format(name="dtd"))
        paths.append(path)
        targets.append(classes.index(kind))
    return _read_all(paths, size), np.asarray(targets, np.int64), classes
