"""DRTune (Wu, Zhao, et al. 2024, "Deep Reward Supervisions for Tuning Text-to-Image Diffusion Models"),
on our motion sampler.

One trajectory: draw a stopping step uniformly among the last M sampling steps (`stop_last`, as ReFL)
and k training steps (`drtune_k`) evenly spaced over steps 0..stop with a random offset. The whole
chain up to the stopping step runs under autograd, but the denoiser's INPUT is detached at every step:
gradients never pass through the network's Jacobian in x_t (the source of DRaFT's exploding gradients),
only through the explicit DDIM updates between steps. The k training steps call the denoiser with
gradients; the others call it without. The stopping step's x0 prediction is scored by the reward (plus
the guards) and backpropagated in one optimizer step; the rest of the chain is never run. Memory for
backward grows with k (k calls), not with the number of sampling steps.

Parameterisation. DRTune is written for an epsilon-predicting network, where "stop the gradient at the
input" leaves x_t's explicit paths x0_hat = (x_t - sqrt(1 - a_t) eps(sg(x_t))) / sqrt(a_t) and the
DDIM update. Our base predicts x0 (f = the network), and converting f's output to eps with the
non-detached x_t would cancel x_t out of x0_hat entirely, leaving the earlier training steps no path to
the score. So the detached call returns  f(sg(x_t)) + (x_t - sg(x_t)) / sqrt(a_t):  the same value as f,
whose implied eps is exactly the network's eps at its detached input; the DDIM step then has the
epsilon parameterisation's gradient structure, as in the paper. For an epsilon-predicting base the
call is plainly eps(sg(x_t)).

Where our reading differs from the released code: none is public as far as we know; this follows the
paper's algorithm (training steps, stop-gradient input, early stop) with the x0 -> eps translation
above, the harness's guards in place of its regularisers, and one batch per optimizer step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from easytune.finetune.refl import stop_step
from easytune.training import NonFiniteError, step_rng


def training_steps(stop: int, k: int, seed: int, index: int) -> set[int]:
    """k steps evenly spaced over 0..stop (spacing (stop + 1) // k) with a random offset in the spacing."""
    k = min(k, stop + 1)
    gap = (stop + 1) // k
    offset = int(step_rng(seed, index, 3).integers(gap))
    return {offset + j * gap for j in range(k)}


def input_detached(model: torch.nn.Module, scheduler: Any, *, grad: bool) -> Callable[..., torch.Tensor]:
    """The denoiser with its input detached, its output in a form whose DDIM step keeps x_t's explicit
    (epsilon-parameterisation) path; `grad` False runs the network without gradients."""
    x0_prediction = scheduler.config.prediction_type == "x0"

    def call(x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            out = model(x.detach(), t, *args, **kwargs)
        if x0_prediction:  # value f; implied eps = the network's eps at sg(x)
            out = out + (x - x.detach()) / scheduler._abar(t, x).sqrt()
        return out
    return call


def trajectory(run: Any, index: int) -> dict[str, float]:
    """One DRTune trajectory (run: easytune.finetune.harness.FinetuneRun); returns its metrics."""
    cfg = run.cfg
    prep = run.prepare_batch(index)
    sampler = prep.sampler(run.model, run.bundle.diffusion)
    stop = stop_step(len(sampler), cfg.stop_last, cfg.seed, index)
    trained = training_steps(stop, cfg.drtune_k, cfg.seed, index)
    with_grad = input_detached(run.model, sampler.scheduler, grad=True)
    without = input_detached(run.model, sampler.scheduler, grad=False)
    # --- the chain up to the stopping step under autograd, the denoiser's input detached ---
    x = prep.x_T
    with torch.enable_grad():
        for i in range(stop + 1):
            s = sampler.step(x, i, denoiser=with_grad if i in trained else without)
            x = s.out.prev_sample
        terms = run.objective(s, sampler, prep)  # the stopping step's x0 prediction
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the DRTune loss became {loss.item()} at trajectory {index + 1}, step {stop}; "
                             f"the run stopped and kept its last saved checkpoint. Lower the learning rate.")
    loss.backward()
    metrics = {name: float(v.detach()) for name, v in terms.items()}
    metrics["grad_norm"] = run.clip_and_step()
    metrics["stop_step"] = float(stop)
    metrics["optimized_steps"] = float(len(trained))
    return metrics
