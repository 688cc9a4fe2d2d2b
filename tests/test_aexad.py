"""AE-XAD: the loss on a hand-made example, anomaly augmentation, maps, and learning on defects."""

from __future__ import annotations

import pytest
import torch

from anomalens.data import catalog
from anomalens.data.defects import synthetic_defects
from anomalens.data.scenarios import defect_scenario
from anomalens.detectors.aexad import AEXAD, augment_anomalies
from anomalens.detectors.base import Detector
from anomalens.detectors.training import TrainConfig
from anomalens.errors import ScenarioError
from anomalens.metrics.pixel import pixel_auc


def test_loss_by_hand() -> None:
    detector = AEXAD((1, 2, 2))  # F(x) = 2
    x = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    reconstruction = torch.tensor([[[[0.1, 1.0], [2.0, 0.5]]]])
    mask = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])  # one anomalous pixel of D = 4: lambda = 4
    # normal pixels: 0.01 / 4 + 0 / 1 + 0 / 2.25; the anomalous pixel is reconstructed exactly as F(x) = 2
    assert detector.loss(x, reconstruction, mask).item() == pytest.approx(0.01 / 4)
    bad = reconstruction.clone()
    bad[0, 0, 1, 0] = 0.5  # anomalous pixel copied instead of pushed to 2: costs lambda * 1.5^2 / 1.5^2
    assert detector.loss(x, bad, mask).item() == pytest.approx(0.01 / 4 + 4.0)
    normal_only = detector.loss(x, bad, torch.zeros(1, 2, 2))  # no mask: every pixel must be copied
    assert normal_only.item() == pytest.approx(0.01 / 4)


def test_target_options() -> None:
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(AEXAD((1, 4, 4), "negative").transform(x), 1 - x)
    with pytest.raises(ValueError, match="inside the pixel range"):
        AEXAD((1, 4, 4), v=0.5)


def test_augment_anomalies_counts_and_masks() -> None:
    anomalies, masks = torch.rand(2, 1, 16, 16), torch.zeros(2, 16, 16)
    masks[:, 2:5, 3:6] = 1
    normals = torch.zeros(4, 1, 16, 16)
    images, out = augment_anomalies(anomalies, masks, normals, torch.Generator().manual_seed(0))
    assert images.shape == (2 * 5 + 2 * 10, 1, 16, 16) and out.shape == (30, 16, 16)
    assert bool((out.flatten(1).sum(1) == 9).all())  # the region is moved, never cut off
    pasted = images[10:]
    assert bool((pasted * (1 - out[10:, None]) == 0).all())  # outside the region: the normal background


def test_defect_scenario_split() -> None:
    defects = synthetic_defects(n_train=20, n_test_good=6, n_test_defect=12, size=32)
    data = defect_scenario(defects, per_type=2)
    assert data.train_anomalies.shape == (6, 1, 32, 32) and data.train_anomaly_masks.shape == (6, 32, 32)
    assert len(data.test_x) == 18 - 6 and int(data.test_y.sum()) == 6 and data.test_masks is not None
    assert len(defect_scenario(defects, per_type=2, anomalies_only=True).train_normal) == 0
    with pytest.raises(ScenarioError, match="need more than per_type=4"):
        defect_scenario(defects, per_type=4)


def test_training_raises_pixel_auc_and_roundtrips(tmp_path) -> None:
    torch.manual_seed(0)
    defects = catalog.load_defects("synthetic_defects/stripes")
    data = defect_scenario(defects, per_type=3, size=32)
    detector = AEXAD(data.image_shape, widths=(16, 32))
    test_x, masks = data.test_x[60:90], data.test_masks[60:90]
    before = pixel_auc(masks, detector.eval().anomaly_map(test_x).detach())
    detector.fit(data, TrainConfig(epochs=6, lr=2e-3, batch_size=24, progress=False))
    maps = detector.explain_maps(test_x)
    after = pixel_auc(masks, maps["heatmap"].detach())
    assert after > max(0.8, before + 0.1)
    assert maps["heatmap"].shape == (30, 32, 32) and bool((maps["heatmap"] >= 0).all())
    assert set(maps["binary"].unique().tolist()) <= {0.0, 1.0} and bool((maps["k"] >= 1).all())
    scores = detector.score(test_x)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    loaded = Detector.load(detector.save(tmp_path / "aexad.safetensors"), expect="aexad")
    assert torch.allclose(loaded.score(test_x), scores, atol=1e-6)


def test_fit_needs_annotated_anomalies() -> None:
    from anomalens.data.scenarios import build

    with pytest.raises(ValueError, match="labelled anomalies with masks"):
        AEXAD((1, 28, 28)).fit(build("glyphs", 0), TrainConfig(epochs=1, progress=False))


def test_ablation_variants(tmp_path) -> None:
    data = defect_scenario(synthetic_defects(n_train=40, n_test_good=6, n_test_defect=12, size=32), per_type=2)
    plain = AEXAD(data.image_shape, widths=(8, 16), plain=True)
    plain.fit(data, TrainConfig(epochs=1, batch_size=16, progress=False))
    x, rec = torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert plain.loss(x, rec, torch.ones(2, 4, 4)).item() == pytest.approx(x.pow(2).flatten(1).sum(1).mean().item())
    unsmoothed = AEXAD(data.image_shape, widths=(8, 16), smooth=False).eval()
    maps = unsmoothed.explain_maps(data.test_x[:3])
    assert bool((maps["k"] == 0).all())
    assert torch.allclose(maps["heatmap"], unsmoothed.error_maps(data.test_x[:3])[1])
    assert Detector.load(plain.save(tmp_path / "ae.safetensors")).plain is True


def test_resnet_autoencoder_and_trunk_weights(tmp_path) -> None:
    from anomalens.nets.resnet import ResNetAutoencoder, ResNetTrunk, load_trunk_weights

    ae = ResNetAutoencoder(in_channels=1)
    assert ae(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    assert ae.trunk(torch.rand(1, 3, 224, 224)).shape == (1, 128, 28, 28)  # 224 px -> 28 x 28 as in sec. 5.1
    # weights named as torchvision's resnet18 (plus keys the trunk does not use) load and freeze the trunk
    donor = ResNetTrunk(stages=2)
    state = {**donor.state_dict(), "fc.weight": torch.zeros(1000, 512)}
    torch.save(state, tmp_path / "resnet18.pth")
    frozen = ResNetAutoencoder(3, tmp_path / "resnet18.pth")
    assert torch.equal(frozen.trunk.conv1.weight, donor.conv1.weight)
    assert not any(p.requires_grad for p in frozen.trunk.parameters())
    assert frozen.train().trunk.training is False
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not ResNet-18 weights"):
        load_trunk_weights(ResNetTrunk(), tmp_path / "other.pth")
    detector = AEXAD((3, 32, 32), architecture="resnet")
    assert detector.explain_maps(torch.rand(2, 3, 32, 32))["heatmap"].shape == (2, 32, 32)
