"""The counterfactual explainer: loss terms, conditioning, frozen detector, training, persistence, metrics."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from torch import nn

from anomalens.data.addata import ADData
from anomalens.detectors.oe import OEDetector
from anomalens.explain.counterfactual import CEConfig, CounterfactualExplainer
from anomalens.explain.counterfactual_losses import (
    ALPHAS,
    collapse_warnings,
    discretise,
    discriminator_loss,
    generator_losses,
    target_levels,
)
from anomalens.metrics import counterfactual as cfm

from conftest import bars_task

SHAPE = (1, 28, 28)


def _data(n: int = 64) -> ADData:
    return bars_task(n)


def _config(**kw) -> CEConfig:
    base = dict(profile="tiny", steps=4, batch_size=8, progress=False, sample_every=0, d_every=1)
    return CEConfig(**{**base, **kw})


class _Identity(nn.Module):
    def forward(self, x, condition):
        return x


def test_l_phi_keeps_its_gradient_where_the_detector_is_sure() -> None:
    # A confident BCE detector rounds sigmoid(20) to exactly 1.0 in float32: a loss on the bounded score
    # then has no gradient, and G never learns to move such an anomaly (what stalled the latent editor).
    from anomalens.detectors.objectives import HSC, radial_log_odds

    out = torch.tensor([20.0, -20.0, 0.3], requires_grad=True)
    assert torch.sigmoid(out)[0] == 1.0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(OEDetector("bce", SHAPE).objective.log_odds(out),
                                                                torch.zeros(3))
    (grad,) = torch.autograd.grad(loss, out)
    assert grad[0] > 0.3
    h = torch.tensor([1e-8, 0.5, 40.0])
    assert torch.allclose(torch.sigmoid(radial_log_odds(h)), -torch.expm1(-h)) and radial_log_odds(h)[2] > 39
    z = torch.randn(4, 6, requires_grad=True)
    assert torch.allclose(torch.sigmoid(HSC().log_odds(z)), HSC().bounded(z), atol=1e-6)


def test_discretise_picks_nearest_level():
    assert discretise(torch.tensor([0.0, 0.2, 0.3, 0.74, 0.9])).tolist() == [0, 0, 1, 1, 2]
    assert ALPHAS == (0.0, 0.5, 1.0)


def test_loss_terms_are_finite_and_reconstruction_is_zero_for_identity_generator():
    explainer = CounterfactualExplainer(_config(), SHAPE)
    detector = OEDetector("bce", SHAPE).eval()
    x = _data().train_normal[:8]
    total, terms, real, x_bar, level = generator_losses(explainer, detector, x, torch.Generator().manual_seed(0),
                                                        contextlib.nullcontext())
    assert set(terms) == {"loss_g", "loss_phi", "loss_rec", "loss_cyc", "loss_con"}
    assert all(torch.isfinite(v) for v in terms.values()) and torch.isfinite(total)
    assert terms["loss_phi"] > 0 and terms["loss_con"] > 0
    assert x_bar.shape == x.shape and level.shape == (8,) and torch.equal(real, x)
    explainer.generator = _Identity()
    _, terms, _, _, _ = generator_losses(explainer, detector, x, torch.Generator().manual_seed(0),
                                      contextlib.nullcontext())
    assert terms["loss_rec"] == 0 and terms["loss_cyc"] == 0


def test_hinge_loss_is_zero_when_the_discriminator_is_confident_and_positive_otherwise():
    explainer = CounterfactualExplainer(_config(), SHAPE)

    class Fixed(nn.Module):
        def forward(self, x, condition=None):
            return torch.where(x.mean((1, 2, 3)) > 0.5, 2.0, -2.0)

    explainer.discriminator = Fixed()
    real, fake = torch.ones(4, *SHAPE), torch.zeros(4, *SHAPE)
    level = torch.zeros(4, dtype=torch.long)
    assert discriminator_loss(explainer, real, torch.zeros(4), fake, level, contextlib.nullcontext()) == 0
    assert discriminator_loss(explainer, fake, torch.zeros(4), real, level, contextlib.nullcontext()) == 6


def test_untrained_generator_is_flagged_as_collapsed():
    explainer = CounterfactualExplainer(_config(), SHAPE)
    warnings = collapse_warnings(explainer, _data().train_oe[:4])
    assert any("concept collapse" in w for w in warnings) and any("ignores the target" in w for w in warnings)


@pytest.mark.slow  # 20 s of training
def test_training_fixes_the_conditioning():
    data = _data()
    explainer = CounterfactualExplainer(_config(steps=20), SHAPE)
    detector = OEDetector("bce", SHAPE).eval()
    explainer.fit(detector, data)
    out = explainer.explain(data.train_oe[:4])
    assert out.outputs.shape == (4, 2, *SHAPE) and out.score_after.shape == (4, 2)
    assert 0 <= out.outputs.min() and out.outputs.max() <= 1
    assert (out.outputs[:, 0] - out.outputs[:, 1]).abs().mean() > 1e-4  # different concepts, different images


def test_detector_stays_frozen_and_l_phi_falls():
    from anomalens.detectors.training import TrainConfig

    torch.manual_seed(0)
    data = _data()
    detector = OEDetector("bce", SHAPE)
    detector.fit(data, TrainConfig(epochs=10, batch_size=16, progress=False))
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    # G against the detector alone (no GAN term, so no D updates either): 24 steps at lr 5e-3 bring the mean
    # L_phi down by 0.12-0.21 on seeds 0-3; with G frozen (lr ~ 0) the two means differ by < 0.03 either way
    explainer = CounterfactualExplainer(_config(steps=24, log_every=12, lambda_rec=0.1, lambda_gan=0, d_every=1000,
                                                lambda_r=0, lr=5e-3), SHAPE)
    explainer.fit(detector, data)
    first, last = explainer.history[0], explainer.history[-1]  # means over steps 1-12 and 13-24
    assert [first["step"], last["step"]] == [12, 24]
    assert last["loss_phi"] < first["loss_phi"] - 0.05
    assert all(torch.equal(before[k], v) for k, v in detector.state_dict().items())
    assert all(p.requires_grad for p in detector.parameters())


def test_save_load_round_trip_and_resume_equals_an_uninterrupted_run(tmp_path, caplog):
    data = _data()
    detector = OEDetector("bce", SHAPE).eval()
    explainer = CounterfactualExplainer(_config(steps=4, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=2),
                                        SHAPE)
    explainer.fit(detector, data)
    path = explainer.save(tmp_path / "explainer.safetensors")
    loaded = CounterfactualExplainer.load(path, detector)
    x = data.train_oe[:4]
    assert torch.equal(explainer.explain(x).outputs, loaded.explain(x).outputs)
    assert loaded.step == 4
    resumed = CounterfactualExplainer(_config(steps=6, checkpoint_dir=str(tmp_path / "ck")), SHAPE)
    with caplog.at_level(logging.INFO, logger="anomalens"):
        resumed.fit(detector, data)
    assert resumed.step == 6 and "explainer: resumed at step 4" in caplog.text
    straight = CounterfactualExplainer(_config(steps=6), SHAPE).fit(detector, data)
    for name, value in straight.state_tensors().items():  # the resumed run equals an uninterrupted one
        assert torch.equal(value, resumed.state_tensors()[name]), name


def test_channels_last_explanations_equal_the_default_layouts():
    # explain() runs G in channels-last when the explainer trained so (1.75x faster on CPUs): same images
    data = _data()
    detector = OEDetector("bce", SHAPE).eval()
    fast = CounterfactualExplainer(_config(steps=2, channels_last=True), SHAPE).fit(detector, data)
    plain = CounterfactualExplainer(_config(steps=2, channels_last=False), SHAPE)
    plain.load_state_tensors(fast.state_tensors(), "memory")
    plain.detector = detector
    x = data.train_oe[:6]
    out_fast, out_plain = fast.explain(x).outputs, plain.explain(x).outputs
    assert out_fast.is_contiguous() and out_fast.shape == (6, 2, *SHAPE)
    assert torch.allclose(out_fast, out_plain, atol=1e-5)


def test_load_refuses_a_detector_file(tmp_path):
    from anomalens.detectors.base import CheckpointError

    path = OEDetector("bce", SHAPE).save(tmp_path / "detector.safetensors")
    with pytest.raises(CheckpointError, match="not an anomalens counterfactual explainer"):
        CounterfactualExplainer.load(path)


def test_bad_config_is_refused():
    from anomalens.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown explainer profile"):
        CounterfactualExplainer(CEConfig(profile="huge"), SHAPE)
    with pytest.raises(ConfigError, match="unknown explainer recipe"):
        CEConfig.recipe("fast")
    for weights in ((1, 1), (1, -1, 1), (0, 0, 0)):
        with pytest.raises(ConfigError, match="level_weights"):
            CEConfig(level_weights=weights)


def test_level_weights_set_how_often_g_trains_towards_each_target_score():
    uniform = target_levels((1.0, 1.0, 1.0), 30_000, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(3, (30_000,), generator=torch.Generator().manual_seed(0)))  # the paper's
    shares = torch.bincount(target_levels((2.0, 1.0, 0.0), 30_000, torch.Generator().manual_seed(0)), minlength=3) / 3e4
    assert abs(shares[0] - 2 / 3) < 0.02 and abs(shares[1] - 1 / 3) < 0.02 and shares[2] == 0


def test_a_shorter_budget_keeps_the_recipes_warmup_share():
    full = CEConfig.recipe("cpu")
    assert 0 < full.warmup_steps < full.steps
    assert CEConfig.recipe("cpu", steps=full.steps // 2).warmup_steps == round(full.warmup_steps / 2)
    assert CEConfig.recipe("cpu", steps=30, warmup_steps=0).warmup_steps == 0  # an explicit warm-up wins
    assert CEConfig.recipe("paper", steps=30).warmup_steps == 0


# ------------------------------------------------------------------------------------------- metrics


class _Scorer(OEDetector):
    def raw_score(self, x):
        return x.mean((1, 2, 3))


def test_cf_auroc_is_half_for_identical_sets_and_one_for_separated_ones():
    detector = _Scorer("bce", SHAPE)
    normal = torch.rand(50, *SHAPE) * 0.4
    assert cfm.cf_auroc(detector, normal, normal.clone()) == pytest.approx(0.5)
    assert cfm.cf_auroc(detector, normal, normal + 0.5) == 1.0


def test_normal_predicate_follows_colour_rules():
    is_normal = cfm.normal_predicate("red or one", [str(i) for i in range(10)])
    attrs = {"label": torch.tensor([1, 3, 3, 1]), "colour": torch.tensor([4, 0, 2, 0])}  # colour 0 = red
    assert is_normal(attrs).tolist() == [True, True, False, True]


def test_oracle_validity_counts_normal_verdicts_and_factor_changes():
    class Oracle:
        heads_spec = {"label": 10, "colour": 3}

        def predict(self, x):
            return {"label": x.flatten(1)[:, 0].round().long(), "colour": x.flatten(1)[:, 1].round().long()}

    inputs = torch.zeros(2, 1, 1, 2)
    inputs[:, 0, 0] = torch.tensor([3.0, 2.0])  # digit 3, colour 2
    images = inputs[:, None].repeat(1, 2, 1, 1, 1)
    images[:, 0, 0, 0, 0] = 7  # concept 1 changes the digit to 7
    images[:, 1, 0, 0, 1] = 0  # concept 2 changes the colour to 0
    result = cfm.oracle_validity(Oracle(), inputs, images, lambda a: a["label"] == 7)
    assert result["oracle_validity"] == 0.5
    assert result["oracle_validity_per_concept"] == [1.0, 0.0]
    assert result["oracle_factor_changes"]["concept_1"] == {"label": 1.0, "colour": 0.0}
    assert result["oracle_factor_changes"]["concept_2"] == {"label": 0.0, "colour": 1.0}
    # under "label == 7" no colour makes a 3 normal: concept 2, which recolours, did not keep the colour
    assert result["oracle_kept"] == 0.5


def test_concept_accuracy_uses_the_pair():
    class R(nn.Module):
        def forward(self, x, x_bar):  # concept = 1 when x_bar is brighter than x
            return torch.stack([(x - x_bar).mean((1, 2, 3)), (x_bar - x).mean((1, 2, 3))], 1)

    x = torch.full((3, *SHAPE), 0.5)
    images = torch.stack([x - 0.1, x + 0.1], 1)
    assert cfm.concept_accuracy(R(), x, images) == 1.0
    assert cfm.concept_accuracy(R(), x, images.flip(1)) == 0.0


@pytest.mark.slow  # 8 trainings; tests/test_contracts.py runs every explainer on every call path quickly
@pytest.mark.parametrize("objective", ["bce", "hsc", "dsvdd", "supervised"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_detector_and_image_format_can_be_explained(objective, shape):
    g = torch.Generator().manual_seed(1)
    normal, oe = torch.rand(16, *shape, generator=g) * 0.5, torch.rand(16, *shape, generator=g) * 0.5 + 0.5
    data = ADData(train_normal=normal, train_oe=oe if objective != "supervised" else None,
                  train_anomalies=oe if objective == "supervised" else None,
                  test_x=torch.cat([normal[:4], oe[:4]]), test_y=torch.tensor([0] * 4 + [1] * 4), name="random")
    detector = OEDetector(objective, shape).eval()
    explainer = CounterfactualExplainer(_config(steps=2), shape).fit(detector, data)
    out = explainer.explain(oe[:3])  # the fitted detector is the default
    assert out.outputs.shape == (3, 2, *shape) and out.score_after.shape == (3, 2)
    assert ((0 <= out.score_after) & (out.score_after <= 1)).all() and out.score_before.shape == (3,)


def test_warmup_trains_the_generator_towards_the_identity():
    data = _data()
    explainer = CounterfactualExplainer(_config(steps=20, warmup_steps=20, log_every=10, lr=2e-3), SHAPE)
    explainer.fit(OEDetector("bce", SHAPE).eval(), data)
    first, last = explainer.history
    assert set(first) == {"step", "loss_rec", "seconds", "lr"} and last["loss_rec"] < first["loss_rec"]
