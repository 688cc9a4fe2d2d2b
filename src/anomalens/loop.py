"""The one training loop every trainer in the library is a recipe on: detectors (epochs of steps),
the counterfactual explainer, the diffusion model, the oracle and autoencoder pre-training.

A trainer supplies ``step_fn(step) -> {term: value}``, which draws its batch from the loop's random
generator and updates its own optimizers (calling ``loop.check`` on a loss before ``backward`` so
that a NaN never reaches the weights). The loop owns the rest, once:

- a **step budget** (the same result on any machine) and an optional wall-clock cap (``minutes``);
- the learning-rate schedule (``lr_at(step)`` applied to every optimizer before each step);
- **divergence**: a non-finite loss, or a logged loss ``divergence`` times larger than the first
  one (at least 1), stops training with ``TrainingDivergedError`` naming the last good checkpoint;
- progress (``Progress``) and a history entry (mean of every term) every ``log_every`` steps;
- a checkpoint every ``checkpoint_every`` steps, at the end and on Ctrl-C, holding every module,
  optimizer and the random generator, so that a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from anomalens.checkpoints import last_checkpoint, load_checked, optimizer_state, restore_optimizer, save_checkpoint
from anomalens.errors import AnomalensError
from anomalens.progress import Progress

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _deferred_interrupt():
    """Ctrl-C (SIGINT) during a step is held until the step has finished, so that the checkpoint written
    on interrupt is a whole step (an exact resume); a second Ctrl-C interrupts at once. Outside the main
    thread, where signal handlers cannot be installed, Ctrl-C interrupts at once and the last periodic
    checkpoint is what a rerun resumes from."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def hold(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class TrainingDivergedError(AnomalensError, RuntimeError):
    """The loss became NaN, infinite or exploded; the last good checkpoint is kept."""


StepFn = Callable[[int], dict[str, float]]


class Loop:
    """``Loop(label, steps, modules=..., optimizers=..., generator=...)``, then ``resume()`` and ``run(step_fn)``.

    ``steps_per_epoch`` makes the history and progress speak in epochs too (detectors); set
    ``checkpoint_every`` to it for checkpoints at epoch boundaries. ``hooks`` are ``(every, fn)``
    pairs called with the step number every ``every`` steps and at the end (sample grids)."""

    def __init__(self, label: str, steps: int, *, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], generator: torch.Generator,
                 folder: str | Path | None = None, checkpoint_every: int = 250, log_every: int = 50,
                 minutes: float | None = None, progress: bool = True, lr_at: Callable[[int], float] | None = None,
                 steps_per_epoch: int | None = None, save_on_interrupt: bool = True, divergence: float = 1e4,
                 hooks: tuple[tuple[int, Callable[[int], None]], ...] = (), fix: str = "lower the learning rate"):
        self.label, self.steps = label, steps
        self.modules, self.optimizers, self.generator = modules, optimizers, generator
        self.folder = Path(folder) if folder is not None else None
        self.checkpoint_every, self.log_every = max(1, checkpoint_every), max(1, log_every)
        self.minutes, self.lr_at, self.steps_per_epoch = minutes, lr_at, steps_per_epoch
        self.save_on_interrupt, self.divergence, self.hooks, self.fix = save_on_interrupt, divergence, hooks, fix
        self.progress = progress
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.reference: float | None = None  # the first loss, for the divergence rule
        self.saved: Path | None = None
        self.stopped_early = False

    # ------------------------------------------------------------------------------ checkpoints

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {"history": self.history, "reference": self.reference, "optimizers": {}}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, optimizer in self.optimizers.items():
            state, meta["optimizers"][name] = optimizer_state(optimizer, f"optim_{name}")
            tensors.update(state)
        tensors["rng"] = self.generator.get_state()
        return tensors, meta

    def save(self) -> Path | None:
        if self.folder is None:
            return None
        tensors, meta = self.state()
        self.saved = save_checkpoint(self.folder, self.step, tensors, meta)
        return self.saved

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in ``folder``; False when there is none."""
        found = last_checkpoint(self.folder) if self.folder is not None else None
        if found is None:
            return False
        step, tensors, meta = found
        source = self.folder / f"step_{step:06d}.safetensors"
        for name, module in self.modules.items():
            prefix = name + "."
            load_checked(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, source)
        for name, optimizer in self.optimizers.items():
            restore_optimizer(optimizer, tensors, meta["optimizers"][name], f"optim_{name}")
        self.generator.set_state(tensors["rng"])
        self.step, self.history, self.reference = step, meta.get("history", []), meta.get("reference")
        self.saved = source
        log.info(f"{self.label}: resumed at step {step} from {source}")
        return True

    # ----------------------------------------------------------------------------------- checks

    def check(self, loss: Tensor | float, what: str = "loss") -> float:
        """The loss as a float; ``TrainingDivergedError`` when it is NaN or infinite (call before backward)."""
        value = float(loss.detach().item() if isinstance(loss, Tensor) else loss)
        if not math.isfinite(value):
            self._diverged(f"{what} became {value} at step {self.step + 1}" + (f" {self._epoch_note()}"
                                                                                if self.steps_per_epoch else ""))
        if self.reference is None:
            self.reference = max(1.0, abs(value))
        return value

    def _diverged(self, what: str) -> None:
        where = f"; the last good checkpoint is {self.saved}" if self.saved is not None else ""
        lr = f" (now {self.optimizers[next(iter(self.optimizers))].param_groups[0]['lr']:g})" if self.optimizers else ""
        raise TrainingDivergedError(f"{self.label}: {what}{where}. Fix: {self.fix}{lr}; if it happens at the first "
                                    "step, check the input data for NaN or extreme values")

    # ------------------------------------------------------------------------------------- loop

    def _epoch_note(self) -> str:
        if not self.steps_per_epoch:
            return ""
        total = math.ceil(self.steps / self.steps_per_epoch)
        return f"(epoch {min(total, self.step // self.steps_per_epoch + 1)}/{total})"

    def run(self, step_fn: StepFn) -> list[dict[str, float]]:
        """Run ``step_fn`` from the current step to the budget; returns the history."""
        bar = Progress(self.steps, self.label, start=self.step, every=self.log_every, enabled=self.progress)
        with _deferred_interrupt() as interrupted:
            try:
                self._run(step_fn, bar, interrupted)
            except KeyboardInterrupt:
                bar.close()
                raise
        bar.close()
        if self.folder is not None and (self.saved is None or self.saved.name != f"step_{self.step:06d}.safetensors"):
            self.save()
        return self.history

    def _run(self, step_fn: StepFn, bar: Progress, interrupted: list[bool]) -> None:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        started = window_start = time.perf_counter()
        while self.step < self.steps:
            if self.lr_at is not None:
                for optimizer in self.optimizers.values():
                    for group in optimizer.param_groups:
                        group["lr"] = self.lr_at(self.step)
            terms = step_fn(self.step)
            self._check_growth(terms)
            self.step += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value)
                counts[key] = counts.get(key, 0) + 1
            means = {k: sums[k] / counts[k] for k in sums}
            bar.update(self.step, means, self._epoch_note())
            if self.step % self.log_every == 0 or self.step == self.steps:
                self._log_window(means, time.perf_counter() - window_start)
                sums.clear()
                counts.clear()
                window_start = time.perf_counter()
            for every, hook in self.hooks:
                if self.step % every == 0 or self.step == self.steps:
                    hook(self.step)
            if self.step % self.checkpoint_every == 0:
                self.save()
            if interrupted[0]:  # Ctrl-C arrived during the step: the state is whole again, keep it
                if self.save_on_interrupt and self.save() is not None:
                    log.info(f"{self.label}: interrupted at step {self.step}; run the same command again to "
                             f"resume from {self.saved}")
                raise KeyboardInterrupt
            if self.minutes is not None and time.perf_counter() - started > self.minutes * 60:
                self.stopped_early = self.step < self.steps
                log.info(f"{self.label}: time cap of {self.minutes} min reached at step {self.step}/{self.steps}; "
                         "run again with the same budget to continue")
                break

    def _log_window(self, means: dict[str, float], seconds: float) -> None:
        entry: dict[str, float] = {"step": self.step}
        if self.steps_per_epoch:
            entry["epoch"] = math.ceil(self.step / self.steps_per_epoch)
        entry.update(means)
        entry["seconds"] = seconds
        if self.optimizers:
            entry["lr"] = self.optimizers[next(iter(self.optimizers))].param_groups[0]["lr"]
        self.history.append(entry)

    def _check_growth(self, terms: dict[str, float]) -> None:
        """The first term (the total loss) must stay within ``divergence`` times the first loss seen."""
        main = next(iter(terms.values()), None)
        if main is not None and self.reference is not None and abs(float(main)) > self.divergence * self.reference:
            self._diverged(f"the loss exploded from {self.reference:.4g} to {float(main):.4g} at step {self.step + 1}")


def trained_seconds(history: list[dict[str, float]], this_attempt: float) -> float:
    """Training time over every attempt of a resumed run: the history's windows (restored from the
    checkpoint) carry earlier attempts' seconds, so a rerun of a finished run does not report ~0 s."""
    return max(this_attempt, sum(entry.get("seconds", 0.0) for entry in history or []))
