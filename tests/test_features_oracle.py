"""FID maths, the hand-written Inception-v3 (shapes, torchvision key names, errors) and the oracle classifier."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anomalens.errors import AnomalensError, ConfigError, DataFormatError
from anomalens.metrics.features import (
    INCEPTION_ENV,
    ClassifierFeatures,
    FeatureExtractor,
    InceptionFeatures,
    InceptionV3,
    WeightsNotFoundError,
    feature_extractor,
    fid,
    fid_n,
    frechet_distance,
)
from anomalens.metrics.oracle import LabelClassifier, train_oracle

SMALL = {"conv": (8, 16, 32), "fc": (64, 32)}  # narrow widths keep the oracle tests fast


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions slow down badly when torch's threads compete with other processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, seed: int, size: int = 28, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with a bright 8x8 square top-left (class 0) or bottom-right (class 1), jittered by 2 px."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g) * 0.3
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        dy, dx = (int(v) for v in torch.randint(0, 3, (2,), generator=g))
        top = 2 + dy if y[i] == 0 else size - 12 + dy
        left = 2 + dx if y[i] == 0 else size - 12 + dx
        x[i, :, top:top + 8, left:left + 8] = 1.0
    return x, y


# --- Fréchet distance ----------------------------------------------------------------------------


def test_frechet_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_shifted_mean_is_squared_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4))
    sigma = a @ a.T
    mu1, mu2 = np.zeros(4), np.array([1.0, 2.0, 0.0, -2.0])  # ||shift||^2 = 1 + 4 + 0 + 4 = 9
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(9.0, abs=1e-8)


def test_frechet_diagonal_covariances_by_hand() -> None:
    # diagonal covariances commute: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])  # (1-2)^2 + 0 + (3-1)^2 = 5
    mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0])  # + 9
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(14.0, abs=1e-8)


def test_frechet_singular_covariance_is_finite() -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(size=(5, 20))  # fewer samples than dimensions: rank-deficient covariance
    sigma = np.cov(f, rowvar=False)
    d = frechet_distance(f.mean(0), sigma, f.mean(0) + 1, sigma)
    assert math.isfinite(d) and d == pytest.approx(20.0, abs=1e-6)


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(DataFormatError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_same_distribution_smaller_than_shifted() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    shifted = torch.randn(500, 8, generator=g) + 1.0
    same, moved = fid(a, b), fid(a, shifted)
    assert same < 0.2 < moved
    assert moved == pytest.approx(8.0, rel=0.2)  # ~ squared mean shift of 8 dimensions
    with pytest.raises(DataFormatError):
        fid(a[:1], b)


# --- Inception-v3 --------------------------------------------------------------------------------


def torchvision_style_state(net: InceptionV3) -> dict[str, torch.Tensor]:
    """The net's state dict plus the classifier keys a real torchvision inception_v3 state dict also holds."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    state["AuxLogits.conv0.conv.weight"] = torch.randn(128, 768, 1, 1)
    state["AuxLogits.fc.weight"] = torch.randn(1000, 768)
    return state


def test_inception_random_init_gives_2048_features() -> None:
    extractor = InceptionFeatures(random_init=True)
    out = extractor(torch.rand(2, 1, 28, 28))  # grey, tiny: repeated to RGB and resized to 299 px
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    assert isinstance(extractor, FeatureExtractor)
    assert extractor.name == "inception-torchvision (random_init)"
    pre = extractor.preprocess(torch.ones(1, 1, 28, 28))
    assert pre.shape == (1, 3, 299, 299) and torch.allclose(pre, torch.ones_like(pre))  # 1 -> +1


def test_inception_has_torchvision_key_names() -> None:
    net = InceptionV3()
    keys = set(net.state_dict())
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_mean", "Mixed_5b.branch1x1.conv.weight",
                "Mixed_5b.branch_pool.bn.bias", "Mixed_6b.branch7x7dbl_5.conv.weight",
                "Mixed_7a.branch7x7x3_4.bn.running_var", "Mixed_7c.branch3x3dbl_3b.conv.weight"):
        assert key in keys
    assert net.Mixed_6b.branch7x7_1.conv.weight.shape == (128, 768, 1, 1)
    # torchvision's inception_v3 has 27,161,264 parameters; minus fc (2,049,000) and AuxLogits (3,326,696)
    assert sum(p.numel() for p in net.parameters()) == 21_785_568


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_inception_state_dict_round_trip(tmp_path: Path, suffix: str) -> None:
    source = InceptionFeatures(random_init=True, seed=1).net
    with torch.no_grad():  # distinctive batch-norm statistics, so a silent non-load would be caught
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    state = torchvision_style_state(source)
    path = tmp_path / f"inception_v3{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = InceptionFeatures(path, seed=2)
    assert loaded.name == f"inception-torchvision ({path.name})"
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key


def test_inception_state_dict_without_batch_counters_loads() -> None:
    # torchvision's original inception file predates num_batches_tracked
    source = InceptionV3()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    with pytest.warns(UserWarning, match="assuming torchvision"):  # no classifier keys: variant unknowable
        extractor = InceptionFeatures.from_state_dict(state)
    assert torch.equal(extractor.net.Mixed_7c.branch_pool.conv.weight, source.Mixed_7c.branch_pool.conv.weight)


def test_inception_wrong_keys_name_the_file(tmp_path: Path) -> None:
    state = torchvision_style_state(InceptionV3())
    del state["Mixed_5b.branch1x1.conv.weight"]
    state["Mixed_5b.extra.weight"] = torch.zeros(1)
    path = tmp_path / "not_inception.pth"
    torch.save(state, path)
    with pytest.raises(DataFormatError, match="not_inception.pth") as info:
        InceptionFeatures(path)
    assert "Mixed_5b.branch1x1.conv.weight" in str(info.value) and "Mixed_5b.extra.weight" in str(info.value)
    path.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="not_inception.pth"):
        InceptionFeatures(path)


def test_missing_inception_weights_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "inception_v3_missing.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        InceptionFeatures(missing)
    message = str(info.value)
    assert "inception_v3_missing.pth" in message
    assert "IMAGENET1K_V1" in message and "ClassifierFeatures" in message and INCEPTION_ENV in message
    assert "pt_inception-2015-12-05-6726825d.pth" in message  # the FID file comes first
    assert isinstance(info.value, AnomalensError) and isinstance(info.value, FileNotFoundError)


# --- oracle classifier ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle() -> tuple[LabelClassifier, torch.Tensor, torch.Tensor]:
    """A small oracle trained on 512 square images; returns it with 256 held-out images and labels."""
    torch.set_num_threads(1)
    x, y = squares(512, seed=0)
    model = LabelClassifier((1, 28, 28), {"label": 2}, **SMALL)
    model.fit(x, {"label": y}, epochs=3, batch_size=64, progress=False)
    x_test, y_test = squares(256, seed=1)
    return model, x_test, y_test


def test_oracle_learns_easy_task(oracle) -> None:
    model, x_test, y_test = oracle
    acc = model.accuracy(x_test, {"label": y_test})
    assert acc["label"] > 0.9
    pred = model.predict(x_test, batch_size=100)
    assert pred["label"].dtype == torch.long and pred["label"].shape == (256,)


def test_default_oracle_short_training_generalises() -> None:
    # with the default widths, 24 steps left the batch-norm running averages stale (eval accuracy 0.67
    # against 1.0 in train mode) until fit re-estimated them with the final weights
    x, y = squares(512, seed=0)
    model = LabelClassifier((1, 28, 28), {"label": 2})
    model.fit(x, {"label": y}, epochs=3, batch_size=64, progress=False)
    x_test, y_test = squares(256, seed=1)
    assert model.accuracy(x_test, {"label": y_test})["label"] > 0.9


def test_oracle_features_shape(oracle) -> None:
    model, x_test, _ = oracle
    f = model.features(x_test[:10], batch_size=4)
    assert f.shape == (10, 32) and not f.requires_grad
    extractor = ClassifierFeatures(model)
    assert extractor.name == "classifier:label" and extractor(x_test[:3]).shape == (3, 32)
    assert isinstance(extractor, FeatureExtractor)


def test_oracle_save_load_round_trip(oracle, tmp_path: Path) -> None:
    model, x_test, _ = oracle
    path = model.save(tmp_path / "oracle.safetensors")
    loaded = LabelClassifier.load(path)
    assert loaded.config() == model.config()
    assert torch.equal(loaded.predict(x_test)["label"], model.predict(x_test)["label"])
    assert torch.allclose(loaded.features(x_test), model.features(x_test))


def test_oracle_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="absent_oracle.safetensors"):
        LabelClassifier.load(tmp_path / "absent_oracle.safetensors")
    bad = tmp_path / "bad_oracle.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(DataFormatError, match="bad_oracle.safetensors"):
        LabelClassifier.load(bad)
    no_config = tmp_path / "no_config.safetensors"
    save_file({"w": torch.zeros(2)}, str(no_config))
    with pytest.raises(DataFormatError, match="no_config.safetensors"):
        LabelClassifier.load(no_config)


def test_oracle_multi_head_rgb_32px() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32, generator=g)
    targets = {"label": torch.randint(0, 10, (16,), generator=g), "colour": torch.randint(0, 7, (16,), generator=g)}
    model = train_oracle(x, targets, (3, 32, 32), epochs=1, progress=False, heads={"label": 10, "colour": 7},
                         batch_size=8, augment=True)
    pred = model.predict(x)
    assert set(pred) == {"label", "colour"} and pred["colour"].shape == (16,)
    assert model.features(x).shape == (16, 128)
    assert ClassifierFeatures(model).name == "classifier:label,colour"


def test_oracle_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        LabelClassifier((1, 28, 32), {"label": 2})
    with pytest.raises(ConfigError):
        LabelClassifier((1, 28, 28), {})
    model = LabelClassifier((1, 28, 28), {"label": 2}, **SMALL)
    with pytest.raises(DataFormatError):
        model.predict(torch.rand(2, 3, 28, 28))
    with pytest.raises(DataFormatError):
        model.fit(torch.rand(4, 1, 28, 28), {"label": torch.tensor([0, 1, 2, 0])}, progress=False)
    with pytest.raises(DataFormatError):
        model.fit(torch.rand(4, 1, 28, 28), {"digit": torch.tensor([0, 1, 1, 0])}, progress=False)


# --- extractor choice and fid_n ------------------------------------------------------------------


def test_feature_extractor_choice(oracle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = oracle[0]
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    assert feature_extractor(None, model).name == "classifier:label"
    assert feature_extractor("classifier", model).name == "classifier:label"
    with pytest.warns(UserWarning, match="absent.pth"):
        assert feature_extractor(str(tmp_path / "absent.pth"), model).name == "classifier:label"
    with pytest.raises(ConfigError, match="absent.pth"):
        feature_extractor(str(tmp_path / "absent.pth"), None)
    with pytest.raises(ConfigError, match=INCEPTION_ENV):
        feature_extractor(None, None)
    weights = tmp_path / "inception_env.pth"
    torch.save(torchvision_style_state(InceptionV3()), weights)
    monkeypatch.setenv(INCEPTION_ENV, str(weights))
    chosen = feature_extractor(None, model)
    assert isinstance(chosen, InceptionFeatures) and chosen.name == "inception-torchvision (inception_env.pth)"


def test_fid_n_keys_and_name(oracle) -> None:
    model, x_test, y_test = oracle
    extractor = ClassifierFeatures(model)
    normal, anomalies = x_test[y_test == 0], x_test[y_test == 1]
    counterfactuals = normal.flip(0)[:50].clamp(0, 1)  # stand-ins that already look normal
    result = fid_n(extractor, counterfactuals, normal, anomalies)
    assert set(result) == {"fid_n", "fid_cf", "fid_anomalies", "fid_features"}
    assert result["fid_features"] == "classifier:label"
    assert result["fid_n"] == pytest.approx(result["fid_cf"] / result["fid_anomalies"])
    assert 0 <= result["fid_n"] < 0.5  # normal-looking CEs are far more realistic than the anomalies
