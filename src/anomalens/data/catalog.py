"""Dataset names -> arrays: where each dataset's files are looked for, and how they are read.

Search order for a dataset's folder: ``data_root`` (the ``--data-root`` flag), ``$ANOMALENS_DATA``,
``~/.cache/anomalens`` (where ``anomalens data download`` puts files), then known system places
(Debian's ``dataset-fashion-mnist`` package installs ``/usr/share/datasets/fashion-mnist``).
Under a root, a dataset lives in a folder named after it (``ROOT/mnist``, ``ROOT/cifar10`` ...).

A dataset may be stored in several layouts (CIFAR-10 as the official pickles or as the npz files
of ``shared/data``); the first complete layout wins. Loaded arrays are cached per process and
marked read-only, so a scenario cannot change them for the next caller by accident.

Every reader names the file it read (``source=``), so a bad pixel value or a label outside the
class range is reported against that file (see ``images.as_uint8`` and ``images.check_labels``).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalens.data import formats
from anomalens.data.images import DefectImages, LabeledImages, as_uint8, check_labels
from anomalens.errors import DataFormatError, DatasetNotFoundError

SPLITS = ("train", "test")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anomalens"


def data_roots(data_root: str | Path | None = None) -> list[Path]:
    """The folders searched for datasets, in order (see the module docstring)."""
    roots = [Path(data_root).expanduser()] if data_root else []
    if os.environ.get("ANOMALENS_DATA"):
        roots.append(Path(os.environ["ANOMALENS_DATA"]).expanduser())
    roots.append(CACHE_DIR)
    return roots


@dataclass(frozen=True, eq=False)  # hashed by identity: the catalog caches reads per layout
class Layout:
    """One way a dataset's files can be stored: the files each split needs and how to read them.

    A file entry may list alternatives separated by ``|`` (e.g. gzipped or raw IDX).
    """

    name: str
    files: dict[str, tuple[str, ...]]
    read: Callable[[Path, str], LabeledImages | DefectImages]

    def resolve(self, folder: Path, split: str) -> list[Path] | None:
        """The files of ``split`` inside ``folder``, or None if any is missing."""
        found = []
        for entry in self.files.get(split, ()):
            path = next((folder / alt for alt in entry.split("|") if (folder / alt).exists()), None)
            if path is None:
                return None
            found.append(path)
        return found if split in self.files else None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the catalog knows: its folder names, layouts, system places and download key."""

    name: str
    description: str
    layouts: tuple[Layout, ...] = ()
    folders: tuple[str, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    kind: str = "classes"  # "classes": LabeledImages per split; "defects": one DefectImages; "series": recordings
    builtin: Callable[[str], LabeledImages] | None = None
    notes: str = ""
    splits: tuple[str, ...] = field(default=SPLITS)

    def candidate_dirs(self, data_root: str | Path | None = None) -> list[Path]:
        """Every folder this dataset is looked for in, in search order."""
        dirs = [root / folder for root in data_roots(data_root) for folder in (self.folders or (self.name,))]
        return dirs + list(self.system_dirs)


@dataclass(frozen=True)
class Location:
    """Where a dataset split was found: the folder, the layout and the files."""

    folder: Path
    layout: Layout
    files: tuple[Path, ...]


def _freeze(arrays: LabeledImages | DefectImages) -> LabeledImages | DefectImages:
    for value in vars(arrays).values():
        for arr in value.values() if isinstance(value, dict) else [value]:
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False
    return arrays


# ------------------------------------------------------------------------------------------ readers

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
GTSRB_CLASSES = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 t",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 t prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road",
    "Road narrows on the right", "Road work", "Traffic signals", "Pedestrians", "Children crossing",
    "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left",
    "Keep right", "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 t",
]


def _idx_reader(name: str, classes: list[str], label_offset: int = 0, transpose: bool = False):
    def read(folder: Path, split: str) -> LabeledImages:
        images_path, labels_path = (_pick(folder, entry) for entry in LAYOUT_FILES[name][split])
        images, labels = formats.read_idx_pair(images_path, labels_path)
        if transpose:  # EMNIST stores images transposed relative to MNIST
            images = images.transpose(0, 2, 1)
        return LabeledImages(np.ascontiguousarray(images), labels - label_offset, classes, name,
                             source=labels_path)
    return read


def _pick(folder: Path, entry: str) -> Path:
    return next(folder / alt for alt in entry.split("|") if (folder / alt).exists())


def _idx_files(prefix: str = "", train: str = "train", test: str = "t10k") -> dict[str, tuple[str, ...]]:
    def pair(part: str) -> tuple[str, ...]:
        return tuple(f"{prefix}{part}-{kind}-idx{n}-ubyte.gz|{prefix}{part}-{kind}-idx{n}-ubyte"
                     for kind, n in (("images", 3), ("labels", 1)))
    return {"train": pair(train), "test": pair(test)}


LAYOUT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": _idx_files(),
    "fashion_mnist": _idx_files(),
    "emnist": _idx_files("emnist-letters-", "train", "test"),
}


def _read_kmnist(folder: Path, split: str) -> LabeledImages:
    images_path, labels_path = folder / f"kmnist-{split}-imgs.npz", folder / f"kmnist-{split}-labels.npz"
    images = as_uint8(formats.read_npz(images_path, ["arr_0"])["arr_0"], images_path)
    labels = formats.read_npz(labels_path, ["arr_0"])["arr_0"]
    if len(images) != len(labels):
        raise DataFormatError(folder / f"kmnist-{split}-labels.npz",
                              f"{len(labels)} labels for {len(images)} images", "re-download both files")
    classes = KMNIST_CLASSES
    classmap = folder / "kmnist_classmap.csv"
    if classmap.is_file():
        with open(classmap, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "char" in rows[0]:
            classes = [f"{roman} ({row['char']})" for roman, row in zip(KMNIST_CLASSES, rows)]
    return LabeledImages(images, labels, classes, "kmnist", source=labels_path)


def _read_cifar10_official(folder: Path, split: str) -> LabeledImages:
    base = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [formats.read_cifar_batch(base / n, "labels") for n in names]
    classes = formats.read_cifar_names(base / "batches.meta", "label_names")
    for name, (_, labels) in zip(names, parts):  # name the batch holding a bad label
        check_labels(labels, len(classes), base / name)
    return LabeledImages(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         classes, "cifar10", source=base)


def _read_cifar10_npz(folder: Path, split: str) -> LabeledImages:
    """shared/data's CIFAR-10: the full test set, and the 50k train set (JPEG) with exact rows restored."""
    subset_path = folder / "cifar10_subset.npz"
    sub = formats.read_npz(subset_path, [f"x_{split}", f"y_{split}", f"exact_{split}", "class_names"])
    classes = [str(c) for c in sub["class_names"]]
    images, labels, exact = as_uint8(sub[f"x_{split}"], subset_path), sub[f"y_{split}"], sub[f"exact_{split}"]
    source, jpeg_path = subset_path, folder / "cifar10_train_jpeg.npz"
    if split == "train" and jpeg_path.is_file():
        jpeg = formats.read_npz(jpeg_path, ["jpeg_bytes", "offsets", "y_train"])
        full = formats.decode_jpeg_array(jpeg_path, jpeg["jpeg_bytes"], jpeg["offsets"])
        full[: len(images)][exact] = images[exact]  # rows 0..3999 exist losslessly: use them
        full_exact = np.zeros(len(full), bool)
        full_exact[: len(images)] = exact
        images, labels, exact, source = full, jpeg["y_train"], full_exact, jpeg_path
    return LabeledImages(images, labels, classes, "cifar10", {"exact": exact}, source)


def _read_cifar100(folder: Path, split: str) -> LabeledImages:
    base = folder / "cifar-100-python"
    images, fine = formats.read_cifar_batch(base / split, "fine_labels")
    _, coarse = formats.read_cifar_batch(base / split, "coarse_labels")
    classes = formats.read_cifar_names(base / "meta", "fine_label_names")
    return LabeledImages(images, fine, classes, "cifar100", {"coarse": coarse}, base / split)


def _read_gtsrb_npz(folder: Path, split: str) -> LabeledImages:
    path = folder / "gtsrb32_subset.npz"
    arrays = formats.read_npz(path, [f"x_{split}", f"y_{split}"])
    return LabeledImages(arrays[f"x_{split}"], arrays[f"y_{split}"], GTSRB_CLASSES, "gtsrb", source=path)


def _read_gtsrb_official(folder: Path, split: str) -> LabeledImages:
    if split == "train":
        source = folder / "GTSRB/Final_Training/Images"
        images, labels = formats.read_gtsrb_folder(source)
    else:
        source = folder / "GT-final_test.csv"
        images, labels = formats.read_gtsrb_folder(folder / "GTSRB/Final_Test/Images", source)
    return LabeledImages(images, labels, GTSRB_CLASSES, "gtsrb", source=source)


def _read_tinyimagenet(folder: Path, split: str) -> LabeledImages:
    key = "train" if split == "train" else "val"
    path = folder / "tinyimagenet32_subset.npz"
    a = formats.read_npz(path, [f"x_{key}", f"y_{key}", "class_names", "cifar10_overlap", "cifar10_related"])
    labels = check_labels(a[f"y_{key}"], len(a["class_names"]), path)  # before indexing the flags with them
    attrs = {"cifar10_overlap": a["cifar10_overlap"][labels], "cifar10_related": a["cifar10_related"][labels]}
    return LabeledImages(a[f"x_{key}"], labels, [str(c) for c in a["class_names"]], "tinyimagenet", attrs, path)


def _read_cub(folder: Path, split: str) -> LabeledImages:
    from anomalens.data.listed_images import cub_base, read_cub

    images, labels, classes = read_cub(folder, split)
    return LabeledImages(images, labels, classes, "cub", source=cub_base(folder) / "images.txt")


def _read_dtd(folder: Path, split: str) -> LabeledImages:
    from anomalens.data.listed_images import dtd_base, read_dtd

    images, labels, classes = read_dtd(folder, split)
    return LabeledImages(images, labels, classes, "dtd", source=dtd_base(folder) / "labels" / f"{split}1.txt")


def _read_magnetic_tile(folder: Path, split: str) -> DefectImages:
    path = folder / "magnetic_tile_256.npz"
    a = formats.read_npz(path, ["train_good", "test_images", "test_labels", "test_defect_type", "test_masks"])
    return DefectImages(a["train_good"], a["test_images"], a["test_labels"], a["test_defect_type"],
                        a["test_masks"], "magnetic_tile", path)


def _read_mvtec(folder: Path, split: str) -> DefectImages:
    return formats.read_mvtec_category(folder)


def _synthetic_defects(category: str) -> DefectImages:
    from anomalens.data.defects import synthetic_defects

    return synthetic_defects(category or "stripes")


def _glyphs(coloured: bool, characters: str) -> Callable[[str], LabeledImages]:
    def build(split: str) -> LabeledImages:
        from anomalens.data.synthetic import glyph_dataset  # Pillow + fonts: load only when asked

        return glyph_dataset(split, coloured=coloured, characters=characters)
    return build


def _read_skab(folder: Path, split: str, group: str | None = None) -> list:
    from anomalens.data.series_readers import read_skab

    return read_skab(folder, group)


def _synthetic_series(seed: int = 0) -> list:
    from anomalens.data.synthetic_series import synthetic_series

    return synthetic_series(seed)


def _one(layout_name: str, files: dict[str, tuple[str, ...]], read) -> tuple[Layout, ...]:
    return (Layout(layout_name, files, read),)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("mnist", "MNIST handwritten digits, 28x28 gray, 10 classes",
                _one("idx", LAYOUT_FILES["mnist"], _idx_reader("mnist", MNIST_CLASSES))),
    DatasetSpec("fashion_mnist", "Fashion-MNIST clothing, 28x28 gray, 10 classes",
                _one("idx", LAYOUT_FILES["fashion_mnist"], _idx_reader("fashion_mnist", FASHION_CLASSES)),
                folders=("fashion_mnist", "fashion-mnist"),
                system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
                notes="Debian: apt-get install dataset-fashion-mnist"),
    DatasetSpec("kmnist", "Kuzushiji-MNIST cursive Japanese, 28x28 gray, 10 classes (OE for MNIST)",
                _one("npz", {s: (f"kmnist-{s}-imgs.npz", f"kmnist-{s}-labels.npz") for s in SPLITS},
                     _read_kmnist),
                notes="shared/data holds the test split only"),
    DatasetSpec("emnist", "EMNIST letters, 28x28 gray, 26 classes (the papers' OE for MNIST)",
                _one("idx", LAYOUT_FILES["emnist"],
                     _idx_reader("emnist", [chr(c) for c in range(ord("a"), ord("z") + 1)], 1, True)),
                folders=("emnist", "emnist/gzip")),
    DatasetSpec("cifar10", "CIFAR-10 natural images, 32x32 RGB, 10 classes", (
        Layout("official", {"train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
                            + ("cifar-10-batches-py/batches.meta",),
                            "test": ("cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta")},
               _read_cifar10_official),
        Layout("npz", {"train": ("cifar10_subset.npz",), "test": ("cifar10_subset.npz",)}, _read_cifar10_npz),
    ), notes="npz layout: 50k train from cifar10_train_jpeg.npz when present, else 10k"),
    DatasetSpec("cifar100", "CIFAR-100 natural images, 32x32 RGB, 100 classes (the papers' OE for CIFAR-10)",
                _one("official", {s: (f"cifar-100-python/{s}", "cifar-100-python/meta") for s in SPLITS},
                     _read_cifar100)),
    DatasetSpec("gtsrb", "German traffic signs, 32x32 RGB, 43 classes", (
        Layout("npz", {s: ("gtsrb32_subset.npz",) for s in SPLITS}, _read_gtsrb_npz),
        Layout("official", {"train": ("GTSRB/Final_Training/Images",),
                            "test": ("GTSRB/Final_Test/Images", "GT-final_test.csv")}, _read_gtsrb_official),
    )),
    DatasetSpec("tinyimagenet", "Tiny-ImageNet 32x32 subset, RGB, 200 classes (OE for CIFAR-10)",
                _one("npz", {s: ("tinyimagenet32_subset.npz",) for s in SPLITS}, _read_tinyimagenet),
                notes="test = the official val set; attrs flag CIFAR-10 overlap"),
    DatasetSpec("cub", "CUB-200-2011 birds, RGB centre-cropped to 64x64, 200 classes (OE paper sec. 4)",
                _one("official", {s: tuple(f"CUB_200_2011/{f}|{f}" for f in (
                    "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"))
                    for s in SPLITS}, _read_cub),
                folders=("cub", "CUB_200_2011"), notes="official CUB_200_2011.tgz unpacked into ROOT/cub/"),
    DatasetSpec("dtd", "Describable Textures (DTD), RGB centre-cropped to 64x64, 47 classes, fold 1 (OE paper sec. 4)",
                _one("official", {s: (f"dtd/labels/{s}1.txt|labels/{s}1.txt", "dtd/images|images")
                                  for s in ("train", "val", "test")}, _read_dtd),
                notes="official dtd-r1.0.1.tar.gz unpacked into ROOT/dtd/", splits=("train", "val", "test")),
    DatasetSpec("magnetic_tile", "Magnetic tile surface defects, 256x256 gray, pixel masks",
                _one("npz", {"test": ("magnetic_tile_256.npz",)}, _read_magnetic_tile),
                kind="defects", splits=("test",)),
    DatasetSpec("mvtec_ad", "MVTec AD industrial inspection (name a category: mvtec_ad/bottle)",
                _one("mvtec", {"test": ("train/good", "test", "ground_truth")}, _read_mvtec),
                folders=("mvtec_ad", "mvtec"), kind="defects", splits=("test",)),
    DatasetSpec("synthetic_defects", "built-in: textures with scratches, spots, missing parts + masks, "
                "64x64 gray (synthetic_defects/stripes|grid|noise)", kind="defects", splits=("test",),
                builtin=_synthetic_defects),
    DatasetSpec("glyphs", "built-in: digits drawn with matplotlib's fonts, 28x28 gray",
                builtin=_glyphs(False, "0123456789")),
    DatasetSpec("colored_glyphs", "built-in: digits in 7 colours, 28x28 RGB",
                builtin=_glyphs(True, "0123456789")),
    DatasetSpec("glyph_letters", "built-in: letters A-Z, 28x28 gray (OE for glyphs)",
                builtin=_glyphs(False, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
    DatasetSpec("colored_glyph_letters", "built-in: letters A-Z in 7 colours, 28x28 RGB (OE for colored_glyphs)",
                builtin=_glyphs(True, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
    DatasetSpec("skab", "SKAB water-circulation bench: 8 sensors, per-step labels, time series (skab/valve1|valve2|"
                "other)", _one("csv", {"test": ("anomaly-free/anomaly-free.csv", "valve1", "valve2", "other")},
                               _read_skab),
                kind="series", splits=("test",),
                notes="GPL-3.0 benchmark data: copy data/ of https://github.com/waico/SKAB into ROOT/skab/"),
    DatasetSpec("synthetic_series", "built-in: 8 sensors in correlated pairs with spikes, level shifts, drifts, "
                "frozen sensors and pair breaks, per-feature ground truth", kind="series", splits=("test",),
                builtin=_synthetic_series),
]}


# ---------------------------------------------------------------------------------------- lookup


def _split_category(name: str) -> tuple[str, str]:
    """``mvtec_ad/bottle`` -> (``mvtec_ad``, ``bottle``); other names have no category."""
    base, _, category = name.partition("/")
    return base.lower().replace("-", "_"), category


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name lists the known ones."""
    key, _ = _split_category(name)
    if key not in DATASETS:
        raise DatasetNotFoundError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, "
                                   "or an image folder path (see anomalens data list)")
    return DATASETS[key]


def locate(name: str, split: str = "test", data_root: str | Path | None = None) -> Location | None:
    """Where ``split`` of ``name`` is found first, or None. Built-in datasets have no location."""
    spec = get_spec(name)
    category = _split_category(name)[1]
    for folder in spec.candidate_dirs(data_root):
        folder = folder / category if category else folder
        if not folder.is_dir():
            continue
        for layout in spec.layouts:
            files = layout.resolve(folder, split)
            if files is not None:
                return Location(folder, layout, tuple(files))
    return None


def available_splits(name: str, data_root: str | Path | None = None) -> list[str]:
    spec = get_spec(name)
    if spec.builtin is not None:
        return list(spec.splits)
    return [s for s in spec.splits if locate(name, s, data_root) is not None]


def _missing_message(spec: DatasetSpec, split: str, data_root: str | Path | None) -> str:
    needed = sorted({e.split("|")[0] for layout in spec.layouts for e in layout.files.get(split, ())})
    places = "\n  ".join(str(d) for d in spec.candidate_dirs(data_root))
    return (f"dataset {spec.name!r} ({split} split) not found. Looked in:\n  {places}\n"
            f"It needs the files {needed} in one of these folders. Fixes: point ANOMALENS_DATA or "
            f"--data-root at a folder holding {spec.name}/, or run `anomalens data download {spec.name}`"
            + (f" ({spec.notes})" if spec.notes else ""))


def load(name: str, split: str = "train", data_root: str | Path | None = None) -> LabeledImages:
    """The ``split`` of a labelled dataset as read-only uint8 arrays (cached per process)."""
    spec = get_spec(name)
    if spec.kind != "classes":
        raise DatasetNotFoundError(f"{name!r} is a defect dataset: use load_defects({name!r})")
    if split not in spec.splits:
        raise DatasetNotFoundError(f"{name!r} has no split {split!r}; it has {list(spec.splits)}")
    if spec.builtin is not None:
        return _cached_builtin(spec.name, split)
    location = locate(name, split, data_root)
    if location is None:
        raise DatasetNotFoundError(_missing_message(spec, split, data_root))
    return _cached_read(spec.name, location, split)  # type: ignore[return-value]


def load_defects(name: str, data_root: str | Path | None = None) -> DefectImages:
    """A defect dataset (images + pixel masks), e.g. ``magnetic_tile``."""
    spec = get_spec(name)
    if spec.kind != "defects":
        raise DatasetNotFoundError(f"{name!r} is a labelled dataset: use load({name!r}, split)")
    if spec.builtin is not None:
        return _cached_builtin(spec.name, _split_category(name)[1])  # type: ignore[return-value]
    if spec.name == "mvtec_ad" and not _split_category(name)[1]:
        raise DatasetNotFoundError("name an MVTec AD category, e.g. load_defects('mvtec_ad/bottle')")
    location = locate(name, "test", data_root)
    if location is None:
        raise DatasetNotFoundError(_missing_message(spec, "test", data_root))
    return _cached_read(spec.name, location, "test")  # type: ignore[return-value]


def load_series(name: str, data_root: str | Path | None = None, seed: int = 0) -> list:
    """The recordings (``data.timeseries.Recording``) of a time-series dataset: ``skab``, ``skab/valve1``
    (the anomaly-free recording plus one group's files), ``synthetic_series`` (generated with ``seed``)."""
    spec = get_spec(name)
    if spec.kind != "series":
        raise DatasetNotFoundError(f"{name!r} is not a time-series dataset; series datasets: "
                                   f"{', '.join(n for n, s in DATASETS.items() if s.kind == 'series')}")
    if spec.builtin is not None:
        return spec.builtin(seed)
    location = locate(spec.name, "test", data_root)
    if location is None:
        raise DatasetNotFoundError(_missing_message(spec, "test", data_root))
    return _read_skab(location.folder, "test", _split_category(name)[1] or None)


@functools.lru_cache(maxsize=16)
def _cached_read(name: str, location: Location, split: str) -> LabeledImages | DefectImages:
    return _freeze(location.layout.read(location.folder, split))


@functools.lru_cache(maxsize=8)
def _cached_builtin(name: str, split: str) -> LabeledImages | DefectImages:
    """A built-in set; ``split`` is the split for labelled sets and the category for defect sets."""
    data = DATASETS[name].builtin(split)  # type: ignore[misc]
    if isinstance(data, LabeledImages):
        data.name = name  # the catalog name, so OE/test overlap checks can tell the sets apart
    return _freeze(data)


def load_image_folder(root: str | Path, mode: str | None = None,
                      size: tuple[int, int] | None = None) -> LabeledImages:
    """A user's own data: one sub-folder per class (see ``formats.read_image_folder``)."""
    images, labels, classes = formats.read_image_folder(root, mode, size)
    return LabeledImages(images, labels, classes, Path(root).name, source=root)


# ------------------------------------------------------------------------------------- reporting


def catalog_rows(data_root: str | Path | None = None) -> list[dict[str, object]]:
    """One row per dataset: name, description, present splits, where found, where looked."""
    rows = []
    for spec in DATASETS.values():
        if spec.builtin is not None:
            rows.append({"name": spec.name, "description": spec.description, "present": list(spec.splits),
                         "location": "built-in (generated)", "searched": []})
            continue
        if spec.name == "mvtec_ad":
            categories = mvtec_categories(data_root)
            rows.append({"name": spec.name, "description": spec.description,
                         "present": [f"{c}" for c in categories], "location": "",
                         "searched": [str(d) for d in spec.candidate_dirs(data_root)], "notes": spec.notes})
            continue
        found = {s: locate(spec.name, s, data_root) for s in spec.splits}
        present = [s for s, loc in found.items() if loc is not None]
        where = next((str(loc.folder) + f" ({loc.layout.name})" for loc in found.values() if loc), "")
        rows.append({"name": spec.name, "description": spec.description, "present": present,
                     "location": where, "searched": [str(d) for d in spec.candidate_dirs(data_root)],
                     "notes": spec.notes})
    return rows


def mvtec_categories(data_root: str | Path | None = None) -> list[str]:
    """The MVTec-AD categories present (folders holding train/good) in the first folder that has any."""
    for folder in get_spec("mvtec_ad").candidate_dirs(data_root):
        if folder.is_dir():
            found = sorted(d.name for d in folder.iterdir() if (d / "train" / "good").is_dir())
            if found:
                return found
    return []


def dataset_info(name: str, data_root: str | Path | None = None) -> dict[str, object]:
    """Counts per class, image size and file locations of every present split of ``name``."""
    spec = get_spec(name)
    if spec.kind == "series":
        from anomalens.data.timeseries import DEFAULT_WINDOW, recordings_summary

        recordings = load_series(name, data_root)
        where = "built-in (generated)" if spec.builtin else str(locate(spec.name, "test", data_root).folder)
        return {"name": spec.name, "description": spec.description, "splits": {"recordings": {
            "count": len(recordings), "image_shape": [1, len(recordings[0].features), DEFAULT_WINDOW],
            "files": where, "defect_counts": recordings_summary(recordings)}}}
    info: dict[str, object] = {"name": spec.name, "description": spec.description, "splits": {}}
    for split in available_splits(name, data_root):
        loc = None if spec.builtin else locate(name, split, data_root)
        where = "built-in (generated)" if loc is None else [str(p) for p in loc.files]
        if spec.kind == "defects":
            d = load_defects(name, data_root)
            info["splits"] = {"train": {"count": len(d.train), "image_shape": list(d.train.shape[1:]),
                                        "files": where},
                              "test": {"count": len(d.test), "image_shape": list(d.test.shape[1:]),
                                       "defect_counts": d.defect_counts(), "files": where}}
            continue
        data = load(name, split, data_root)
        info["splits"][split] = {"count": len(data), "image_shape": list(data.image_shape),  # type: ignore[index]
                                 "class_counts": data.class_counts(), "files": where}
    if not info["splits"]:
        raise DatasetNotFoundError(_missing_message(spec, "test", data_root))
    return info
