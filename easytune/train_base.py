"""`python -m easytune train base`: train the text-to-motion diffusion denoiser.

    python -m easytune train base --data DATASET_DIR --run-dir runs/base --preset cpu

A run directory holds `run_config.json` (the resolved config) and `last/` (a base checkpoint of the EMA
weights with the dataset's Mean/Std, plus the optimizer/raw-weights train state). Running again on the
same run directory resumes from `last/` unless --no-resume is given. The checkpoint's `sampling`
entry (steps, guidance, eta) is the default schedule that `sample`, the playground and fine-tuning use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from easytune.checkpoints import (check_dataset, load_checkpoint, load_train_state, load_weights, save_checkpoint,
                                  save_train_state)
from easytune.config import add_config_args, apply_overrides, config_from_args
from easytune.device import pick_device
from easytune.diffusion import DDIMScheduler, DiffusionConfig
from easytune.errors import UserError
from easytune.motion.dataset import draw_item
from easytune.training import ITEMS, NOISE, LRSchedule, open_run, run_loop, seed_torch, step_generator, step_rng
from models.denoiser import DenoiserConfig, MotionDenoiser

log = logging.getLogger("easytune.train_base")
KIND = "base"
LAST = "last"
RUN_CONFIG = "run_config.json"  # not config.json: that name marks a checkpoint folder
# Validation batches do not depend on the training seed, so runs with different seeds report
# comparable val losses (1 = what seed 0 used when the batches were seed + 1).
VAL_SEED = 1


@dataclass
class TrainBaseConfig:
    """Everything a base-model run needs; saved as run_dir/run_config.json and in the checkpoint."""

    # --- data ---
    data: str = field(default="", metadata={"help": "dataset folder (HumanML3D layout: new_joint_vecs/, texts/, Mean.npy, Std.npy, train.txt)"})
    run_dir: str = field(default="runs/base", metadata={"help": "where run_config.json and the last/ checkpoint go"})
    init: str = field(default="", metadata={"help": "start from this base checkpoint's (EMA) weights instead of a random init: fresh optimizer and LR schedule, same architecture and dataset (ignored when resuming)"})
    tiny: int | None = field(default=None, metadata={"help": "use only this many training clips (smoke runs)"})
    min_frames: int = field(default=20, metadata={"help": "shortest training crop in frames (1 s at 20 fps)"})
    max_frames: int = field(default=196, metadata={"help": "longest training crop in frames (9.8 s, HumanML3D's cap)"})
    # --- model (see models/denoiser.py) ---
    d_model: int = field(default=256, metadata={"help": "transformer width"})
    layers: int = field(default=4, metadata={"help": "transformer depth"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    ff_mult: int = field(default=4, metadata={"help": "feed-forward width / d_model"})
    dropout: float = field(default=0.1, metadata={"help": "transformer dropout"})
    frames_per_token: int = field(default=2, metadata={"help": "frames per motion token (attention cost / k^2)"})
    out_smooth: int = field(default=0, metadata={"help": "odd kernel of a zero-initialised residual temporal conv on the output frames (0 = none); smooths the borders between tokens"})
    # --- diffusion (see easytune/diffusion.py) ---
    num_train_timesteps: int = field(default=1000, metadata={"help": "training noise levels"})
    beta_schedule: Literal["cosine", "scaled_linear"] = field(default="cosine", metadata={"help": "noise schedule"})
    prediction_type: Literal["x0", "epsilon"] = field(default="x0", metadata={"help": "denoiser target"})
    cond_drop: float = field(default=0.1, metadata={"help": "probability of dropping the text (trains the unconditional model for guidance)"})
    vel_weight: float = field(default=0.0, metadata={"help": "weight of a frame-to-frame velocity loss on the predicted x0 (MDM's geometric loss, on features); needs prediction_type x0"})
    # --- default sampling schedule stored in the checkpoint ---
    sample_steps: int = field(default=10, metadata={"help": "default DDIM steps at sampling time: 10 keeps base + fine-tuned under 0.5 s on 2 cores (bench/bench_sampling.py)"})
    guidance: float = field(default=2.5, metadata={"help": "default classifier-free guidance scale"})
    # --- optimisation ---
    batch_size: int = field(default=32, metadata={"help": "clips per step"})
    lr: float = field(default=2e-4, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms/biases/embeddings)"})
    warmup_steps: int = field(default=200, metadata={"help": "linear LR warm-up steps"})
    max_steps: int = field(default=3000, metadata={"help": "total optimizer steps (3000 x 32 clips ~ 2 h at the 12.6 samples/s measured on Bandai); LR follows a cosine to min_lr_ratio"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final LR as a fraction of lr"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip (0 = off)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA of weights; the checkpoint holds the EMA"})
    # --- bookkeeping ---
    val_every: int = field(default=250, metadata={"help": "steps between validation losses (0 = off)"})
    val_batches: int = field(default=4, metadata={"help": "fixed validation batches per evaluation"})
    ckpt_every: int = field(default=250, metadata={"help": "steps between checkpoints (one is always written at the end)"})
    seed: int = field(default=0, metadata={"help": "seeds init, batches, timesteps and noise"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda[:i]"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on CPU)"})

    def validate(self) -> None:
        for name in ("batch_size", "max_steps", "sample_steps", "min_frames"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.min_frames <= self.max_frames:
            raise UserError(f"min_frames ({self.min_frames}) must not exceed max_frames ({self.max_frames})")
        if not 0 <= self.cond_drop < 1:
            raise UserError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if self.vel_weight < 0 or (self.vel_weight and self.prediction_type != "x0"):
            raise UserError(f"vel_weight must be >= 0 and needs prediction_type x0, got {self.vel_weight} with "
                            f"{self.prediction_type}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        self.denoiser_config().validate()
        self.diffusion_config().validate()

    def denoiser_config(self) -> DenoiserConfig:
        return DenoiserConfig(d_model=self.d_model, layers=self.layers, heads=self.heads, ff_mult=self.ff_mult,
                              dropout=self.dropout, frames_per_token=self.frames_per_token,
                              out_smooth=self.out_smooth, input_skip=self.prediction_type == "epsilon")

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                               prediction_type=self.prediction_type)


# --- presets: functions that change only what differs from the defaults ------------------------------

def preset_cpu() -> TrainBaseConfig:
    """The default: a 3.7M-parameter model; 3000 steps of 32 clips take ~2 h at the 12.6 samples/s measured
    on Bandai on the shared 2-core CPU (bench/bench_train.py)."""
    return TrainBaseConfig()


def preset_tiny() -> TrainBaseConfig:
    """Tests and smoke runs: a few seconds on one core."""
    return dataclasses.replace(preset_cpu(), d_model=64, layers=2, heads=2, ff_mult=2, dropout=0.0,
                               batch_size=4, max_steps=200, warmup_steps=20, val_every=100, ckpt_every=100,
                               val_batches=1, ema_decay=0.99, lr=1e-3, max_frames=64)


def preset_gpu() -> TrainBaseConfig:
    """A wider model for a CUDA machine."""
    return dataclasses.replace(preset_cpu(), d_model=512, layers=8, heads=8, batch_size=128, max_steps=50_000,
                               warmup_steps=1000, frames_per_token=1, val_every=1000, ckpt_every=1000)


PRESETS: dict[str, Callable[[], TrainBaseConfig]] = {"cpu": preset_cpu, "tiny": preset_tiny, "gpu": preset_gpu}


# --- pieces of the loop ---------------------------------------------------------------------------------

def lr_schedule(cfg: TrainBaseConfig) -> LRSchedule:
    """Linear warm-up to cfg.lr, then a cosine down to cfg.lr * min_lr_ratio at max_steps."""
    return LRSchedule(cfg.lr, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)


def make_optimizer(model: torch.nn.Module, cfg: TrainBaseConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "emb" not in name and "null" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The clips of optimizer step `step` (drawn with replacement): a pure function of (seed, step), so a
    resumed run sees the same batches as an uninterrupted one. Their crops and captions come from
    step_rng(seed, step, ITEMS) (see train)."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n_items, size=batch_size, replace=n_items < batch_size).tolist()


def diffusion_loss(denoiser: torch.nn.Module, scheduler: DDIMScheduler, batch: dict[str, Any],
                   text_tokens: torch.Tensor, text_mask: torch.Tensor, generator: torch.Generator | None,
                   cond_drop: float, vel_weight: float = 0.0, rows: slice | None = None,
                   world: Any = None) -> torch.Tensor:
    """Masked MSE between the denoiser's output and its target at random timesteps (valid frames only),
    plus vel_weight x the masked MSE of their frame-to-frame differences (x0 prediction).

    torchrun (easytune.distributed): `batch` and the text are the whole global batch, drawn as one
    process would; this rank computes `rows` of it, and each mean is divided by the global count of
    valid values, times the world size, so that DDP's gradient average is the global batch's gradient."""
    from easytune.distributed import SINGLE, total

    world = world or SINGLE
    x0, mask = batch["motion"], batch["mask"]
    B, device = x0.shape[0], x0.device
    t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    drop = (torch.rand(B, generator=generator) < cond_drop).to(device)
    if rows is not None:  # the draws above are the global batch's; keep this rank's rows
        x0, mask, t, noise, drop = x0[rows], mask[rows], t[rows], noise[rows], drop[rows]
        text_tokens, text_mask = text_tokens[rows], text_mask[rows]

    def mean(err: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        count = valid.sum() * x0.shape[-1]
        if world.size > 1:
            return err.sum() * world.size / total(count, world).clamp(min=1).to(err)
        return err.sum() / count.clamp(min=1)

    x_t = scheduler.add_noise(x0, noise, t)
    out = denoiser(x_t, t, text_tokens, text_mask, mask, drop_text=drop)
    target = scheduler.training_target(x0, noise)
    loss = mean((out.float() - target) ** 2 * mask[..., None], mask)
    if vel_weight:
        both = (mask[:, 1:] & mask[:, :-1])[..., None]
        verr = (out.float().diff(dim=1) - target.diff(dim=1)) ** 2 * both
        loss = loss + vel_weight * mean(verr, both[..., 0])
    return loss


@torch.no_grad()
def validation_loss(denoiser: torch.nn.Module, scheduler: DDIMScheduler, data: Sequence[dict],
                    collate: Callable[[list[dict]], dict[str, Any]],
                    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                    batch_size: int, batches: int) -> float:
    """Mean diffusion loss over `batches` fixed batches of `data` (VAL_SEED), with fixed timesteps and
    noise: the same number for the same weights, whatever run or seed they come from."""
    device = next(denoiser.parameters()).device
    gen = torch.Generator().manual_seed(12345)
    losses = []
    for b in range(batches):
        batch = to_device(collate([data[i] for i in batch_indices(len(data), batch_size, VAL_SEED, b)]), device)
        tok, msk = encode(batch["captions"])
        losses.append(diffusion_loss(denoiser, scheduler, batch, tok, msk, gen, 0.0).item())
    return float(np.mean(losses))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (torch.as_tensor(v).to(device) if k in ("motion", "mask") else v) for k, v in batch.items()}


def base_checkpoint_config(cfg: TrainBaseConfig) -> dict[str, Any]:
    """The checkpoint's `config`: what load_base needs to rebuild the model and its default sampler."""
    return {"model": asdict(cfg.denoiser_config()), "diffusion": asdict(cfg.diffusion_config()),
            "sampling": {"steps": cfg.sample_steps, "guidance": cfg.guidance, "eta": 0.0}, "train": asdict(cfg)}


def _stats(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(np.asarray(ds.mean), dtype=torch.float32),
            torch.as_tensor(np.asarray(ds.std), dtype=torch.float32))


# --- the run -----------------------------------------------------------------------------------------------

def train(cfg: TrainBaseConfig, train_set: Sequence[dict], val_set: Sequence[dict] | None, *,
          collate: Callable[[list[dict]], dict[str, Any]], text_encoder: Any, resume: bool = True,
          progress: bool = True, command: str | None = None,
          on_step: Callable[[dict[str, float]], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train (or resume) a base model into cfg.run_dir; returns a summary (steps, losses, samples/s,
    stopped). The steps run through easytune.training.run_loop: `on_step(metrics)` follows every
    step (loss, lr, samples_per_s, val_loss when measured), `should_stop()` cancels (the run saves
    its resume point and returns). A resumed run repeats the unbroken one exactly: batches, crops,
    captions, timesteps, noise, text drops and dropout are drawn from (seed, step) only.

    train_set/val_set: map-style datasets of {"motion" (T,263) normalized, "caption", ...} with
    `.mean`, `.std` (263,) and `.stamp` (a MotionDataset draws each step's crops through `item`);
    collate pads them into {"motion", "mask", "captions"}.
    """
    from easytune.distributed import any_rank, barrier, init, local_device, same_on_all_ranks, total

    cfg.validate()
    run_dir = Path(cfg.run_dir)
    last = run_dir / LAST
    device = pick_device(cfg.device)
    world = init(device)  # torchrun: DDP over ranks, each computing its rows of the global batch
    device = local_device(device, world)
    rows = world.rows(cfg.batch_size) if world.size > 1 else None
    torch.manual_seed(cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    if len(train_set) == 0:
        raise UserError(f"the training set in {cfg.data or 'the given data'} is empty; check train.txt and the clip lengths")

    model = MotionDenoiser(cfg.denoiser_config()).to(device)
    ema = MotionDenoiser(cfg.denoiser_config()).to(device).eval()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    scheduler = DDIMScheduler(cfg.diffusion_config())
    optimizer = make_optimizer(model, cfg)
    mean, std = _stats(train_set)
    stamp = getattr(train_set, "stamp", None)
    record = {"stamp": stamp, "content_stamp": getattr(train_set, "content_stamp", None), "mean": mean, "std": std}
    n_params = sum(p.numel() for p in model.parameters())

    step, best_val, history = 0, None, []
    if resume and (last / "train_state.json").is_file():
        ckpt = load_checkpoint(last, kind=KIND)
        check_dataset(ckpt, record)
        load_weights(ema, ckpt.state, source=f"checkpoint {last}", prefix="denoiser.")
        state = load_train_state(last, optimizer)
        extra, tensors = state
        load_weights(model, tensors, source=f"train state in {last}", prefix="model.")
        step, best_val, history = extra["step"], extra.get("best_val"), extra.get("history", [])
        log.info(f"resuming {run_dir} from step {step}")
    elif cfg.init:
        init = load_checkpoint(cfg.init, kind=KIND)
        check_dataset(init, record)
        fresh = load_weights(model, init.state, source=f"--init checkpoint {init.path}", prefix="denoiser.",
                             may_lack=MotionDenoiser.IDENTITY_INIT)
        ema.load_state_dict(model.state_dict())
        log.info(f"starting from the weights of {init.path} (step {init.meta.get('step')} of its run)"
                 + (f"; new identity-initialised layers: {', '.join(fresh)}" if fresh else ""))
    net = model
    if world.size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # the null text embedding is unused by a batch that drops no text
    if world.main:
        open_run(run_dir, cfg, RUN_CONFIG)
    log.info(f"denoiser: {n_params / 1e6:.2f}M parameters on {device}; {len(train_set)} training clips; "
             f"batch {cfg.batch_size}; steps {step} -> {cfg.max_steps}")

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok, msk = text_encoder.encode_tokens(captions)
        return tok.to(device), msk.to(device)

    t_start, seen, val_loss, samples_per_s, start = time.perf_counter(), 0, None, None, step

    def save(step: int) -> None:
        if not same_on_all_ranks(list(model.parameters()), world):
            raise UserError(f"torchrun replicas hold different weights at step {step}; the run stopped and kept "
                            f"its last checkpoint (were all ranks started with the same config?)")
        if not world.main:
            return
        state = {f"denoiser.{k}": v for k, v in ema.state_dict().items()} | {"mean": mean, "std": std}
        meta = {"step": step, "seed": cfg.seed, "val_loss": val_loss, "samples_per_s": samples_per_s,
                "params": n_params, "command": command}
        save_checkpoint(last, state, kind=KIND, config=base_checkpoint_config(cfg),
                        dataset={"stamp": stamp, "content_stamp": record["content_stamp"], "root": cfg.data}, meta=meta)
        save_train_state(last, optimizer, {"step": step, "best_val": best_val, "history": history},
                         {f"model.{k}": v for k, v in model.state_dict().items()})

    def validate() -> float | None:
        if val_set is None or len(val_set) == 0 or not world.main:
            return None
        with autocast:
            return validation_loss(ema, scheduler, val_set, collate, encode, cfg.batch_size, cfg.val_batches)

    def train_step(step: int) -> dict[str, Any]:
        nonlocal seen, samples_per_s, val_loss, best_val
        # --- the step's data: a pure function of (seed, step), so a resumed run repeats an unbroken one ---
        items = step_rng(cfg.seed, step, ITEMS)
        batch = to_device(collate([draw_item(train_set, i, items) for i in
                                   batch_indices(len(train_set), cfg.batch_size, cfg.seed, step)]), device)
        tok, msk = encode(batch["captions"])
        seed_torch(cfg.seed, step)  # dropout
        # --- forward / backward ---
        with autocast:
            loss = diffusion_loss(net, scheduler, batch, tok, msk, step_generator(cfg.seed, step, NOISE),
                                  cfg.cond_drop, cfg.vel_weight, rows=rows, world=world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        seen += cfg.batch_size
        samples_per_s = seen / (time.perf_counter() - t_start)
        shown = loss.item() if world.size == 1 else float(total(loss.item(), world)) / world.size
        metrics = {"loss": shown, "samples_per_s": samples_per_s}
        # --- validate (the loop then saves on its ckpt_every cadence) ---
        done = step + 1
        if cfg.val_every and (done % cfg.val_every == 0 or done == cfg.max_steps):
            val_loss = validate()
            if val_loss is not None:
                best_val = val_loss if best_val is None else min(best_val, val_loss)
                history.append({"step": done, "train_loss": metrics["loss"], "val_loss": val_loss})
                log.info(f"step {done}: train loss {metrics['loss']:.4f}, val loss {val_loss:.4f}")
                metrics["val_loss"] = val_loss
        return metrics

    model.train()
    stop = should_stop if world.size == 1 else (lambda: any_rank(should_stop is not None and should_stop(), world))
    res = run_loop(train_step, optimizer=optimizer, schedule=lr_schedule(cfg), start_step=start,
                   max_steps=cfg.max_steps, save=save, save_every=cfg.ckpt_every, log_every=0,
                   on_step=on_step, should_stop=stop, progress=progress and world.main, desc="train base")
    if res.step == start and not (last / "config.json").is_file():
        save(res.step)
    barrier(world)  # the other ranks return once rank 0 has written the checkpoint
    return {"step": res.step, "val_loss": val_loss, "best_val": best_val, "samples_per_s": samples_per_s,
            "checkpoint": str(last), "history": history, "stopped": res.stopped}


# --- CLI ---------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="starting config before overrides")
    parser.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="continue from RUN_DIR/last when it exists (the default; starts afresh otherwise)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start afresh even if the run directory has a checkpoint (it is overwritten)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    add_config_args(parser, TrainBaseConfig)


def resolve_config(args: argparse.Namespace) -> TrainBaseConfig:
    """Preset, then (when resuming) the run's saved config, then --config file, then flags."""
    base = PRESETS[args.preset]()
    flags = {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__") and v is not None}
    run_dir = Path(flags.get("run_dir") or base.run_dir)
    saved = run_dir / RUN_CONFIG
    if getattr(args, "resume", True) and (run_dir / LAST / "train_state.json").is_file() and saved.is_file():
        base = apply_overrides(base, json.loads(saved.read_text(encoding="utf-8")))
    return config_from_args(TrainBaseConfig, args, base=base)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (preset + the flags given), for the checkpoint's meta."""
    parts = ["python -m easytune train base", f"--preset {args.preset}"]
    if getattr(args, "config", None) is not None:
        parts.append(f"--config {args.config}")
    for k, v in vars(args).items():
        if k.startswith("cfg__") and v is not None:
            parts.append(f"--{k[len('cfg__'):].replace('_', '-')} {shlex.quote(str(v))}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from easytune.inputs import check_output_path
    from easytune.motion.dataset import MotionDataset, collate
    from easytune.text import load_text_encoder

    cfg = resolve_config(args)
    check_output_path(cfg.run_dir, kind="dir", flag="--run-dir")
    if not cfg.data:
        raise UserError("--data is required: the dataset folder (with new_joint_vecs/, texts/, Mean.npy, Std.npy, train.txt)")
    root = Path(cfg.data)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist")
    train_set = MotionDataset(root, "train", min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                              tiny=cfg.tiny, seed=cfg.seed)
    val_set = None
    if (root / "val.txt").is_file():
        val_set = MotionDataset(root, "val", mean=train_set.mean, std=train_set.std, min_frames=cfg.min_frames,
                                max_frames=cfg.max_frames, seed=cfg.seed, random_crop=False)
    encoder = load_text_encoder(pick_device(cfg.device))
    summary = train(cfg, train_set, val_set, collate=collate, text_encoder=encoder, resume=args.resume,
                    progress=args.progress, command=command_line(args))
    from easytune.distributed import world

    if not world().main:
        return 0
    speed = f"{summary['samples_per_s']:.1f} samples/s" if summary["samples_per_s"] else "nothing left to do"
    val = "n/a" if summary["val_loss"] is None else f"{summary['val_loss']:.4f}"
    print(f"trained to step {summary['step']} ({speed}); val loss {val}; checkpoint: {summary['checkpoint']}")
    return 0
