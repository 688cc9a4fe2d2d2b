"""The DDPM prior of AR-Pro repair: spaces, noise prediction, training, checkpoints, persistence, errors."""

from __future__ import annotations

import pytest
import torch

from anomalens.detectors.base import CheckpointError
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainingDivergedError
from anomalens.errors import ConfigError
from anomalens.explain import diffusion as dm
from anomalens.explain.diffusion import DiffusionConfig, DiffusionModel, train_diffusion

SHAPE = (1, 16, 16)


def _config(**kw) -> DiffusionConfig:
    base = dict(image_shape=SHAPE, profile="tiny", steps=4, batch_size=8, log_every=1, checkpoint_every=2)
    return DiffusionConfig(**{**base, **kw})


def _images(n: int = 32) -> torch.Tensor:
    """Smooth horizontal ramps with random brightness: an easy distribution to learn."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.8, SHAPE[2]).expand(*SHAPE)
    return (ramp * (0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g))).clamp(0, 1)


def test_spaces_are_inverse_and_noise_prediction_is_float32():
    x = torch.rand(3, *SHAPE)
    assert torch.allclose(DiffusionModel.from_model(DiffusionModel.to_model(x)), x)
    assert DiffusionModel.to_model(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]
    model = DiffusionModel(_config())
    assert model.alphas_cumprod.dtype == torch.float32 and model.alphas_cumprod.shape == (1000,)
    assert model.alphas_cumprod[0] > model.alphas_cumprod[-1] > 0
    for t in (5, torch.tensor([0, 10, 999])):
        eps = model.predict_noise(torch.randn(3, *SHAPE), t, bf16=True)
        assert eps.shape == (3, *SHAPE) and eps.dtype == torch.float32
    with pytest.raises(ValueError, match="timesteps"):
        model.predict_noise(torch.randn(1, *SHAPE), 1000)


def test_training_lowers_the_loss_and_moves_the_ema():
    model = DiffusionModel(_config())
    before = model.predict_noise(torch.zeros(1, *SHAPE), 500).clone()
    history = train_diffusion(model, _images(), _config(steps=30, batch_size=8, log_every=5, lr=2e-3),
                              progress=False)
    assert [h["step"] for h in history] == list(range(5, 31, 5))
    first, last = sum(h["loss"] for h in history[:3]) / 3, sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.7 * first  # measured ~0.25 * first (seeds 0 and 1)
    assert not torch.equal(model.predict_noise(torch.zeros(1, *SHAPE), 500), before)
    assert not model.training and all(not p.requires_grad for p in model.ema.parameters())


def test_save_load_round_trip_and_refuses_a_detector_file(tmp_path):
    model = DiffusionModel(_config())
    train_diffusion(model, _images(), _config(steps=3), progress=False)
    loaded = DiffusionModel.load(model.save(tmp_path / "ddpm.safetensors"))
    x, t = torch.randn(2, *SHAPE), torch.tensor([3, 700])
    assert torch.equal(loaded.predict_noise(x, t), model.predict_noise(x, t))
    assert loaded.step == 3 and loaded.config == model.config and len(loaded.history) == 3
    detector_file = OEDetector("bce", SHAPE).save(tmp_path / "detector.safetensors")
    with pytest.raises(CheckpointError, match="not an anomalens diffusion model"):
        DiffusionModel.load(detector_file)


def test_resume_continues_exactly_where_the_checkpoint_left_off(tmp_path):
    straight = DiffusionModel(_config())
    train_diffusion(straight, _images(), _config(steps=7), progress=False)
    first = DiffusionModel(_config())
    train_diffusion(first, _images(), _config(steps=4), checkpoint_dir=tmp_path, progress=False)
    resumed = DiffusionModel(_config())
    history = train_diffusion(resumed, _images(), _config(steps=7), checkpoint_dir=tmp_path, progress=False)
    assert resumed.step == 7 and [h["step"] for h in history] == list(range(1, 8))
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "step_000007.safetensors").exists()


def test_ctrl_c_saves_a_checkpoint_then_reraises_and_the_resumed_run_is_exact(tmp_path, monkeypatch):
    import os
    import signal

    model = DiffusionModel(_config())
    update = DiffusionModel.update_ema

    def interrupt_at_step_3(self):
        update(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 3: held until the step ends

    monkeypatch.setattr(DiffusionModel, "update_ema", interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(model, _images(), _config(steps=5, checkpoint_every=100), checkpoint_dir=tmp_path,
                        progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["step_000003.safetensors"]
    monkeypatch.setattr(DiffusionModel, "update_ema", update)
    resumed = DiffusionModel(_config())
    train_diffusion(resumed, _images(), _config(steps=5), checkpoint_dir=tmp_path, progress=False)
    straight = DiffusionModel(_config())
    train_diffusion(straight, _images(), _config(steps=5), progress=False)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)


def test_nan_loss_names_the_last_checkpoint(tmp_path, monkeypatch):
    model = DiffusionModel(_config())
    forward = model.unet.forward

    def nan_at_step_3(*args, **kwargs):
        out = forward(*args, **kwargs)
        return type(out)(sample=out.sample * float("nan")) if model.step == 2 else out

    monkeypatch.setattr(model.unet, "forward", nan_at_step_3)
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 3; the last good checkpoint is .*0002"):
        train_diffusion(model, _images(), _config(steps=4), checkpoint_dir=tmp_path, progress=False)
    assert all(torch.isfinite(p).all() for p in model.unet.parameters())


def test_bad_inputs_raise_clear_errors():
    model = DiffusionModel(_config())
    cfg = _config()
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        train_diffusion(model, torch.rand(4, 1, 32, 32), cfg, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        train_diffusion(model, torch.rand(0, *SHAPE), cfg, progress=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        train_diffusion(model, torch.rand(4, *SHAPE) * 255, cfg, progress=False)
    with pytest.raises(ValueError, match="architecture"):
        train_diffusion(model, torch.rand(4, *SHAPE), _config(profile="cpu"), progress=False)
    with pytest.raises(ConfigError, match="divisible by 4.*Fix: resize or pad the images to e.g. 20x16"):
        DiffusionModel(_config(image_shape=(1, 18, 16)))
    with pytest.raises(ConfigError, match="divisible by 8"):
        DiffusionModel(_config(image_shape=(1, 36, 32), profile="cpu"))
    with pytest.raises(ConfigError, match="unknown diffusion profile"):
        DiffusionModel(_config(profile="huge"))


def test_sample_is_reproducible_by_seed_and_returns_images():
    model = DiffusionModel(_config())
    images = model.sample(3, steps=5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *SHAPE) and images.min() >= 0 and images.max() <= 1
    again = model.sample(3, steps=5, generator=torch.Generator().manual_seed(0))
    other = model.sample(3, steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(images, again) and (images - other).abs().mean() > 0.01
    assert (images[0] - images[1]).abs().mean() > 0.01  # one noise draw per image, not one for the batch
    assert set(dm.PROFILES) == {"tiny", "cpu", "paper"}
