"""Schedule maths, DDIM step, guidance and the sampling loop (tiny denoiser, no data needed)."""

from __future__ import annotations

import math

import pytest
import torch

from easytune.diffusion import (DDIMScheduler, DiffusionConfig, TextCondition, guided_output, initial_noise, make_betas,
                                Sampler)
from easytune.errors import UserError
from models.denoiser import DenoiserConfig, MotionDenoiser

TINY = DenoiserConfig(d_model=32, layers=1, heads=2, ff_mult=2, dropout=0.0, frames_per_token=2)


def _tiny_model(seed: int = 0) -> MotionDenoiser:
    torch.manual_seed(seed)
    m = MotionDenoiser(TINY).eval()
    # A zero-initialised head would make every test trivially pass; give it real weights.
    torch.nn.init.normal_(m.motion_out.weight, std=0.05)
    return m


def _cond(B: int = 2, L: int = 5) -> TextCondition:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1:, 3:] = False
    return TextCondition(torch.randn(B, L, 384, generator=g), mask)


@pytest.mark.parametrize("schedule", ["cosine", "scaled_linear"])
def test_schedule_values(schedule):
    cfg = DiffusionConfig(beta_schedule=schedule)
    betas = make_betas(cfg)
    abar = DDIMScheduler(cfg).alphas_cumprod
    assert betas.shape == (1000,) and torch.all(betas > 0) and torch.all(betas < 1)
    assert torch.all(abar[1:] < abar[:-1])  # strictly more noise with t
    if schedule == "scaled_linear":
        assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
        assert abar[-1].item() == pytest.approx(0.004660, rel=1e-3)
    else:
        # cosine: alpha_bar_t = f(t+1)/f(0), f(u) = cos^2(((u/T)+s)/(1+s) pi/2)
        f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        assert abar[499].item() == pytest.approx(f(500) / f(0), rel=1e-5)
        assert abar[0].item() == pytest.approx(f(1) / f(0), rel=1e-6)


@pytest.mark.parametrize("prediction", ["x0", "epsilon"])
def test_noising_and_prediction_are_exact_inverses(prediction):
    sched = DDIMScheduler(DiffusionConfig(prediction_type=prediction))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 10, 263, generator=g), torch.randn(4, 10, 263, generator=g)
    t = torch.tensor([0, 10, 500, 990])
    xt = sched.add_noise(x0, noise, t)
    target = sched.training_target(x0, noise)
    x0_hat, eps_hat = sched.split_prediction(target, t, xt)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, noise, atol=2e-4, rtol=1e-4)
    # noising the recovered pair gives x_t back
    torch.testing.assert_close(sched.add_noise(x0_hat, eps_hat, t), xt, atol=1e-5, rtol=1e-5)


def test_timesteps_and_exact_ddim_step():
    sched = DDIMScheduler()
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 749, 499, 249]
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [999]
    sched.set_timesteps(50)
    assert sched.timesteps[0].item() == 999 and sched.timesteps[-1].item() == 19 and len(sched.timesteps) == 50
    # With the true x0 as model output, a deterministic step lands exactly on the forward-noised x0 at
    # t_prev with the same noise (DDIM's defining property); the last step returns x0 itself.
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 6, 263, generator=g), torch.randn(2, 6, 263, generator=g)
    sched.set_timesteps(4)
    xt = sched.add_noise(x0, noise, 499)
    out = sched.step(x0, 499, xt)
    torch.testing.assert_close(out.prev_sample, sched.add_noise(x0, noise, 249), atol=1e-5, rtol=1e-5)
    assert torch.all(out.log_prob == 0)  # eta=0: point mass
    last = sched.step(x0, 249, sched.add_noise(x0, noise, 249))
    torch.testing.assert_close(last.prev_sample, x0, atol=1e-5, rtol=1e-5)


def test_step_log_prob_matches_gaussian_density_and_has_grad():
    sched = DDIMScheduler()
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 263, generator=g)
    model_out = torch.randn(2, 4, 263, generator=g, requires_grad=True)
    out = sched.step(model_out, 499, x, eta=1.0, generator=torch.Generator().manual_seed(5))
    # recompute the density by hand
    a_t, a_p = sched.alphas_cumprod[499], sched.alphas_cumprod[399]
    var = (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
    eps = (x - a_t.sqrt() * model_out) / (1 - a_t).sqrt()
    mean = a_p.sqrt() * model_out + (1 - a_p - var).sqrt() * eps
    ref = torch.distributions.Normal(mean, var.sqrt()).log_prob(out.prev_sample.detach()).flatten(1).sum(1)
    torch.testing.assert_close(out.log_prob, ref, atol=1e-2, rtol=1e-5)
    out.log_prob.sum().backward()
    assert model_out.grad is not None and model_out.grad.abs().sum() > 0
    # masking frames removes their terms
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    masked = sched.step(model_out, 499, x, eta=1.0, prev_sample=out.prev_sample, mask=mask).log_prob
    assert masked[1].item() == pytest.approx(out.log_prob[1].item(), rel=1e-6)
    assert abs(masked[0].item()) < abs(out.log_prob[0].item())


def test_sampler_deterministic_for_seed_and_steps_run():
    model, sched = _tiny_model(), DDIMScheduler()
    cond = _cond()

    def run(seed, steps, eta=0.0):
        with torch.inference_mode():
            g = torch.Generator().manual_seed(seed)
            sampler = Sampler(model, sched, cond, None, guidance=2.5, steps=steps, eta=eta, generator=g)
            return sampler.sample(initial_noise((2, 9, 263), g, "cpu"))

    a, b, c = run(0, 5, 0.5), run(0, 5, 0.5), run(1, 5, 0.5)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    one, fifty = run(0, 1), run(0, 50)
    assert one.shape == fifty.shape == (2, 9, 263)
    assert torch.isfinite(one).all() and torch.isfinite(fifty).all()
    assert not torch.allclose(one, fifty)
    # 1 deterministic step from pure noise returns the model's x0 prediction at t=999
    x_T = torch.randn(2, 9, 263, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pred = guided_output(model, x_T, torch.full((2,), 999), cond, None, 2.5)
    torch.testing.assert_close(one, pred, atol=1e-5, rtol=1e-5)


def test_one_step_epsilon_model_returns_its_x0_estimate():
    sched = DDIMScheduler(DiffusionConfig(prediction_type="epsilon", beta_schedule="scaled_linear"))
    model, cond = _tiny_model(), _cond()
    x_T = torch.randn(2, 9, 263, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = Sampler(model, sched, cond, None, guidance=1.5, steps=1).sample(x_T)
        eps = guided_output(model, x_T, torch.full((2,), 999), cond, None, 1.5)
    a = sched.alphas_cumprod[999]
    torch.testing.assert_close(got, (x_T - (1 - a).sqrt() * eps) / a.sqrt(), atol=1e-3, rtol=1e-4)


def test_guidance_one_is_conditional_and_batching_is_exact():
    model, sched = _tiny_model(), DDIMScheduler()
    cond = _cond()
    x = torch.randn(2, 7, 263, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700, 700])
    with torch.inference_mode():
        c = model(x, t, cond.tokens, cond.mask)
        u = model(x, t, cond.tokens, cond.mask, drop_text=torch.ones(2, dtype=torch.bool))
        torch.testing.assert_close(guided_output(model, x, t, cond, None, 1.0), c)
        torch.testing.assert_close(guided_output(model, x, t, cond, None, 0.0), u)
        torch.testing.assert_close(guided_output(model, x, t, cond, None, 3.0), u + 3.0 * (c - u),
                                   atol=1e-5, rtol=1e-5)
        assert not torch.allclose(c, u)  # the text really conditions the output
        # sampling with guidance 1 equals a loop over the conditional model alone
        g = torch.Generator().manual_seed(4)
        got = Sampler(model, sched, cond, None, guidance=1.0, steps=3).sample(initial_noise((2, 7, 263), g, "cpu"))
        sched.set_timesteps(3)
        y = torch.randn(2, 7, 263, generator=torch.Generator().manual_seed(4))
        for tt in sched.timesteps.tolist():
            y = sched.step(model(y, torch.full((2,), tt), cond.tokens, cond.mask), tt, y).prev_sample
    torch.testing.assert_close(got, y)


def test_sampler_step_follows_the_callers_grad_mode_and_input():
    model, sched = _tiny_model(), DDIMScheduler()
    cond = _cond(1)
    sampler = Sampler(model, sched, cond, None, guidance=2.0, steps=4)
    x_T = torch.randn(1, 6, 263, generator=torch.Generator().manual_seed(0))
    steps = list(sampler.iterate(x_T))
    assert [s.i for s in steps] == [0, 1, 2, 3] and [s.t for s in steps] == sched.timesteps.tolist()
    assert not any(s.out.pred_x0.requires_grad for s in steps)  # iterate: no gradients anywhere
    assert torch.equal(steps[1].x_t, steps[0].out.prev_sample)
    # EasyTune's rule: a detached x_t and one grad-enabled call reach the weights, not earlier steps
    x = steps[1].x_t.clone().requires_grad_(True)
    with torch.enable_grad():
        s2 = sampler.step(x.detach(), 2)
    model.zero_grad()
    s2.out.pred_x0.pow(2).mean().backward()
    assert model.motion_out.weight.grad is not None and model.motion_out.weight.grad.abs().sum() > 0
    assert x.grad is None
    # DRaFT's rule: without the detach, the chain carries gradient back to the earlier sample
    with torch.enable_grad():
        a = sampler.step(x, 1)
        b = sampler.step(a.out.prev_sample, 2)
        (grad,) = torch.autograd.grad(b.out.pred_x0.sum(), x)
    assert grad.abs().sum() > 0
    # a step equals its own maths: the guided output at (x_t, t) fed to the scheduler
    with torch.no_grad():
        ref = sched.step(guided_output(model, steps[3].x_t, torch.full((1,), steps[3].t), cond, None, 2.0),
                         steps[3].t, steps[3].x_t)
    torch.testing.assert_close(steps[3].out.prev_sample, ref.prev_sample)
    # the reference-model slot: another network with the same condition and schedule
    other = _tiny_model()
    torch.nn.init.normal_(other.motion_out.weight, std=0.1)
    with torch.no_grad():
        assert not torch.allclose(sampler.step(x_T, 0, denoiser=other).out.pred_x0, steps[0].out.pred_x0)


def test_bad_settings_raise_user_errors():
    sched = DDIMScheduler()
    with pytest.raises(UserError, match="steps"):
        sched.set_timesteps(0)
    with pytest.raises(UserError, match="steps"):
        sched.set_timesteps(1001)
    with pytest.raises(UserError, match="guidance"):
        Sampler(_tiny_model(), sched, _cond(), None, guidance=25.0, steps=2)
    with pytest.raises(UserError, match="steps"):
        Sampler(_tiny_model(), sched, _cond(), None, guidance=2.0, steps=2.5)
    sched.set_timesteps(2)
    with pytest.raises(UserError, match="eta"):
        sched.step(torch.zeros(1, 2, 263), 999, torch.zeros(1, 2, 263), eta=1.5)
    with pytest.raises(UserError, match="beta_start"):
        DDIMScheduler(DiffusionConfig(beta_schedule="scaled_linear", beta_start=0.1, beta_end=0.01))
