"""The latent counterfactual generator: autoencoder, editor, explainer round trip, AutoencoderKL path."""

from __future__ import annotations

import torch

from anomalens.data.addata import ADData
from anomalens.detectors.oe import OEDetector
from anomalens.explain.autoencoders import AutoencoderTraining, load_autoencoder, save_autoencoder, train_autoencoder
from anomalens.explain.counterfactual import CEConfig, CounterfactualExplainer
from anomalens.nets.latent import EditorConfig, LatentEditor, LatentGenerator

from conftest import bars_task

SHAPE = (1, 28, 28)


def _data(n: int = 64) -> ADData:
    return bars_task(n)


def test_autoencoder_learns_and_the_editor_starts_at_its_reconstruction(tmp_path) -> None:
    data = _data()
    images = torch.cat([data.train_normal, data.train_oe])
    cfg = AutoencoderTraining(steps=60, batch_size=32, lr=3e-3, log_every=20, network={"widths": (8, 16),
                                                                                         "latent_channels": 4})
    ae = train_autoencoder(images, cfg, progress=False)
    assert ae.history[-1]["mse"] < 0.5 * ae.history[0]["mse"]
    assert ae.encode(images[:2]).shape == (2, 4, 7, 7)
    path = save_autoencoder(ae, tmp_path / "ae.safetensors")
    loaded = load_autoencoder(str(path))
    assert torch.equal(loaded(images[:3]), ae(images[:3]))
    generator = LatentGenerator(loaded, LatentEditor(EditorConfig(4, 6, 8, 1))).eval()
    condition = torch.tensor([0, 3, 5])
    assert torch.allclose(generator(images[:3], condition), ae(images[:3]).clamp(0, 1), atol=1e-6)
    assert all(not p.requires_grad for p in generator.autoencoder.parameters())


def test_latent_explainer_trains_its_autoencoder_explains_and_round_trips(tmp_path) -> None:
    data = _data()
    detector = OEDetector("bce", SHAPE).eval()
    cfg = CEConfig.recipe("latent", profile="tiny", steps=4, batch_size=8, autoencoder_steps=5, sample_every=0,
                          progress=False, bf16=False, checkpoint_dir=str(tmp_path / "ck"))
    explainer = CounterfactualExplainer(cfg).fit(detector, data)
    assert (tmp_path / "autoencoder").is_dir()  # the autoencoder's own checkpoints, resumable
    result = explainer.explain(data.train_oe[:3])
    assert result.outputs.shape == (3, 2, *SHAPE) and result.score_after.shape == (3, 2)
    path = explainer.save(tmp_path / "explainer.safetensors")
    loaded = CounterfactualExplainer.load(path, detector)
    assert torch.equal(loaded.explain(data.train_oe[:3]).outputs, result.outputs)


def test_latent_critics_judge_the_codes_and_only_x_bar_is_decoded(tmp_path, monkeypatch) -> None:
    data = _data()
    detector = OEDetector("bce", SHAPE).eval()
    cfg = CEConfig.recipe("latent", critics="latent", profile="tiny", steps=3, batch_size=8, autoencoder_steps=5,
                          sample_every=0, progress=False, bf16=False)
    explainer = CounterfactualExplainer(cfg)
    explainer.autoencoder = explainer._train_autoencoder(data)
    explainer._build(SHAPE)
    z = explainer.generator.autoencoder.encode(data.train_oe[:4])
    assert explainer.discriminator(z).shape == (4,) and explainer.concept(z, z).shape == (4, 2)
    decoded = []
    decode = explainer.generator.autoencoder.decode
    monkeypatch.setattr(explainer.generator.autoencoder, "decode", lambda code: decoded.append(code) or decode(code))
    explainer.fit(detector, data)
    assert len(decoded) == 3  # one decode per step (x_bar, for the detector): R, D and L_rec work on codes
    monkeypatch.undo()
    x = data.train_oe[:3]
    assert explainer.concept_logits(x, explainer.explain(x).outputs[:, 0]).shape == (3, 2)
    loaded = CounterfactualExplainer.load(explainer.save(tmp_path / "explainer.safetensors"), detector)
    assert torch.equal(loaded.concept_logits(x, x), explainer.concept_logits(x, x))


def test_latent_critics_need_the_latent_generator() -> None:
    import pytest

    from anomalens.errors import ConfigError

    with pytest.raises(ConfigError, match="critics"):
        CEConfig.recipe("cpu", critics="latent")
    with pytest.raises(ConfigError, match="critics"):
        CEConfig.recipe("latent", critics="codes")


def test_a_pretrained_autoencoder_kl_from_a_local_folder(tmp_path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=28)
    vae.save_pretrained(tmp_path / "vae")
    ae = load_autoencoder(f"kl:{tmp_path / 'vae'}")
    x = torch.rand(2, *SHAPE)
    assert ae.encode(x).shape == (2, 4, 14, 14) and ae.decode(ae.encode(x)).shape == (2, *SHAPE)
    cfg = CEConfig.recipe("latent", profile="tiny", steps=2, batch_size=4, sample_every=0, progress=False, bf16=False,
                          autoencoder=f"kl:{tmp_path / 'vae'}")
    explainer = CounterfactualExplainer(cfg).fit(OEDetector("bce", SHAPE).eval(), _data(16))
    assert explainer.explain(x).outputs.shape == (2, 2, *SHAPE)


def test_the_dataset_autoencoder_is_trained_once_and_reused(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from anomalens.experiments import latent_cache

    data = _data(32)
    calls = []

    def images(job, task):
        calls.append(job.dataset)
        return torch.cat([task.train_normal, task.train_oe])

    monkeypatch.setattr(latent_cache, "dataset_images", images)
    job = SimpleNamespace(dataset="bars", colored=False, oe="right bars")
    training = AutoencoderTraining(steps=4, batch_size=8, network={"widths": (4, 8), "latent_channels": 2})
    path, record = latent_cache.cached_autoencoder(job, data, training, tmp_path, progress=False)
    again, record_again = latent_cache.cached_autoencoder(job, data, training, tmp_path, progress=False)
    assert again == path and calls == ["bars"]  # the second call trains nothing
    assert record_again["train_seconds"] == record["train_seconds"]
    assert record["steps"] == 4 and record["images"] == 64 and record["train_seconds"] > 0
    other, _ = latent_cache.cached_autoencoder(SimpleNamespace(dataset="bars", colored=True, oe="right bars"),
                                               data, training, tmp_path, progress=False)
    assert other != path and len(calls) == 2  # another dataset variant gets its own autoencoder
