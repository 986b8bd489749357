"""`python -m easytune finetune`: the shared harness every reward fine-tuning method runs in.

    python -m easytune finetune --method easytune --base base --reward reward --out runs/easytune \
        [--lora-rank 8] [--k 0] [--variant step|chain] [--base-penalty 2] [--skate-weight 1]

The harness builds what every method shares (the frozen base, the trainable copy (full weights or a
LoRA adapter), the reward and its guards, the training prompts, AdamW with warm-up + cosine) and runs
the method's `trajectory(run, index)` through the one training loop (easytune.training.run_loop): one
loop step = one trajectory. Everything a trajectory draws (prompts, lengths, noise, optimized steps)
depends on (seed, index) only, so a resumed run repeats an unbroken one. It validates the held-out
reward every `val_every` trajectories, keeps snapshots for selection, writes a JSON log, the resolved
config and a model card. `finetune(cfg, on_step=, should_stop=)` is the library entry point a worker
process uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from easytune.errors import UserError
from easytune.training import LRSchedule, run_loop, step_rng

log = logging.getLogger(__name__)

METHODS = ("easytune", "refl", "draft", "draft-lv", "alignprop", "drtune")
# The compared variants, by name: (method, its settings). The efficiency and time-to-target benchmarks
# and the RESULTS.md command run these rows; K and truncation are clipped to the run's sampling steps.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "easytune": ("easytune", {"k": 0}),
    "easytune-k3": ("easytune", {"k": 3}),  # the last 3 steps only: the recipe table's k3, 42% of the wall time
    "refl": ("refl", {"stop_last": 10}),
    "draft-1": ("draft", {"draft_k": 1}),
    "draft-10": ("draft", {"draft_k": 10}),
    "draft-50": ("draft", {"draft_k": 50}),
    "draft-lv": ("draft-lv", {"lv_n": 2}),
    "alignprop": ("alignprop", {"align_k_min": 1000, "align_k_max": 1000, "checkpointing": True}),
    "drtune": ("drtune", {"drtune_k": 5, "stop_last": 10}),
}
LAST = "last"
SNAPSHOTS = "snapshots"
LOG = "log.jsonl"
RUN_CONFIG = "run_config.json"


@dataclass
class FinetuneConfig:
    """A reward fine-tuning run; saved as out/run_config.json and in every checkpoint it writes."""

    # --- what is tuned, with what ---
    method: Literal["easytune", "refl", "draft", "draft-lv", "alignprop", "drtune"] = field(default="easytune", metadata={
        "help": "fine-tuning method (easytune.finetune.<name>; draft-lv in draft.py)"})
    base: str = field(default="base", metadata={"help": "base checkpoint (registry name or folder)"})
    reward: str = field(default="reward", metadata={"help": "reward-model checkpoint (same dataset as the base)"})
    out: str = field(default="runs/easytune", metadata={"help": "run folder (resumes from out/last when run again)"})
    # --- prompts ---
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder: training prompts from its train split, held-out ones from val"})
    prompts: str = field(default="", metadata={"help": "optional text file of training prompts, one per line (empty lines skipped); replaces the train split's captions"})
    extra_prompts: str = field(default="", metadata={"help": "optional text file of prompts (at --seconds) added to the training prompts, e.g. combinations the data lacks"})
    seconds: float = field(default=6.0, metadata={"help": "motion length for --prompts and --extra-prompts (dataset prompts use their motion's length)"})
    max_seconds: float = field(default=9.8, metadata={"help": "cap on dataset prompts' lengths (shorter motions train faster)"})
    val_prompts: int = field(default=64, metadata={"help": "held-out (val split) prompts for the validation reward"})
    val_file: str = field(default="", metadata={"help": "optional text file of held-out prompts (at --seconds), replacing the val split's"})
    # --- trajectories ---
    trajectories: int = field(default=300, metadata={"help": "trajectories in all (one loop step each)"})
    time_budget: float = field(default=0.0, metadata={"help": "stop once the trajectories themselves (not validation or saving) have run this many seconds (0 = no budget); the same budget for every method"})
    batch_size: int = field(default=8, metadata={"help": "prompts per trajectory"})
    steps: int = field(default=0, metadata={"help": "DDIM sampling steps (0 = the base checkpoint's default; the paper uses 50)"})
    guidance: float = field(default=-1.0, metadata={"help": "classifier-free guidance (-1 = the base checkpoint's)"})
    k: int = field(default=0, metadata={"help": "optimized steps per trajectory (0 = all)"})
    k_mode: Literal["last", "random"] = field(default="last", metadata={"help": "last: the last k steps; random: k steps drawn anew per trajectory"})
    anchor_steps: int = field(default=0, metadata={"help": "EasyTune with k: per trajectory, this many steps outside the optimized set (drawn at random) take a guard-only update (base penalty and diversity guard, no reward), so the early steps that decide variety stay near the base (our addition, not the paper's)"})
    variant: Literal["step", "chain"] = field(default="step", metadata={"help": "step: update in place, later steps use new weights; chain: a frozen sampling copy per trajectory"})
    # --- objective ---
    reward_weight: float = field(default=1.0, metadata={"help": "lambda: loss = -lambda * mean reward + guards"})
    reward_ensemble: str = field(default="", metadata={"help": "more reward-model checkpoints, comma-separated: the reward becomes the mean of every model's score (--reward first), so no one model's blind spots decide the gradient; each must fit the base like --reward"})
    reward_timestep: bool = field(default=False, metadata={"help": "give the reward model the step's timestep (it was trained on noisy x_t with a timestep token)"})
    base_penalty: float = field(default=0.0, metadata={"help": "weight of the mean squared difference between tuned and frozen base guided x0 at the same x_t"})
    skate_weight: float = field(default=0.0, metadata={"help": "weight of the foot-skating penalty (m/s of sliding in contact)"})
    jerk_weight: float = field(default=0.0, metadata={"help": "weight of the jerk penalty (m/s^3; the base has ~165)"})
    floor_weight: float = field(default=0.0, metadata={"help": "weight of the floor-penetration penalty (m)"})
    diversity_weight: float = field(default=0.0, metadata={"help": "weight of the diversity guard: each batch holds batch_size/2 prompts twice with different noise, and the guard penalises the tuned pair's x0 distance falling below the frozen base's at the same x_t"})
    diversity_margin: float = field(default=0.0, metadata={"help": "the diversity guard penalises d_tuned / d_base below 1 + margin: a margin > 0 asks the tuned pairs to spread more than the base's"})
    # --- baselines' own settings (refl.py, draft.py, alignprop.py, drtune.py) ---
    stop_last: int = field(default=10, metadata={"help": "ReFL and DRTune: M, stop at a step drawn from the last M sampling steps and score its x0 (ReFL: the last 10 of 40)"})
    draft_k: int = field(default=1, metadata={"help": "DRaFT-K: K, backpropagate through the last K sampling steps (clipped to steps; K = steps is full backprop)"})
    lv_n: int = field(default=2, metadata={"help": "DRaFT-LV: n, re-noisings of the final sample, one one-step gradient each, averaged (the paper: 2)"})
    align_k_min: int = field(default=1, metadata={"help": "AlignProp: smallest truncation K, drawn per trajectory"})
    align_k_max: int = field(default=0, metadata={"help": "AlignProp: largest truncation K (0 = all steps)"})
    checkpointing: bool = field(default=True, metadata={"help": "AlignProp: gradient checkpointing of each denoiser call (same gradient, less memory)"})
    drtune_k: int = field(default=5, metadata={"help": "DRTune: k, gradient-enabled steps evenly spaced up to the stopping step"})
    # --- optimisation ---
    lr: float = field(default=1e-5, metadata={"help": "AdamW peak learning rate (the official configuration: 1e-5)"})
    warmup: int = field(default=10, metadata={"help": "warm-up trajectories, then a cosine to min_lr_ratio"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of lr"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": "adamw (betas 0.9, 0.999), or plain sgd (tests, ablations)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip per optimizer step"})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank (0 = full fine-tuning)"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (update scale alpha / rank)"})
    lora_targets: str = field(default="linear1,linear2,motion_in,motion_out", metadata={"help": "comma-separated nn.Linear names for LoRA"})
    # --- bookkeeping ---
    val_every: int = field(default=50, metadata={"help": "trajectories between held-out reward checks and snapshots (0 = only at the end)"})
    val_every_s: float = field(default=0.0, metadata={"help": "also check every this many training seconds (the budget's clock; 0 = off): reward-against-time curves"})
    save_every: int = field(default=25, metadata={"help": "trajectories between resume points"})
    seed: int = field(default=0, metadata={"help": "seeds prompts, noise and step choices"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast of every trajectory on CUDA (ignored on the CPU)"})

    def validate(self) -> None:
        checks = [("trajectories", 1, 1_000_000), ("batch_size", 1, 256), ("val_prompts", 0, 4096),
                  ("k", 0, 1000), ("warmup", 0, 1_000_000), ("lora_rank", 0, 256), ("val_every", 0, 1_000_000),
                  ("save_every", 1, 1_000_000), ("seed", 0, 2**31 - 1), ("steps", 0, 1000),
                  ("stop_last", 1, 1000), ("draft_k", 1, 1000), ("lv_n", 1, 64), ("align_k_min", 1, 1000),
                  ("align_k_max", 0, 1000), ("drtune_k", 1, 1000), ("anchor_steps", 0, 1000)]
        for name, lo, hi in checks:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UserError(f"{name} must be an integer from {lo} to {hi}, got {v!r}")
        for name, lo, hi in [("lr", 0.0, 1.0), ("reward_weight", 0.0, 1e3), ("base_penalty", 0.0, 1e6),
                             ("skate_weight", 0.0, 1e6), ("jerk_weight", 0.0, 1e6), ("floor_weight", 0.0, 1e6),
                             ("diversity_weight", 0.0, 1e6), ("diversity_margin", 0.0, 1.0),
                             ("min_lr_ratio", 0.0, 1.0), ("weight_decay", 0.0, 1.0), ("grad_clip", 0.0, 1e6),
                             ("seconds", 1.0, 9.8), ("max_seconds", 1.0, 9.8), ("time_budget", 0.0, 1e7),
                             ("val_every_s", 0.0, 1e7)]:
            v = float(getattr(self, name))
            if not (lo <= v <= hi) or math.isnan(v):
                raise UserError(f"{name} must be in [{lo}, {hi}], got {getattr(self, name)}")
        if self.guidance != -1.0 and not 0.0 <= self.guidance <= 20.0:
            raise UserError(f"guidance must be in [0, 20] (or -1 for the checkpoint's), got {self.guidance}")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.align_k_max and self.align_k_max < self.align_k_min:
            raise UserError(f"align_k_max must be 0 (all steps) or at least align_k_min ({self.align_k_min}), "
                            f"got {self.align_k_max}")
        if self.diversity_weight and self.batch_size % 2:
            raise UserError(f"the diversity guard pairs each prompt with itself: batch_size must be even, "
                            f"got {self.batch_size}")
        if self.anchor_steps and (self.method != "easytune" or not self.k):
            raise UserError("anchor_steps are EasyTune's with k > 0: they take the steps outside its optimized set")
        if self.anchor_steps and not (self.base_penalty or self.diversity_weight):
            raise UserError("anchor_steps hold steps near the base: set base_penalty or diversity_weight")
        self.ensemble_members()
        if self.variant == "chain" and self.method != "easytune":
            raise UserError(f"variant 'chain' is EasyTune's; {self.method} makes one update per trajectory, "
                            f"use variant 'step'")

    def ensemble_members(self) -> list[str]:
        """The reward checkpoints besides --reward (empty: --reward alone)."""
        members = [m.strip() for m in self.reward_ensemble.split(",") if m.strip()]
        if self.reward in members or len(set(members)) < len(members):
            raise UserError(f"reward_ensemble repeats a reward model ({self.reward_ensemble!r}, --reward "
                            f"{self.reward!r}); name each model once")
        return members

    def lora(self):
        from easytune.finetune.lora import LoraSettings

        targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        return LoraSettings(rank=self.lora_rank, alpha=self.lora_alpha, targets=targets)


# --- presets: functions that change only what differs ------------------------------------------------

def preset_default() -> FinetuneConfig:
    return FinetuneConfig()


def preset_tiny() -> FinetuneConfig:
    """Tests: a few trajectories on tiny models."""
    return dataclasses.replace(FinetuneConfig(), trajectories=4, batch_size=2, val_prompts=4, val_every=2,
                               save_every=2, warmup=1, seconds=1.5)


def preset_browser() -> FinetuneConfig:
    """The playground's short run: a LoRA adapter, a few minutes on 2 CPU cores (README: measured)."""
    return dataclasses.replace(FinetuneConfig(), lora_rank=8, lora_alpha=16.0, lr=1e-3, batch_size=4, trajectories=30,
                               warmup=3, max_seconds=4.0, val_prompts=64, val_every=0, save_every=10, base_penalty=1.0)


def preset_gpu() -> FinetuneConfig:
    """A CUDA machine (or several under torchrun; batch_size is the global batch): the paper's 50 DDIM
    steps, a larger batch, bf16 autocast."""
    return dataclasses.replace(FinetuneConfig(), steps=50, batch_size=32, trajectories=1000, val_every=100,
                               save_every=50, bf16=True, device="cuda")


PRESETS: dict[str, Callable[[], FinetuneConfig]] = {"default": preset_default, "tiny": preset_tiny,
                                                    "browser": preset_browser, "gpu": preset_gpu}


# --- prompts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptSet:
    """(caption, frames) pairs; `skipped` counts empty lines of a prompts file."""

    captions: tuple[str, ...]
    frames: tuple[int, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.captions)


def prompts_from_split(data: str, split: str, limit: int = 0, seed: int = 0, max_frames: int = 196) -> PromptSet:
    """Every caption of a dataset split with its motion's length (clamped to 20..max_frames frames);
    `limit` keeps a seeded sample of that many."""
    from easytune.motion.dataset import MotionDataset

    ds = MotionDataset(data, split, random_crop=False)
    caps, frames = [], []
    for i in range(len(ds)):
        n = max(20, min(max_frames, int(ds[i]["length"])))
        for c in ds.captions(i):
            caps.append(c)
            frames.append(n)
    if limit and limit < len(caps):
        pick = sorted(np.random.default_rng(seed).choice(len(caps), limit, replace=False).tolist())
        caps, frames = [caps[i] for i in pick], [frames[i] for i in pick]
    return PromptSet(tuple(caps), tuple(frames))


def prompts_from_file(path: str, seconds: float) -> PromptSet:
    from easytune.generate import check_prompts

    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompts file {p} does not exist; give a text file with one prompt per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"prompts file {p} is not UTF-8 text") from None
    kept = [ln for ln in lines if ln.strip()]
    if not kept:
        raise UserError(f"prompts file {p} has no non-empty line")
    caps = check_prompts(kept)
    return PromptSet(tuple(caps), tuple([int(round(seconds * 20))] * len(caps)), skipped=len(lines) - len(kept))


# --- the run -----------------------------------------------------------------------------------------

class FinetuneRun:
    """Everything a method's trajectory needs; built once per run by `setup`."""

    def __init__(self, cfg: FinetuneConfig, bundle: Any, model: torch.nn.Module, reward: Any,
                 prompts: PromptSet, val: PromptSet, device: torch.device, world: Any = None):
        from easytune.distributed import SINGLE
        from easytune.finetune.lora import has_lora

        self.cfg, self.bundle, self.model, self.reward = cfg, bundle, model, reward
        self.prompts, self.val, self.device = prompts, val, device
        self.world = world or SINGLE  # torchrun: this process's rank; see easytune.distributed
        self.is_lora = has_lora(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise UserError("nothing to fine-tune: the model has no trainable parameters")
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               betas=(0.9, 0.999))
        self.schedule = LRSchedule(cfg.lr, cfg.trajectories, min(cfg.warmup, cfg.trajectories), cfg.min_lr_ratio)
        self.sampling_copy = None
        if cfg.variant == "chain":
            import copy

            self.sampling_copy = copy.deepcopy(model)
        self.parts = self._parts()

    # -- trajectory inputs: functions of (seed, index) only --
    def prepare_batch(self, index: int):
        from easytune.generate import prepare

        rng = step_rng(self.cfg.seed, index, 0)
        paired = self.cfg.diversity_weight > 0  # rows 2j and 2j+1: one prompt, two noises
        n = self.cfg.batch_size // 2 if paired else self.cfg.batch_size
        pick = rng.choice(len(self.prompts), n, replace=len(self.prompts) < n)
        if paired:
            pick = np.repeat(pick, 2)
        noise_seed = int(rng.integers(0, 2**40))
        rows = self.world.rows(len(pick))  # torchrun: this rank's share; row i's noise is seed + i
        pick = pick[rows]
        return prepare(self.bundle, [self.prompts.captions[i] for i in pick], seed=noise_seed + rows.start,
                       steps=self.cfg.steps or None, guidance=None if self.cfg.guidance < 0 else self.cfg.guidance,
                       frames=[self.prompts.frames[i] for i in pick])

    def optimized_steps(self, n: int, index: int) -> set[int]:
        k = self.cfg.k or n
        if k >= n:
            return set(range(n))
        if self.cfg.k_mode == "last":
            return set(range(n - k, n))
        return set(step_rng(self.cfg.seed, index, 1).choice(n, k, replace=False).tolist())

    def anchor_steps(self, n: int, index: int, optimized: set[int]) -> set[int]:
        """cfg.anchor_steps of the steps outside `optimized`, drawn anew per trajectory."""
        rest = sorted(set(range(n)) - optimized)
        k = min(self.cfg.anchor_steps, len(rest))
        return set(step_rng(self.cfg.seed, index, 2).choice(rest, k, replace=False).tolist()) if k else set()

    # -- the objective of one optimized step --
    def _parts(self) -> dict[str, tuple[float, Any]]:
        from easytune.plausibility import composite
        from easytune.reward import get_reward

        stats = {"mean": self.bundle.mean, "std": self.bundle.std}
        parts = {"reward": (self.cfg.reward_weight, self.reward),
                 "foot_skating": (self.cfg.skate_weight, get_reward("foot_skating", **stats)),
                 "jerk": (self.cfg.jerk_weight, get_reward("jerk", **stats)),
                 "floor_penetration": (self.cfg.floor_weight, get_reward("floor_penetration", **stats))}
        self.combined = composite(parts)
        return parts

    def objective(self, s: Any, sampler: Any, prep: Any, guards_only: bool = False) -> dict[str, torch.Tensor]:
        """loss and its terms for one gradient-enabled step s (SampleStep); guards_only: an anchor step's
        loss, the base penalty and diversity guard without the reward and physical terms."""
        terms = {}
        loss = s.out.pred_x0.new_zeros(())
        if not guards_only:
            t = torch.full((s.x_t.shape[0],), s.t, dtype=torch.long, device=s.x_t.device)
            scores = self.combined(s.out.pred_x0, prep.prompts, t, mask=prep.mask,
                                   timesteps_for=("reward",) if self.cfg.reward_timestep else ())
            loss = -scores["total"].mean()
            for name in ("reward", "foot_skating", "jerk", "floor_penetration"):
                if name in scores:
                    terms[name] = (1 if name == "reward" else -1) * scores[name].mean().detach()
        if self.cfg.base_penalty or self.cfg.diversity_weight:
            with torch.no_grad():
                ref = sampler.step(s.x_t, s.i, denoiser=self.bundle.denoiser).out.pred_x0
            m = prep.mask[..., None].to(ref.dtype)
        if self.cfg.base_penalty:
            penalty = ((s.out.pred_x0 - ref) ** 2 * m).sum() / (m.sum() * ref.shape[-1])
            loss = loss + self.cfg.base_penalty * penalty
            terms["base_penalty"] = penalty.detach()
        if self.cfg.diversity_weight:
            ratio = pair_distance(s.out.pred_x0, prep.mask) / pair_distance(ref, prep.mask).clamp_min(1e-6)
            guard = torch.relu(1.0 + self.cfg.diversity_margin - ratio).mean()  # only a ratio under 1 + margin
            loss = loss + self.cfg.diversity_weight * guard
            terms["diversity_ratio"] = ratio.mean().detach()
            terms["diversity_guard"] = guard.detach()
        terms["loss"] = loss
        return terms

    def clip_and_step(self) -> float:
        from easytune.distributed import average_gradients

        average_gradients(self.params, self.world)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip) if self.cfg.grad_clip else \
            torch.sqrt(sum((p.grad ** 2).sum() for p in self.params if p.grad is not None))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def move_grads_to_model(self) -> None:
        """chain variant: the sampling copy computed the gradient; the trained model takes it."""
        copy_params = [p for p in self.sampling_copy.parameters() if p.requires_grad]
        for p, q in zip(self.params, copy_params):
            p.grad = None if q.grad is None else q.grad.detach().clone()
            q.grad = None

    def sync_sampling_copy(self) -> None:
        self.sampling_copy.load_state_dict(self.model.state_dict())

    @torch.no_grad()
    def final_reward(self, x0: torch.Tensor, prep: Any) -> float:
        return float(self.reward(x0, prep.prompts, None, mask=prep.mask).mean())

    # -- held-out reward --
    @torch.no_grad()
    def validation_scores(self, batch: int = 32) -> list[float]:
        """Reward-model reward of the current model's final sample for each fixed held-out prompt, from
        fixed noise: the same prompts and noise at every check, so checks compare pairwise."""
        from easytune.generate import prepare

        if not len(self.val):
            return []
        model = self.inference_model()
        scores = []
        for a in range(0, len(self.val), batch):
            caps = list(self.val.captions[a:a + batch])
            prep = prepare(self.bundle, caps, seed=1_000_003 + a, steps=self.cfg.steps or None,
                           guidance=None if self.cfg.guidance < 0 else self.cfg.guidance,
                           frames=list(self.val.frames[a:a + batch]))
            x0 = prep.sampler(model, self.bundle.diffusion).sample(prep.x_T)
            scores += self.reward(x0, prep.prompts, None, mask=prep.mask).cpu().tolist()
        return scores

    def inference_model(self) -> torch.nn.Module:
        """What sampling should use: the merged adapter for LoRA (see easytune.finetune.lora)."""
        from easytune.finetune.lora import merged

        return merged(self.model).eval() if self.is_lora else self.model

    # -- checkpoints --
    def checkpoint_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        """(kind, tensors, config) of the current weights as a registry checkpoint."""
        from easytune.checkpoints import load_checkpoint
        from easytune.finetune.lora import lora_state

        base_cfg = load_checkpoint(self.bundle.path).config
        sampling = {"steps": self.cfg.steps or self.bundle.steps,
                    "guidance": self.bundle.guidance if self.cfg.guidance < 0 else self.cfg.guidance,
                    "eta": self.bundle.eta}
        if self.is_lora:
            state = {f"denoiser.{k}": v for k, v in lora_state(self.model).items()}
            lora = asdict(self.cfg.lora())
            lora["targets"] = list(lora["targets"])
            return "lora", state, {"lora": lora, "sampling": sampling, "finetune": asdict(self.cfg)}
        # full weights, saved with the base's (eval) config so load_base rebuilds them as a base
        state = {f"denoiser.{k}": v for k, v in self.model.state_dict().items()}
        state |= {"mean": self.bundle.mean.cpu(), "std": self.bundle.std.cpu()}
        return "finetune", state, {"model": base_cfg["model"], "diffusion": base_cfg["diffusion"],
                                   "sampling": sampling, "finetune": asdict(self.cfg)}


def pair_distance(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS distance between rows 2j and 2j+1 (one prompt, two noises) over their valid frames: (B/2,)."""
    a, b = x0[0::2], x0[1::2]
    m = (mask[0::2] & mask[1::2])[..., None].to(x0.dtype)
    sq = ((a - b) ** 2 * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * x0.shape[-1]).clamp_min(1.0)
    return torch.sqrt(sq + 1e-12)


def setup(cfg: FinetuneConfig, text_encoder: Any = None) -> FinetuneRun:
    """Load base and reward (refusing a pair that does not fit), build the trainable copy and prompts."""
    from easytune.device import pick_device
    from easytune.finetune.lora import add_lora
    from easytune.generate import _trainable_copy, load_base
    from easytune.reward import MeanReward, RewardScorer, load_reward_model

    from easytune.distributed import broadcast_parameters, init, local_device

    cfg.validate()
    device = pick_device(cfg.device)
    world = init(device)
    device = local_device(device, world)
    world.rows(cfg.batch_size // 2 if cfg.diversity_weight else cfg.batch_size)  # refuse an uneven split early
    if text_encoder is None:
        from easytune.text import load_text_encoder

        text_encoder = load_text_encoder(device)
    bundle = load_base(cfg.base, device, text_encoder=text_encoder)
    scorers = []
    for name in [cfg.reward] + cfg.ensemble_members():
        reward_model, reward_ckpt = load_reward_model(name, device)
        check_reward_fits(bundle, reward_ckpt, reward_model)
        scorers.append(RewardScorer(reward_model, text_encoder))
    reward = scorers[0] if len(scorers) == 1 else MeanReward(scorers)
    model = _trainable_copy(bundle.denoiser)
    model.requires_grad_(True)
    if cfg.lora_rank:
        model = add_lora(model, cfg.lora())
    broadcast_parameters(model, world)
    if cfg.prompts:
        prompts = prompts_from_file(cfg.prompts, cfg.seconds)
        if prompts.skipped:
            log.info("prompts file %s: skipped %d empty line(s), kept %d prompts", cfg.prompts, prompts.skipped,
                     len(prompts))
    else:
        prompts = prompts_from_split(cfg.data, "train", max_frames=round(cfg.max_seconds * 20))
    if cfg.extra_prompts:
        extra = prompts_from_file(cfg.extra_prompts, cfg.seconds)
        log.info("extra prompts %s: %d added to %d (skipped %d empty line(s))", cfg.extra_prompts, len(extra),
                 len(prompts), extra.skipped)
        prompts = PromptSet(prompts.captions + extra.captions, prompts.frames + extra.frames, prompts.skipped)
    if cfg.val_file:
        val = prompts_from_file(cfg.val_file, cfg.seconds)
        val = PromptSet(val.captions[:cfg.val_prompts], val.frames[:cfg.val_prompts])
    elif cfg.val_prompts:
        val = prompts_from_split(cfg.data, "val", cfg.val_prompts, seed=cfg.seed, max_frames=round(cfg.max_seconds * 20))
    else:
        val = PromptSet((), ())
    return FinetuneRun(cfg, bundle, model, reward, prompts, val, device, world)


def check_reward_fits(bundle: Any, reward_ckpt: Any, reward_model: torch.nn.Module) -> None:
    """The reward model must read the base's features: same width, dataset stamp and normalization."""
    from easytune.checkpoints import same_dataset

    width = reward_model.cfg.feature_dim
    if width != bundle.mean.shape[0]:
        raise UserError(f"reward model {reward_ckpt.path} reads {width}-d features but base {bundle.path} makes "
                        f"{bundle.mean.shape[0]}-d ones")
    a, b = bundle.dataset.get("stamp"), reward_ckpt.dataset.get("stamp")
    if not same_dataset(bundle.dataset, reward_ckpt.dataset):
        raise UserError(f"reward model {reward_ckpt.path} was trained on dataset {b} but base {bundle.path} on {a}; "
                        f"their normalizations differ. Use a reward model trained on the base's dataset.")
    if "mean" in reward_ckpt.state:
        same = torch.allclose(reward_ckpt.state["mean"].float().cpu(), bundle.mean.float().cpu(), atol=1e-5) and \
            torch.allclose(reward_ckpt.state["std"].float().cpu(), bundle.std.float().cpu(), atol=1e-5)
        if not same:
            raise UserError(f"reward model {reward_ckpt.path} and base {bundle.path} use different feature "
                            f"normalizations (Mean/Std); the reward would read the base's motions wrongly")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def finetune(cfg: FinetuneConfig, *, on_step: Callable[[dict[str, float]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, text_encoder: Any = None, progress: bool = True,
             command: str | None = None) -> dict[str, Any]:
    """Run (or resume) a fine-tune into cfg.out; returns a summary. A worker process follows it with
    on_step(metrics) and cancels it with should_stop() (the run then saves and returns stopped=True)."""
    from easytune.checkpoints import load_train_state, save_checkpoint, save_train_state
    from easytune.config import save_config
    from easytune.fileio import write_json
    from easytune.inputs import check_output_path

    from easytune.distributed import any_rank, barrier

    check_output_path(cfg.out, kind="dir")  # before any weights load: an --out that is a file is one sentence
    run = setup(cfg, text_encoder)
    main = run.world.main  # torchrun: rank 0 alone validates, logs and writes; all ranks resume from out/last
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / RUN_CONFIG)
    start, history = 0, {"validation": [], "snapshots": []}
    state = load_train_state(out / LAST, run.optimizer) if (out / LAST / "config.json").is_file() else None
    if state is not None:
        start, history = _restore(run, out / LAST, state)
        log.info("resuming %s from trajectory %d", out, start)
    method = _method(cfg.method)
    t0 = time.perf_counter()
    wall_before = float(history.get("wall_s", 0.0))
    clock = {"train_s": float(history.get("train_s", 0.0))}  # seconds inside trajectories only (the budget's clock)
    parent_hash = _parent_hash(cfg.base)

    def save_to(folder: Path, step: int) -> None:
        kind, tensors, config = run.checkpoint_state()
        meta = {"parent": cfg.base, "parent_hash": parent_hash, "reward": cfg.reward, "steps": step,
                "seed": cfg.seed, "method": cfg.method, "command": command,
                "wall_s": round(wall_before + time.perf_counter() - t0, 1)}
        save_checkpoint(folder, tensors, kind=kind, config=config, dataset=run.bundle.dataset, meta=meta)

    def validate(step: int) -> None:
        if not main:
            return
        snap = out / SNAPSHOTS / f"step_{step:05d}"
        save_to(snap, step)
        history["snapshots"].append(str(snap))
        if len(run.val):
            from easytune.metrics import mean_ci

            scores = run.validation_scores()
            mean, half = mean_ci(scores)
            history["validation"].append({"step": step, "train_s": round(clock["train_s"], 3), "reward": mean,
                                          "ci": half, "scores": scores})
            log.info("trajectory %d: held-out reward %.4f ± %.4f", step, mean, half)

    def save(step: int) -> None:
        from easytune.distributed import same_on_all_ranks

        if not same_on_all_ranks(run.params, run.world):  # every rank checks, before anything is written
            raise UserError(f"torchrun replicas hold different weights at trajectory {step}; the run stopped "
                            f"and kept its last checkpoint (were all ranks started with the same config?)")
        if not main:
            return
        history["wall_s"] = round(wall_before + time.perf_counter() - t0, 1)
        history["train_s"] = round(clock["train_s"], 3)
        history["peak_rss_mib"] = max(float(history.get("peak_rss_mib", 0.0)), _rss_mib())  # over every session
        save_to(out / LAST, step)
        tensors = {}
        if cfg.variant == "chain":
            tensors = {}  # the sampling copy equals the model at a trajectory's end
        save_train_state(out / LAST, run.optimizer, {"step": step, "history": history}, tensors)
        write_json(out / "history.json", history)

    logf = open(out / LOG, "a", encoding="utf-8") if main else None

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and run.device.type == "cuda")

    def step_fn(index: int) -> dict[str, float]:
        began = time.perf_counter()
        with autocast:
            metrics = method(run, index)
        clock["train_s"] += time.perf_counter() - began
        metrics["train_s"] = clock["train_s"]
        metrics["rss_mib"] = _rss_mib()
        return metrics

    def timed_check_due() -> bool:
        # due once the clock enters a new val_every_s interval since the last check (stateless across resumes)
        if not cfg.val_every_s or not history["validation"]:
            return False
        last = float(history["validation"][-1].get("train_s") or 0.0)
        return clock["train_s"] // cfg.val_every_s > last // cfg.val_every_s

    def after(metrics: dict[str, float]) -> None:
        step = int(metrics["step"])
        if logf is not None:
            logf.write(json.dumps(metrics) + "\n")
            logf.flush()
        if (cfg.val_every and step % cfg.val_every == 0) or step == cfg.trajectories or timed_check_due():
            validate(step)
        if on_step is not None:
            on_step(metrics)

    if start == 0 and cfg.val_prompts and not history["validation"]:
        validate(0)
    def spent() -> bool:
        return bool(cfg.time_budget) and clock["train_s"] >= cfg.time_budget

    def want_stop() -> bool:
        return spent() or (should_stop is not None and should_stop())

    stop = want_stop if run.world.size == 1 else (lambda: any_rank(want_stop(), run.world))
    try:
        result = run_loop(step_fn, optimizer=run.optimizer, schedule=run.schedule, start_step=start,
                          max_steps=cfg.trajectories, save=save, save_every=cfg.save_every, log_every=10,
                          on_step=after, should_stop=stop, progress=progress and main,
                          desc=f"finetune {cfg.method}")
    finally:
        if logf is not None:
            logf.close()
    if result.stopped and spent() and result.step > start and not any(
            v["step"] == result.step for v in history["validation"]):
        validate(result.step)  # the budget ended the run: its last held-out check and snapshot
        if main:
            write_json(out / "history.json", history)
    barrier(run.world)  # the other ranks return once rank 0 has written the final checkpoint
    summary = {"out": str(out), "step": result.step, "stopped": result.stopped, "last": result.last,
               "validation": history["validation"], "held_out_gain": held_out_gain(history["validation"]),
               "seconds": result.seconds, "wall_s": history.get("wall_s"),
               "peak_rss_mib": max(float(history.get("peak_rss_mib", 0.0)), _rss_mib()),
               "kind": "lora" if run.is_lora else "finetune", "train_s": clock["train_s"],
               "budget_spent": spent()}
    if main:
        write_json(out / "summary.json", summary)
    return summary


def held_out_gain(validation: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Paired gain of the last held-out check over the first (same prompts, same noise): mean of the
    per-prompt reward differences and its 95% CI half-width (Student t)."""
    from easytune.metrics import mean_ci

    if len(validation) < 2 or not validation[0].get("scores"):
        return None
    first, last = validation[0], validation[-1]
    diffs = [b - a for a, b in zip(first["scores"], last["scores"])]
    mean, half = mean_ci(diffs)
    return {"from_step": first["step"], "to_step": last["step"], "gain": mean, "ci": half}


def _restore(run: FinetuneRun, last: Path, state: tuple[dict[str, Any], dict[str, torch.Tensor]]):
    from easytune.checkpoints import load_checkpoint, load_weights
    from easytune.finetune.lora import load_lora_state

    extra, _ = state
    ckpt = load_checkpoint(last)
    weights = {k[len("denoiser."):]: v for k, v in ckpt.state.items() if k.startswith("denoiser.")}
    if run.is_lora:
        load_lora_state(run.model, weights, source=f"resume point {last}")
    else:
        load_weights(run.model, ckpt.state, source=f"resume point {last}", prefix="denoiser.")
    if run.sampling_copy is not None:
        run.sync_sampling_copy()
    return int(extra["step"]), extra.get("history") or {"validation": [], "snapshots": []}


def _parent_hash(base: str) -> str:
    from easytune.checkpoints import checkpoint_hash

    return checkpoint_hash(base)


def _method(name: str) -> Callable[[FinetuneRun, int], dict[str, float]]:
    if name == "easytune":
        from easytune.finetune.easytune import trajectory

        return trajectory
    if name == "draft-lv":
        from easytune.finetune.draft import trajectory_lv

        return trajectory_lv
    if name in METHODS:
        import importlib

        return importlib.import_module(f"easytune.finetune.{name}").trajectory
    raise UserError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


# --- CLI -------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="starting config before overrides")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    add_config_args(parser, FinetuneConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import command_for, config_from_args

    cfg = config_from_args(FinetuneConfig, args, base=PRESETS[args.preset]())
    summary = finetune(cfg, progress=args.progress, command=command_for("python -m easytune finetune", cfg))
    from easytune.distributed import world

    if not world().main:
        return 0
    val = summary["validation"]
    first, last = (val[0], val[-1]) if val else (None, None)
    msg = f"{summary['step']} trajectories{' (stopped early)' if summary['stopped'] else ''}"
    if first and last:
        msg += f"; held-out reward {first['reward']:.4f} -> {last['reward']:.4f}"
    if summary["held_out_gain"]:
        g = summary["held_out_gain"]
        msg += f" (paired gain {g['gain']:+.4f} ± {g['ci']:.4f})"
    print(f"{msg}; checkpoint {Path(cfg.out) / LAST} ({summary['kind']}); peak RSS {summary['peak_rss_mib']:.0f} MiB")
    return 0
