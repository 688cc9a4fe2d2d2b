"""Hostile inputs to the data layer (issue 11): each ends in a named error saying what, where and the
fix, or in a documented conversion with a warning naming the file; nothing half-written is left."""

from __future__ import annotations

import io
import os
import pickle
import re
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.data import catalog, formats, scenarios
from anomalens.data import download as dl
from anomalens.data.images import LabeledImages
from anomalens.errors import DataFormatError, DownloadError, ScenarioError

from conftest import needs_shared_data

# ----------------------------------------------------------------------------- 1. 16-bit images


def test_16bit_png_is_scaled_to_8bit_with_a_warning(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # -> 0, 1, 128, 255
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    for mode, channels in ((None, 1), ("RGB", 3)):
        with pytest.warns(UserWarning, match=re.escape(str(path)) + r".*16-bit.*scaled to 8 bit"):
            pixels = formats.read_image(path, mode)
        assert pixels.shape == (1, 4, channels)
        assert pixels[0, :, 0].tolist() == [0, 1, 128, 255]  # Pillow alone makes 257 and 32896 white


# ------------------------------------------------------------- 2. pixel values and labels


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _gtsrb_npz(root: Path, x: np.ndarray, y: np.ndarray) -> Callable[[], object]:
    _npz(root / "gtsrb" / "gtsrb32_subset.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    return lambda: catalog.load("gtsrb", "train", root)


def _nan_pixels(tmp: Path):
    x = np.zeros((3, 4, 4, 3), np.float32)
    x[1, 2, 3, 0] = np.nan
    read = _gtsrb_npz(tmp, x, np.zeros(3, np.int64))
    return read, "gtsrb32_subset.npz", "NaN or infinity (1 bad, the first nan at index (1, 2, 3, 0))"


def _cifar_pixels_above_255(tmp: Path):
    path = tmp / "data_batch_1"
    data = np.full((2, 3072), 7, np.int64)
    data[1, 5] = 300  # a uint8 cast would make it 44
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}))
    return lambda: formats.read_cifar_batch(path), "data_batch_1", "first 300 at index (1, 5)"


def _cifar_nan_pixels(tmp: Path):
    path = tmp / "test_batch"
    data = np.full((2, 3072), 7.0)
    data[0, 9] = np.nan  # a uint8 cast would make it 0
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}))
    return lambda: formats.read_cifar_batch(path), "test_batch", "NaN or infinity (1 bad, the first nan at index (0, 9)"


def _label_too_large(tmp: Path):
    read = _gtsrb_npz(tmp, np.zeros((3, 4, 4, 3), np.uint8), np.array([0, 43, 1]))
    return read, "gtsrb32_subset.npz", "first 43 at index 1"


def _negative_label(tmp: Path):
    folder = tmp / "kmnist"
    _npz(folder / "kmnist-test-imgs.npz", arr_0=np.zeros((3, 4, 4), np.uint8))
    _npz(folder / "kmnist-test-labels.npz", arr_0=np.array([0, -1, 2]))
    return lambda: catalog.load("kmnist", "test", tmp), "kmnist-test-labels.npz", "first -1 at index 1"


def _label_beyond_flags(tmp: Path):  # the label indexes per-class flags: it used to wrap or raise IndexError
    path = _npz(tmp / "tinyimagenet" / "tinyimagenet32_subset.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8),
                y_train=np.array([0, 2]), x_val=np.zeros((2, 4, 4, 3), np.uint8), y_val=np.array([0, 1]),
                class_names=np.array(["a", "b"]), cifar10_overlap=np.array([-1, -1]),
                cifar10_related=np.array([False, False]))
    return lambda: catalog.load("tinyimagenet", "train", tmp), path.name, "first 2 at index 1"


def _nan_float_tiff(tmp: Path):
    path = tmp / "float.tif"
    Image.fromarray(np.array([[1.0, np.nan]], np.float32)).save(path)
    return lambda: formats.read_image(path), "float.tif", "NaN"


@pytest.mark.parametrize("make", [_nan_pixels, _cifar_nan_pixels, _cifar_pixels_above_255, _label_too_large,
                                  _negative_label, _label_beyond_flags, _nan_float_tiff])
def test_bad_pixel_values_and_labels_name_file_and_value(tmp_path: Path, make) -> None:
    read, filename, value = make(tmp_path)
    with pytest.raises(DataFormatError) as err:
        read()
    message = str(err.value)
    assert filename in message and value in message and "Fix:" in message


def test_labeled_images_accept_exact_casts_only() -> None:
    ok = LabeledImages(np.full((2, 3, 3), 255.0), np.array([1.0, 0.0]), ["a", "b"], "ok")
    assert ok.images.dtype == np.uint8 and ok.images.max() == 255 and ok.labels.tolist() == [1, 0]
    with pytest.raises(DataFormatError, match=r"mine.*not whole numbers.*0\.5.*Fix:"):
        LabeledImages(np.full((2, 3, 3), 0.5), np.zeros(2), ["a"], "mine")


# ------------------------------------------------------------------- 3. images Pillow refuses


def _png(path: Path, size: int = 64) -> Path:
    Image.fromarray(np.full((size, size), 9, np.uint8)).save(path)
    return path


def _bomb(tmp: Path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 > 2 x 1000: DecompressionBombError
    path = _png(tmp / "bomb.png")
    return lambda: formats.read_image(path), path, "decompression bomb"


def _bomb_warning_as_error(tmp: Path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 is between 1x and 2x: only a warning
    path = _png(tmp / "big.png")

    def read():
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return formats.read_image(path)
    return read, path, "decompression bomb"


def _bomb_in_jpeg_array(tmp: Path, monkeypatch):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, "JPEG")
    data = np.frombuffer(buffer.getvalue(), np.uint8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp / "train_jpeg.npz"
    return lambda: formats.decode_jpeg_array(path, data, np.array([0, len(data)])), path, "image 0"


def _truncated(tmp: Path, monkeypatch):
    path = tmp / "cut.png"
    path.write_bytes(_png(tmp / "whole.png").read_bytes()[:60])
    return lambda: formats.read_image(path), path, "cannot be read"


def _not_an_image(tmp: Path, monkeypatch):
    path = tmp / "notes.png"
    path.write_text("not a picture")
    return lambda: formats.read_image(path), path, "cannot be read"


@pytest.mark.parametrize("make", [_bomb, _bomb_warning_as_error, _bomb_in_jpeg_array, _truncated, _not_an_image])
def test_undecodable_images_raise_data_format_error(tmp_path: Path, monkeypatch, make) -> None:
    read, path, problem = make(tmp_path, monkeypatch)
    with pytest.raises(DataFormatError) as err:
        read()
    message = str(err.value)
    assert str(path) in message and problem in message and "Fix:" in message


# --------------------------------------------------------------- 4. GTSRB rows leaving the folder


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_gtsrb_rows_pointing_outside_the_folder_are_refused(tmp_path: Path, escape: str) -> None:
    secret = tmp_path / "secret.ppm"  # a readable image outside the dataset: without the check it is read
    Image.new("RGB", (40, 40), (1, 2, 3)).save(secret)
    folder = tmp_path / "GTSRB" / "Final_Training" / "Images" / "00000"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(folder / "00000_00000.ppm")
    name = {"dotdot": "../../../../secret.ppm", "absolute": str(secret), "symlink": "link.ppm"}[escape]
    if escape == "symlink":
        (folder / "link.ppm").symlink_to(secret)
    csv_path = folder / "GT-00000.csv"
    csv_path.write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                        f"00000_00000.ppm;40;40;1;1;38;38;0\n{name};40;40;1;1;38;38;0\n")
    with pytest.raises(DataFormatError) as err:
        formats.read_gtsrb_folder(folder.parent)
    message = str(err.value)
    assert str(csv_path) in message and "line 3" in message and repr(name) in message and "Fix:" in message


# --------------------------------------------------------------------- 5. OE near-duplicates


def _smooth(n: int, seed: int) -> np.ndarray:
    """Blurry 28x28 blobs: distinct images whose 8x8 thumbnails still differ (unlike white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 7, 7), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((28, 28), Image.BICUBIC)) for c in coarse])[..., None]


@pytest.mark.parametrize("perturb", ["plus_one", "noise"])
def test_oe_near_duplicates_of_test_anomalies_are_refused(perturb: str) -> None:
    labels = np.arange(200) % 10
    train = LabeledImages(_smooth(200, 1), labels, list("0123456789"), "blobs")
    test = LabeledImages(_smooth(200, 2), labels, list("0123456789"), "blobs_test")
    data = scenarios.one_vs_rest(train, test, 0)
    anomalies = test.images[labels != 0][:20].astype(int)
    noise = np.random.default_rng(0).normal(0, 3, anomalies.shape)  # about 3/255 RMS, under the 8/255 tolerance
    copies = anomalies + 1 if perturb == "plus_one" else anomalies + noise
    clean = _smooth(300, 3)
    ok = scenarios.with_outlier_exposure(data, LabeledImages(clean, np.zeros(300), ["x"], "other"), test, 50)
    assert ok.train_oe.shape == (50, 1, 28, 28)  # distinct images pass
    normal_copies = np.clip(test.images[labels == 0][:5].astype(int) + 1, 0, 255).astype(np.uint8)
    scenarios.check_disjoint(LabeledImages(normal_copies, np.zeros(5), ["x"], "n"), test, labels != 0)
    leaky = LabeledImages(np.concatenate([clean, np.clip(np.round(copies), 0, 255).astype(np.uint8)]),
                          np.zeros(320), ["x"], "leaky_oe")
    with pytest.raises(ScenarioError) as err:
        scenarios.with_outlier_exposure(data, leaky, test, 50)
    message = str(err.value)
    assert "'leaky_oe' shares 20 images" in message and "OE indices 300, 301" in message and "Fix:" in message


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset, oe", [
    pytest.param("mnist", "kmnist", marks=[needs_shared_data("mnist"), needs_shared_data("kmnist")]),
    pytest.param("cifar10", "tinyimagenet", marks=[needs_shared_data("cifar10", "cifar10_subset.npz"),
                                                   needs_shared_data("tinyimagenet", "tinyimagenet32_subset.npz")]),
])
def test_real_oe_sets_are_not_near_duplicates(dataset: str, oe: str) -> None:
    """No false alarm on real, distinct datasets (their nearest pairs are > 11/255 apart)."""
    test = catalog.load(dataset, "test")
    pool = catalog.load(oe, catalog.available_splits(oe)[0])
    began = time.monotonic()
    assert len(scenarios.near_duplicates(pool.images, test.images)) == 0
    assert time.monotonic() - began < 10


# ------------------------------------------------------------------------------- 6. downloads


class _Hostile(BaseHTTPRequestHandler):
    """/trickle: 1 byte every 20 ms; /endless: no length, 16 kB blocks; /huge: announces 1 TB.
    Every loop is bounded, and stops when the client hangs up."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        kind = self.path.strip("/")
        self.send_response(200)
        length = {"trickle": "100000", "huge": str(10**12)}.get(kind)
        if length:
            self.send_header("Content-Length", length)
        self.end_headers()
        block, pause = (b"x", 0.02) if kind == "trickle" else (b"y" * 16384, 0.0)
        try:
            for _ in range(500):
                self.wfile.write(block)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up: that is the point
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def _slow_rate(monkeypatch):
    monkeypatch.setattr(dl, "RATE_WINDOW", 0.2)
    monkeypatch.setattr(dl, "MIN_RATE", 1000)  # the trickle brings 50 bytes/s


@pytest.mark.parametrize("kind, size, limits, problem", [
    ("trickle", None, {"deadline": 0.3}, "deadline of 0.3 s"),
    ("trickle", None, {"rate": True}, "fewer than 1000 bytes/s"),
    ("endless", 1000, {}, "more than the cap of 66546 bytes"),  # published size + 1 % + 64 KiB
    ("endless", None, {"max_bytes": 50_000}, "more than the cap of 50000 bytes"),
    ("huge", 1000, {}, "announces 1000000000000 bytes"),
    ("disk_full", None, {}, "disk is full"),
])
def test_hostile_servers_and_full_disks_end_in_download_error(hostile, tmp_path, monkeypatch, kind, size,
                                                             limits, problem) -> None:
    if limits.pop("rate", False):
        _slow_rate(monkeypatch)
    if kind == "disk_full":
        if not Path("/dev/full").exists():
            pytest.skip("needs /dev/full")
        (tmp_path / "file.bin.part").symlink_to("/dev/full")  # every write fails with ENOSPC
        kind = "endless"
    remote = dl.RemoteFile(hostile + kind, None, filename="file.bin", size=size)
    began = time.monotonic()
    with pytest.raises(DownloadError) as err:
        dl.download(remote, tmp_path, progress=False, timeout=2, retries=1, **limits)
    assert time.monotonic() - began < 3
    message = str(err.value)
    assert problem in message and remote.url in message and f"{tmp_path}{os.sep}" in message and "Fix:" in message
    assert list(tmp_path.iterdir()) == []  # the .part is gone


def test_stale_temporaries_are_removed_and_fresh_parts_kept(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".cifar10.tmp-abc").mkdir()
    (tmp_path / ".cifar10.tmp-abc" / "half.bin").write_bytes(b"x")
    (tmp_path / ".data.json.x1.tmp").write_bytes(b"x")
    for name, size, age_days in (("old.bin.part", 10, 8), ("big.bin.part", 2000, 0), ("fresh.bin.part", 10, 0)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        os.utime(path, (time.time() - age_days * 86400,) * 2)
    files = [dl.RemoteFile(f"http://127.0.0.1:9/{n}.bin", None, size=1000) for n in ("old", "big", "fresh")]
    monkeypatch.setenv("ANOMALENS_OFFLINE", "1")  # the sweep runs first, then the (refused) download
    with pytest.raises(DownloadError, match="ANOMALENS_OFFLINE"):
        dl.download_all(files, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.bin.part"]  # kept for resuming
    (tmp_path / ".ds.tmp-killed").mkdir()  # a killed extraction into tmp_path/ds
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("x.txt", "x")
    assert dl.extract(tmp_path / "a.zip", tmp_path / "ds") == [tmp_path / "ds" / "x.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "ds", "fresh.bin.part"]
