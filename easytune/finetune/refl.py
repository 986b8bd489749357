"""ReFL (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation", Reward Feedback Learning), on our motion sampler.

One trajectory, for a batch of training prompts: draw a stopping step uniformly among the last M
sampling steps (`stop_last`), run the schedule WITHOUT gradients up to it, make ONE gradient-enabled
guided denoiser call there, score its guided x0 prediction with the reward (plus the harness's guards),
backpropagate through that one call, take one optimizer step, and stop: the rest of the chain is never
run. Memory for backward is one denoiser call, like EasyTune; the difference is one update per
trajectory, always late in the chain, and no final sample.

Where our reading differs from the released code (ImageReward's `train_refl.py`, as we read it): it
picks the step among the last 10 of 40 (`mid_timestep = randint(30, 39)`), adds a pretraining
(denoising) loss on real images to every reward step and scales the reward loss by `grad_scale`. Here M
is a setting relative to our step count, the regulariser is the harness's base penalty and physical
guards (shared by every method), and the reward weight is the harness's `reward_weight`.
"""

from __future__ import annotations

from typing import Any

import torch

from easytune.training import NonFiniteError, step_rng


def stop_step(n: int, last: int, seed: int, index: int) -> int:
    """The schedule index a trajectory stops at: uniform over the last min(last, n) of n steps,
    a function of (seed, index) only (stream 2: EasyTune's step choice uses 1)."""
    m = min(last, n)
    return n - m + int(step_rng(seed, index, 2).integers(m))


def trajectory(run: Any, index: int) -> dict[str, float]:
    """One ReFL trajectory (run: easytune.finetune.harness.FinetuneRun); returns its metrics."""
    cfg = run.cfg
    prep = run.prepare_batch(index)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    stop = stop_step(len(sampler), cfg.stop_last, cfg.seed, index)
    # --- no gradients up to the stopping step ---
    x = prep.x_T
    for s in sampler.iterate(x, stop=stop):
        x = s.out.prev_sample
    # --- one gradient-enabled call there, scored on its x0, one update, stop ---
    with torch.enable_grad():
        s = sampler.step(x, stop)
        terms = run.objective(s, sampler, prep)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the ReFL loss became {loss.item()} at trajectory {index + 1}, step {stop}; "
                             f"the run stopped and kept its last saved checkpoint. Lower the learning rate.")
    loss.backward()
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["grad_norm"] = run.clip_and_step()
    metrics["stop_step"] = float(stop)
    metrics["optimized_steps"] = 1.0
    return metrics
