"""OE detectors: objectives on hand-computed examples, the score contract, training, persistence."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from anomalens.data.augment import Augment
from anomalens.data.scenarios import build
from anomalens.detectors import training
from anomalens.detectors.base import CheckpointError, Detector
from anomalens.detectors.objectives import BCE, HSC, DeepSAD, DeepSVDD, Focal, make_objective
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig, TrainingDivergedError, train
from anomalens.experiments.tables import aggregate, markdown_table
from anomalens.metrics.detection import auroc
from anomalens.nets import build_net, default_net

# --------------------------------------------------------------------------- objectives by hand


def test_bce_and_focal_by_hand() -> None:
    logits, y = torch.tensor([0.0, 2.0]), torch.tensor([0, 1])
    # BCE: mean(-log(1 - sigmoid(0)), -log(sigmoid(2)))
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert BCE().loss(logits, y).item() == pytest.approx(expected, rel=1e-6)
    p = 1 / (1 + math.exp(-2))
    focal = (0.5 * 0.5 ** 2 * math.log(2) + 0.5 * (1 - p) ** 2 * -math.log(p)) / 2
    assert Focal(gamma=2.0).loss(logits, y).item() == pytest.approx(focal, rel=1e-6)
    assert Focal(gamma=0.0).loss(logits, y).item() == pytest.approx(0.5 * expected, rel=1e-6)  # alpha 0.5


def test_hsc_by_hand() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # |z| = 5 and 0
    h = math.sqrt(26) - 1
    hsc = HSC()
    assert hsc.raw(z).tolist() == pytest.approx([h, 0.0])
    assert hsc.bounded(z).tolist() == pytest.approx([1 - math.exp(-h), 0.0])
    # normal sample at |z| = 5 costs h; anomalous sample at |z| = 5 costs -log(1 - exp(-h))
    assert hsc.loss(z[:1], torch.tensor([0])).item() == pytest.approx(h, rel=1e-6)
    assert hsc.loss(z[:1], torch.tensor([1])).item() == pytest.approx(-math.log(1 - math.exp(-h)), rel=1e-6)
    assert math.isfinite(hsc.loss(z[1:], torch.tensor([1])).item())  # anomaly at the centre: large, finite


def test_deep_sad_and_svdd_by_hand() -> None:
    z = torch.tensor([[1.0, 1.0]])  # squared distance 2
    assert DeepSAD().loss(z, torch.tensor([0])).item() == pytest.approx(2.0)
    assert DeepSAD().loss(z, torch.tensor([1])).item() == pytest.approx(0.5, rel=1e-5)
    assert DeepSVDD().loss(z, torch.tensor([0])).item() == pytest.approx(2 / 3)
    assert DeepSVDD().bounded(z).item() == pytest.approx(2 / 3)
    assert DeepSVDD().bias is False and DeepSVDD().anomalies == "none"


def test_unknown_objective() -> None:
    with pytest.raises(ValueError, match="known: bce"):
        make_objective("svm")


# ----------------------------------------------------------------------------- score contract


@pytest.mark.parametrize("method", ["bce", "focal", "hsc", "deepsad", "dsvdd", "supervised"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_scores_bounded_and_differentiable(method: str, shape) -> None:
    torch.manual_seed(0)
    detector = OEDetector(method, shape).eval()
    x = torch.rand(5, *shape, requires_grad=True)
    score = detector.score(x)
    assert score.shape == (5,) and bool(((score >= 0) & (score <= 1)).all())
    score.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert detector.raw_score(x).shape == (5,)


def test_dsvdd_network_is_bias_free() -> None:
    detector = OEDetector("dsvdd", (1, 28, 28))
    assert not [n for n, _ in detector.named_parameters() if n.endswith("bias")]
    assert detector.head is None and detector.center is not None


def test_networks_of_the_papers() -> None:
    lenet = build_net(default_net((1, 28, 28)))
    assert [m.out_channels for m in lenet.conv if isinstance(m, torch.nn.Conv2d)] == [4, 8, 16, 32]
    cifar = build_net(default_net((3, 32, 32)))
    assert [m.out_channels for m in cifar.conv if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128]
    assert cifar.out_dim == 256 and cifar(torch.rand(2, 3, 32, 32)).shape == (2, 256)
    assert default_net((3, 64, 64))["type"] == "wrn"


# ------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def glyph_task():
    """An easy split: glyph '0' normal, other digits anomalous, letters as OE."""
    data = build("glyphs", 0, oe="glyph_letters", oe_size=2000, seed=0)
    data.test_x, data.test_y = data.test_x[:1500], data.test_y[:1500]
    data.test_attrs = {k: v[:1500] for k, v in data.test_attrs.items()}
    return data


@pytest.mark.parametrize("method", ["bce", "hsc"])
def test_detector_beats_chance_on_glyphs(glyph_task, method: str) -> None:
    torch.manual_seed(0)
    detector = OEDetector(method, glyph_task.image_shape)
    # 3 epochs of 10 steps of 32 + 32 images: AuROC ~0.965 for both (an untrained net: ~0.5)
    detector.fit(glyph_task, TrainConfig(epochs=3, lr=2e-3, batch_size=32, max_steps_per_epoch=10, progress=False))
    assert auroc(glyph_task.test_y, detector.scores(glyph_task.test_x)) > 0.9
    losses = [h["loss"] for h in detector.history]
    assert losses[-1] < losses[0]


def test_batches_are_balanced(glyph_task, monkeypatch) -> None:
    seen = []
    detector = OEDetector("bce", glyph_task.image_shape)
    original = detector.objective.loss
    monkeypatch.setattr(detector.objective, "loss", lambda out, y: seen.append(y.clone()) or original(out, y))
    detector.fit(glyph_task, TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=3, progress=False))
    assert len(seen) == 3 and all(int(y.sum()) == 16 and len(y) == 32 for y in seen)


@pytest.mark.parametrize(("epochs", "warned"), [(12, True), (25, False)])
def test_a_small_normal_set_warns_when_its_epochs_give_few_steps(glyph_task, monkeypatch, epochs: int,
                                                                 warned: bool) -> None:
    # 64 normal images in batches of 32: 2 steps an epoch, so 12 epochs are 24 optimiser steps (< 50)
    small = dataclasses.replace(glyph_task, train_normal=glyph_task.train_normal[:64])
    messages: list[str] = []
    monkeypatch.setattr(training, "run_epochs", lambda *args: [])
    monkeypatch.setattr(training.log, "warning", lambda text, *args: messages.append(text % args))
    OEDetector("bce", small.image_shape).fit(small, TrainConfig(epochs=epochs, batch_size=32, progress=False))
    if warned:
        assert messages == ["the detector will train only 24 optimiser steps (12 epochs x 2 steps: 64 normal "
                            "images, batch 32); it may stay near chance. Fix: epochs >= 25"]
    else:
        assert messages == []


def test_missing_training_anomalies_is_a_clear_error(glyph_task) -> None:
    with pytest.raises(ValueError, match="known anomalies"):
        OEDetector("supervised", glyph_task.image_shape).fit(glyph_task, TrainConfig(epochs=1, progress=False))


def test_resume_continues_from_saved_epoch(glyph_task, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=4, batch_size=32, max_steps_per_epoch=4, progress=False, seed=1)
    torch.manual_seed(0)
    straight = OEDetector("hsc", glyph_task.image_shape)
    straight.fit(glyph_task, cfg)

    folder = tmp_path / "ckpt"
    torch.manual_seed(0)
    first = OEDetector("hsc", glyph_task.image_shape)
    first.fit(glyph_task, TrainConfig(**{**cfg.__dict__, "epochs": 2, "checkpoint_dir": str(folder)}))
    torch.manual_seed(123)  # a new process: other initial weights, resumed from the checkpoint
    resumed = OEDetector("hsc", glyph_task.image_shape)
    resumed.fit(glyph_task, TrainConfig(**{**cfg.__dict__, "checkpoint_dir": str(folder)}))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_nan_loss_raises_and_keeps_checkpoint(glyph_task, tmp_path: Path, monkeypatch) -> None:
    detector = OEDetector("bce", glyph_task.image_shape)
    calls = {"n": 0}
    original = detector.objective.loss

    def loss(out, y):
        calls["n"] += 1
        return original(out, y) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(detector.objective, "loss", loss)
    cfg = TrainConfig(epochs=3, batch_size=16, max_steps_per_epoch=2, progress=False,
                      checkpoint_dir=str(tmp_path))
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 3 \(epoch 2/3\).*last good checkpoint"):
        detector.fit(glyph_task, cfg)
    assert (tmp_path / "step_000002.safetensors").exists()  # the checkpoint of epoch 1 (2 steps per epoch)


def test_dsvdd_pretraining_trains_the_network_as_an_encoder(glyph_task) -> None:
    from anomalens.detectors.training import pretrain_autoencoder

    detector = OEDetector("dsvdd", glyph_task.image_shape)
    before = {k: v.clone() for k, v in detector.net.state_dict().items()}
    cfg = TrainConfig(epochs=1, pretrain_epochs=3, batch_size=64, pretrain_lr=3e-3, progress=False)
    history = pretrain_autoencoder(detector, glyph_task.train_normal[:512], cfg, torch.Generator().manual_seed(0))
    assert len(history) == 3 and history[-1]["loss"] < 0.8 * history[0]["loss"]  # it learns to reconstruct
    assert any(not torch.equal(before[k], v) for k, v in detector.net.state_dict().items())


# --------------------------------------------------------------------------------- persistence


def test_save_load_roundtrip_identical_scores(tmp_path: Path) -> None:
    torch.manual_seed(0)
    detector = OEDetector("focal", (3, 32, 32), gamma=1.5).eval()
    with torch.no_grad():
        detector.net.fc[2].running_mean.add_(0.3)  # non-default buffers must survive too
    path = detector.save(tmp_path / "det.safetensors")
    loaded = Detector.load(path)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded.score(x), detector.score(x)) and loaded.objective.gamma == 1.5
    with pytest.raises(CheckpointError, match="holds a 'focal' detector, not 'hsc'"):
        Detector.load(path, expect="hsc")


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    path = OEDetector("hsc", (1, 28, 28)).save(tmp_path / "mnist.safetensors")
    from safetensors.torch import load_file

    other = OEDetector("hsc", (1, 28, 28), net="fmnist")
    with pytest.raises(CheckpointError, match="another architecture"):
        other.load_weights(load_file(path), path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable detector file"):
        Detector.load(tmp_path / "junk.safetensors")


# ------------------------------------------------------------------------------- augmentation


def test_augment_is_seeded_and_bounded() -> None:
    x = torch.rand(8, 3, 32, 32)
    a = Augment.preset("natural")
    one, two = a(x, torch.Generator().manual_seed(3)), a(x, torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and one.shape == x.shape and 0 <= one.min() and one.max() <= 1
    assert not torch.equal(one, x)
    flip = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flip, x))
    assert Augment.preset("none")(x) is x
    with pytest.raises(ValueError, match="known"):
        Augment.preset("heavy")


# ------------------------------------------------------------------------------------- tables


def test_tables_mean_and_std() -> None:
    rows = [{"normal": 0, "seed": s, "ad_auroc": v} for s, v in enumerate([0.9, 1.0])]
    rows += [{"normal": 1, "seed": 0, "ad_auroc": 0.7}]
    table = aggregate(rows, ["ad_auroc"])
    assert table["0"]["ad_auroc"][:2] == pytest.approx((0.95, 0.05))
    assert table["mean"]["ad_auroc"][:2] == pytest.approx((0.825, 0.125))
    text = markdown_table(rows, ["ad_auroc"], headers={"ad_auroc": "AuROC"})
    assert "| normal | AuROC |" in text and "**mean** | 0.825 ± 0.125" in text


def test_train_function_rejects_bad_config(glyph_task) -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train(OEDetector("bce", glyph_task.image_shape), glyph_task, TrainConfig(epochs=0))


# ----------------------------------------------------------------------------------------- FCDD


def test_fcdd_map_and_score_by_hand() -> None:
    from anomalens.detectors.objectives import FCDD

    out = torch.zeros(1, 1, 2, 2)
    out[0, 0, 0, 0] = math.sqrt(8)  # A = sqrt(8 + 1) - 1 = 2 at one location, 0 elsewhere
    assert FCDD.score_map(out).tolist() == [[[2.0, 0.0], [0.0, 0.0]]]
    assert FCDD().raw(out).item() == pytest.approx(0.5)
    assert FCDD().loss(out, torch.tensor([0])).item() == pytest.approx(0.5)
    assert FCDD().loss(out, torch.tensor([1])).item() == pytest.approx(-math.log(1 - math.exp(-0.5)))


def test_fcdd_detector_learns_and_explains(glyph_task) -> None:
    torch.manual_seed(0)
    detector = OEDetector("fcdd", glyph_task.image_shape)
    assert detector.net.receptive_field == 18
    # 3 epochs of 15 steps of 32 + 32 images: AuROC ~0.99
    detector.fit(glyph_task, TrainConfig(epochs=3, lr=5e-3, batch_size=32, max_steps_per_epoch=15, progress=False))
    assert auroc(glyph_task.test_y, detector.scores(glyph_task.test_x)) > 0.75
    heat = detector.anomaly_map(glyph_task.test_x[:4])
    assert heat.shape == (4, 28, 28) and bool((heat >= 0).all())
    assert OEDetector("hsc", glyph_task.image_shape).anomaly_map(glyph_task.test_x[:2]) is None


def test_oe_and_known_anomalies_are_combined(glyph_task) -> None:
    from dataclasses import replace

    data = replace(glyph_task, train_anomalies=glyph_task.test_x[:5])
    pool = OEDetector("hsc", data.image_shape).training_anomalies(data)
    assert len(pool) == len(glyph_task.train_oe) + 5
    assert len(OEDetector("supervised", data.image_shape).training_anomalies(data)) == 5


def test_confetti_noise() -> None:
    from anomalens.data.defects import confetti_noise

    normal = torch.zeros(10, 3, 28, 28)
    noisy = confetti_noise(normal, 6, seed=1)
    assert noisy.shape == (6, 3, 28, 28) and bool((noisy.flatten(1).amax(1) > 0).all())
    assert torch.equal(noisy, confetti_noise(normal, 6, seed=1)) and normal.abs().sum() == 0
