"""The FID Inception-v3 of pytorch-fid / TTUR: official key naming, the pools that make it the FID network,
1008 logits, the loader (variant read off the keys, the official file recognised, other files refused)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from anomalens.errors import AnomalensError, ConfigError, DataFormatError
from anomalens.metrics import features
from anomalens.metrics.features import (
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    INCEPTION_ENV,
    InceptionA,
    InceptionE,
    InceptionFeatures,
    InceptionV3,
    WeightsNotFoundError,
    detect_kind,
    feature_extractor,
)
from anomalens.metrics.oracle import LabelClassifier

OFFICIAL_LABEL = "inception-fid (pt_inception-2015-12-05)"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fid_net() -> InceptionV3:
    """A randomly initialised FID network with distinctive batch-norm statistics (a silent non-load shows)."""
    torch.manual_seed(3)
    net = InceptionV3("fid").eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return net


def official_style(net: InceptionV3) -> dict[str, torch.Tensor]:
    """The state dict as pytorch-fid's file holds it: no batch counters (saved before PyTorch 0.4.1)."""
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def fid_file(fid_net: InceptionV3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random FID network saved like the release file: its name, legacy (pre-zip) torch serialisation."""
    path = tmp_path_factory.mktemp("fid") / FID_WEIGHTS_FILE
    torch.save(official_style(fid_net), path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture
def oracle_stub():
    """A stand-in fallback: never used once a weights file is found, but feature_extractor wants one."""
    return LabelClassifier((1, 28, 28), {"label": 2}, conv=(4, 8, 8), fc=(16, 8))


# --- the official naming -------------------------------------------------------------------------

MIXED_5B_BRANCHES = ["branch1x1", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch5x5_1", "branch5x5_2",
                     "branch_pool"]
MIXED_7C_BRANCHES = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
                     "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
TOP_LEVEL = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b",
             "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b",
             "Mixed_7c", "fc"]  # torchvision's inception_v3(num_classes=1008, aux_logits=False): no AuxLogits


def test_fid_state_dict_has_the_official_names_and_shapes(fid_net: InceptionV3) -> None:
    state = official_style(fid_net)
    assert sorted({k.split(".")[0] for k in state}) == TOP_LEVEL
    assert sorted({k.split(".")[1] for k in state if k.startswith("Mixed_5b.")}) == MIXED_5B_BRANCHES
    assert sorted({k.split(".")[1] for k in state if k.startswith("Mixed_7c.")}) == MIXED_7C_BRANCHES
    assert {k: tuple(v.shape) for k, v in state.items() if k.startswith("Mixed_7c.branch_pool.")} == {
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1), "Mixed_7c.branch_pool.bn.weight": (192,),
        "Mixed_7c.branch_pool.bn.bias": (192,), "Mixed_7c.branch_pool.bn.running_mean": (192,),
        "Mixed_7c.branch_pool.bn.running_var": (192,)}
    assert tuple(state["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(state["Mixed_5b.branch_pool.conv.weight"].shape) == (32, 192, 1, 1)
    assert tuple(state["fc.weight"].shape) == (1008, 2048) and tuple(state["fc.bias"].shape) == (1008,)
    assert len(state) == 94 * 5 + 2  # 94 conv+bn units (conv.weight and 4 bn tensors each) and fc
    # the torchvision trunk (21,785,568, see test_features_oracle) plus the 1008-way fc
    assert sum(p.numel() for p in fid_net.parameters()) == 21_785_568 + 2048 * 1008 + 1008


# --- what makes it the FID network ---------------------------------------------------------------


def pool_probe(block: torch.nn.Module, channels: int) -> torch.nn.Module:
    """Make ``block.branch_pool`` pass its first ``channels`` inputs through unchanged (identity conv and bn)."""
    unit = block.branch_pool
    with torch.no_grad():
        unit.conv.weight.zero_()
        for c in range(channels):
            unit.conv.weight[c, c] = 1.0
        unit.bn.weight.fill_(1.0)
        unit.bn.bias.zero_()
        unit.bn.running_mean.zero_()
        unit.bn.running_var.fill_(1.0 - unit.bn.eps)  # (x - 0) / sqrt(var + eps) = x
    return block.eval()


def branch_pool_output(block: torch.nn.Module, x: torch.Tensor, pool_channels: int) -> torch.Tensor:
    """The pool branch comes last in the block's concatenation."""
    with torch.no_grad():
        out = block(x)
    return out[:, -pool_channels:][:, : x.shape[1]]


def test_average_pools_ignore_the_padding() -> None:
    ones = torch.ones(1, 4, 5, 5)
    fid_pool = branch_pool_output(pool_probe(InceptionA(4, pool_features=4, pool="avg_no_pad"), 4), ones, 4)
    assert torch.allclose(fid_pool, ones, atol=1e-5)  # TensorFlow: a border window averages its real cells only
    torchvision_pool = branch_pool_output(pool_probe(InceptionA(4, pool_features=4, pool="avg"), 4), ones, 4)
    by_hand = torch.ones(5, 5)
    by_hand[0, :] = by_hand[-1, :] = by_hand[:, 0] = by_hand[:, -1] = 6 / 9  # edges: 6 real cells of 9
    by_hand[0, 0] = by_hand[0, -1] = by_hand[-1, 0] = by_hand[-1, -1] = 4 / 9  # corners: 4 of 9
    assert torch.allclose(torchvision_pool[0, 0], by_hand, atol=1e-5)


def test_last_block_max_pools() -> None:
    spike = torch.zeros(1, 4, 5, 5)
    spike[:, :, 2, 2] = 9.0
    out = branch_pool_output(pool_probe(InceptionE(4, pool="max"), 4), spike, 192)
    by_hand = torch.zeros(5, 5)
    by_hand[1:4, 1:4] = 9.0  # every 3x3 window holding the spike takes its maximum
    assert torch.allclose(out[0, 0], by_hand, atol=1e-4)
    averaged = branch_pool_output(pool_probe(InceptionE(4, pool="avg_no_pad"), 4), spike, 192)
    assert torch.allclose(averaged[0, 0, 2, 2], torch.tensor(1.0), atol=1e-4)  # what Mixed_7b does instead


def test_each_variant_uses_its_pools_and_logits(fid_net: InceptionV3) -> None:
    names = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b"]
    assert [getattr(fid_net, n).pool for n in names] == ["avg_no_pad"] * len(names)
    assert fid_net.Mixed_7c.pool == "max"
    with torch.no_grad():
        logits = fid_net.logits(torch.rand(1, 3, 75, 75) * 2 - 1)  # 75 px: the smallest input, fast
    assert logits.shape == (1, 1008) and torch.isfinite(logits).all()
    torchvision_net = InceptionV3("torchvision")
    assert [getattr(torchvision_net, n).pool for n in [*names, "Mixed_7c"]] == ["avg"] * (len(names) + 1)
    assert not hasattr(torchvision_net, "fc")
    with pytest.raises(ConfigError, match="kind='fid'"):
        torchvision_net.logits(torch.zeros(1, 3, 75, 75))
    with pytest.raises(ConfigError, match="tensorflow"):
        InceptionV3("tensorflow")


# --- the loader ----------------------------------------------------------------------------------


def test_fid_file_loads_through_the_public_loader(fid_net: InceptionV3, fid_file: Path) -> None:
    # a random file under the official name is not the official file: the label and a warning say so
    digest = hashlib.sha256(fid_file.read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match="not comparable with the papers"):
        extractor = InceptionFeatures(fid_file)
    assert extractor.kind == "fid" and extractor.net.Mixed_7c.pool == "max"
    assert extractor.name == f"inception-fid (other weights: {FID_WEIGHTS_FILE}, sha256 {digest[:8]})"
    for key, value in fid_net.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(extractor.net.state_dict()[key], value), key
    images = torch.rand(2, 1, 20, 20)  # grey: repeated to RGB, resized to 299 px, scaled to [-1, 1]
    first, second = extractor(images), extractor(images)
    assert first.shape == (2, 2048) and torch.equal(first, second)
    expected = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                                               align_corners=False) * 2 - 1
    assert torch.allclose(extractor.preprocess(images), expected)
    with torch.no_grad():
        assert torch.allclose(first, fid_net(expected), atol=1e-4)


def test_official_file_gets_the_paper_label(fid_file: Path, monkeypatch: pytest.MonkeyPatch, oracle_stub) -> None:
    assert features.FID_SHA256_PREFIX == FID_WEIGHTS_FILE.removesuffix(".pth").rsplit("-", 1)[1] == "6726825d"
    # no real file here: pretend the test file's sha256 starts like the release's
    digest = hashlib.sha256(fid_file.read_bytes()).hexdigest()
    monkeypatch.setattr(features, "FID_SHA256_PREFIX", digest[:8])
    monkeypatch.setenv(INCEPTION_ENV, str(fid_file))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official file loads without a warning
        extractor = feature_extractor(None, fallback=oracle_stub)  # the env var, as --fid-features FILE would
    assert isinstance(extractor, InceptionFeatures) and extractor.kind == "fid"
    assert extractor.name == OFFICIAL_LABEL  # what fid_n records as fid_features


def test_safetensors_and_in_memory_fid_weights(fid_net: InceptionV3, tmp_path: Path) -> None:
    state = official_style(fid_net)
    assert detect_kind(state) == "fid"
    path = tmp_path / "fid_inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.warns(UserWarning, match="sha256"):  # a conversion is not byte-identical to the release file
        loaded = InceptionFeatures(path)
    assert loaded.kind == "fid" and loaded.name.startswith("inception-fid (other weights: fid_inception.safetensors")
    assert torch.equal(loaded.net.fc.weight, fid_net.fc.weight)
    in_memory = InceptionFeatures.from_state_dict(state)
    assert in_memory.kind == "fid" and in_memory.name == "inception-fid (state_dict)"


def test_files_of_another_architecture_are_refused(fid_net: InceptionV3, tmp_path: Path) -> None:
    # torchvision's layout (1000-way fc, AuxLogits) forced into the FID network
    torchvision_like = official_style(fid_net)
    torchvision_like["fc.weight"], torchvision_like["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torchvision_like["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "inception_v3_torchvision.pth"
    torch.save(torchvision_like, path)
    with pytest.raises(DataFormatError, match="inception_v3_torchvision.pth") as info:
        InceptionFeatures(path, kind="fid")
    message = str(info.value)
    assert "pytorch-fid" in message and "AuxLogits.fc.weight" in message and "fc.weight" in message
    assert "Fix:" in message and FID_WEIGHTS_FILE in message
    # the FID file forced into torchvision's network: refused, not loaded with the wrong pools
    with pytest.raises(DataFormatError, match="kind='torchvision'"):
        InceptionFeatures.from_state_dict(official_style(fid_net), kind="torchvision")
    # something else entirely
    other = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(1000, 8)}, other)
    with pytest.raises(DataFormatError, match="resnet_like.pth") as info:
        InceptionFeatures(other)
    assert isinstance(info.value, AnomalensError) and "conv1.weight" in str(info.value)


def test_missing_fid_file_and_bad_kind(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / FID_WEIGHTS_FILE
    with pytest.raises(WeightsNotFoundError) as info:
        InceptionFeatures(missing, kind="fid")
    message = str(info.value)
    assert str(missing) in message and "Fix:" in message and FID_WEIGHTS_URL in message and INCEPTION_ENV in message
    assert isinstance(info.value, AnomalensError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(ConfigError, match="kind must be one of"):
        InceptionFeatures(random_init=True, kind="pytorch-fid")
