"""AR-Pro: decompositions, thresholds, the property losses and metrics, and the guided repair."""

from __future__ import annotations

import json
import math

import pytest
import torch

from anomalens.data.defects import synthetic_defects
from anomalens.data.scenarios import defect_scenario
from anomalens.detectors.aexad import AEXAD
from anomalens.detectors.autoencoder import ReconstructionAE
from anomalens.detectors.base import CheckpointError, Detector
from anomalens.detectors.decomposition import Decomposition, FeatureThresholds, NotDecomposableError, decompose
from anomalens.detectors.flow import FlowDetector
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig
from anomalens.explain.diffusion import DiffusionConfig, DiffusionModel, train_diffusion
from anomalens.explain.registry import create as create_explainer
from anomalens.explain.repair import RepairConfig, RepairExplainer, property_loss, repair_batch, timesteps
from anomalens.maps import spread
from anomalens.metrics import properties as pm

SHAPE = (1, 16, 16)


def detectors() -> dict[str, Detector]:
    torch.manual_seed(0)
    return {"ae": ReconstructionAE(SHAPE, widths=(8, 16)), "fcdd": OEDetector("fcdd", SHAPE),
            "aexad": AEXAD(SHAPE, widths=(8, 16)), "flow": FlowDetector(SHAPE, steps=2, hidden=8)}


@pytest.fixture(scope="module")
def defects():
    """A 16 px stripes task, a reconstruction AE trained on it and a briefly trained tiny DDPM (40 steps of 8:
    enough for the guided repair to beat the unguided one on every image by a wide margin)."""
    torch.manual_seed(0)
    data = defect_scenario(synthetic_defects("stripes", n_train=96, n_test_good=16, n_test_defect=12, size=16),
                           per_type=1)
    detector = ReconstructionAE(data.image_shape, widths=(16, 32)).fit(
        data, TrainConfig(epochs=6, lr=3e-3, batch_size=16, progress=False))
    diffusion_cfg = DiffusionConfig(image_shape=tuple(data.image_shape), profile="tiny", steps=40, batch_size=8,
                                    lr=2e-3, log_every=50)
    diffusion = DiffusionModel(diffusion_cfg)
    train_diffusion(diffusion, data.train_normal, diffusion_cfg, progress=False)
    return data, detector.eval(), diffusion


# ------------------------------------------------------------------------------ decompositions


@pytest.mark.parametrize("name", ["ae", "fcdd", "aexad", "flow"])
def test_feature_scores_sum_to_the_score(name):
    detector = detectors()[name].eval()
    x = torch.rand(3, *SHAPE)
    alpha, beta = detector.decompose(x)
    assert alpha.shape == (3, 16, 16) and beta.shape == (3,)
    expected = detector.decomposed_score(x)
    assert torch.allclose(alpha.sum((1, 2)) + beta, expected, rtol=1e-4, atol=1e-5)
    # the decomposed score ranks images as the raw score does
    assert torch.equal(expected.argsort(), detector.raw_score(x).argsort())


def test_non_decomposable_detector_is_refused_with_the_fix():
    with pytest.raises(NotDecomposableError, match="--detector flow"):
        decompose(OEDetector("bce", SHAPE), torch.rand(1, *SHAPE))


def test_spread_keeps_sums_and_refuses_to_downsample():
    maps = torch.randn(2, 5, 7)
    assert torch.allclose(spread(maps, (16, 16)).sum((1, 2)), maps.sum((1, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="upsamples"):
        spread(maps, (4, 4))


def test_thresholds_flag_a_tenth_of_normal_features_and_round_trip(tmp_path):
    detector = detectors()["ae"].eval()
    normal = torch.rand(200, *SHAPE)
    thresholds = FeatureThresholds.fit(detector, normal, 0.9)
    rate = thresholds.omega(decompose(detector, normal).alpha).mean().item()
    assert 0.08 < rate < 0.12
    loaded = FeatureThresholds.load(thresholds.save(tmp_path / "t.safetensors"))
    assert torch.equal(loaded.tau, thresholds.tau) and loaded.quantile == 0.9
    detector.save(tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match="thresholds"):
        FeatureThresholds.load(tmp_path / "d.safetensors")


def test_region_scores_split_the_score():
    dec = Decomposition(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), torch.tensor([0.5]))
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert dec.score.item() == 10.5
    assert dec.region(z).item() == 5.5 and dec.region(1 - z).item() == 5.5


# ----------------------------------------------------------------------------- property losses


def test_the_four_property_losses_on_tiny_tensors():
    alpha = torch.tensor([[[4.0, 1.0], [1.0, 1.0]]])
    dec = Decomposition(alpha, torch.zeros(1))
    omega = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    x_bad = torch.zeros(1, 1, 2, 2)
    x_fix = torch.tensor([[[[9.0, 3.0], [0.0, 4.0]]]])
    # x_bad's regions scored 2 (omega) and 2 (rest): L3 = max(0, 4 - 2) = 2, L4 = max(0, 3 - 2 - 0.5 * 2) = 0
    total, terms = property_loss(dec, x_fix, x_bad, omega, torch.tensor([2.0]), torch.tensor([2.0]),
                                 (1.0, 1.0, 1.0, 1.0), delta4=0.5)
    assert terms["L1"].item() == 7.0
    assert terms["L2"].item() == 5.0  # only the non-anomalous pixels count: sqrt(3^2 + 0^2 + 4^2)
    assert terms["L3"].item() == 2.0
    assert terms["L4"].item() == 0.0
    assert total.item() == 14.0
    _, terms = property_loss(dec, x_fix, x_bad, omega, torch.tensor([2.0]), torch.tensor([1.0]),
                             (1.0, 1.0, 1.0, 1.0), delta4=0.5)
    assert terms["L4"].item() == 1.5  # 3 - 1 - 0.5 * |1|


def test_timesteps_run_only_from_the_start_level_down():
    assert timesteps(RepairConfig(strength=0.5, sampler="ddpm"), 1000) == list(range(499, -1, -1))
    assert len(timesteps(RepairConfig(strength=0.5), 1000)) == 50  # the default: DDIM, 50 steps
    fast = timesteps(RepairConfig(strength=0.5, sampler="ddim", steps=10), 1000)
    assert len(fast) == 10 and fast[0] == 499 and fast[-1] == 0 and fast == sorted(fast, reverse=True)


def test_repair_config_rejects_bad_values():
    for bad in ({"strength": 0}, {"sampler": "euler"}, {"prefill": "zeros"}, {"steps": 0},
                {"weights": (1.0, 1.0)}):
        with pytest.raises(ValueError):
            RepairConfig(**bad)


# ----------------------------------------------------------------------------------- metrics


def test_property_metrics_of_an_unchanged_image():
    detector = detectors()["ae"].eval()
    x = torch.rand(4, *SHAPE)
    thresholds = FeatureThresholds.fit(detector, torch.rand(50, *SHAPE))
    m = pm.property_metrics(detector, thresholds, x, x.clone())
    assert torch.all(m["M_d"] == 0) and torch.allclose(m["M_omega"], torch.zeros(4), atol=1e-4)
    assert not m["P1"].any()  # no improvement is not an improvement
    assert m["P2"].all() and m["P4"].all()
    summary = pm.summarize(m)
    assert summary["P2_rate"] == 1.0 and summary["P1_rate"] == 0.0 and summary["all_properties_rate"] == 0.0


def test_improvement_conformal_threshold_and_tnr():
    assert pm.improvement(-0.003, -0.007) == pytest.approx(133.33, abs=0.01)  # a negative M gets more negative
    assert pm.improvement(300.0, 9.0) == pytest.approx(97.0)
    assert pm.improvement(0.0, 0.0) == 0.0
    assert pm.median_improvement([10.0, 10.0, 10.0], [5.0, 9.0, 11.0]) == pytest.approx(10.0)
    scores = torch.arange(1.0, 101.0)  # 100 held-out normal scores
    assert pm.conformal_threshold(scores, 0.95) == 96.0  # ceil(101 * 0.95) = 96th smallest
    assert pm.true_negative_rate(torch.tensor([1.0, 96.0, 97.0, 200.0]), 96.0) == 0.5
    with pytest.raises(ValueError, match="too few"):
        pm.conformal_threshold(torch.arange(5.0), 0.95)


# -------------------------------------------------------------------------------------- repair


def test_masked_infilling_keeps_the_rest_equal_to_the_original_noised_to_the_same_step():
    torch.manual_seed(0)
    detector = detectors()["ae"].eval()
    diffusion = DiffusionModel(DiffusionConfig(image_shape=SHAPE, profile="tiny"))
    thresholds = FeatureThresholds.fit(detector, torch.rand(50, *SHAPE))
    x_bad = torch.rand(2, *SHAPE)
    cfg = RepairConfig(strength=0.2, sampler="ddpm", steps=8, guidance=1.0)
    trace: list = []
    x_fix, omega = repair_batch(x_bad, detector, diffusion, thresholds, cfg, torch.Generator().manual_seed(0),
                                trace=trace)
    keep = (1 - omega)[:, None].bool().expand_as(x_bad)
    assert 0 < omega.mean() < 1
    abar = diffusion.alphas_cumprod
    x0 = DiffusionModel.to_model(x_bad)
    assert [t for t, _, _ in trace] == [*timesteps(cfg, len(abar)), -1]
    for t, x_t, noise in trace:
        ab = abar[t] if t >= 0 else torch.tensor(1.0)
        expected = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        assert torch.allclose(x_t[keep], expected[keep], atol=1e-6), f"step {t}"
    assert torch.allclose(x_fix[keep], x_bad[keep], atol=1e-6)  # the output keeps the input outside omega


def test_guided_repair_lowers_the_score_more_than_unguided(defects):
    data, detector, diffusion = defects
    x_bad = data.test_x[data.test_y == 1][:6]
    cfg = RepairConfig(strength=0.4, sampler="ddim", steps=12, guidance=1.0, progress=False)
    explainer = RepairExplainer(cfg, diffusion).fit(detector, data)  # the diffusion model is given: no training
    assert diffusion.step == 40 and explainer.thresholds.tau.shape == x_bad.shape[-2:]
    guided = explainer.explain(x_bad)
    unguided = explainer.explain(x_bad, guidance=0.0)
    x_fix = guided.outputs[:, 0]
    assert guided.outputs.shape == (6, 1, *x_bad.shape[1:]) and 0 <= x_fix.min() and x_fix.max() <= 1
    assert guided.extras["omega"].shape == (6, *x_bad.shape[-2:]) and guided.score_after.shape == (6, 1)
    raw_guided, raw_unguided = detector.scores(x_fix), detector.scores(unguided.outputs[:, 0])
    assert raw_guided.mean() < raw_unguided.mean() and raw_guided.mean() < detector.scores(x_bad).mean()
    seconds = float(guided.extras["seconds_per_image"])
    assert math.isfinite(seconds) and seconds > 0


def test_repair_explainer_fit_trains_the_diffusion_model_and_resumes(defects, tmp_path):
    data, detector, _ = defects
    options = {"diffusion": {"profile": "tiny", "steps": 3, "batch_size": 4, "checkpoint_every": 2},
               "checkpoint_dir": str(tmp_path), "progress": False}
    explainer = create_explainer("repair", **options)
    assert isinstance(explainer, RepairExplainer) and explainer.fit(detector, data) is explainer
    assert explainer.diffusion.step == 3 and (tmp_path / "step_000003.safetensors").is_file()
    longer = create_explainer("repair", **{**options, "diffusion": {**options["diffusion"], "steps": 4}})
    assert longer.fit(detector, data).diffusion.step == 4  # a larger budget continues from the checkpoint


def test_repair_explainer_refuses_a_non_decomposable_detector(defects):
    data, _, diffusion = defects
    with pytest.raises(NotDecomposableError):
        RepairExplainer(diffusion=diffusion).fit(OEDetector("hsc", data.image_shape), data)


def test_cli_repair_writes_grids_metrics_and_report(tmp_path, capsys):
    from anomalens import cli

    out = tmp_path / "flow"
    assert cli.main(["train", "--dataset", "synthetic_defects/stripes", "--detector", "flow", "--epochs", "2",
                     "--batch-size", "32", "--image-size", "16", "--out", str(out)]) == 0
    argv = ["explain", str(out), "--method", "repair", "--profile", "tiny", "--steps", "10", "--sampler", "ddim",
            "--sample-steps", "4", "--strength", "0.3", "--max-anomalies", "4"]
    assert cli.main(argv) == 0
    repaired = out / "explain" / "repair"
    for name in ("repairs.png", "report.html", "diffusion.safetensors", "thresholds.safetensors", "config.yaml",
                 "run.json", "images/samples.png"):
        assert (repaired / name).is_file(), name
    metrics = json.loads((repaired / "metrics.json").read_text())
    for mode in ("guided", "unguided"):
        assert metrics[mode]["M_d_mean"] == pytest.approx(0, abs=1e-4)  # in-filling keeps the rest exactly
        assert 0 <= metrics[mode]["tnr"] <= 1 and metrics[mode]["seconds_per_image"] > 0
    assert set(metrics["improvement_over_unguided"]) == {*pm.METRICS, "s_omega_fix"}
    assert "TNR at 95% conformal" in (repaired / "report.html").read_text()
    assert "guided vs unguided" in capsys.readouterr().err  # logged
    # a detector whose score is not decomposable is refused with the fix, before any training
    hsc = tmp_path / "hsc"
    assert cli.main(["train", "--dataset", "synthetic_defects/stripes", "--detector", "hsc", "--oe", "confetti",
                     "--epochs", "1", "--image-size", "16", "--out", str(hsc)]) == 0
    assert cli.main(["explain", str(hsc), "--method", "repair"]) == 2
    assert "--detector flow" in capsys.readouterr().err


def test_property_checker_judges_any_image_explanation():
    """P1-P4 apply to any explainer's images (e.g. GAN counterfactuals), for decomposable detectors only."""
    x_bad, normal = torch.rand(4, *SHAPE), torch.rand(40, *SHAPE)
    explanations = {"concept 1": x_bad.clone(), "concept 2": torch.full_like(x_bad, 0.5)}
    checked = pm.check_explanations(detectors()["fcdd"].eval(), x_bad, explanations, normal)
    assert set(checked) == {"concept 1", "concept 2"}
    assert checked["concept 1"]["M_d_mean"] == 0 and checked["concept 2"]["M_d_mean"] > 0
    rows = pm.property_rows(checked)
    assert rows[0]["explanation"] == "concept 1" and "P3 rate" in rows[0]
    assert pm.check_explanations(OEDetector("bce", SHAPE), x_bad, explanations, normal) is None
