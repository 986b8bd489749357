"""The one training loop: base, reward, SPL, evaluator and fine-tuning runs all step through `run_loop`.

A run supplies `step_fn(step) -> metrics` (one unit of work: a batch for the trainers, a trajectory for
the fine-tuners; it sets nothing but its own gradients and calls `optimizer.step()` itself), and the
loop owns what every run shares:

- the learning rate: `LRSchedule` (linear warm-up, then a cosine to `min_lr_ratio`), set on every
  optimizer param group before each step;
- the cadence of `save(step)` (resume points) and of logging, and one final save;
- hooks: `on_step(metrics)` after every step (a progress bar, a worker process reporting to the app)
  and `should_stop()` (cancel: the loop saves and returns `stopped=True`);
- non-finite metrics: a NaN or infinite metric raises `NonFiniteError` before any save, so the last
  good checkpoint on disk is what stays.

Exact resume is the caller's contract with the data: whatever `step_fn(step)` draws (batch, crops,
noise, timesteps) must be a function of (seed, step) only, e.g. `step_rng(seed, step)`, so a run
resumed at step k repeats the unbroken run from k on. The helpers below keep that contract for the
trainers: one stream per kind of draw (BATCH, ITEMS, NOISE, DROPOUT, EXTRA), `epoch_batch` (the
motions of a step when every epoch is a fresh permutation), `seed_torch` (torch's global RNG, which
dropout draws from), and the run folder: `open_run` (folder + resolved config) and `resume_point`
(weights + optimizer state of the last save).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from easytune.errors import UserError

log = logging.getLogger(__name__)

StepFn = Callable[[int], dict[str, Any]]


class NonFiniteError(UserError):
    """A loss or metric became NaN or infinite; the run stopped and kept its last saved checkpoint."""


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up over `warmup_steps` to `lr`, then a cosine down to `lr * min_lr_ratio` at `max_steps`."""

    lr: float
    max_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UserError(f"learning rate must be a finite number >= 0, got {self.lr}")
        if self.max_steps < 1 or self.warmup_steps < 0:
            raise UserError(f"need max_steps >= 1 and warmup_steps >= 0, got {self.max_steps}, {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise UserError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class LoopResult:
    step: int  # steps done in all (start_step + this call's)
    stopped: bool  # should_stop() ended it early
    last: dict[str, float] = field(default_factory=dict)  # the last step's metrics
    seconds: float = 0.0  # wall time of this call


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator that depends on (seed, step, stream) only: draw a step's data from it."""
    return np.random.default_rng([int(seed), int(step), int(stream)])


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A torch CPU generator seeded from (seed, step, stream) only (noise, timesteps, dropout masks)."""
    return torch.Generator().manual_seed(int(step_rng(seed, step, stream).integers(0, 2**62)))


# Streams of step_rng / step_generator, one per kind of draw, so that a draw of one kind (say, more
# noise) never shifts the numbers of another (the batch order).
BATCH, ITEMS, NOISE, DROPOUT, EXTRA = 0, 1, 2, 3, 4


def seed_torch(seed: int, step: int, stream: int = DROPOUT) -> None:
    """Seed torch's global RNG from (seed, step, stream): what modules draw without a generator
    (dropout masks) then repeats on resume. Call it at the start of a step."""
    torch.manual_seed(int(step_rng(seed, step, stream).integers(0, 2**62)))


def epoch_batch(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The items of step `step` when every epoch is a fresh permutation of all `n_items` (drawn from
    (seed, epoch)) cut into n_items // batch_size full batches: a pure function of (seed, step)."""
    per_epoch = n_items // batch_size
    if per_epoch < 1:
        raise UserError(f"the dataset split has {n_items} motions, fewer than batch_size={batch_size}; "
                        f"lower the batch size")
    epoch, i = divmod(int(step), per_epoch)
    order = step_rng(seed, epoch, BATCH).permutation(n_items)
    return order[i * batch_size:(i + 1) * batch_size].tolist()


def open_run(folder: str | os.PathLike, cfg: Any, config_name: str = "train_config.json") -> Path:
    """Create the run folder and write the run's resolved config (a dataclass) into it as JSON."""
    from easytune.config import save_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / config_name)
    return folder


def resume_point(folder: str | os.PathLike, optimizer: torch.optim.Optimizer, module: torch.nn.Module, *,
                 kind: str, prefix: str = "model.") -> int:
    """The step a run saved in `folder` (a checkpoint + its train state) reached, after loading the
    checkpoint's weights into `module` and the optimizer state into `optimizer`; 0 (and nothing
    loaded) when the folder holds no resume point."""
    from easytune.checkpoints import load_checkpoint, load_train_state, load_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return 0
    state = load_train_state(folder, optimizer)
    if state is None:
        return 0
    load_weights(module, load_checkpoint(folder, kind=kind).state, source=f"resume point {folder}", prefix=prefix)
    step = int(state[0]["step"])
    log.info("resuming from step %d", step)
    return step


def _scalar(value: Any) -> float:
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def run_loop(step_fn: StepFn, *, optimizer: torch.optim.Optimizer | None, schedule: LRSchedule | None,
             start_step: int = 0, max_steps: int | None = None, save: Callable[[int], None] | None = None,
             save_every: int = 0, log_every: int = 50, on_step: Callable[[dict[str, float]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, progress: bool = True,
             desc: str = "train") -> LoopResult:
    """Run steps start_step..max_steps-1 of `step_fn`; see the module docstring for the contract.

    max_steps defaults to schedule.max_steps. `on_step` gets {"step": steps done, "lr", **metrics}
    (floats). `save(step)` runs every `save_every` steps, at the end, and when stopped early.
    """
    from tqdm import tqdm

    if max_steps is None:
        if schedule is None:
            raise ValueError("run_loop needs max_steps or a schedule")
        max_steps = schedule.max_steps
    t0 = time.perf_counter()
    step, last, stopped = start_step, {}, False
    bar = tqdm(total=max_steps, initial=start_step, desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        while step < max_steps:
            if should_stop is not None and should_stop():
                stopped = True
                break
            lr = schedule.at(step) if schedule is not None else None
            if optimizer is not None and lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            raw = step_fn(step)
            metrics = {k: _scalar(v) for k, v in raw.items()}
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteError(f"{desc}: {', '.join(bad)} became {metrics[bad[0]]} at step {step + 1}; "
                                     f"the run stopped and kept its last saved checkpoint (step "
                                     f"{_last_save(start_step, step, save_every)}). Lower the learning rate "
                                     f"or check the data.")
            step += 1
            last = {"step": float(step), **({"lr": lr} if lr is not None else {}), **metrics}
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if not k.startswith("_")}, refresh=False)
            if log_every and (step % log_every == 0 or step == max_steps):
                log.info("%s step %d/%d  %s", desc, step, max_steps,
                         "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.startswith("_")))
            if on_step is not None:
                on_step(dict(last))
            if save is not None and save_every and step % save_every == 0 and step < max_steps:
                save(step)
        if save is not None and step > start_step:
            save(step)
    finally:
        bar.close()
    return LoopResult(step=step, stopped=stopped, last=last, seconds=time.perf_counter() - t0)


def _last_save(start: int, step: int, every: int) -> int:
    """The step of the last resume point written before `step` (start when none was)."""
    if not every:
        return start
    return max(start, (step // every) * every)
