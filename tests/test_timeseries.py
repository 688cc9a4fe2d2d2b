"""AR-Pro on multivariate time series: windows and normalisation, readers, the synthetic series,
sequence detectors, the series diffusion model, guided in-filling on windows, and the CLI path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomalens.checkpoints import CheckpointError
from anomalens.data import catalog
from anomalens.data.series_readers import read_skab, read_table
from anomalens.data.series_sources import build_series, is_series_dataset
from anomalens.data.synthetic_series import FAULTS, synthetic_series
from anomalens.data.timeseries import series_task
from anomalens.detectors.decomposition import FeatureThresholds
from anomalens.detectors.sequence import SeriesAE, SeriesGPT2
from anomalens.detectors.training import TrainConfig
from anomalens.errors import ConfigError, DataFormatError
from anomalens.explain.diffusion import DiffusionModel, train_diffusion
from anomalens.explain.repair import RepairConfig, RepairExplainer, repair_batch, timesteps
from anomalens.explain.series_diffusion import SeriesDiffusionConfig, SeriesDiffusionModel
from anomalens.metrics import properties as pm

from conftest import needs_shared_data

SHAPE = (1, 4, 32)  # 4 features, windows of 32 steps


def _write_csv(path, header, rows, sep=","):
    path.write_text("\n".join([sep.join(header)] + [sep.join(str(c) for c in r) for r in rows]) + "\n")
    return path


def _logs(folder):
    """A normal log (200 steps) and a labelled one (300 steps, anomalous from step 200) with two sensors."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    normal = [(t, 10 + rng.normal(), 5 * rng.normal()) for t in range(200)]
    _write_csv(folder / "a_normal.csv", ["time", "flow", "temp"], normal)
    faulty = [(t, 20 + rng.normal() + (100 if t >= 200 else 0), 5 * rng.normal(), int(t >= 200)) for t in range(300)]
    _write_csv(folder / "b_faulty.csv", ["time", "flow", "temp", "label"], faulty)
    return folder


# ------------------------------------------------------------------------------------- data


def test_windows_shapes_and_normalisation_fitted_on_normal_steps_only(tmp_path):
    logs = _logs(tmp_path / "logs")
    assert is_series_dataset(str(logs)) and is_series_dataset("synthetic_series") and not is_series_dataset("mnist")
    data = build_series(str(logs), window=20, stride=5, time_column="time", feature_columns=("flow", "temp"),
                        label_column="label")
    # a_normal: all 200 steps train -> 37 windows; b_faulty: the first half of its 200-step prefix trains
    # (17 windows), the test part starts at step 100 -> 37 windows, of which those reaching step 200 are anomalous
    assert data.image_shape == (1, 2, 20) and len(data.train_normal) == 37 + 17 and len(data.test_x) == 37
    starts = data.test_attrs["start"].numpy()
    assert starts.min() == 100 and (data.test_y.numpy() == (starts + 20 > 200)).all()
    assert data.test_step_labels.shape == (37, 20) and data.test_masks is None
    faulty = np.loadtxt(logs / "b_faulty.csv", delimiter=",", skiprows=1)
    flow = faulty[:100, 1]  # b_faulty's own normal training steps, not its anomalies
    assert data.norm_mean[1, 0] == pytest.approx(flow.mean(), rel=1e-5)
    assert data.norm_std[1, 0] == pytest.approx(flow.std(), rel=1e-4)
    first = data.test_x[0, 0, 0].numpy()
    assert np.allclose(first, (faulty[100:120, 1] - flow.mean()) / flow.std(), atol=1e-4)
    assert torch.allclose(data.denormalise(data.test_x[:1, 0], 1)[0, 0], torch.from_numpy(faulty[100:120, 1]).float())
    pooled = build_series(str(logs), window=20, stride=5, time_column="time", label_column="label", normalise="global")
    assert not torch.allclose(pooled.norm_mean[0], data.norm_mean[0])


def test_readers_refuse_bad_csvs_naming_the_file_and_the_fix(tmp_path):
    ok = [(0, 1.0, 0), (1, 2.0, 0), (2, 3.0, 1)]
    assert read_table(_write_csv(tmp_path / "ok.csv", ["t", "x", "y"], ok, ";"), "t", label_column="y").values.shape \
        == (3, 1)
    cases = {
        "missing.csv": (["t", "x"], [(0, 1.0)], {"label_column": "y"}, "no column"),
        "text.csv": (["t", "x", "y"], [(0, 1.0, 0), (1, "3.5 bar", 0)], {"label_column": "y"}, "non-numeric"),
        "empty.csv": (["t", "x", "y"], [(0, 1.0, 0), (1, "", 0)], {"label_column": "y"}, "empty or non-finite"),
        "unsorted.csv": (["t", "x", "y"], [(0, 1.0, 0), (2, 1.0, 0), (1, 1.0, 0)], {"label_column": "y"},
                         "not strictly increasing"),
        "labels.csv": (["t", "x", "y"], [(0, 1.0, 0), (1, 1.0, 2)], {"label_column": "y"}, "label column"),
    }
    for name, (header, rows, options, problem) in cases.items():
        path = _write_csv(tmp_path / name, header, rows)
        with pytest.raises(DataFormatError, match=problem) as error:
            read_table(path, "t", **options)
        assert str(path) in str(error.value) and "Fix:" in str(error.value)
    with pytest.raises(DataFormatError, match="sort the rows by 't'"):
        read_table(tmp_path / "unsorted.csv", "t", label_column="y")
    dates = _write_csv(tmp_path / "dates.csv", ["when", "x"], [("2020-03-09 10:14:33", 1), ("2020-03-09 10:14:32", 2)])
    with pytest.raises(DataFormatError, match="line 3"):
        read_table(dates, "when")


def test_parquet_tables_read_like_csv(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"t": [0.0, 1.0, 2.0], "x": [1.0, 2.0, None], "y": [0, 0, 1]}), path)
    with pytest.raises(DataFormatError, match="row 2"):
        read_table(path, "t", label_column="y")
    pq.write_table(pa.table({"t": [0.0, 1.0, 2.0], "x": [1.0, 2.0, 4.0], "y": [0, 0, 1]}), path)
    assert read_table(path, "t", label_column="y").labels.tolist() == [False, False, True]


def test_skab_layout_faults_and_catalog(tmp_path):
    root = tmp_path / "skab"
    header = ["datetime", "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
              "Thermocouple", "Voltage", "Volume Flow RateRMS"]

    def rows(n, labels=False):
        return [(f"2020-03-09 10:{i // 60:02d}:{i % 60:02d}", *np.round(np.random.rand(8), 3),
                 *((float(i >= n // 2), 0.0) if labels else ())) for i in range(n)]

    (root / "anomaly-free").mkdir(parents=True)
    _write_csv(root / "anomaly-free" / "anomaly-free.csv", header, rows(300), ";")
    for group, number in (("valve1", 0), ("valve2", 1), ("other", 5)):
        (root / group).mkdir()
        _write_csv(root / group / f"{number}.csv", header + ["anomaly", "changepoint"], rows(400, True), ";")
    recordings = read_skab(root)
    assert [r.name for r in recordings] == ["anomaly-free.csv", "valve1/0.csv", "valve2/1.csv", "other/5.csv"]
    assert [r.fault for r in recordings] == ["", "valve1", "valve2", "rotor_imbalance"]
    assert [r.name for r in catalog.load_series("skab/valve2", tmp_path)] == ["anomaly-free.csv", "valve2/1.csv"]
    data = build_series("skab/valve1", data_root=tmp_path, window=40, stride=10)
    assert data.image_shape == (1, 8, 40) and data.fault_names == ["valve1"]
    assert catalog.dataset_info("skab", tmp_path)["splits"]["recordings"]["count"] == 4


@needs_shared_data("skab", "valve1")
@pytest.mark.shared_data
def test_real_skab_reads_every_file():
    recordings = catalog.load_series("skab")
    assert len(recordings) == 35 and sum(r.anomalous for r in recordings) == 34
    assert sum(int(r.labels.sum()) for r in recordings if r.anomalous) == 13067  # MANIFEST.md, section 7


def test_synthetic_series_is_deterministic_with_exact_ground_truth():
    first, again = synthetic_series(3, train_steps=500, per_type=2), synthetic_series(3, train_steps=500, per_type=2)
    assert all(np.array_equal(a.values, b.values) for a, b in zip(first, again))
    assert [r.fault for r in first[1:]] == list(FAULTS) and not first[0].anomalous
    for rec in first[1:]:
        assert np.array_equal(rec.labels, rec.mask.any(1)) and (rec.mask.sum(1) <= 1).all()  # one feature each
    pair_break = first[1 + FAULTS.index("pair_break")]
    assert set(np.flatnonzero(pair_break.mask.any(0))) <= {1, 3, 5, 7}  # the second sensor of a pair
    assert not np.array_equal(synthetic_series(4, train_steps=500, per_type=2)[0].values, first[0].values)


# -------------------------------------------------------------------------------- detectors


@pytest.mark.parametrize("cls", [SeriesAE, SeriesGPT2])
def test_sequence_detectors_decompose_to_the_score(cls):
    torch.manual_seed(0)
    detector = cls(SHAPE).eval()
    x = torch.randn(3, *SHAPE)
    alpha, beta = detector.decompose(x)
    assert alpha.shape == (3, 4, 32) and beta.shape == (3,) and bool((alpha >= 0).all())
    assert torch.allclose(alpha.sum((1, 2)) + beta, detector.decomposed_score(x))
    score = detector.score(x)
    assert bool(((0 <= score) & (score <= 1)).all())
    with pytest.raises(ValueError, match="windows of shape"):
        cls((3, 32, 32))


def test_gpt2_reconstructs_each_step_from_the_past_only():
    torch.manual_seed(0)
    detector = SeriesGPT2(SHAPE).eval()
    x = torch.randn(1, *SHAPE)
    changed = x.clone()
    changed[..., 20] += 5  # a spike at step 20 cannot change the reconstruction of steps 0..20
    before, after = detector.reconstruct(x), detector.reconstruct(changed)
    assert torch.allclose(before[..., :21], after[..., :21], atol=1e-5)
    assert not torch.allclose(before[..., 21:], after[..., 21:])


# --------------------------------------------------------------------------- repair on windows


def test_series_diffusion_config_saves_and_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ConfigError, match="divisible by 4"):
        SeriesDiffusionConfig(image_shape=(1, 8, 101), profile="cpu")
    with pytest.raises(ConfigError, match="flip"):
        SeriesDiffusionConfig(image_shape=(1, 8, 100), flip=True)
    model = SeriesDiffusionModel(SeriesDiffusionConfig(image_shape=SHAPE, profile="tiny"))
    path = model.save(tmp_path / "d.safetensors")
    with pytest.raises(CheckpointError, match="SeriesDiffusionModel"):
        DiffusionModel.load(path)
    loaded = SeriesDiffusionModel.load(path)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(loaded.predict_noise(x, 10), model.predict_noise(x, 10))
    assert model.to_model(torch.tensor(3.0)) == 1.0  # model space: 3 normal stds -> 1


def test_masked_infilling_keeps_the_rest_of_a_window_at_every_step():
    torch.manual_seed(0)
    detector = SeriesAE(SHAPE).eval()
    diffusion = SeriesDiffusionModel(SeriesDiffusionConfig(image_shape=SHAPE, profile="tiny"))
    thresholds = FeatureThresholds.fit(detector, torch.randn(60, *SHAPE))
    x_bad = torch.randn(2, *SHAPE)
    x_bad[:, 0, 1, 5] = 40.0  # far outside the model's range: must come back unclipped outside omega
    cfg = RepairConfig(strength=0.2, sampler="ddpm", steps=6, guidance=1.0)
    trace: list = []
    x_fix, omega = repair_batch(x_bad, detector, diffusion, thresholds, cfg, torch.Generator().manual_seed(0),
                                trace=trace)
    assert omega.shape == (2, 4, 32) and 0 < omega.mean() < 1
    keep = (1 - omega)[:, None].bool()
    abar, x0 = diffusion.alphas_cumprod, diffusion.to_model(x_bad)
    assert [t for t, _, _ in trace] == [*timesteps(cfg, len(abar)), -1]
    for t, x_t, noise in trace:
        ab = abar[t] if t >= 0 else torch.tensor(1.0)
        assert torch.allclose(x_t[keep], (ab.sqrt() * x0 + (1 - ab).sqrt() * noise)[keep], atol=1e-6), f"step {t}"
    assert torch.equal(x_fix[keep], x_bad[keep])
    assert x_fix[~keep].abs().max() <= diffusion.config.scale + 1e-5  # the repair itself stays within 3 std


@pytest.fixture(scope="module")
def spike_task():
    """Short synthetic windows, a series AE trained on them and a briefly trained tiny diffusion model."""
    recordings = synthetic_series(0, n_features=4, train_steps=3000, per_type=3, faults=("spike",))
    data = series_task(recordings, window=32, stride=4)
    torch.manual_seed(0)
    detector = SeriesAE(data.image_shape).fit(data, TrainConfig(epochs=4, lr=3e-3, batch_size=32, progress=False))
    cfg = SeriesDiffusionConfig(image_shape=data.image_shape, profile="tiny", steps=120, batch_size=32, lr=2e-3,
                                log_every=60)
    diffusion = SeriesDiffusionModel(cfg)
    train_diffusion(diffusion, data.train_normal, cfg, progress=False)
    return data, detector.eval(), diffusion


def test_guided_repair_lowers_the_score_more_than_unguided_on_a_spike(spike_task):
    data, detector, diffusion = spike_task
    x = data.test_x[data.test_y == 0][:6].clone()
    spike = x[:, 0].std() * 6
    x[torch.arange(6), 0, torch.arange(6) % 4, 16] += spike  # one spike per window, on a different sensor
    cfg = RepairConfig(strength=0.4, steps=12, guidance=3.0, progress=False)
    explainer = RepairExplainer(cfg, diffusion).fit(detector, data)
    guided, unguided = explainer.explain(x), explainer.explain(x, guidance=0.0)
    assert guided.outputs.shape == (6, 1, *x.shape[1:])
    omega = guided.extras["omega"]
    assert bool(omega[torch.arange(6), torch.arange(6) % 4, 16].all())  # omega covers every spike
    before = detector.scores(x)
    after_guided, after_unguided = detector.scores(guided.outputs[:, 0]), detector.scores(unguided.outputs[:, 0])
    assert after_guided.mean() < after_unguided.mean() < before.mean()
    m = pm.property_metrics(detector, explainer.thresholds, x, guided.outputs[:, 0])
    assert float(m["M_d"].max()) == 0.0 and bool(m["P1"].all())


def test_cli_train_then_explain_repair_on_the_synthetic_series(tmp_path, capsys):
    from anomalens import cli

    out = tmp_path / "series"
    assert cli.main(["train", "--dataset", "synthetic_series", "--detector", "series_ae", "--epochs", "1",
                     "--batch-size", "64", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["ad_auroc"] <= 1 and "pixel_auc" in metrics  # per feature and step, against the truth
    argv = ["explain", str(out), "--method", "repair", "--profile", "tiny", "--steps", "8", "--sample-steps", "3",
            "--strength", "0.3", "--max-anomalies", "2"]
    assert cli.main(argv) == 0
    repaired = out / "explain" / "repair"
    for name in ("repairs.png", "report.html", "diffusion.safetensors", "thresholds.safetensors",
                 "images/samples.png"):
        assert (repaired / name).is_file(), name
    result = json.loads((repaired / "metrics.json").read_text())
    for mode in ("guided", "unguided"):
        assert result[mode]["M_d_mean"] == 0 and 0 <= result[mode]["tnr"] <= 1
    assert result["repaired"] == 2
    assert SeriesDiffusionModel.load(repaired / "diffusion.safetensors").config.image_shape == (1, 8, 100)
    # an image detector on a series (and the other way round) is refused with the fix
    assert cli.main(["train", "--dataset", "synthetic_series", "--detector", "ae", "--out", str(tmp_path / "x")]) == 2
    assert "series_ae" in capsys.readouterr().err
