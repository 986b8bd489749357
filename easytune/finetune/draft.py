"""DRaFT (Clark, Vicol, Swersky, Fleet 2024, "Directly Fine-Tuning Diffusion Models on Differentiable
Rewards"): DRaFT-K and DRaFT-LV, on our motion sampler.

DRaFT-K (`trajectory`): sample the whole schedule; the first n - K steps run without gradients, the last
K (`draft_k`, clipped to the step count) run WITH gradients and without any detach, so the reward of the
final sample backpropagates through the chain of the last K guided denoiser calls (and the DDIM updates
between them). One optimizer step per trajectory. K = n is full backpropagation through sampling (the
paper's DRaFT-50 at 50 steps); memory for backward grows linearly in K, where EasyTune's is one call.
The final sample is the last step's guided x0 prediction (the last DDIM step lands on x0 exactly), so
the harness's objective on that step scores the final sample.

DRaFT-LV (`trajectory_lv`): the paper's low-variance K = 1 estimator. Sample the whole chain without
gradients, then re-noise the final sample n times (`lv_n`) to the last step's noise level, make one
gradient-enabled denoiser call on each, score each call's x0 prediction, and average the n one-step
gradients (each backpropagated on its own, so memory stays one call) into one optimizer step.

Where our reading differs from the released code: DRaFT's own code is not public (the paper's Stable
Diffusion runs use LoRA and gradient checkpointing); here LoRA is the harness's `lora_rank`, available
to every method, and no checkpointing is applied, so DRaFT-K's memory is the plain cost of keeping K
calls for backward (AlignProp, alignprop.py, is the checkpointed one). DRaFT-LV's extra denoising
passes re-noise at the last step of *our* schedule (timestep `timesteps[-1]`), not at a fixed t = 1.
"""

from __future__ import annotations

from typing import Any

import torch

from easytune.diffusion import initial_noise
from easytune.training import NonFiniteError, step_rng


def _update(run: Any, loss: torch.Tensor, what: str, index: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the {what} loss became {loss.item()} at trajectory {index + 1}; the run stopped "
                             f"and kept its last saved checkpoint. Lower the learning rate.")
    loss.backward()


def trajectory(run: Any, index: int) -> dict[str, float]:
    """One DRaFT-K trajectory (run: easytune.finetune.harness.FinetuneRun); returns its metrics."""
    cfg = run.cfg
    prep = run.prepare_batch(index)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    n = len(sampler)
    k = min(cfg.draft_k, n)
    # --- the first n - K steps without gradients ---
    x = prep.x_T
    for s in sampler.iterate(x, stop=n - k):
        x = s.out.prev_sample
    # --- the last K steps with gradients, nothing detached, reward on the final sample ---
    with torch.enable_grad():
        for i in range(n - k, n):
            s = sampler.step(x, i)
            x = s.out.prev_sample
        terms = run.objective(s, sampler, prep)
    _update(run, terms["loss"], f"DRaFT-{k}", index)
    metrics = {name: float(v.detach()) for name, v in terms.items()}
    metrics["grad_norm"] = run.clip_and_step()
    metrics["final_reward"] = run.final_reward(sampler.finish(x.detach()), prep)
    metrics["optimized_steps"] = float(k)
    return metrics


def lv_noise(run: Any, index: int, shape: torch.Size, device: torch.device) -> list[torch.Tensor]:
    """The n re-noising draws of trajectory `index` (a function of (seed, index) only)."""
    g = torch.Generator().manual_seed(int(step_rng(run.cfg.seed, index, 2).integers(0, 2**40)))
    return [initial_noise(shape, g, device) for _ in range(run.cfg.lv_n)]


def trajectory_lv(run: Any, index: int) -> dict[str, float]:
    """One DRaFT-LV trajectory: n re-noised one-step gradients of the final sample, averaged."""
    prep = run.prepare_batch(index)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    last = len(sampler) - 1
    # --- the whole chain without gradients ---
    x0 = sampler.sample(prep.x_T)
    final = run.final_reward(x0, prep)
    # --- n re-noisings to the last step's level, one gradient-enabled call each ---
    t = sampler.timesteps[last]
    sums: dict[str, float] = {}
    for eps in lv_noise(run, index, x0.shape, x0.device):
        x_t = sampler.scheduler.add_noise(x0, eps, t)
        with torch.enable_grad():
            s = sampler.step(x_t, last)
            terms = run.objective(s, sampler, prep)
        _update(run, terms["loss"] / run.cfg.lv_n, "DRaFT-LV", index)  # grads accumulate: their mean
        for name, v in terms.items():
            sums[name] = sums.get(name, 0.0) + float(v.detach()) / run.cfg.lv_n
    sums["grad_norm"] = run.clip_and_step()
    sums["final_reward"] = final
    sums["optimized_steps"] = 1.0
    return sums
