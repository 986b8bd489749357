"""AlignProp (Prabhudesai, Goyal, Pathak, Fragkiadaki 2023, "Aligning Text-to-Image Diffusion Models with
Reward Backpropagation"), on our motion sampler.

One trajectory: draw a truncation K uniformly from [align_k_min, align_k_max] (0 = the step count),
once per trajectory; the first n - K steps run without gradients, the last K with gradients and no
detach (as DRaFT-K), and the reward of the final sample (the last step's guided x0 prediction)
backpropagates through them in one optimizer step. Each gradient-enabled denoiser call is wrapped in
gradient checkpointing (torch.utils.checkpoint, non-reentrant): autograd keeps only the call's inputs
and the cheap ops around it, and backward recomputes each call's activations one at a time. Same
gradient as without checkpointing (`checkpointing=False`, for comparison), less memory held for
backward, about one extra forward per optimized call.

Where our reading differs from the released code (mihirp1998/AlignProp, as we read it): it draws the
truncation point anew at every sampling step (`random.randint(*truncated_backprop_minmax)` inside the
loop, defaults (35, 45) of 50 steps), runs the steps before it with gradients enabled and detaches
their noise predictions; it enables the UNet's own gradient checkpointing (per block) and trains a
LoRA. Here K is drawn once per trajectory, as the paper describes it; the steps before it run under
no_grad (the same gradient, as nothing before them depends on the weights once detached); each whole
denoiser call is one checkpoint; LoRA is the harness's `lora_rank`, shared by every method.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint

from easytune.training import NonFiniteError, step_rng


def checkpointed(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The denoiser as a callable whose every call is one gradient checkpoint."""
    def call(*args: Any, **kwargs: Any) -> torch.Tensor:
        return checkpoint(model, *args, use_reentrant=False, **kwargs)
    return call


def truncation(n: int, lo: int, hi: int, seed: int, index: int) -> int:
    """K for trajectory `index`: uniform on [lo, hi] clipped to [1, n] (hi 0 = n)."""
    hi = min(hi or n, n)
    lo = min(lo, hi)
    return lo + int(step_rng(seed, index, 2).integers(hi - lo + 1))


def trajectory(run: Any, index: int) -> dict[str, float]:
    """One AlignProp trajectory (run: easytune.finetune.harness.FinetuneRun); returns its metrics."""
    cfg = run.cfg
    prep = run.prepare_batch(index)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    n = len(sampler)
    k = truncation(n, cfg.align_k_min, cfg.align_k_max, cfg.seed, index)
    call = checkpointed(run.model) if cfg.checkpointing else run.model
    # --- the first n - K steps without gradients ---
    x = prep.x_T
    for s in sampler.iterate(x, stop=n - k):
        x = s.out.prev_sample
    # --- the last K steps with (checkpointed) gradients, reward on the final sample ---
    with torch.enable_grad():
        for i in range(n - k, n):
            s = sampler.step(x, i, denoiser=call)
            x = s.out.prev_sample
        terms = run.objective(s, sampler, prep)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the AlignProp loss became {loss.item()} at trajectory {index + 1}; the run "
                             f"stopped and kept its last saved checkpoint. Lower the learning rate.")
    loss.backward()
    metrics = {name: float(v.detach()) for name, v in terms.items()}
    metrics["grad_norm"] = run.clip_and_step()
    metrics["final_reward"] = run.final_reward(sampler.finish(x.detach()), prep)
    metrics["optimized_steps"] = float(k)
    return metrics
