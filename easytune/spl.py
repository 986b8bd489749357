"""Self-refining Preference Learning (SPL): fine-tune the reward model on its own retrieval mistakes,
and on human preference pairs exported by the playground's studies.

In every batch, with S the (B, B) text-to-motion cosine similarity matrix (truth on the diagonal):
1. each text's top-1 retrieved motion is taken among the motions whose (content, style) label differs
   from the text's own (a paraphrase of the same label is not a mistake);
2. the text is "already correct" when its ground truth ranks within the top k among those candidates
   plus itself (k = 1 by default; the paper's code uses 10 at batch 64), or when any of those
   similarities exceeds `threshold` (0.8);
3. logits = [S(text, retrieved), S(text, truth)] / tau, target [0, 1] for a mistake (the truth is
   preferred) and [0.5, 0.5] for a correct text, loss = mean KL(target || softmax(logits)).
tau is ONE explicit setting (default 0.1). The paper's released code divides by its temperature twice,
an effective tau of 0.01; pass --spl-tau 0.01 to reproduce that.

The total loss is the reward model's InfoNCE + w_spl * SPL (+ w_human * the same preference loss on
human pairs), starting from a trained reward checkpoint with lr 1e-5: `python -m easytune train spl`.

Human pairs (JSON lines, one study vote per line; see `HumanPair`):
    {"format": "easytune-pairs/1", "prompt": "a person waves", "criterion": "text_match",
     "preferred": "a" | "b" | "tie",
     "a": {"features": [[263 floats] x T]}                                  # inline, normalized
       or {"features_file": "votes/0001_a.npy"}                             # (T, 263), relative to the file
       or {"regenerate": {"checkpoint": "base", "checkpoint_hash": "...", "seed": 7, "steps": 50,
                          "guidance": 2.5, "seconds": 4.0}},               # exact re-generation
     "b": {...}, "study": "...", "rater": "...", "time": "2026-11-29T05:00:00Z"}
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from easytune import checkpoints as ck
from easytune.config import command_for
from easytune.device import pick_device
from easytune.errors import UserError

log = logging.getLogger(__name__)

PAIRS_FORMAT = "easytune-pairs/1"
CRITERIA = ("text_match", "naturalness", "overall")


# === the SPL loss =====================================================================================

@dataclass
class SPLPairs:
    """What SPL found in one batch (all (B,)): the retrieved wrong motion per text, whether the text
    is a mistake, whether it takes part at all (False when every candidate shares its label), and the
    truth's rank among the candidates."""

    retrieved: torch.Tensor
    mistake: torch.Tensor
    valid: torch.Tensor
    rank: torch.Tensor


def same_label_matrix(labels: Sequence[Any]) -> torch.Tensor:
    from easytune.reward import label_key

    keys = [label_key(l) for l in labels]
    return torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.bool)


def spl_pairs(sim: torch.Tensor, labels: Sequence[Any], k: int = 1, threshold: float = 0.8) -> SPLPairs:
    """Mistakes and retrieved negatives from a (B, B) text x motion similarity matrix (no gradient)."""
    with torch.no_grad():
        b = sim.shape[0]
        same = same_label_matrix(labels).to(sim.device)                   # includes the diagonal
        other = sim.masked_fill(same, float("-inf"))                      # candidates: other labels
        retrieved = other.argmax(1)
        valid = (~same).any(1)
        truth = sim.diagonal()
        rank = ((other > truth[:, None]) | ((other == truth[:, None]) & ~same)).sum(1)  # ties count against
        candidates = torch.where(same & ~torch.eye(b, dtype=torch.bool, device=sim.device),
                                 torch.full_like(sim, float("-inf")), sim)
        confident = (candidates > threshold).any(1)
        correct = (rank < k) | confident
        return SPLPairs(retrieved=retrieved, mistake=valid & ~correct, valid=valid, rank=rank)


def preference_loss(s_rejected: torch.Tensor, s_preferred: torch.Tensor, p_preferred: torch.Tensor,
                    tau: float) -> torch.Tensor:
    """Mean KL(target || softmax([s_rejected, s_preferred] / tau)) with target [1 - p, p]
    (p = 1: the preferred one should win; p = 0.5: a tie). All inputs (N,)."""
    logits = torch.stack([s_rejected, s_preferred], dim=-1) / tau
    target = torch.stack([1 - p_preferred, p_preferred], dim=-1).to(logits)
    return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="batchmean")


def spl_loss(sim: torch.Tensor, labels: Sequence[Any], *, k: int = 1, threshold: float = 0.8,
             tau: float = 0.1) -> tuple[torch.Tensor, SPLPairs]:
    """SPL loss on a (B, B) similarity matrix (differentiable), and the pairs it used."""
    pairs = spl_pairs(sim, labels, k, threshold)
    rows = torch.nonzero(pairs.valid).squeeze(1)
    if len(rows) == 0:
        return sim.sum() * 0.0, pairs
    p = torch.where(pairs.mistake[rows], 1.0, 0.5)
    loss = preference_loss(sim[rows, pairs.retrieved[rows]], sim[rows, rows], p, tau)
    return loss, pairs


# === human preference pairs ===========================================================================

@dataclass
class MotionRef:
    """One motion of a pair: features (T, 263) normalized, or the exact recipe to regenerate it."""

    features: np.ndarray | None = None
    regenerate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.features is not None:
            return {"features": np.asarray(self.features, dtype=np.float32).round(5).tolist()}
        return {"regenerate": self.regenerate}


REGENERATE_KEYS = ("checkpoint", "checkpoint_hash", "seed", "steps", "guidance", "seconds")


@dataclass
class HumanPair:
    prompt: str
    a: MotionRef
    b: MotionRef
    preferred: Literal["a", "b", "tie"]
    criterion: str = "text_match"
    extra: dict[str, Any] = field(default_factory=dict)  # study, rater, time: kept, not interpreted

    def to_json(self) -> dict[str, Any]:
        return {"format": PAIRS_FORMAT, "prompt": self.prompt, "criterion": self.criterion,
                "preferred": self.preferred, "a": self.a.to_json(), "b": self.b.to_json(), **self.extra}


def _motion_ref(obj: Any, where: str, base: Path) -> MotionRef:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object with 'features', 'features_file' or 'regenerate'")
    if "features" in obj:
        feats = np.asarray(obj["features"], dtype=np.float32)
    elif "features_file" in obj:
        path = base / obj["features_file"]
        if not path.is_file():
            raise UserError(f"{where}: features file {path} does not exist")
        feats = np.load(path, allow_pickle=False).astype(np.float32)
    elif "regenerate" in obj:
        spec = obj["regenerate"]
        missing = [k for k in REGENERATE_KEYS if not isinstance(spec, dict) or k not in spec]
        if missing:
            raise UserError(f"{where}: 'regenerate' needs {', '.join(REGENERATE_KEYS)}; missing {', '.join(missing)}")
        return MotionRef(regenerate=dict(spec))
    else:
        raise UserError(f"{where}: expected 'features', 'features_file' or 'regenerate'")
    if feats.ndim != 2 or feats.shape[1] != 263 or len(feats) < 1:
        raise UserError(f"{where}: features must have shape (frames, 263), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise UserError(f"{where}: features contain NaN or infinite values")
    return MotionRef(features=feats)


def read_pairs(path: str | Path) -> list[HumanPair]:
    """Parse a human-pairs JSON-lines file; any bad line raises UserError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"human pairs file {path} does not exist")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        if obj.get("format") != PAIRS_FORMAT:
            raise UserError(f"{where}: 'format' must be {PAIRS_FORMAT!r}, got {obj.get('format')!r}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{where}: 'prompt' is empty; every pair needs the prompt it was voted on")
        if obj.get("preferred") not in ("a", "b", "tie"):
            raise UserError(f"{where}: 'preferred' must be 'a', 'b' or 'tie', got {obj.get('preferred')!r}")
        criterion = obj.get("criterion", "text_match")
        if criterion not in CRITERIA:
            raise UserError(f"{where}: 'criterion' must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        known = {"format", "prompt", "preferred", "criterion", "a", "b"}
        pairs.append(HumanPair(prompt=prompt, a=_motion_ref(obj.get("a"), f"{where} 'a'", path.parent),
                               b=_motion_ref(obj.get("b"), f"{where} 'b'", path.parent),
                               preferred=obj["preferred"], criterion=criterion,
                               extra={k: v for k, v in obj.items() if k not in known}))
    if not pairs:
        raise UserError(f"human pairs file {path} holds no pairs")
    return pairs


def write_pairs(path: str | Path, pairs: Sequence[HumanPair]) -> None:
    from easytune.fileio import write_text

    write_text(path, "".join(json.dumps(p.to_json()) + "\n" for p in pairs))


Regenerator = Callable[[str, dict[str, Any]], np.ndarray]


def materialize(pairs: Sequence[HumanPair], regenerate: Regenerator | None = None) -> list[HumanPair]:
    """Pairs with features everywhere: `regenerate(prompt, spec) -> (T, 263)` fills recipe motions
    (the playground passes easytune.generate with the recipe's checkpoint, after checking its hash)."""
    out = []
    for p in pairs:
        refs = []
        for ref in (p.a, p.b):
            if ref.features is None:
                if regenerate is None:
                    raise UserError("these pairs hold regeneration recipes; pass a generator (e.g. the one from "
                                    "easytune.generate) or export the studies with features")
                ref = MotionRef(features=np.asarray(regenerate(p.prompt, ref.regenerate), dtype=np.float32))
            refs.append(ref)
        out.append(HumanPair(p.prompt, refs[0], refs[1], p.preferred, p.criterion, p.extra))
    return out


def human_pair_loss(model: torch.nn.Module, pairs: Sequence[HumanPair], text_bank: Any, tau: float) -> torch.Tensor:
    """The SPL preference loss on human votes: logits [s(prompt, rejected), s(prompt, preferred)] / tau,
    target [0, 1] for a preference and [0.5, 0.5] for a tie. Pairs must be materialized."""
    device = next(model.parameters()).device
    preferred, rejected, p = [], [], []
    for pair in pairs:
        first, second = (pair.b, pair.a) if pair.preferred == "b" else (pair.a, pair.b)
        preferred.append(torch.as_tensor(first.features))
        rejected.append(torch.as_tensor(second.features))
        p.append(0.5 if pair.preferred == "tie" else 1.0)
    tokens, tmask = text_bank.tokens([pair.prompt for pair in pairs])
    t_emb = model.encode_text(tokens, tmask)
    s_pref = (t_emb * model.encode_motion(*_pad(preferred, device))).sum(-1)
    s_rej = (t_emb * model.encode_motion(*_pad(rejected, device))).sum(-1)
    return preference_loss(s_rej, s_pref, torch.tensor(p, device=device), tau)


def _sources(pairs: Sequence[HumanPair]) -> str:
    """Where the pairs came from, e.g. '2048 real_pairs, 12 study votes' (a pair's "source" field; votes have none)."""
    from collections import Counter

    counts = Counter(str(p.extra.get("source", "study votes")) for p in pairs)
    return ", ".join(f"{n} {k}" for k, n in counts.most_common())


def _pad(seqs: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), length, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
        mask[i, :len(s)] = True
    return x.to(device), mask.to(device)


# === `python -m easytune train spl` ===================================================================

@dataclass
class SPLTrainConfig:
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder built by `data build`"})
    init: str = field(default="runs/reward", metadata={"help": "reward checkpoint (name or folder) to start from"})
    out: str = field(default="runs/reward_spl", metadata={"help": "run folder for the SPL-refined reward model"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "pairs per batch (the paper's code: 64)"})
    lr: float = field(default=1e-5, metadata={"help": "AdamW learning rate; small, this is a refinement"})
    warmup: int = field(default=0, metadata={"help": "linear warm-up steps"})
    temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature of the retrieval loss"})
    fn_threshold: float = field(default=0.8, metadata={"help": "caption cosine above which a negative is a false negative"})
    w_spl: float = field(default=1e-2, metadata={"help": "weight of the SPL loss"})
    spl_tau: float = field(default=0.1, metadata={"help": "SPL logit temperature, applied once (paper code: 0.01 effective)"})
    spl_k: int = field(default=1, metadata={"help": "truth within top-k = already correct (paper code: 10 at batch 64)"})
    spl_threshold: float = field(default=0.8, metadata={"help": "any similarity above this = already correct"})
    noise_prob: float = field(default=0.5, metadata={"help": "fraction of motions noised to x_t (step-aware models)"})
    noise_max_t: int = field(default=500, metadata={"help": "noisy x_t use t < this"})
    max_frames: int = field(default=120, metadata={"help": "longest random crop in frames (as in train reward)"})
    caption_share: Literal["all", "even", "odd"] = field(
        default="even", metadata={"help": "paraphrases trained on (as in train reward; the evaluator uses odd)"})
    human_pairs: str = field(default="", metadata={"help": "JSON-lines file of human votes (empty = none)"})
    w_human: float = field(default=1.0, metadata={"help": "weight of the preference loss on human pairs"})
    human_batch: int = field(default=8, metadata={"help": "human pairs per step"})
    tiny: int = field(default=0, metadata={"help": "use only the first N motions of each split (0 = all; smoke runs)"})
    seed: int = field(default=0, metadata={"help": "seed for batches and noise"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})
    log_every: int = field(default=50, metadata={"help": "steps between log lines"})
    save_every: int = field(default=250, metadata={"help": "steps between checkpoints"})
    eval_seeds: int = field(default=5, metadata={"help": "seeds of the before/after retrieval report (0 = skip)"})
    resume: bool = field(default=True, metadata={"help": "continue from out/ if a train state is there"})

    def validate(self) -> None:
        if self.spl_tau <= 0 or self.temperature <= 0:
            raise UserError(f"spl_tau and temperature must be > 0, got {self.spl_tau} and {self.temperature}")
        if self.spl_k < 1:
            raise UserError(f"spl_k must be >= 1, got {self.spl_k}")
        if self.steps < 1 or self.batch_size < 2:
            raise UserError(f"steps must be >= 1 and batch_size >= 2, got {self.steps} and {self.batch_size}")


def spl_loss_fn(cfg: SPLTrainConfig, text_bank: Any, scheduler: Any, pairs: Sequence[HumanPair] = ()):
    """Named losses for one batch: retrieval (InfoNCE), spl, human, and the weighted total. Step
    `step` draws its noisy x_t from step_generator(cfg.seed, step, NOISE) and its human pairs from
    step_generator(cfg.seed, step, EXTRA), so a resumed run repeats the unbroken one."""
    from easytune.reward import false_negative_mask, info_nce, noise_motions
    from easytune.training import EXTRA, NOISE, step_generator

    def loss_fn(model, batch, step):
        device = next(model.parameters()).device
        x, mask, t = batch["motion"].to(device), batch["mask"].to(device), None
        if cfg.noise_prob > 0 and scheduler is not None:
            x, t = noise_motions(x, cfg.noise_prob, cfg.noise_max_t, step_generator(cfg.seed, step, NOISE), scheduler)
        tokens, tmask = text_bank.tokens(batch["captions"])
        t_emb, m_emb = model.encode_text(tokens, tmask), model.encode_motion(x, mask, t)
        exclude = false_negative_mask(batch["labels"], text_bank.sentences(batch["captions"]), cfg.fn_threshold)
        retrieval = info_nce(t_emb, m_emb, cfg.temperature, exclude)
        spl, found = spl_loss(t_emb @ m_emb.T, batch["labels"], k=cfg.spl_k, threshold=cfg.spl_threshold,
                              tau=cfg.spl_tau)
        out = {"retrieval": retrieval, "spl": spl, "mistakes": found.mistake.float().mean()}
        total = retrieval + cfg.w_spl * spl
        if pairs:
            idx = torch.randint(len(pairs), (min(cfg.human_batch, len(pairs)),),
                                generator=step_generator(cfg.seed, step, EXTRA)).tolist()
            human = human_pair_loss(model, [pairs[i] for i in idx], text_bank, cfg.spl_tau)
            out["human"] = human
            total = total + cfg.w_human * human
        out["loss"] = total
        return out
    return loss_fn


def main(cfg: SPLTrainConfig, text_encoder: Any = None, regenerate: Regenerator | None = None, *,
         on_step: Callable[[dict[str, float]], None] | None = None, should_stop: Callable[[], bool] | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Refine a reward checkpoint with SPL; writes out/ (checkpoint, train_config.json, model card,
    spl_report.json with the retrieval report before and after). `on_step(metrics)` follows every step,
    `should_stop()` cancels (the run saves its resume point and returns {"stopped": True} without the
    after-report and model card). A resumed run (cfg.resume) repeats the unbroken one exactly."""
    from easytune import reward as R
    from easytune.checkpoints import check_dataset, save_train_state
    from easytune.fileio import write_json
    from easytune.inputs import check_output_path
    from easytune.training import open_run, resume_point

    cfg.validate()
    check_output_path(cfg.out, kind="dir")
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, init = R.load_reward_model(cfg.init, device)
    train = R.open_dataset(cfg.data, "train", tiny=cfg.tiny, max_frames=cfg.max_frames, seed=cfg.seed)
    check_dataset(init, {**R.dataset_stamp(train), "mean": train.mean, "std": train.std})
    mean, std = R.dataset_stats(train)
    bank = R.TextBank(text_encoder if text_encoder is not None else R.default_text_encoder(device), device)
    pairs = materialize(read_pairs(cfg.human_pairs), regenerate) if cfg.human_pairs else []
    groups = R.eval_groups(cfg.data, mean, std, cfg.tiny) if cfg.eval_seeds else {}
    before = R.retrieval_report(model, groups, bank, cfg.eval_seeds) if cfg.eval_seeds else None  # the parent
    out = open_run(cfg.out, cfg)  # after the inputs load: a bad --init, --data or --human-pairs writes nothing
    model.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    start = resume_point(out, opt, model, kind=R.KIND) if cfg.resume else 0
    sched = R.default_scheduler(model.cfg.num_timesteps) if model.cfg.step_aware and cfg.noise_prob > 0 else None
    t0 = time.time()
    train_cfg = init.config.get("train", {})

    def save(step: int) -> None:
        R.save_reward_checkpoint(out, model, train_config=cfg, dataset_info=R.dataset_stamp(train), mean=mean,
                                 std=std, meta={"command": "python -m easytune train spl", "seed": cfg.seed,
                                                "steps": step, "parent": str(init.path),
                                                "wall_s": round(time.time() - t0, 1), "reward_train": train_cfg})
        save_train_state(out, opt, {"step": step})

    log.info("SPL: %d train motions, batch %d, %d steps, w_spl %g, tau %g (applied once), k %d, %d human pairs",
             len(train), cfg.batch_size, cfg.steps, cfg.w_spl, cfg.spl_tau, cfg.spl_k, len(pairs))
    res = R.fit(model, lambda step: R.batch_at(train, cfg.batch_size, cfg.seed, step, cfg.caption_share),
                spl_loss_fn(cfg, bank, sched, pairs), schedule=R.lr_schedule(cfg.lr, cfg.warmup, cfg.steps),
                seed=cfg.seed, optimizer=opt, start_step=start, save=save, save_every=cfg.save_every,
                log_every=cfg.log_every, on_step=on_step, should_stop=should_stop, progress=progress,
                desc="train spl")
    if res.stopped:
        log.info("stopped at step %d of %d; run again to resume", res.step, cfg.steps)
        return {"config": asdict(cfg), "step": res.step, "stopped": True}
    report = {"config": asdict(cfg)}
    if cfg.eval_seeds:
        after = R.retrieval_report(model, groups, bank, cfg.eval_seeds)
        report.update(before=before, after=after)
        write_json(out / "spl_report.json", report)
        print(R.format_retrieval(before, "Before SPL (test split)"))
        print(R.format_retrieval(after, "After SPL (test split)"))
    ck.write_model_card(out, "EasyTune reward model, refined with SPL", {
        "Model": f"Started from {init.path}; InfoNCE + {cfg.w_spl} x SPL (tau {cfg.spl_tau} applied once, "
                 f"k {cfg.spl_k}, threshold {cfg.spl_threshold}), lr {cfg.lr}, "
                 + (f"{len(pairs)} preference pairs from --human-pairs (weight {cfg.w_human}, {cfg.human_batch} per "
                    f"step; sources: {_sources(pairs)})." if pairs else "0 human pairs."),
        "Command": f"`{command_for('python -m easytune train spl', cfg)}` (resolved config: train_config.json)",
        "Metrics": (R.format_retrieval(before, "Before SPL") + "\n\n" + R.format_retrieval(report["after"], "After SPL"))
        if cfg.eval_seeds else "not evaluated (--eval-seeds 0)",
    })
    return {**report, "step": res.step, "stopped": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, SPLTrainConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args
    from easytune.study.prepare import regenerator

    cfg = config_from_args(SPLTrainConfig, args)
    # study exports hold regeneration recipes: each voted motion is regenerated from its checkpoint
    # (refused if that checkpoint's weights changed since the vote); models load only when a recipe needs them
    main(cfg, regenerate=regenerator(device=str(pick_device(cfg.device))) if cfg.human_pairs else None)
    return 0
