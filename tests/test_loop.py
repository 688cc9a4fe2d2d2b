"""The one training loop: budget, schedule, divergence rules, history, checkpoints and exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalens.data.addata import ADData
from anomalens.errors import DataFormatError
from anomalens.loop import Loop, TrainingDivergedError


def _setup(folder=None, steps=6, **kw):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    loop = Loop("toy", steps, modules={"m": model}, optimizers={"o": optimizer}, generator=generator,
                folder=folder, progress=False, **kw)

    def step_fn(step: int) -> dict[str, float]:
        x = torch.randn(8, 3, generator=generator)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        value = loop.check(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": value}

    return loop, model, step_fn


def test_budget_history_schedule_and_exact_resume(tmp_path) -> None:
    straight, model, step_fn = _setup(lr_at=lambda s: 0.1 if s < 4 else 0.01, log_every=2)
    history = straight.run(step_fn)
    assert [h["step"] for h in history] == [2, 4, 6] and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["lr"] == 0.01 and straight.step == 6
    first, _, fn = _setup(tmp_path, steps=4, checkpoint_every=2, lr_at=lambda s: 0.1 if s < 4 else 0.01)
    first.run(fn)
    resumed, resumed_model, fn = _setup(tmp_path, steps=6, lr_at=lambda s: 0.1 if s < 4 else 0.01)
    assert resumed.resume() and resumed.step == 4
    resumed.run(fn)
    assert torch.equal(resumed_model.weight, model.weight) and torch.equal(resumed_model.bias, model.bias)


def test_a_nan_loss_stops_before_the_update_and_names_the_checkpoint(tmp_path) -> None:
    loop, model, step_fn = _setup(tmp_path, steps=5, checkpoint_every=1)

    def nan_at_3(step: int) -> dict[str, float]:
        if step == 2:
            loop.check(torch.tensor(float("nan")))
        return step_fn(step)

    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 3.*step_000002.*Fix: lower"):
        loop.run(nan_at_3)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_exploding_loss_is_divergence_too() -> None:
    loop, _, step_fn = _setup(steps=50, lr_at=lambda s: 5.0)  # far too large: the loss grows without bound
    with pytest.raises(TrainingDivergedError, match="loss exploded from"):
        loop.run(step_fn)
    assert loop.step < 50


def test_hooks_and_a_minutes_cap() -> None:
    calls = []
    loop, _, step_fn = _setup(steps=5, hooks=((2, calls.append),))
    loop.run(step_fn)
    assert calls == [2, 4, 5]
    capped, _, step_fn = _setup(steps=1000, minutes=1e-9)
    capped.run(step_fn)
    assert capped.step == 1 and capped.stopped_early


def test_nan_images_are_refused_where_the_task_is_built_not_blamed_on_the_learning_rate() -> None:
    images = torch.rand(4, 1, 8, 8)
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(DataFormatError, match="train_normal holds 1 NaN or infinite values.*Fix"):
        ADData(train_normal=images, test_x=torch.rand(2, 1, 8, 8), test_y=torch.tensor([0, 1]), name="bad")
