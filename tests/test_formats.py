"""File readers on files the tests write: valid ones parse exactly, damaged ones name the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.data import formats
from anomalens.errors import DataFormatError

from conftest import write_idx

# ------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_idx_roundtrip_raw_and_gz(tmp_path: Path, rng, name: str) -> None:
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    img_path = write_idx(tmp_path / name, images)
    lbl_path = write_idx(tmp_path / "labels-idx1-ubyte", labels)
    x, y = formats.read_idx_pair(img_path, lbl_path)
    assert x.dtype == np.uint8 and x.shape == (7, 28, 28)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64


def test_idx_truncated_names_file(tmp_path: Path, rng) -> None:
    path = write_idx(tmp_path / "t-idx3-ubyte", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match="t-idx3-ubyte.*truncated"):
        formats.read_idx(path)


def test_idx_truncated_gzip_stream(tmp_path: Path, rng) -> None:
    path = write_idx(tmp_path / "t-idx3-ubyte.gz", rng.integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataFormatError, match="gzip stream is truncated"):
        formats.read_idx(path)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataFormatError, match="not an IDX file") as err:
        formats.read_idx(path)
    assert "not-idx" in str(err.value) and "Fix:" in str(err.value)


def test_idx_label_count_mismatch(tmp_path: Path, rng) -> None:
    img = write_idx(tmp_path / "a-idx3-ubyte", rng.integers(0, 256, (6, 28, 28), dtype=np.uint8))
    lbl = write_idx(tmp_path / "b-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match="5 labels for 6 images"):
        formats.read_idx_pair(img, lbl)


def test_idx_swapped_files(tmp_path: Path, rng) -> None:
    img = write_idx(tmp_path / "a-idx3-ubyte", rng.integers(0, 256, (6, 28, 28), dtype=np.uint8))
    lbl = write_idx(tmp_path / "b-idx1-ubyte", np.zeros(6, np.uint8))
    with pytest.raises(DataFormatError, match="3-d image array"):
        formats.read_idx_pair(lbl, img)


# ---------------------------------------------------------------------------------------- CIFAR


def _cifar_batch(path: Path, images: np.ndarray, labels: list[int], key: str = "labels") -> Path:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, key.encode(): labels, b"batch_label": b"test"}, f)
    return path


def test_cifar_batch_roundtrip(tmp_path: Path, rng) -> None:
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    path = _cifar_batch(tmp_path / "data_batch_1", images, [0, 9, 3, 3])
    x, y = formats.read_cifar_batch(path)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [0, 9, 3, 3]


def test_cifar100_fine_labels(tmp_path: Path, rng) -> None:
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    path = _cifar_batch(tmp_path / "train", images, [42, 99], key="fine_labels")
    assert formats.read_cifar_batch(path, "fine_labels")[1].tolist() == [42, 99]


def test_cifar_truncated_pickle(tmp_path: Path, rng) -> None:
    path = _cifar_batch(tmp_path / "data_batch_2", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), [0] * 4)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataFormatError, match="data_batch_2.*not a readable CIFAR pickle"):
        formats.read_cifar_batch(path)


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "data_batch_3"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataFormatError, match="refusing to load builtins.print"):
        formats.read_cifar_batch(path)


def test_cifar_meta_names(tmp_path: Path) -> None:
    path = tmp_path / "batches.meta"
    path.write_bytes(pickle.dumps({b"label_names": [b"airplane", b"automobile"]}))
    assert formats.read_cifar_names(path) == ["airplane", "automobile"]
    with pytest.raises(DataFormatError, match="fine_label_names"):
        formats.read_cifar_names(path, "fine_label_names")


# ------------------------------------------------------------------------------------------ npz


def test_npz_missing_key_and_truncated(tmp_path: Path, rng) -> None:
    path = tmp_path / "set.npz"
    np.savez(path, x_train=rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
    assert formats.read_npz(path, ["x_train"])["x_train"].shape == (3, 4, 4, 3)
    with pytest.raises(DataFormatError, match=r"missing arrays \['y_train'\]"):
        formats.read_npz(path, ["x_train", "y_train"])
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataFormatError, match="set.npz.*not a readable .npz"):
        formats.read_npz(path, ["x_train"])


def test_jpeg_array_decoding(tmp_path: Path, rng) -> None:
    blobs = []
    for colour in [(255, 0, 0), (0, 0, 255)]:
        buffer = __import__("io").BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG", quality=95)
        blobs.append(buffer.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    images = formats.decode_jpeg_array("x.npz", np.frombuffer(b"".join(blobs), np.uint8), offsets)
    assert images.shape == (2, 32, 32, 3)
    assert images[0, ..., 0].mean() > 240 and images[1, ..., 2].mean() > 240
    with pytest.raises(DataFormatError, match="image 1 cannot be decoded"):
        formats.decode_jpeg_array("x.npz", np.frombuffer(blobs[0] + b"garbage!", np.uint8),
                                  np.array([0, len(blobs[0]), len(blobs[0]) + 8]))


# ---------------------------------------------------------------------------------- image folders


def _png(path: Path, size=(8, 8), mode="L", value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)
    return path


def test_image_folder_reads_classes(tmp_path: Path) -> None:
    for cls, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            _png(tmp_path / cls / f"{i}.png", value=50 * i)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    x, y, names = formats.read_image_folder(tmp_path)
    assert names == ["cat", "dog"] and x.shape == (5, 8, 8, 1)
    assert y.tolist() == [0, 0, 1, 1, 1]


def test_image_folder_empty_class(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataFormatError, match=r"b: class folder is empty"):
        formats.read_image_folder(tmp_path)


def test_image_folder_mixed_sizes_and_conversion(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", size=(8, 8))
    _png(tmp_path / "a" / "1.png", size=(10, 8))
    with pytest.raises(DataFormatError, match=r"1.png: size .* differs.*size=\(H, W\)"):
        formats.read_image_folder(tmp_path)
    x, _, _ = formats.read_image_folder(tmp_path, size=(6, 6))
    assert x.shape == (2, 6, 6, 1)


def test_image_folder_mixed_channels_and_conversion(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", mode="L")
    _png(tmp_path / "a" / "1.png", mode="RGB")
    with pytest.raises(DataFormatError, match="1.png: channel count"):
        formats.read_image_folder(tmp_path)
    x, _, _ = formats.read_image_folder(tmp_path, mode="RGB")
    assert x.shape == (2, 8, 8, 3)


def test_image_folder_non_image_and_truncated_png(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataFormatError, match="notes.txt: cannot be read as an image"):
        formats.read_image_folder(tmp_path)
    (tmp_path / "a" / "notes.txt").unlink()
    broken = _png(tmp_path / "a" / "2.png", size=(64, 64))
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(DataFormatError, match="2.png"):
        formats.read_image_folder(tmp_path)


# ------------------------------------------------------------------------------ GTSRB and MVTec


def test_gtsrb_official_layout(tmp_path: Path) -> None:
    for cls in (0, 14):
        folder = tmp_path / "Images" / f"{cls:05d}"
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for i, size in enumerate([(40, 45), (61, 50)]):
            name = f"00000_{i:05d}.ppm"
            _png(folder / name, size=size, mode="RGB", value=200)
            rows.append(f"{name};{size[0]};{size[1]};5;5;{size[0] - 6};{size[1] - 6};{cls}")
        (folder / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")
    x, y = formats.read_gtsrb_folder(tmp_path / "Images", size=32)
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [0, 0, 14, 14]
    x_roi, _ = formats.read_gtsrb_folder(tmp_path / "Images", size=16, crop_roi=True)
    assert x_roi.shape == (4, 16, 16, 3)
    bad = tmp_path / "GT-bad.csv"
    bad.write_text("a;b\n1;2\n")
    with pytest.raises(DataFormatError, match="GT-bad.csv: not a GTSRB ground-truth CSV"):
        formats.read_gtsrb_folder(tmp_path / "Images", bad)


def test_mvtec_layout_with_masks(tmp_path: Path) -> None:
    root = tmp_path / "bottle"
    for i in range(3):
        _png(root / "train" / "good" / f"{i:03d}.png", size=(16, 16), mode="RGB")
    _png(root / "test" / "good" / "000.png", size=(16, 16), mode="RGB")
    _png(root / "test" / "crack" / "000.png", size=(16, 16), mode="RGB")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    (root / "ground_truth" / "crack").mkdir(parents=True)
    Image.fromarray(mask).save(root / "ground_truth" / "crack" / "000_mask.png")
    d = formats.read_mvtec_category(root)
    assert d.train.shape == (3, 16, 16, 3) and d.test.shape == (2, 16, 16, 3)
    assert d.test_labels.tolist() == [1, 0] and list(d.test_defect_type) == ["crack", "good"]
    assert d.test_masks[0].sum() == 16 and d.test_masks[1].sum() == 0
    (root / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(DataFormatError, match="000_mask.png: mask of .* is missing"):
        formats.read_mvtec_category(root)
