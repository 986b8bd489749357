"""Rewards: the plug-in interface, the reward-model scorer, and reward-model training.

A reward is any callable

    reward(features, texts, timestep, *, mask=None) -> scores
      features  (B, T, 263) normalized HumanML3D features (clean x0, or x_t when timestep is given)
      texts     list of B prompts
      timestep  (B,) long tensor, or None for clean motions
      mask      (B, T) bool, True = valid frame (None = all valid)
      scores    (B,) float tensor, higher is better, differentiable w.r.t. features

registered by name with `@register_reward("name")` on a factory `(**kwargs) -> reward`; factories
import their heavy dependencies inside, so the registry costs nothing to import. `get_reward(name)`
builds one; "reward_model" (the trained TMR-style model) is the default.

`python -m easytune train reward --data DIR` trains the reward model with InfoNCE (temperature 0.1),
masking false negatives (same (content, style) label, or captions whose sentence embeddings are more
similar than a threshold), with optional noisy-motion augmentation so the model can score x_t.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from easytune import checkpoints as ck
from easytune.config import command_for
from easytune.device import pick_device
from easytune.errors import UserError
from easytune.inputs import check_output_path
from easytune.training import (ITEMS, NOISE, LoopResult, LRSchedule, epoch_batch, open_run, resume_point, run_loop,
                               seed_torch, step_generator, step_rng)

log = logging.getLogger(__name__)

FEATURE_DIM = 263
KIND = "reward"


# === the plug-in interface ========================================================================

class RewardFn(Protocol):
    def __call__(self, features: torch.Tensor, texts: Sequence[str], timestep: torch.Tensor | None,
                 *, mask: torch.Tensor | None = None) -> torch.Tensor: ...


_REGISTRY: dict[str, Callable[..., RewardFn]] = {}
DEFAULT_REWARD = "reward_model"


def register_reward(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Decorator: register a factory `(**kwargs) -> RewardFn` under `name`."""
    def wrap(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"a reward named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory
    return wrap


def available_rewards() -> list[str]:
    import easytune.plausibility  # noqa: F401  (registers foot_skating, floor_penetration, jerk)

    return sorted(_REGISTRY)


def get_reward(name: str = DEFAULT_REWARD, **kwargs: Any) -> RewardFn:
    """Build the reward registered as `name` with the factory's keyword arguments."""
    import easytune.plausibility  # noqa: F401  (registers foot_skating, floor_penetration, jerk)

    if name not in _REGISTRY:
        raise UserError(f"unknown reward {name!r}; registered rewards: {', '.join(available_rewards())}")
    return _REGISTRY[name](**kwargs)


def check_inputs(features: torch.Tensor, texts: Sequence[str], mask: torch.Tensor | None = None) -> None:
    """UserError for what a caller can get wrong: feature width, NaN, empty or missing prompts."""
    if features.ndim != 3 or features.shape[-1] != FEATURE_DIM:
        raise UserError(f"motion features must have shape (batch, frames, {FEATURE_DIM}), got "
                        f"{tuple(features.shape)}")
    if len(texts) != features.shape[0]:
        raise UserError(f"got {len(texts)} prompts for {features.shape[0]} motions; give one prompt per motion")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise UserError("a prompt is empty; describe the motion in a few words (e.g. 'a person waves')")
    if not torch.isfinite(features.detach()).all():
        raise UserError("motion features contain NaN or infinite values; the motion cannot be scored")
    if mask is not None and mask.shape != features.shape[:2]:
        raise UserError(f"mask must have shape {tuple(features.shape[:2])}, got {tuple(mask.shape)}")


def display_score(similarity: torch.Tensor) -> torch.Tensor:
    """Cosine similarity in [-1, 1] -> the [0, 1] number shown in the playground."""
    return similarity / 2 + 0.5


@register_reward("smoothness")
def smoothness_reward(**_: Any) -> RewardFn:
    """Text-independent example: minus the mean squared frame-to-frame change of the features."""
    def reward(features, texts, timestep, *, mask=None):
        check_inputs(features, texts, mask)
        step = (features[:, 1:] - features[:, :-1]).pow(2).mean(-1)  # (B, T-1)
        if mask is None:
            return -step.mean(1)
        both = (mask[:, 1:] & mask[:, :-1]).float()
        return -(step * both).sum(1) / both.sum(1).clamp(min=1)
    return reward


@register_reward(DEFAULT_REWARD)
def reward_model_reward(checkpoint: str = "reward", device: str | torch.device | None = None,
                        text_encoder: Any = None) -> RewardFn:
    """The trained reward model (a checkpoint name or folder): cosine similarity in [-1, 1]."""
    model, _ = load_reward_model(checkpoint, device)
    return RewardScorer(model, text_encoder)


# === text features ===================================================================================

class TextBank:
    """Frozen MiniLM features for captions, moved to the model's device.

    `encoder` has encode_tokens(texts) -> (tokens (B, L, 384), mask (B, L)) and encode_sentence(texts)
    -> (B, 384) normalized: easytune.text.TextEncoder, which caches per caption, so repeated captions
    across epochs are encoded once.
    """

    def __init__(self, encoder: Any, device: str | torch.device = "cpu"):
        self.encoder = encoder
        self.device = torch.device(device)

    def tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, 384) token features (zero padded) and (B, L) mask, True = valid."""
        tokens, mask = self.encoder.encode_tokens(list(texts))
        return tokens.float().to(self.device), mask.bool().to(self.device)

    def sentences(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, 384) unit sentence embeddings."""
        return self.encoder.encode_sentence(list(texts)).float().to(self.device)


def default_text_encoder(device: str | torch.device = "cpu") -> Any:
    from easytune.text import load_text_encoder

    return load_text_encoder(device)


# === scoring with the reward model ==================================================================

class RewardScorer:
    """The reward model as a `RewardFn`: (features, texts, timestep, mask=) -> (B,) cosine similarity.

    Differentiable w.r.t. features (the model's weights are frozen: requires_grad False, eval mode).
    """

    def __init__(self, model: torch.nn.Module, text_encoder: Any = None):
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.texts = TextBank(text_encoder if text_encoder is not None else default_text_encoder(self.device),
                              self.device)

    def __call__(self, features: torch.Tensor, texts: Sequence[str], timestep: torch.Tensor | None = None,
                 *, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(features, texts, mask)
        tokens, token_mask = self.texts.tokens(list(texts))
        return self.model(features.to(self.device), None if mask is None else mask.to(self.device),
                          tokens, token_mask, timestep)

    @torch.no_grad()
    def score(self, features: torch.Tensor, texts: Sequence[str], mask: torch.Tensor | None = None) -> list[float]:
        """Display scores in [0, 1] for clean motions (no gradient): what the playground shows."""
        return display_score(self(features, texts, None, mask=mask)).cpu().tolist()


class MeanReward:
    """Several reward functions as one: the mean of their (B,) scores. An ensemble of reward models trained
    apart keeps a fine-tune from climbing one model's idiosyncrasies (Coste et al. 2024, "Reward model
    ensembles help mitigate overoptimization")."""

    def __init__(self, members: Sequence[RewardFn]):
        if not members:
            raise UserError("an ensemble needs at least one reward")
        self.members = list(members)

    def __call__(self, features: torch.Tensor, texts: Sequence[str], timestep: torch.Tensor | None = None,
                 *, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([m(features, texts, timestep, mask=mask) for m in self.members]).mean(0)


def load_reward_model(name_or_path: str, device: str | torch.device | None = None):
    """(RewardModel on `device` in eval mode, Checkpoint) from a reward checkpoint name or folder."""
    from easytune.checkpoints import load_checkpoint, load_weights
    from easytune.config import config_from_dict
    from models.reward import RewardModel, RewardModelConfig

    ckpt = load_checkpoint(name_or_path, kind=KIND)
    model = RewardModel(config_from_dict(RewardModelConfig, ckpt.config["model"]))
    load_weights(model, ckpt.state, source=f"reward checkpoint {ckpt.path}", prefix="model.")
    return model.to(pick_device(device)).eval(), ckpt


# === training losses =================================================================================

def label_key(label: Any) -> Any:
    """A hashable (content, style) key from a tuple, list, array or tensor label."""
    if hasattr(label, "tolist"):
        label = label.tolist()
    return tuple(label) if isinstance(label, (list, tuple)) else label


def false_negative_mask(labels: Sequence[Any] | None, sentence_emb: torch.Tensor | None,
                        threshold: float) -> torch.Tensor:
    """(B, B) bool, True where pair (i, j), i != j, must not be used as a negative: same label, or
    caption sentence embeddings with cosine > threshold (paraphrases of one another)."""
    n = len(labels) if labels is not None else sentence_emb.shape[0]
    bad = torch.zeros(n, n, dtype=torch.bool)
    if labels is not None:
        keys = [label_key(l) for l in labels]
        bad |= torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.bool)
    if sentence_emb is not None:
        s = F.normalize(sentence_emb.float(), dim=-1)
        bad |= (s @ s.T).cpu() > threshold
    bad.fill_diagonal_(False)
    return bad


def info_nce(text_emb: torch.Tensor, motion_emb: torch.Tensor, temperature: float = 0.1,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over unit embeddings (B, E); `exclude` (B, B) masks false negatives."""
    logits = text_emb @ motion_emb.T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude.to(logits.device), float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# === training configuration ===========================================================================

def model_preset(name: str, step_aware: bool = True):
    """RewardModelConfig presets: "tiny" for tests, "small" for the CPU demo, "base" for GPUs."""
    from models.reward import RewardModelConfig

    base = RewardModelConfig(step_aware=step_aware)
    if name == "tiny":
        return dataclasses.replace(base, latent_dim=32, embed_dim=32, motion_layers=1, text_layers=1,
                                   num_heads=2, ff_size=64, dropout=0.0)
    if name == "small":
        return base
    if name == "base":
        return dataclasses.replace(base, latent_dim=384, embed_dim=256, motion_layers=6, text_layers=3,
                                   num_heads=6, ff_size=1024)
    raise UserError(f"unknown model preset {name!r}; choose tiny, small or base")


@dataclass
class RewardTrainConfig:
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder built by `data build`"})
    out: str = field(default="runs/reward", metadata={"help": "run folder: checkpoint, config, logs"})
    preset: Literal["tiny", "small", "base"] = field(default="small", metadata={"help": "model size (see model_preset)"})
    step_aware: bool = field(default=True, metadata={"help": "timestep token, so x_t can be scored (EasyTune)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps (~1 s each for small at 120 frames, 2 CPU cores)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per batch = 63 negatives per text"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (TMR uses 1e-4)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps, then cosine decay"})
    temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature (TMR: 0.1)"})
    fn_threshold: float = field(default=0.8, metadata={"help": "caption cosine above which a negative is a false negative (TMR: 0.8)"})
    noise_prob: float = field(default=0.5, metadata={"help": "fraction of motions replaced by a noisy x_t (step-aware only)"})
    noise_max_t: int = field(default=500, metadata={"help": "noisy x_t use t < this; beyond it text cannot be recovered"})
    max_frames: int = field(default=120, metadata={"help": "longest random crop in frames; 120 (6 s) halves the step time of 196"})
    caption_share: Literal["all", "even", "odd"] = field(
        default="even", metadata={"help": "paraphrases trained on: even positions (the evaluator uses the odd ones)"})
    tiny: int = field(default=0, metadata={"help": "use only the first N motions of each split (0 = all; smoke runs)"})
    seed: int = field(default=0, metadata={"help": "seed for init, batches, noise"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})
    log_every: int = field(default=50, metadata={"help": "steps between log lines"})
    save_every: int = field(default=500, metadata={"help": "steps between checkpoints (resume point)"})
    eval_seeds: int = field(default=5, metadata={"help": "seeds of the test-split retrieval report (0 = skip)"})
    resume: bool = field(default=True, metadata={"help": "continue from out/ if a train state is there"})

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise UserError(f"steps must be >= 1 and batch_size >= 2, got {self.steps} and {self.batch_size}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise UserError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if self.temperature <= 0:
            raise UserError(f"temperature must be > 0, got {self.temperature}")


# === data plumbing ==================================================================================

def open_dataset(root: str, split: str, *, tiny: int = 0, mean=None, std=None, random_crop: bool = True,
                 max_frames: int = 196, seed: int = 0):
    """The project's MotionDataset; random_crop=False gives deterministic items (first caption,
    longest crop from frame 0) for evaluation."""
    from easytune.motion.dataset import MotionDataset

    return MotionDataset(root, split, mean=mean, std=std, tiny=tiny or None, random_crop=random_crop,
                         max_frames=max_frames, seed=seed)


def share_caption(dataset, index: int, share: str, rng: np.random.Generator) -> dict[str, Any]:
    """Item `index` (its crop drawn from `rng`, see MotionDataset.item) with its caption drawn from
    `rng` among its share of the paraphrases: "even" / "odd" positions of `caption_choices`, or
    "all". The reward model and the evaluator train on different shares, so the judge does not share
    the reward's captions."""
    from easytune.motion.dataset import draw_item

    item = draw_item(dataset, index, rng)
    if share == "all":
        return item
    caps = caption_choices(dataset, index)
    mine = (caps[1::2] if share == "odd" else caps[0::2]) or caps  # a motion with one caption keeps it
    return {**item, "caption": mine[int(rng.integers(len(mine)))]}


def batch_at(dataset, batch_size: int, seed: int, step: int, share: str = "all") -> dict[str, Any]:
    """The collated batch of optimizer step `step`: epoch-shuffled motions (training.epoch_batch), each
    with its crop and caption (from `share`, see share_caption) drawn from step_rng(seed, step, ITEMS).
    A pure function of (seed, step): a resumed run sees the batches of the unbroken run."""
    from easytune.motion.dataset import collate

    rng = step_rng(seed, step, ITEMS)
    return collate([share_caption(dataset, j, share, rng) for j in epoch_batch(len(dataset), batch_size, seed, step)])


def noise_motions(x0: torch.Tensor, prob: float, max_t: int, g: torch.Generator,
                  scheduler: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a `prob` fraction of x0 (B, T, D) by x_t = scheduler.add_noise(x0, eps, t) with
    t ~ U[1, max_t); returns (x, t (B,)), t = 0 (the reward model's "clean") for untouched motions."""
    b = x0.shape[0]
    t = torch.randint(1, max(2, max_t), (b,), generator=g)
    t = torch.where(torch.rand(b, generator=g) < prob, t, torch.zeros_like(t))
    eps = torch.randn(x0.shape, generator=g).to(x0)
    xt = scheduler.add_noise(x0, eps, t.to(x0.device))
    return torch.where((t > 0).to(x0.device)[:, None, None], xt, x0), t.to(x0.device)


def default_scheduler(num_timesteps: int) -> Any:
    """The base model's noise schedule (easytune.diffusion, default config), so that noisy training
    matches what the sampler produces."""
    from easytune.diffusion import DDIMScheduler, DiffusionConfig

    return DDIMScheduler(DiffusionConfig(num_train_timesteps=num_timesteps))


def lr_schedule(lr: float, warmup: int, steps: int) -> LRSchedule:
    """The reward / SPL / evaluator schedule: linear warm-up, then a cosine down to 0 at `steps`
    (min_lr_ratio 0: what the shipped reward and evaluator checkpoints were trained with)."""
    return LRSchedule(lr=lr, max_steps=steps, warmup_steps=warmup, min_lr_ratio=0.0)


# === the training step (reward, SPL and evaluator), run by easytune.training.run_loop ===============

LossFn = Callable[[torch.nn.Module, dict[str, Any], int], dict[str, torch.Tensor]]


def fit(model: torch.nn.Module, batch_fn: Callable[[int], dict[str, Any]], loss_fn: LossFn, *,
        schedule: LRSchedule, seed: int = 0, weight_decay: float = 0.0,
        optimizer: torch.optim.Optimizer | None = None, start_step: int = 0,
        save: Callable[[int], None] | None = None, save_every: int = 0, log_every: int = 50,
        on_step: Callable[[dict[str, float]], None] | None = None, should_stop: Callable[[], bool] | None = None,
        progress: bool = True, desc: str = "train", grad_clip: float = 1.0) -> LoopResult:
    """Steps start_step..schedule.max_steps-1 of `loss_fn(model, batch_fn(step), step)["loss"]`
    (AdamW unless `optimizer` is given, gradient norm clipped to `grad_clip`) through run_loop, which
    sets the learning rate, saves (`save(step)` every `save_every` steps and at the end), calls
    `on_step(metrics)` after each step and stops when `should_stop()`. For an exact resume,
    `batch_fn(step)` and the loss's own draws must depend on (seed, step) only; dropout is seeded
    from (seed, step) here. Returns the LoopResult (step, stopped, the last step's metrics)."""
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=weight_decay)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        batch = batch_fn(step)
        seed_torch(seed, step)  # dropout
        losses = loss_fn(model, batch, step)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return losses

    model.train()
    try:
        return run_loop(step_fn, optimizer=opt, schedule=schedule, start_step=start_step, save=save,
                        save_every=save_every, log_every=log_every, on_step=on_step, should_stop=should_stop,
                        progress=progress, desc=desc)
    finally:
        model.eval()


def retrieval_loss_fn(text_bank: TextBank, temperature: float, fn_threshold: float, noise_prob: float = 0.0,
                      noise_max_t: int = 0, scheduler: Any = None, seed: int = 0) -> LossFn:
    """The reward model's InfoNCE loss on a collated batch, with false negatives masked; the noisy
    x_t of step `step` come from step_generator(seed, step, NOISE)."""
    def loss_fn(model, batch, step):
        device = next(model.parameters()).device
        x, mask = batch["motion"].to(device), batch["mask"].to(device)
        t = None
        if noise_prob > 0 and scheduler is not None:
            x, t = noise_motions(x, noise_prob, noise_max_t, step_generator(seed, step, NOISE), scheduler)
        tokens, tmask = text_bank.tokens(batch["captions"])
        t_emb = model.encode_text(tokens, tmask)
        m_emb = model.encode_motion(x, mask, t)
        exclude = false_negative_mask(batch.get("labels"), text_bank.sentences(batch["captions"]), fn_threshold)
        return {"loss": info_nce(t_emb, m_emb, temperature, exclude), "n_excluded": exclude.sum().float() / len(x)}
    return loss_fn


# === evaluation: retrieval on the test split ============================================================

@torch.no_grad()
def embed_split(model: torch.nn.Module, dataset, text_bank: TextBank, *, caption_seed: int = 0,
                batch_size: int = 64) -> dict[str, Any]:
    """Embeddings of every motion of `dataset` and one caption per motion (chosen by caption_seed):
    {"text" (N, E), "motion" (N, E), "labels", "names"}, motions clean (timestep None)."""
    from easytune.motion.dataset import collate

    model.eval()
    device = next(model.parameters()).device
    rng = torch.Generator().manual_seed(caption_seed)
    t_out, m_out, labels, names, captions = [], [], [], [], []
    for i in range(0, len(dataset), batch_size):
        idx = range(i, min(len(dataset), i + batch_size))
        b = collate([{**dataset[j], "caption": _pick(caption_choices(dataset, j), rng)} for j in idx])
        tokens, tmask = text_bank.tokens(b["captions"])
        t_out.append(model.encode_text(tokens, tmask).cpu())
        m_out.append(model.encode_motion(b["motion"].to(device), b["mask"].to(device), None).cpu())
        labels += [label_key(l) for l in b["labels"]]
        names += list(b["names"])
        captions += list(b["captions"])
    return {"text": torch.cat(t_out), "motion": torch.cat(m_out), "labels": labels, "names": names,
            "captions": captions}


def _pick(options: Sequence[str], rng: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=rng))]


def caption_choices(dataset, index: int) -> list[str]:
    """All captions of motion `index` (MotionDataset.captions), else the one its item carries."""
    fn = getattr(dataset, "captions", None)
    caps = fn(index) if callable(fn) else None
    return list(caps) if caps else [dataset[index]["caption"]]


def retrieval_report(model: torch.nn.Module, groups: dict[str, Any], text_bank: TextBank, seeds: int = 5,
                     ks: Sequence[int] = (1, 2, 3, 5, 10), batch_size: int = 32) -> dict[str, Any]:
    """Small-batch retrieval per group of motions (e.g. {"test": ..., "seen": ..., "unseen": ...}
    datasets): batches of `batch_size` motions with distinct (content, style) labels, t2m and m2t R@k,
    mean and 95% CI over `seeds` (each seed draws the captions and the batches).

    A group with fewer distinct labels than batch_size uses batches of as many motions as it has
    labels (documented fallback); the batch size used is reported per group."""
    from easytune.metrics import mean_ci, small_batch_retrieval

    report: dict[str, Any] = {"protocol": f"batches of {batch_size} motions with distinct (content, style) labels "
                                          f"(fewer where a group has fewer labels, see batch), cosine similarity, "
                                          f"{seeds} seeds, mean ± 95% CI (Student t)", "groups": {}, "skipped": {}}
    for name, dataset in groups.items():
        rows, used = [], batch_size
        for seed in range(seeds):
            emb = embed_split(model, dataset, text_bank, caption_seed=seed)
            used = min(batch_size, len(set(emb["labels"])))
            if used < 2:
                report["skipped"][name] = f"only {used} distinct label(s)"
                break
            rows.append(small_batch_retrieval(emb["text"], emb["motion"], emb["labels"], ks, used, seed))
        if rows:
            report["groups"][name] = {"batch": used, "motions": len(dataset),
                                      **{k: mean_ci([r[k] for r in rows]) for k in rows[0]}}
    return report


def format_retrieval(report: dict[str, Any], title: str = "") -> str:
    """Markdown table of a retrieval report; the protocol line is always printed with it."""
    lines = [f"### {title}" if title else "", f"Protocol: {report['protocol']}.", ""]
    groups = report["groups"]
    if groups:
        keys = [k for k in next(iter(groups.values())) if k not in ("batch", "motions")]
        lines.append("| group | motions | batch | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 3) + "|")
        for g, vals in groups.items():
            lines.append(f"| {g} | {vals['motions']} | {vals['batch']} | " + " | ".join(_fmt(*vals[k]) for k in keys) + " |")
    for g, why in report.get("skipped", {}).items():
        lines.append(f"\n{g}: skipped ({why})")
    return "\n".join(l for l in lines if l is not None)


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.1f}" + ("" if math.isnan(half) else f" ± {half:.1f}")


def eval_groups(root: str, mean, std, tiny: int = 0) -> dict[str, Any]:
    """{"test", "seen", "unseen"} datasets: the test split and its seen / unseen (content, style)
    combination subsets (test_seen.txt, test_unseen.txt) where the dataset has them."""
    groups = {"test": open_dataset(root, "test", tiny=tiny, mean=mean, std=std, random_crop=False)}
    for name in ("seen", "unseen"):
        if (Path(root) / f"test_{name}.txt").is_file():
            ds = open_dataset(root, f"test_{name}", tiny=tiny, mean=mean, std=std, random_crop=False)
            if len(ds):
                groups[name] = ds
    return groups


# === checkpoints and model cards ===================================================================

def save_reward_checkpoint(out: str | Path, model: torch.nn.Module, *, train_config: Any, dataset_info: dict,
                           meta: dict[str, Any], mean: torch.Tensor | None = None,
                           std: torch.Tensor | None = None) -> Path:
    from easytune.checkpoints import save_checkpoint

    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    if mean is not None:
        state["mean"], state["std"] = torch.as_tensor(mean), torch.as_tensor(std)
    return save_checkpoint(out, state, kind=KIND, dataset=dataset_info, meta=meta,
                           config={"model": dataclasses.asdict(model.cfg), "train": dataclasses.asdict(train_config)})


def dataset_stamp(dataset) -> dict[str, Any]:
    stamp = getattr(dataset, "stamp", None)
    return {"stamp": stamp, "content_stamp": getattr(dataset, "content_stamp", None),
            "root": str(getattr(dataset, "root", ""))}


def dataset_stats(dataset) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    return (None, None) if mean is None else (torch.as_tensor(mean).float(), torch.as_tensor(std).float())


# === `python -m easytune train reward` ===============================================================

def main(cfg: RewardTrainConfig, text_encoder: Any = None, *,
         on_step: Callable[[dict[str, float]], None] | None = None, should_stop: Callable[[], bool] | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Train the reward model; writes out/{model.safetensors, config.json, train_config.json, README.md,
    retrieval.json}. `on_step(metrics)` follows every step, `should_stop()` cancels: the run saves its
    resume point and returns {"stopped": True} without the report and model card. A resumed run
    (cfg.resume, the default) repeats the unbroken one exactly: batches, crops, captions and noise
    come from (seed, step) only."""
    from easytune.checkpoints import save_train_state
    from easytune.fileio import write_json
    from models.reward import RewardModel

    cfg.validate()
    check_output_path(cfg.out, kind="dir")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    train = open_dataset(cfg.data, "train", tiny=cfg.tiny, max_frames=cfg.max_frames, seed=cfg.seed)
    mean, std = dataset_stats(train)
    out = open_run(cfg.out, cfg)  # after the inputs load: a bad --data writes nothing
    bank = TextBank(text_encoder if text_encoder is not None else default_text_encoder(device), device)
    model = RewardModel(model_preset(cfg.preset, cfg.step_aware)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("reward model %s: %.2fM parameters; %d train motions, batch %d, %d steps (%.1f epochs)",
             cfg.preset, n_params / 1e6, len(train), cfg.batch_size, cfg.steps,
             cfg.steps * cfg.batch_size / max(1, len(train)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = resume_point(out, opt, model, kind=KIND) if cfg.resume else 0
    sched = default_scheduler(model.cfg.num_timesteps) if cfg.step_aware and cfg.noise_prob > 0 else None
    loss_fn = retrieval_loss_fn(bank, cfg.temperature, cfg.fn_threshold, cfg.noise_prob, cfg.noise_max_t,
                                sched, cfg.seed)
    t0 = time.time()

    def save(step: int) -> None:
        save_reward_checkpoint(out, model, train_config=cfg, dataset_info=dataset_stamp(train), mean=mean, std=std,
                               meta={"command": "python -m easytune train reward", "seed": cfg.seed, "steps": step,
                                     "wall_s": round(time.time() - t0, 1), "parameters": n_params})
        save_train_state(out, opt, {"step": step})

    res = fit(model, lambda step: batch_at(train, cfg.batch_size, cfg.seed, step, cfg.caption_share), loss_fn,
              schedule=lr_schedule(cfg.lr, cfg.warmup, cfg.steps), seed=cfg.seed, optimizer=opt, start_step=start,
              save=save, save_every=cfg.save_every, log_every=cfg.log_every, on_step=on_step,
              should_stop=should_stop, progress=progress, desc="train reward")
    if res.stopped:
        log.info("stopped at step %d of %d; run again to resume", res.step, cfg.steps)
        return {"out": str(out), "retrieval": None, "step": res.step, "stopped": True}
    report = None
    if cfg.eval_seeds:
        report = retrieval_report(model, eval_groups(cfg.data, mean, std, cfg.tiny), bank, cfg.eval_seeds)
        write_json(out / "retrieval.json", report)
        print(format_retrieval(report, "Reward model retrieval, test split"))
    ck.write_model_card(out, "EasyTune reward model (TMR-style, step-aware)" if cfg.step_aware else
                     "EasyTune reward model (TMR-style)", {
        "Model": f"preset {cfg.preset}, {n_params / 1e6:.2f}M parameters, InfoNCE temperature {cfg.temperature}, "
                 f"false-negative threshold {cfg.fn_threshold}, noisy-motion augmentation {cfg.noise_prob}.",
        "Command": f"`{command_for('python -m easytune train reward', cfg)}` (resolved config: train_config.json)",
        "Metrics": format_retrieval(report, "Test split") if report else "not evaluated (--eval-seeds 0)",
    })
    return {"out": str(out), "retrieval": report, "step": res.step, "stopped": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, RewardTrainConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    main(config_from_args(RewardTrainConfig, args))
    return 0
