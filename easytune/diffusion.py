"""Noise schedule, DDIM sampler and classifier-free guidance, apart from the denoiser (diffusers-like).

Symbols (Song et al. 2021, DDIM), all per training timestep t in [0, T):
    alpha_bar_t  = prod_{s<=t} (1 - beta_s)             `alphas_cumprod[t]`
    x_t          = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps      (forward noising, `add_noise`)
    sigma_t(eta) = eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)   (DDIM step noise)
    x_prev       = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z

The denoiser predicts either x0 ("x0", MDM's choice) or eps ("epsilon"); `split_prediction`
converts either to (x0_hat, eps_hat) exactly. The scheduler never calls the model: a loop calls
`model -> guidance -> scheduler.step`, one step at a time: `Sampler.step(x_t, i)` is one guided call and
one DDIM step under the caller's grad mode, so every fine-tuning method (easytune/finetune/) owns its
own loop, with its own gradient, detach and stop rules; `Sampler.iterate` is the plain no-grad loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import torch

from easytune.errors import UserError

MIN_STEPS, MAX_STEPS = 1, 1000
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0


def check_steps(steps: int) -> int:
    """Sampling steps as an int in [1, 1000], or a UserError naming the range."""
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or int(steps) != steps \
            or not MIN_STEPS <= int(steps) <= MAX_STEPS:
        raise UserError(f"steps must be an integer from {MIN_STEPS} to {MAX_STEPS}, got {steps}")
    return int(steps)


@dataclass
class DiffusionConfig:
    """How noise is added in training and removed in sampling; saved in every base checkpoint."""

    num_train_timesteps: int = field(default=1000, metadata={
        "help": "number of training noise levels T; sampling picks a subset of them"})
    beta_schedule: Literal["cosine", "scaled_linear"] = field(default="cosine", metadata={
        "help": "cosine (Nichol & Dhariwal; MDM's choice) or scaled_linear (Stable Diffusion's)"})
    beta_start: float = field(default=0.00085, metadata={"help": "first beta of scaled_linear (unused by cosine)"})
    beta_end: float = field(default=0.012, metadata={"help": "last beta of scaled_linear (unused by cosine)"})
    prediction_type: Literal["x0", "epsilon"] = field(default="x0", metadata={
        "help": "what the denoiser predicts: x0 (clean motion, lets rewards read it directly) or epsilon"})

    def validate(self) -> None:
        if not 2 <= self.num_train_timesteps <= 10_000:
            raise UserError(f"num_train_timesteps must be in [2, 10000], got {self.num_train_timesteps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise UserError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")


@dataclass
class StepOutput:
    """One DDIM step. prev_sample: x_{t_prev} (B, ...); pred_x0: the step's x0 estimate (B, ...);
    log_prob: (B,) log-density of prev_sample under the step's Gaussian N(mean, sigma^2 I), summed over
    (valid) elements. For a deterministic step (eta=0, or the last step) sigma is 0 and the transition
    is a point mass: log_prob is then 0 (log of probability one) and carries no gradient signal."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor
    log_prob: torch.Tensor


def make_betas(cfg: DiffusionConfig) -> torch.Tensor:
    """(T,) float64 betas."""
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "cosine":
        s = 0.008  # offset that keeps beta_0 from being vanishingly small (Improved DDPM)
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - f[1:] / f[:-1]
        return betas.clamp(max=0.999)
    if cfg.beta_schedule == "scaled_linear":
        return torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float64) ** 2
    raise UserError(f"beta_schedule must be 'cosine' or 'scaled_linear', got {cfg.beta_schedule!r}")


class DDIMScheduler:
    """DDIM over a subset of the training noise levels; holds no model and no RNG state.

    Usage:  sched.set_timesteps(20, device); for t in sched.timesteps: out = sched.step(model_out, t, x)
    """

    def __init__(self, config: DiffusionConfig | None = None):
        self.config = config or DiffusionConfig()
        self.config.validate()
        betas = make_betas(self.config)
        # float64 maths, float32 storage: keeps sqrt(1 - a) accurate near a = 1.
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        self.timesteps: torch.Tensor | None = None
        self.num_inference_steps: int | None = None

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    # --- training-side maths --------------------------------------------------------------------

    def _abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timestep(s) t (scalar or (B,)), shaped to broadcast against `like`;
        t = -1 means "before the first step", alpha_bar = 1."""
        t = torch.as_tensor(t, device=like.device).long()
        table = torch.cat([self.alphas_cumprod.to(like.device), torch.ones(1, device=like.device)])
        a = table[t]  # index -1 picks the appended 1.0
        return a.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype) if a.dim() else a.to(like.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise; x0, noise (B, ...), t scalar or (B,)."""
        a = self._abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def split_prediction(self, model_output: torch.Tensor, t: torch.Tensor | int, sample: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) from the model output at x_t = sample, exact inverses of `add_noise`."""
        a = self._abar(t, sample)
        if self.config.prediction_type == "x0":
            x0 = model_output
            eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()
        else:
            eps = model_output
            x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        return x0, eps

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser should output for this (x0, noise) pair."""
        return x0 if self.config.prediction_type == "x0" else noise

    # --- sampling --------------------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device = "cpu") -> None:
        """Pick `num_inference_steps` descending timesteps, "trailing" spacing: the first is always
        T-1 (pure noise, so even 1 step starts right), the last is near 0."""
        n = int(num_inference_steps)
        if not MIN_STEPS <= n <= self.num_train_timesteps:
            raise UserError(f"steps must be an integer in [{MIN_STEPS}, {self.num_train_timesteps}], got {n}")
        T = self.num_train_timesteps
        ts = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)).long() - 1
        self.timesteps = ts[:n].to(device)
        self.num_inference_steps = n

    def previous_timestep(self, t: int | torch.Tensor) -> int:
        """The next (less noisy) timestep after `t` in the current schedule, -1 after the last."""
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps(n, device) before sampling")
        t = int(t)
        idx = (self.timesteps == t).nonzero()
        if len(idx) == 0:
            raise ValueError(f"timestep {t} is not in the current schedule")
        i = int(idx[0, 0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor, *,
             eta: float = 0.0, generator: torch.Generator | None = None,
             prev_sample: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> StepOutput:
        """One DDIM step from x_t (`sample`, (B, T, D)) to x_{t_prev}; differentiable when the inputs
        require grad (nothing here is in-place or detached).

        eta: 0 = deterministic DDIM, 1 = DDPM-like noise. generator: for the step's noise z.
        prev_sample: score this given x_{t_prev} instead of drawing one (log_prob for policy gradients).
        mask: optional (B, T) bool, True = valid frame; log_prob sums only over valid frames.
        """
        if not 0.0 <= eta <= 1.0:
            raise UserError(f"eta must be in [0, 1], got {eta}")
        t_prev = self.previous_timestep(t)
        a_t = self._abar(int(t), sample)
        a_prev = self._abar(t_prev, sample)
        # 1. model output -> (x0_hat, eps_hat)
        x0, eps = self.split_prediction(model_output, int(t), sample)
        # 2. step noise std sigma_t(eta)
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        sigma = eta * var.clamp(min=0).sqrt()
        # 3. mean of x_prev: the DDIM update with the remaining noise pointing along eps_hat
        mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if prev_sample is None:
            if float(sigma) > 0:
                prev_sample = mean + sigma * initial_noise(sample.shape, generator, sample.device, sample.dtype)
            else:
                prev_sample = mean
        # 4. log N(prev_sample; mean, sigma^2 I), summed over valid elements; the sample is treated as
        #    given (detached), so the gradient flows through the mean only, as policy gradients need.
        if float(sigma) > 0:
            elem = (-(prev_sample.detach() - mean) ** 2 / (2 * sigma ** 2)
                    - torch.log(sigma) - 0.5 * math.log(2 * math.pi))
            if mask is not None:
                elem = elem * mask[..., None].to(elem.dtype)
            log_prob = elem.flatten(1).sum(1)
        else:
            log_prob = torch.zeros(sample.shape[0], device=sample.device, dtype=sample.dtype)
        return StepOutput(prev_sample=prev_sample, pred_x0=x0, log_prob=log_prob)


# --- classifier-free guidance and the sampling loop ------------------------------------------------

def check_guidance(guidance: float) -> float:
    g = float(guidance)
    if not (MIN_GUIDANCE <= g <= MAX_GUIDANCE) or math.isnan(g):
        raise UserError(f"guidance must be in [{MIN_GUIDANCE}, {MAX_GUIDANCE}], got {guidance}")
    return g


@dataclass
class TextCondition:
    """Text features for a batch: tokens (B, L, C), mask (B, L) bool True=valid token."""

    tokens: torch.Tensor
    mask: torch.Tensor


def guided_output(denoiser: Callable[..., torch.Tensor], x_t: torch.Tensor, t: torch.Tensor,
                  cond: TextCondition, motion_mask: torch.Tensor | None, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + g (cond - uncond), cond and uncond in ONE batched call.

    guidance == 1 is exactly the conditional model (one call, no unconditional pass); guidance == 0
    is the unconditional model. The denoiser takes `drop_text` (B,) bool to use its null condition.
    """
    B = x_t.shape[0]
    if guidance == 1.0:
        return denoiser(x_t, t, cond.tokens, cond.mask, motion_mask)
    if guidance == 0.0:
        drop = torch.ones(B, dtype=torch.bool, device=x_t.device)
        return denoiser(x_t, t, cond.tokens, cond.mask, motion_mask, drop_text=drop)
    both = denoiser(
        torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond.tokens, cond.tokens]),
        torch.cat([cond.mask, cond.mask]), None if motion_mask is None else torch.cat([motion_mask, motion_mask]),
        drop_text=torch.arange(2 * B, device=x_t.device) >= B)
    out_c, out_u = both[:B], both[B:]
    return out_u + guidance * (out_c - out_u)


def initial_noise(shape: Sequence[int], generator: torch.Generator | None, device: str | torch.device,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I), drawn on the generator's device (CPU by default) so a seed gives the same
    motion on CPU and GPU."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


@dataclass
class SampleStep:
    """What one step of a trajectory produced. i: index in the schedule (0 = noisiest); t: training
    timestep; x_t: the sample the denoiser read (B, T, D); model_output: the guided output (B, T, D);
    out: the scheduler's StepOutput (prev_sample, pred_x0 = the guided x0 prediction, log_prob)."""

    i: int
    t: int
    x_t: torch.Tensor
    model_output: torch.Tensor
    out: StepOutput


class Sampler:
    """DDIM with classifier-free guidance over one denoiser, for one batch and one schedule.

    The loop belongs to the caller: `step(x_t, i)` makes ONE guided denoiser call and one scheduler step
    under the caller's grad mode, so each fine-tuning method decides where gradients flow, what is
    detached and when to stop (EasyTune: `with torch.enable_grad(): s = sampler.step(x.detach(), i)`).
    `iterate(x_T)` is the plain no-grad loop (generation, inspection, the gradient-free part of a method):

        sampler = Sampler(denoiser, DDIMScheduler(cfg), cond, mask, guidance=2.5, steps=10)
        for s in sampler.iterate(x_T):   # s.i, s.t, s.x_t, s.model_output, s.out (StepOutput)
            ...
        x0 = sampler.finish(s.out.prev_sample)

    `denoiser=` on `step`/`iterate` swaps in another network for that call (a frozen copy, a reference
    model for a guard, a checkpointed wrapper) with the same condition and schedule.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], scheduler: DDIMScheduler, cond: TextCondition,
                 motion_mask: torch.Tensor | None, *, guidance: float, steps: int, eta: float = 0.0,
                 generator: torch.Generator | None = None):
        self.denoiser, self.scheduler, self.cond, self.motion_mask = denoiser, scheduler, cond, motion_mask
        self.guidance = check_guidance(guidance)
        if not 0.0 <= float(eta) <= 1.0:
            raise UserError(f"eta must be in [0, 1], got {eta}")
        self.eta, self.generator = float(eta), generator
        self.device = cond.tokens.device
        scheduler.set_timesteps(check_steps(steps), self.device)
        self.timesteps: list[int] = scheduler.timesteps.tolist()

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(self, x_t: torch.Tensor, i: int, *, denoiser: Callable[..., torch.Tensor] | None = None) -> SampleStep:
        """Step i of the schedule from x_t: guided denoiser call + DDIM step, under the ambient grad mode."""
        t = self.timesteps[i]
        tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        model_output = guided_output(denoiser or self.denoiser, x_t, tt, self.cond, self.motion_mask, self.guidance)
        out = self.scheduler.step(model_output, t, x_t, eta=self.eta, generator=self.generator,
                                  mask=self.motion_mask)
        return SampleStep(i=i, t=t, x_t=x_t, model_output=model_output, out=out)

    def iterate(self, x_T: torch.Tensor, *, start: int = 0, stop: int | None = None,
                denoiser: Callable[..., torch.Tensor] | None = None) -> Iterator[SampleStep]:
        """Steps start..stop-1 without gradients, each from the previous step's prev_sample."""
        x = x_T
        for i in range(start, len(self) if stop is None else stop):
            with torch.no_grad():
                s = self.step(x, i, denoiser=denoiser)
            yield s
            x = s.out.prev_sample

    def finish(self, x0: torch.Tensor) -> torch.Tensor:
        """The final sample with padded frames (motion_mask False) zeroed."""
        if self.motion_mask is None:
            return x0
        return x0 * self.motion_mask[..., None].to(x0.dtype)

    def sample(self, x_T: torch.Tensor) -> torch.Tensor:
        """The whole chain without gradients: x0 (B, T, D)."""
        x = x_T
        for s in self.iterate(x_T):
            x = s.out.prev_sample
        return self.finish(x)
