"""Contracts every registered detector and explainer keeps. The tests loop over the registries, so a
new method (one module with ``@register``) is checked without editing this file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from anomalens.checkpoints import CheckpointError
from anomalens.data.addata import ADData
from anomalens.detectors import registry as detectors
from anomalens.detectors.base import Detector
from anomalens.explain import registry as explainers
from anomalens.explain.base import Explainer, Explanation

SHAPE = (1, 32, 32)
# Settings that make an explainer train in seconds; a new explainer runs with its defaults.
TINY = {
    "counterfactual": {"profile": "tiny", "steps": 2, "warmup_steps": 1, "batch_size": 4, "sample_every": 0,
                       "progress": False},
    "repair": {"diffusion": {"profile": "tiny", "steps": 2, "batch_size": 4}, "sampler": "ddim", "steps": 2,
               "strength": 0.2, "progress": False},
}


def _options(name: str, request: pytest.FixtureRequest) -> dict:
    """What a detector built from downloaded files needs here: CLIP gets conftest's tiny random CLIP folder."""
    if name in ("clip", "bce_cl"):
        return {"trunk_weights": str(request.getfixturevalue("tiny_clip")), "class_names": ["thing"]}
    return {}


def _task() -> ADData:
    g = torch.Generator().manual_seed(0)
    normal, oe = torch.rand(12, *SHAPE, generator=g) * 0.5, torch.rand(12, *SHAPE, generator=g) * 0.5 + 0.5
    return ADData(train_normal=normal, train_oe=oe, train_anomalies=oe[:4], train_anomaly_masks=(oe[:4, 0] > 0.7),
                  test_x=torch.cat([normal[:3], oe[:3]]), test_y=torch.tensor([0] * 3 + [1] * 3), name="random")


@pytest.mark.parametrize("name", detectors.names())
def test_every_detector_has_a_bounded_differentiable_score(name: str, request: pytest.FixtureRequest) -> None:
    detector = detectors.create(name, SHAPE, **_options(name, request)).eval()
    x = torch.rand(3, *SHAPE, requires_grad=True)
    score = detector.score(x)
    assert score.shape == (3,) and bool(((0 <= score) & (score <= 1)).all())
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert bool(torch.isfinite(grad).all())  # a saturated score may have a zero gradient, never none
    (raw_grad,) = torch.autograd.grad(detector.raw_score(x).sum(), x)
    assert raw_grad.abs().sum() > 0
    log_odds = detector.score_log_odds(x)  # L_phi's input: the same score, as log-odds
    assert torch.allclose(torch.sigmoid(log_odds), detector.score(x), atol=1e-5)
    (odds_grad,) = torch.autograd.grad(log_odds.sum(), x)
    assert bool(torch.isfinite(odds_grad).all()) and odds_grad.abs().sum() > 0


@pytest.mark.parametrize("name", detectors.names())
def test_every_detector_round_trips_bit_exactly_and_refuses_bad_files(name: str, tmp_path,
                                                                     request: pytest.FixtureRequest) -> None:
    torch.manual_seed(0)
    detector = detectors.create(name, SHAPE, **_options(name, request)).eval()
    path = detector.save(tmp_path / "d.safetensors")
    loaded = Detector.load(path)
    x = torch.rand(2, *SHAPE)
    assert torch.equal(loaded.scores(x), detector.scores(x))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in detector.state_dict().items())

    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        header = f.metadata()
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)

    def write(file: str, tensors=tensors, header=header, **meta) -> str:
        target = tmp_path / file
        target.write_bytes(safetensors_bytes(tensors, metadata={**header, **meta}))
        return str(target)

    nan = dict(tensors)
    nan[key] = nan[key].clone()
    nan[key].view(-1)[0] = float("nan")
    flipped = dict(tensors)
    flipped[key] = flipped[key].clone()
    flipped[key].view(-1)[0] += 1e-3  # finite but not what was saved: a flipped bit
    no_config = {k: v for k, v in header.items() if k != "config"}
    cases = {
        "non-finite": write("nan.safetensors", nan),
        "checksum": write("flip.safetensors", flipped),
        "no 'config' entry": write("noconfig.safetensors", header=no_config),
        "'config' is not JSON": write("badjson.safetensors", config="{not json"),
        "(asks for|cannot build|another architecture)": write("huge.safetensors",
                                                               config=json.dumps(_absurd(json.loads(header["config"])))),
    }
    for expected, bad in cases.items():
        with pytest.raises(CheckpointError, match=expected) as error:
            Detector.load(bad)
        assert bad in str(error.value) and "Fix" in str(error.value)


def _absurd(config):
    """Every width and size of a config set to 1e9: loading must refuse it before allocating anything."""
    if isinstance(config, dict):
        return {k: _absurd(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_absurd(v) for v in config]
    return 10**9 if isinstance(config, int) and not isinstance(config, bool) and config >= 2 else config


def _fitted(name: str, data: ADData) -> Detector:
    from anomalens.detectors.training import TrainConfig

    detector = detectors.create(name, SHAPE)
    return detector.fit(data, TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=1, progress=False)).eval()


@pytest.mark.parametrize("name", explainers.names())
def test_every_explainer_fits_and_explains_with_the_documented_shapes(name: str) -> None:
    data = _task()
    detector = _fitted("ae" if name == "repair" else "bce", data)
    explainer = explainers.create(name, **TINY.get(name, {}))
    assert isinstance(explainer, Explainer)
    assert explainer.fit(detector, data) is explainer
    x = data.test_x[3:]
    result = explainer.explain(x)
    assert isinstance(result, Explanation) and torch.equal(result.inputs, x)
    assert result.score_before.shape == (3,) and bool(((0 <= result.score_before) & (result.score_before <= 1)).all())
    assert result.outputs is not None or result.maps is not None
    if result.outputs is not None:
        assert result.outputs.shape[0] == 3 and result.outputs.shape[2:] == x.shape[1:]
        assert result.score_after.shape == result.outputs.shape[:2]
    if result.maps is not None:
        assert result.maps.shape == (3, *SHAPE[1:])
