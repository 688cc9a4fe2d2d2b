"""Shared fixtures: small files in the real formats, written by the tests themselves."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# One thread: the tests' networks are tiny, and with a second intra-op thread a saturated detector's
# denormal gradients (flush-to-zero is set on the calling thread only) made one explainer test 40x slower.
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ["ANOMALENS_DATA"]) if os.environ.get("ANOMALENS_DATA") else None


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file; gzipped when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_mnist(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A folder laid out like MNIST's release with 50 train and 20 test images."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for part, n in (("train", 50), ("t10k", 20)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real ~/.cache/anomalens during tests."""
    from anomalens.data import catalog

    monkeypatch.setattr(catalog, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
    catalog._cached_read.cache_clear()


def write_mini_glyphs(root: Path, train: int = 2000, test: int = 400, letters: int = 600) -> Path:
    """Digits and letters drawn like the built-in ``glyphs`` / ``glyph_letters`` sets, but ~20x fewer, saved
    under ``root`` where the catalog looks for MNIST (IDX) and KMNIST (npz): ``--dataset mnist --oe kmnist
    --data-root ROOT`` then trains and evaluates in a fraction of the built-in sets' time (20,000 + 5,000
    images, generated afresh in every process). Digits: ``train`` / ``test`` images, 10 classes, balanced;
    letters A-J (KMNIST's 10 classes): ``letters`` per split."""
    import numpy as np

    from anomalens.data.synthetic import glyphs

    (root / "mnist").mkdir(parents=True, exist_ok=True)
    (root / "kmnist").mkdir(exist_ok=True)
    for split, part, n, seed in (("train", "train", train, 101), ("test", "t10k", test, 102)):
        digits = glyphs(n, seed=seed)
        write_idx(root / "mnist" / f"{part}-images-idx3-ubyte.gz", digits.images[..., 0])
        write_idx(root / "mnist" / f"{part}-labels-idx1-ubyte.gz", digits.labels.astype(np.uint8))
        chars = glyphs(letters, seed=seed + 100, characters="ABCDEFGHIJ")
        np.savez(root / "kmnist" / f"kmnist-{split}-imgs.npz", chars.images[..., 0])
        np.savez(root / "kmnist" / f"kmnist-{split}-labels.npz", chars.labels.astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def mini_glyphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's ``write_mini_glyphs`` data root, written once per session (~1 s)."""
    return write_mini_glyphs(tmp_path_factory.mktemp("mini_glyphs"))


def needs_shared_data(*parts: str):
    """Skip unless ANOMALENS_DATA points at shared/data holding ``parts``."""
    present = SHARED_DATA is not None and (SHARED_DATA.joinpath(*parts)).exists()
    return pytest.mark.skipif(not present, reason=f"ANOMALENS_DATA/{'/'.join(parts)} not present")


def bars_task(n: int = 64):
    """A 28 px task that trains in seconds: normal = a bright bar on the left, OE = a bar on the right."""
    import torch

    from anomalens.data.addata import ADData

    g = torch.Generator().manual_seed(0)
    normal = torch.rand(n, 1, 28, 28, generator=g) * 0.1
    normal[:, :, 4:24, 4:10] = 0.9
    oe = torch.rand(n, 1, 28, 28, generator=g) * 0.1
    oe[:, :, 4:24, 18:24] = 0.9
    return ADData(train_normal=normal, train_oe=oe, test_x=torch.cat([normal[:8], oe[:8]]),
                  test_y=torch.cat([torch.zeros(8), torch.ones(8)]).long(), name="bars")


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised CLIP saved as a Hugging Face folder: two layers of width 32 per tower, 32 px
    images in 4 px patches, and a byte-level tokenizer of 514 tokens (every byte, alone and word-final,
    plus the two special tokens; no merges), written by the test (no download)."""
    import json

    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]  # GPT-2's byte map
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**tower, **ids, "vocab_size": len(tokens), "max_position_embeddings": 64},
                        vision_config={**tower, "image_size": 32, "patch_size": 4}, projection_dim=16)
    with torch.random.fork_rng():  # leaves the global generator of the calling test alone
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's tiny random CLIP folder, written once per session."""
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
