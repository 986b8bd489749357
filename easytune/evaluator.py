"""The evaluator: training (`python -m easytune train evaluator`), loading, and embedding.

A Guo-style text-motion matching model (models/evaluator.py), trained separately from the reward
model (its own seed, architecture and caption share) with Guo's margin contrastive loss on Euclidean
distances: positives pulled together, in-batch negatives pushed beyond `margin`, false negatives
(same (content, style) label or near-identical captions) left out. It judges generated motions and is
never used as a reward.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from easytune import checkpoints as ck
from easytune.config import command_for
from easytune.device import pick_device
from easytune.errors import UserError

log = logging.getLogger(__name__)

KIND = "evaluator"


def margin_loss(text_emb: torch.Tensor, motion_emb: torch.Tensor, margin: float,
                exclude: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Guo's contrastive loss on (B, E) embeddings: mean d(t_i, m_i)^2 + mean over negatives (i != j,
    not excluded) of max(0, margin - d(t_i, m_j))^2. Returns named terms and their sum as "loss"."""
    d = torch.cdist(text_emb, motion_emb)
    b = len(d)
    neg = ~torch.eye(b, dtype=torch.bool, device=d.device)
    if exclude is not None:
        neg &= ~exclude.to(d.device)
    pos = d.diagonal().pow(2).mean()
    negative = (margin - d[neg]).clamp(min=0).pow(2).mean() if neg.any() else d.sum() * 0.0
    return {"loss": pos + negative, "positive": pos, "negative": negative}


def model_preset(name: str, embed_dim: int):
    from models.evaluator import EvaluatorConfig

    base = EvaluatorConfig(embed_dim=embed_dim)
    if name == "tiny":
        return dataclasses.replace(base, movement_dim=32, hidden_dim=32, dropout=0.0)
    if name == "small":
        return base
    raise UserError(f"unknown evaluator preset {name!r}; choose tiny or small")


@dataclass
class EvaluatorTrainConfig:
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder built by `data build`"})
    out: str = field(default="runs/evaluator", metadata={"help": "run folder: checkpoint, config, model card"})
    preset: Literal["tiny", "small"] = field(default="small", metadata={"help": "model size"})
    embed_dim: int = field(default=128, metadata={"help": "embedding size; keep below the test-split size for FID"})
    steps: int = field(default=5000, metadata={"help": "optimizer steps (~0.2 s each for small, 2 CPU cores)"})
    batch_size: int = field(default=64, metadata={"help": "pairs per batch"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (Guo: 1e-4)"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps, then cosine decay"})
    margin: float = field(default=10.0, metadata={"help": "negatives are pushed beyond this distance (Guo: 10)"})
    fn_threshold: float = field(default=0.8, metadata={"help": "caption cosine above which a negative is a false negative"})
    caption_share: Literal["all", "even", "odd"] = field(
        default="odd", metadata={"help": "paraphrases trained on: odd positions (the reward model uses the even ones)"})
    max_frames: int = field(default=196, metadata={"help": "longest random crop in frames"})
    tiny: int = field(default=0, metadata={"help": "use only the first N motions of each split (0 = all; smoke runs)"})
    seed: int = field(default=1234, metadata={"help": "its own seed, different from the reward model's"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})
    log_every: int = field(default=50, metadata={"help": "steps between log lines"})
    save_every: int = field(default=500, metadata={"help": "steps between checkpoints"})
    resume: bool = field(default=True, metadata={"help": "continue from out/ if a train state is there"})

    def validate(self) -> None:
        if self.embed_dim < 2 or self.margin <= 0:
            raise UserError(f"embed_dim must be >= 2 and margin > 0, got {self.embed_dim} and {self.margin}")
        if self.steps < 1 or self.batch_size < 2:
            raise UserError(f"steps must be >= 1 and batch_size >= 2, got {self.steps} and {self.batch_size}")


def evaluator_loss_fn(bank, cfg: EvaluatorTrainConfig):
    from easytune.reward import false_negative_mask

    def loss_fn(model, batch, step):
        device = next(model.parameters()).device
        tokens, tmask = bank.tokens(batch["captions"])
        t_emb = model.encode_text(tokens, tmask)
        m_emb = model.encode_motion(batch["motion"].to(device), torch.as_tensor(batch["lengths"]).to(device))
        exclude = false_negative_mask(batch["labels"], bank.sentences(batch["captions"]), cfg.fn_threshold)
        return margin_loss(t_emb, m_emb, cfg.margin, exclude)
    return loss_fn


def load_evaluator(name_or_path: str, device: str | torch.device | None = None):
    """(EvaluatorModel in eval mode, Checkpoint) from an evaluator checkpoint name or folder."""
    from easytune.checkpoints import load_checkpoint, load_weights
    from easytune.config import config_from_dict
    from models.evaluator import EvaluatorConfig, EvaluatorModel

    ckpt = load_checkpoint(name_or_path, kind=KIND)
    model = EvaluatorModel(config_from_dict(EvaluatorConfig, ckpt.config["model"]))
    load_weights(model, ckpt.state, source=f"evaluator checkpoint {ckpt.path}", prefix="model.")
    return model.to(pick_device(device)).eval().requires_grad_(False), ckpt


class Embedder:
    """Evaluator embeddings as numpy arrays, batched; the text features are cached per caption."""

    def __init__(self, model: torch.nn.Module, text_encoder: Any = None, batch_size: int = 64):
        from easytune.reward import TextBank, default_text_encoder

        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.bank = TextBank(text_encoder if text_encoder is not None else default_text_encoder(self.device),
                             self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, E) embeddings of N non-empty texts."""
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise UserError("a text to embed is empty; every motion needs its description")
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens, mask = self.bank.tokens(list(texts[i:i + self.batch_size]))
            out.append(self.model.encode_text(tokens, mask).cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def motions(self, motions: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """(N, E) embeddings of N normalized motions, each (T_i, 263) with T_i >= 4 frames."""
        out = []
        for i in range(0, len(motions), self.batch_size):
            chunk = [torch.as_tensor(np.asarray(m), dtype=torch.float32) for m in motions[i:i + self.batch_size]]
            for m in chunk:
                if m.ndim != 2 or m.shape[1] != 263:
                    raise UserError(f"motion features must have shape (frames, 263), got {tuple(m.shape)}")
                if len(m) < 4:
                    raise UserError(f"a motion has {len(m)} frames; the evaluator needs at least 4 (0.2 s)")
                if not torch.isfinite(m).all():
                    raise UserError("a motion contains NaN or infinite features; it cannot be evaluated")
            lengths = torch.tensor([len(m) for m in chunk])
            x = torch.zeros(len(chunk), int(lengths.max()), 263)
            for j, m in enumerate(chunk):
                x[j, :len(m)] = m
            out.append(self.model.encode_motion(x.to(self.device), lengths.to(self.device)).cpu().numpy())
        return np.concatenate(out)


def main(cfg: EvaluatorTrainConfig, text_encoder: Any = None, *,
         on_step: Callable[[dict[str, float]], None] | None = None, should_stop: Callable[[], bool] | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Train the evaluator; writes out/{model.safetensors, config.json, train_config.json, README.md,
    evaluator_report.json}. `on_step(metrics)` follows every step, `should_stop()` cancels (the run saves
    its resume point and returns {"stopped": True} without the report and model card). A resumed run
    (cfg.resume) repeats the unbroken one exactly: batches, crops and captions come from (seed, step)."""
    from easytune import metrics
    from easytune import reward as R
    from easytune.checkpoints import save_checkpoint, save_train_state
    from easytune.fileio import write_json
    from easytune.inputs import check_output_path
    from easytune.training import open_run, resume_point
    from models.evaluator import EvaluatorModel

    cfg.validate()
    check_output_path(cfg.out, kind="dir")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    train = R.open_dataset(cfg.data, "train", tiny=cfg.tiny, max_frames=cfg.max_frames, seed=cfg.seed)
    mean, std = R.dataset_stats(train)
    test = R.open_dataset(cfg.data, "test", tiny=cfg.tiny, mean=mean, std=std, random_crop=False)
    out = open_run(cfg.out, cfg)  # after the inputs load: a bad --data writes nothing
    if cfg.embed_dim >= len(test):
        log.warning("embed_dim %d >= %d test motions: FID's covariance will be singular", cfg.embed_dim, len(test))
    bank = R.TextBank(text_encoder if text_encoder is not None else R.default_text_encoder(device), device)
    model = EvaluatorModel(model_preset(cfg.preset, cfg.embed_dim)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    start = resume_point(out, opt, model, kind=KIND) if cfg.resume else 0
    log.info("evaluator %s: %.2fM parameters; %d train motions, batch %d, %d steps",
             cfg.preset, n_params / 1e6, len(train), cfg.batch_size, cfg.steps)
    t0 = time.time()

    def save(step: int) -> None:
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        if mean is not None:
            state["mean"], state["std"] = mean, std
        save_checkpoint(out, state, kind=KIND, dataset=R.dataset_stamp(train),
                        config={"model": dataclasses.asdict(model.cfg), "train": dataclasses.asdict(cfg)},
                        meta={"command": "python -m easytune train evaluator", "seed": cfg.seed, "steps": step,
                              "wall_s": round(time.time() - t0, 1), "parameters": n_params})
        save_train_state(out, opt, {"step": step})

    res = R.fit(model, lambda step: R.batch_at(train, cfg.batch_size, cfg.seed, step, cfg.caption_share),
                evaluator_loss_fn(bank, cfg), schedule=R.lr_schedule(cfg.lr, cfg.warmup, cfg.steps), seed=cfg.seed,
                optimizer=opt, start_step=start, save=save, save_every=cfg.save_every, log_every=cfg.log_every,
                on_step=on_step, should_stop=should_stop, progress=progress, desc="train evaluator")
    if res.stopped:
        log.info("stopped at step %d of %d; run again to resume", res.step, cfg.steps)
        return {"step": res.step, "stopped": True}
    # real-data sanity numbers for the model card: R-Precision and MM-Dist of the test split
    emb = Embedder(model, bank.encoder)
    items = [test[i] for i in range(len(test))]
    t = emb.texts([it["caption"] for it in items])
    m = emb.motions([it["motion"][: int(it["length"])] for it in items])
    labels = [R.label_key(it["label"]) for it in items]
    report: dict[str, Any] = {"test_motions": len(items), "mm_dist": metrics.mm_dist(t, m)}
    try:
        report["r_precision_top123"] = metrics.r_precision(t, m, labels).tolist()
    except UserError as e:
        report["r_precision_top123"] = f"skipped: {e}"
    write_json(out / "evaluator_report.json", report)
    ck.write_model_card(out, "EasyTune evaluator (Guo-style text-motion matching)", {
        "Model": f"preset {cfg.preset}, {n_params / 1e6:.2f}M parameters, embedding {cfg.embed_dim}, margin "
                 f"{cfg.margin}, caption share {cfg.caption_share}. Judges generated motions; never a reward.",
        "Command": f"`{command_for('python -m easytune train evaluator', cfg)}` (resolved config: train_config.json)",
        "Metrics": f"Test split ({len(items)} motions; R-Precision batches of 32 distinct (content, style) labels): "
                   f"R-Precision top-1/2/3 {report['r_precision_top123']}, MM-Dist {report['mm_dist']:.3f}.",
    })
    return {**report, "step": res.step, "stopped": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, EvaluatorTrainConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    main(config_from_args(EvaluatorTrainConfig, args))
    return 0
