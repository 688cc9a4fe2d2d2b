"""Readers for the image file formats the catalog knows, each returning plain uint8 arrays.

Every reader checks what it parses (magic numbers, header sizes, matching label counts, image
sizes in a folder) and raises ``DataFormatError`` naming the file and the fix, instead of letting a
reshape deep inside numpy fail with a message nobody can act on. Every Pillow failure (unknown
format, truncated file, decompression bomb) becomes a ``DataFormatError`` too.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomalens.data.images import DefectImages, as_uint8
from anomalens.errors import DataFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_REDOWNLOAD = "delete the file and download it again (anomalens data download NAME)"
# What Pillow raises on a file it cannot decode (ValueError/SyntaxError come from broken headers), and
# on one too large to decode safely (the warning only arrives as an exception under -W error).
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_BOMB_FIX = ("if the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS before loading; otherwise "
             "remove the file")

# ---------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz; a broken gzip stream is a format error."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(path, f"the gzip stream is truncated or corrupt ({e})", _REDOWNLOAD) from e


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST, Fashion-MNIST, EMNIST), gzipped or raw.

    Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per
    dimension, then the values.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(
            path,
            f"not an IDX file (magic bytes {data[:4].hex() or 'missing'}, expected 0000 08 01..03)",
            "check that this is an *-idx?-ubyte(.gz) file of MNIST, Fashion-MNIST, KMNIST or EMNIST",
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFormatError(path, f"IDX header is truncated ({len(data)} bytes)", _REDOWNLOAD)
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFormatError(
            path,
            f"header promises shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(data) - header} bytes: it is truncated or padded",
            _REDOWNLOAD,
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 from an IDX image file and its label file."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataFormatError(images_path, f"expected a 3-d image array, found shape {images.shape}",
                              "pass the *-images-idx3-ubyte file as images and the labels file as labels")
    if labels.ndim != 1:
        raise DataFormatError(labels_path, f"expected a 1-d label array, found shape {labels.shape}",
                              "pass the *-labels-idx1-ubyte file as labels")
    if len(images) != len(labels):
        raise DataFormatError(
            labels_path,
            f"{len(labels)} labels for {len(images)} images in {Path(images_path).name}",
            "use the label file that belongs to these images (train with train, t10k with t10k)",
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(labels_path, f"labels are stored as {labels.dtype}, expected integers",
                              "pass the *-labels-idx1-ubyte file as labels")
    return as_uint8(images, images_path), labels.astype(np.int64)


# ------------------------------------------------------------------------------------ CIFAR pickle


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of bytes, lists and numpy arrays) and nothing else.

    A pickle can run arbitrary code; CIFAR is distributed as pickles, so we allow exactly the
    globals numpy needs to rebuild an array and refuse every other one.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle_dict(path: str | Path) -> dict[str, object]:
    """A CIFAR-style pickled dict, loaded without executing code; keys decoded to str."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
        raise DataFormatError(path, f"not a readable CIFAR pickle ({e})", _REDOWNLOAD) from e
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"expected a pickled dict, found {type(raw).__name__}",
                              "pass a CIFAR batch file (data_batch_N, test_batch, train, test)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def read_cifar_batch(path: str | Path, label_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels from one CIFAR-10/100 python batch.

    CIFAR-10 batches store ``labels``; CIFAR-100 stores ``fine_labels`` and ``coarse_labels``.
    """
    path = Path(path)
    batch = read_pickle_dict(path)
    keys = [label_key] if label_key else ["labels", "fine_labels"]
    key = next((k for k in keys if k in batch), None)
    if "data" not in batch or key is None:
        raise DataFormatError(path, f"missing keys: found {sorted(batch)}, need 'data' and one of {keys}",
                              "pass a CIFAR data batch, not the meta file")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataFormatError(path, f"data has shape {data.shape} for {len(labels)} labels, "
                              "expected (N, 3072)", _REDOWNLOAD)
    return as_uint8(data, path).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar_names(meta_path: str | Path, key: str = "label_names") -> list[str]:
    """Class names from ``batches.meta`` (CIFAR-10, key label_names) or ``meta`` (CIFAR-100)."""
    meta = read_pickle_dict(meta_path)
    if key not in meta:
        raise DataFormatError(meta_path, f"no {key!r} in the meta file (found {sorted(meta)})",
                              "use batches.meta for CIFAR-10 and meta for CIFAR-100")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- npz


def read_npz(path: str | Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file, loaded without pickle; missing keys are a format error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataFormatError(path, f"missing arrays {missing} (found {npz.files})",
                                      "use the file described in shared/data/MANIFEST.md")
            return {k: npz[k] for k in keys}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(path, f"not a readable .npz archive ({e})", _REDOWNLOAD) from e


def decode_jpeg_array(path: str | Path, jpeg_bytes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode the JPEGs concatenated in ``jpeg_bytes`` (image i = bytes[offsets[i]:offsets[i+1]]) to RGB."""
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[-1] != len(jpeg_bytes):
        raise DataFormatError(path, "offsets do not cover the JPEG byte array", _REDOWNLOAD)
    buffer = jpeg_bytes.tobytes()
    first = _decode_image(path, buffer[offsets[0]:offsets[1]], "RGB", index=0)
    out = np.empty((len(offsets) - 1, *first.shape), np.uint8)
    out[0] = first
    for i in range(1, len(out)):
        out[i] = _decode_image(path, buffer[offsets[i]:offsets[i + 1]], "RGB", index=i)
    return out


def _decode_image(path: str | Path, data: bytes, mode: str, index: int | None = None) -> np.ndarray:
    where = f"image {index}" if index is not None else "image"
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except _BOMBS as e:
        raise DataFormatError(path, f"{where} is a decompression bomb ({e})", _BOMB_FIX) from e
    except _PIL_ERRORS as e:
        raise DataFormatError(path, f"{where} cannot be decoded ({e})", _REDOWNLOAD) from e


# ----------------------------------------------------------------------------------- image folders


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16/32-bit integer or float grayscale image as 8-bit 'L'; Pillow's own convert would clip.

    Integer images are scaled by their bit depth (16-bit: value / 257, so 65535 -> 255) with a
    warning naming the file; float images must already hold 0..255 (NaN or other values are refused).
    """
    values = np.asarray(img)
    if img.mode == "F":  # round the fractions Pillow would round too; NaN and out-of-range are refused
        return Image.fromarray(as_uint8(np.where(np.isfinite(values), np.round(values), values), path), "L")
    bits = getattr(img, "tag_v2", {}).get(258, 16)  # TIFF BitsPerSample; 16 for I;16 PNG/PGM
    bits = 16 if img.mode.startswith("I;16") else int(bits[0] if isinstance(bits, tuple) else bits)
    top = 2**bits - 1
    if values.min() < 0 or values.max() > top:
        raise DataFormatError(path, f"{bits}-bit image (mode {img.mode}) holds values "
                              f"{values.min()}..{values.max()}, outside 0..{top}",
                              "save it as an 8-bit or 16-bit grayscale PNG")
    warnings.warn(f"{path}: {bits}-bit image (mode {img.mode}) scaled to 8 bit (value * 255 / {top})",
                  stacklevel=2)
    return Image.fromarray(np.round(values.astype(np.float64) * (255 / top)).astype(np.uint8), "L")


def read_image(path: str | Path, mode: str | None = None, size: tuple[int, int] | None = None,
               crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One image file as (H, W, C) uint8, optionally cropped to the box ``crop`` (Pillow's
    left, upper, right, lower), converted to ``mode`` ('L' or 'RGB') and resized.

    size is (height, width). 16-bit (and 32-bit integer) grayscale images are scaled to 8 bit by
    their bit depth (16-bit: value / 257) with a warning naming the file; Pillow alone would clip
    them, turning almost every pixel white. Float images must hold 0..255. Truncated, non-image
    and oversized (decompression bomb) files raise ``DataFormatError`` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I") or img.mode == "F":
                img = _to_8bit(img, path)
            if mode is None and img.mode not in ("L", "RGB"):
                mode = "L" if img.mode in ("1", "LA") else "RGB"
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            if crop is not None:
                img = img.crop(crop)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BICUBIC)
            arr = np.asarray(img)
    except _BOMBS as e:
        raise DataFormatError(path, f"is a decompression bomb ({e})", _BOMB_FIX) from e
    except DataFormatError:
        raise
    except _PIL_ERRORS as e:
        raise DataFormatError(path, f"cannot be read as an image ({e})",
                              "remove it from the folder or replace it with an intact image") from e
    return arr[..., None] if arr.ndim == 2 else arr


def read_images(paths: Sequence[Path], mode: str | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Stack image files into (N, H, W, C) uint8, refusing mixed sizes or channel counts.

    Mixed inputs are an error by default because silently resizing changes the data; pass
    ``size=(H, W)`` and/or ``mode='L'|'RGB'`` to convert every image (the documented conversion).
    """
    if not paths:
        raise ValueError("no image files given")
    first = read_image(paths[0], mode, size)
    out = np.empty((len(paths), *first.shape), np.uint8)
    out[0] = first
    for i, p in enumerate(paths[1:], start=1):
        img = read_image(p, mode, size)
        if img.shape != first.shape:
            what = "channel count" if img.shape[:2] == first.shape[:2] else "size"
            raise DataFormatError(
                p,
                f"{what} {img.shape} differs from {first.shape} of {paths[0].name}",
                "pass size=(H, W) (CLI: --image-size) and/or mode='RGB'|'L' to convert all images",
            )
        out[i] = img
    return out


def _image_files(folder: Path) -> list[Path]:
    """Visible files of a folder, sorted; hidden files (.DS_Store, ._*) are skipped."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_flat_or_class_folder(root: str | Path, mode: str | None = None,
                              size: tuple[int, int] | None = None) -> np.ndarray:
    """The images of a folder that holds them directly, or in one sub-folder per class."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "is not a folder", "pass a folder of images")
    files = _image_files(root)
    return read_images(files, mode, size) if files else read_image_folder(root, mode, size)[0]


def read_image_folder(root: str | Path, mode: str | None = None, size: tuple[int, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder with one sub-folder per class -> images, labels, class names (sorted folder names)."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "is not a folder", "pass a folder holding one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataFormatError(root, "holds neither images nor class sub-folders",
                              "put the images into the folder itself, or those of class C into ROOT/C/")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = _image_files(root / name)
        if not files:
            raise DataFormatError(root / name, "class folder is empty",
                                  "add images to it or remove the folder")
        paths += files
        labels += [index] * len(files)
    return read_images(paths, mode, size), np.asarray(labels, np.int64), classes


# ------------------------------------------------------------------------------------------- GTSRB


def _read_gt_csv(csv_path: Path, base: Path, root: Path) -> list[tuple[Path, int, tuple[int, int, int, int]]]:
    """Rows (image path, ClassId, ROI box) of an official GTSRB ground-truth CSV (';'-separated).

    File names are taken relative to ``base``; a row whose file would lie outside ``root`` (``..``,
    an absolute path, a symlink leading out) is refused, so a crafted CSV cannot read other files.
    """
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        entries = [(r["Filename"], int(r["ClassId"]),
                    (int(r["Roi.X1"]), int(r["Roi.Y1"]), int(r["Roi.X2"]), int(r["Roi.Y2"]))) for r in rows]
    except (KeyError, ValueError, TypeError) as e:
        raise DataFormatError(csv_path, f"not a GTSRB ground-truth CSV ({e!r})",
                              "use the GT-*.csv shipped with GTSRB (columns Filename;...;ClassId)") from e
    inside = root.resolve()
    for line, (name, _, _) in enumerate(entries, start=2):  # line 1 is the header
        if not (base / name).resolve().is_relative_to(inside):
            raise DataFormatError(csv_path, f"line {line}: Filename {name!r} points outside the dataset "
                                  f"folder {root}; nothing was read",
                                  "use the GT csv shipped with GTSRB, whose rows name files next to it")
    return [(base / name, cls, roi) for name, cls, roi in entries]


def read_gtsrb_folder(folder: str | Path, csv_path: str | Path | None = None, size: int = 32,
                      crop_roi: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """GTSRB's official layout: ``.ppm`` images described by ``GT-*.csv`` files.

    ``folder`` is either ``Final_Training/Images`` (one sub-folder per class, each with its own
    GT-000NN.csv) or ``Final_Test/Images`` with ``csv_path`` pointing at ``GT-final_test.csv``.
    Signs come in many sizes, so every image is resized to ``size`` x ``size`` (after an optional
    crop to the annotated region of interest).
    """
    folder = Path(folder)
    if csv_path is not None:
        entries = _read_gt_csv(Path(csv_path), folder, folder)
    else:
        csvs = sorted(folder.glob("*/GT-*.csv"))
        if not csvs:
            raise DataFormatError(folder, "no GT-*.csv files in its class sub-folders",
                                  "pass Final_Training/Images, or Final_Test/Images with csv_path")
        entries = [entry for c in csvs for entry in _read_gt_csv(c, c.parent, folder)]
    images = np.empty((len(entries), size, size, 3), np.uint8)
    for i, (path, _, roi) in enumerate(entries):
        if not path.is_file():
            raise DataFormatError(path, "listed in the GT csv but missing", "restore the extracted archive")
        box = (roi[0], roi[1], roi[2] + 1, roi[3] + 1) if crop_roi else None
        images[i] = read_image(path, "RGB", (size, size), crop=box)
    return images, np.asarray([cls for _, cls, _ in entries], np.int64)


# -------------------------------------------------------------------------------------- MVTec AD


def read_mvtec_category(root: str | Path, size: int | None = None) -> DefectImages:
    """One MVTec-AD category: ``train/good``, ``test/<defect>``, ``ground_truth/<defect>/*_mask.png``.

    ``size`` resizes images (bicubic) and masks (nearest) to size x size; MVTec images are large.
    Good test images get all-zero masks; a defect image without its mask is an error.
    """
    root = Path(root)
    for sub in ("train/good", "test"):
        if not (root / sub).is_dir():
            raise DataFormatError(root, f"missing {sub}/", "pass a category folder of MVTec AD, e.g. mvtec/bottle")
    shape = None if size is None else (size, size)
    train = read_images(_image_files(root / "train" / "good"), size=shape)
    test_paths: list[Path] = []
    types: list[str] = []
    for defect in sorted(d.name for d in (root / "test").iterdir() if d.is_dir()):
        files = _image_files(root / "test" / defect)
        test_paths += files
        types += [defect] * len(files)
    test = read_images(test_paths, mode="RGB" if train.shape[-1] == 3 else "L", size=shape)
    masks = np.zeros(test.shape[:3], np.uint8)
    for i, (path, defect) in enumerate(zip(test_paths, types)):
        if defect == "good":
            continue
        mask_path = root / "ground_truth" / defect / f"{path.stem}_mask.png"
        if not mask_path.is_file():
            raise DataFormatError(mask_path, f"mask of {path} is missing",
                                  "restore ground_truth/ from the MVTec archive")
        mask = read_image(mask_path, "L", shape)[..., 0]
        if mask.shape != masks.shape[1:]:
            raise DataFormatError(mask_path, f"mask size {mask.shape} differs from its image "
                                  f"{masks.shape[1:]}", "pass the matching mask or set size=")
        masks[i] = mask > 127
    labels = np.asarray([t != "good" for t in types], np.int64)
    return DefectImages(train, test, labels, np.asarray(types), masks, name=root.name)
