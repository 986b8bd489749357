"""`python -m easytune evaluate`: judge a generator (base or fine-tuned checkpoint) with the evaluator.

For each of N replications (seed s = seed + r): every test motion gets one of its captions (drawn
with s); the checkpoint generates one motion per caption at the real motion's length; the evaluator
embeds texts and motions; then
  R-Precision top-1/2/3   batches of 32 with 32 distinct (content, style) labels, Euclidean distance
  FID                     generated vs all real test motions (real row: one random half vs the other,
                          the metric's floor for this set size)
  MM-Dist, Diversity      Diversity on 300 pairs (N // 2 disjoint pairs if fewer than 300 motions)
  MultiModality           `mm_texts` captions x `mm_repeats` generations, 10 pairs per caption
  foot skating, floor penetration, jerk   on joints recovered from the features (recover_from_ric)
  by combination          MM-Dist, FID and reward again over the seen and the unseen (content, style)
                          combinations separately, when the split has both (the test split does)
Each metric is reported as mean +- 95% Student-t CI over the replications, as a markdown table (the
protocol is printed with it) and as JSON.

Generated motions are cached under `cache/` by (checkpoint hash, sampler steps/guidance/eta, protocol,
seed), so a re-run of the same evaluation generates nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from easytune import metrics
from easytune.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    name: str
    replications: int  # independent repeats behind each mean and CI
    steps: int | None  # sampler steps; None = the checkpoint's default schedule
    mm_texts: int  # captions for MultiModality
    mm_repeats: int  # generations per MultiModality caption
    mm_pairs: int = metrics.MULTIMODALITY_PAIRS
    diversity_pairs: int = metrics.DIVERSITY_PAIRS
    r_batch: int = metrics.R_PRECISION_BATCH

    def describe(self) -> str:
        steps = "the checkpoint's default" if self.steps is None else str(self.steps)
        return (f"protocol '{self.name}': {self.replications} replications (mean ± 95% CI, Student t), "
                f"{steps} sampling steps, R-Precision in batches of {self.r_batch} motions with distinct "
                f"(content, style) labels, Diversity on {self.diversity_pairs} pairs, MultiModality "
                f"{self.mm_texts} texts x {self.mm_repeats} motions ({self.mm_pairs} pairs per text)")


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", replications=20, steps=50, mm_texts=100, mm_repeats=30),
    "cpu": Protocol("cpu", replications=5, steps=None, mm_texts=30, mm_repeats=10),
}

# Generator: (captions, lengths in frames, seed, steps) -> one normalized (T_i, 263) motion each.
Generator = Callable[[Sequence[str], Sequence[int], int, int | None], list[np.ndarray]]


# === cache =============================================================================================

class MotionCache:
    """Generated motions on disk, one .npz per (checkpoint hash, protocol, part, seed, request); the request
    (captions + lengths) is hashed into the file name, so the validation and the test split's motions sit
    side by side and a changed split is never served stale."""

    def __init__(self, root: str | Path, checkpoint_hash: str, protocol: str):
        self.dir = Path(root) / checkpoint_hash / protocol

    def get_or_make(self, part: str, seed: int, texts: Sequence[str], lengths: Sequence[int],
                    make: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        from easytune.fileio import atomic_path

        request = hashlib.sha256(json.dumps([list(texts), [int(n) for n in lengths]]).encode()).hexdigest()[:16]
        path = self.dir / f"{part}_seed{seed}_{request}.npz"
        # caches written before the request was in the name: one file per part and seed, checked inside
        for p in (path, self.dir / f"{part}_seed{seed}.npz"):
            if p.is_file():
                with np.load(p, allow_pickle=False) as z:
                    if str(z["request"]) == request:
                        return np.split(z["features"], np.cumsum(z["lengths"])[:-1])
        motions = make()
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=np.concatenate(motions).astype(np.float32),
                         lengths=np.array([len(m) for m in motions]), request=np.array(request))
        return motions


# === metrics for one set of motions ======================================================================

def physical(motions: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """Mean plausibility metrics over normalized motions (each (T, 263), T >= 4)."""
    from easytune.motion.features import denormalize, recover_from_ric

    rows = [metrics.physical_metrics(recover_from_ric(denormalize(np.asarray(m, dtype=np.float64), mean, std)))
            for m in motions]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def set_metrics(text_emb: np.ndarray, motion_emb: np.ndarray, labels: Sequence, real_emb: np.ndarray | None,
                protocol: Protocol, seed: int) -> dict[str, float]:
    """R-Precision, FID (vs real_emb; None = half vs half of motion_emb), MM-Dist, Diversity."""
    top = metrics.r_precision(text_emb, motion_emb, labels, 3, protocol.r_batch, seed)
    if real_emb is None:
        perm = np.random.default_rng(seed).permutation(len(motion_emb))
        half = len(perm) // 2
        fid = metrics.fid(motion_emb[perm[:half]], motion_emb[perm[half:2 * half]])
    else:
        fid = metrics.fid(motion_emb, real_emb)
    return {"R-Precision top-1": float(top[0]), "R-Precision top-2": float(top[1]),
            "R-Precision top-3": float(top[2]), "FID": fid, "MM-Dist": metrics.mm_dist(text_emb, motion_emb),
            "Diversity": metrics.diversity(motion_emb, protocol.diversity_pairs, seed)}


@dataclass
class TestSet:
    """The real test motions (normalized), their captions, labels, and the dataset's Mean/Std."""

    motions: list[np.ndarray]
    captions: list[list[str]]
    labels: list[tuple]
    mean: np.ndarray
    std: np.ndarray
    names: list[str] = field(default_factory=list)  # motion ids (empty for hand-made sets)
    groups: list[str] = field(default_factory=list)  # "seen"/"unseen" combination per motion (empty = unknown)

    def draw_captions(self, seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [caps[int(rng.integers(len(caps)))] for caps in self.captions]


GROUPS = ("seen", "unseen")


def group_indices(test: TestSet) -> dict[str, np.ndarray]:
    """{"seen": indices, "unseen": indices} when the set has both groups (4 motions or more each), else {}."""
    groups = np.asarray(test.groups)
    if len(groups) != len(test.motions) or not all((groups == g).sum() >= 4 for g in GROUPS):
        return {}
    return {g: np.flatnonzero(groups == g) for g in GROUPS}


def group_metrics(groups: dict[str, np.ndarray], text_emb: np.ndarray, motion_emb: np.ndarray,
                  real_emb: np.ndarray | None, seed: int) -> dict[str, float]:
    """MM-Dist and FID over the seen and the unseen combinations separately ("MM-Dist (unseen)", ...). FID
    compares a group's generated motions with the same group's real ones (real row: one half of the group
    against the other); R-Precision is not split (an unseen group can hold fewer than a batch's distinct labels)."""
    out = {}
    for g, idx in groups.items():
        out[f"MM-Dist ({g})"] = metrics.mm_dist(text_emb[idx], motion_emb[idx])
        if real_emb is None:
            perm = np.random.default_rng(seed).permutation(idx)
            half = len(perm) // 2
            out[f"FID ({g})"] = metrics.fid(motion_emb[perm[:half]], motion_emb[perm[half:2 * half]])
        else:
            out[f"FID ({g})"] = metrics.fid(motion_emb[idx], real_emb[idx])
    return out


def reward_values(groups: dict[str, np.ndarray], reward: Callable[[Sequence[np.ndarray], Sequence[str]], float],
                  motions: Sequence[np.ndarray], texts: Sequence[str]) -> dict[str, float]:
    """The mean reward, and each group's: scored once per motion, the whole set's mean weighted from the groups'."""
    if not groups:
        return {"reward": reward(motions, texts)}
    out = {f"reward ({g})": reward([motions[i] for i in idx], [texts[i] for i in idx]) for g, idx in groups.items()}
    out["reward"] = sum(out[f"reward ({g})"] * len(idx) for g, idx in groups.items()) / len(motions)
    return out


def evaluate_sets(test: TestSet, embedder: Any, protocol: Protocol, seed: int = 0,
                  generate: Generator | None = None, cache: MotionCache | None = None,
                  reward: Callable[[Sequence[np.ndarray], Sequence[str]], float] | None = None) -> dict[str, Any]:
    """All replications; returns {"protocol", "rows": {row: {metric: [values per replication]}}}.

    Rows: "real" (the test set itself; FID = real half vs real half) and, with `generate`, "generated".
    `reward(motions, texts) -> mean reward` adds a "reward" metric (the reward model's view, beside the
    evaluator's; see `reward_mean`).
    """
    if len(test.motions) < protocol.r_batch:
        raise UserError(f"the test set has {len(test.motions)} motions; R-Precision needs at least "
                        f"{protocol.r_batch}")
    if all(lab is not None for lab in test.labels) and len(set(test.labels)) < protocol.r_batch:
        raise UserError(f"the test set has {len(set(test.labels))} distinct (content, style) labels; R-Precision "
                        f"needs batches of {protocol.r_batch} distinct ones. Evaluate a larger split: the test split's "
                        f"table reports MM-Dist, FID and reward for its seen and unseen combinations separately")
    lengths = [len(m) for m in test.motions]
    groups = group_indices(test)
    real_emb = embedder.motions(test.motions)
    real_phys = physical(test.motions, test.mean, test.std)
    rows: dict[str, dict[str, list[float]]] = {"real": {}}
    if generate is not None:
        rows["generated"] = {}

    def add(row: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            rows[row].setdefault(k, []).append(v)

    for r in range(protocol.replications):
        s = seed + r
        texts = test.draw_captions(s)
        text_emb = embedder.texts(texts)
        real_values = {**set_metrics(text_emb, real_emb, test.labels, None, protocol, s), **real_phys,
                       **group_metrics(groups, text_emb, real_emb, None, s)}
        if reward is not None:
            real_values.update(reward_values(groups, reward, test.motions, texts))
        add("real", real_values)
        if generate is None:
            continue
        make = lambda: generate(texts, lengths, s, protocol.steps)  # noqa: E731
        gen = cache.get_or_make("test", s, texts, lengths, make) if cache else make()
        _check_generated(gen, lengths)
        gen_emb = embedder.motions(gen)
        values = set_metrics(text_emb, gen_emb, test.labels, real_emb, protocol, s)
        values["MultiModality"] = _multimodality(test, embedder, protocol, s, generate, cache)
        values.update(group_metrics(groups, text_emb, gen_emb, real_emb, s))
        if reward is not None:
            values.update(reward_values(groups, reward, gen, texts))
        add("generated", {**values, **physical(gen, test.mean, test.std)})
    return {"protocol": protocol.describe(), "seed": seed, "rows": rows}


def _check_generated(gen: list[np.ndarray], lengths: Sequence[int]) -> None:
    if len(gen) != len(lengths):
        raise UserError(f"the generator returned {len(gen)} motions for {len(lengths)} prompts")
    for m in gen:
        if not np.isfinite(m).all():
            raise UserError("the generator produced NaN or infinite features; the checkpoint is broken or diverged")


def _multimodality(test: TestSet, embedder: Any, protocol: Protocol, seed: int, generate: Generator,
                   cache: MotionCache | None) -> float:
    rng = np.random.default_rng(seed)
    n = min(protocol.mm_texts, len(test.motions))
    pick = rng.choice(len(test.motions), n, replace=False)
    texts = [test.captions[i][int(rng.integers(len(test.captions[i])))] for i in pick]
    texts_rep = [t for t in texts for _ in range(protocol.mm_repeats)]
    lengths_rep = [len(test.motions[i]) for i in pick for _ in range(protocol.mm_repeats)]
    make = lambda: generate(texts_rep, lengths_rep, seed, protocol.steps)  # noqa: E731
    gen = cache.get_or_make("mm", seed, texts_rep, lengths_rep, make) if cache else make()
    emb = embedder.motions(gen).reshape(n, protocol.mm_repeats, -1)
    return metrics.multimodality(emb, protocol.mm_pairs, seed)


def reward_mean(scorer: Any, batch: int = 64) -> Callable[[Sequence[np.ndarray], Sequence[str]], float]:
    """(motions normalized (T_i, 263), texts) -> mean reward-model reward (cosine in [-1, 1])."""
    import torch

    def fn(motions: Sequence[np.ndarray], texts: Sequence[str]) -> float:
        total = 0.0
        for a in range(0, len(motions), batch):
            chunk = [np.asarray(m, dtype=np.float32) for m in motions[a:a + batch]]
            T = max(len(m) for m in chunk)
            x = np.zeros((len(chunk), T, chunk[0].shape[1]), dtype=np.float32)
            mask = np.zeros((len(chunk), T), dtype=bool)
            for i, m in enumerate(chunk):
                x[i, :len(m)], mask[i, :len(m)] = m, True
            with torch.no_grad():
                total += float(scorer(torch.from_numpy(x), list(texts[a:a + batch]), None,
                                      mask=torch.from_numpy(mask)).sum())
        return total / len(motions)
    return fn


# === tables ============================================================================================

LOWER_IS_BETTER = {"FID", "MM-Dist", "foot_skating", "floor_penetration", "jerk"}


def fid_floor(real_emb: np.ndarray, seed: int = 0, splits: int = 10) -> dict[str, Any] | None:
    """FID's real floor at the generated rows' size, extrapolated within the test set.

    A generated row compares n generated motions with the n test motions; the real row's FID compares
    two disjoint halves of n/2, and FID's bias grows as the sets shrink (in expectation FID_m = FID_true
    + c / m for two sets of m; Chong & Forsyth 2020). So: half-vs-half FID of disjoint pairs of m = n/4,
    3n/8 and n/2 motions (`splits` random draws each; smaller sets bend the curve, as their covariances
    near the embedding's width), a least-squares fit of a + c / m, and the floor at
    m = n: a + c / n, with the fit's points. (Training-split motions are no floor: the test split holds
    unseen content-style combinations, a different distribution.)"""
    n = len(real_emb)
    sizes = [m for m in (n // 4, 3 * n // 8, n // 2) if m >= 16]
    if len(sizes) < 2:
        return None
    rng = np.random.default_rng(seed)
    points = []
    for m in sizes:
        for _ in range(splits):
            perm = rng.permutation(n)
            points.append((m, float(metrics.fid(real_emb[perm[:m]], real_emb[perm[m:2 * m]]))))
    x = np.array([1.0 / m for m, _ in points])
    y = np.array([f for _, f in points])
    c, a = np.polyfit(x, y, 1)
    means = {int(m): float(np.mean([f for mm, f in points if mm == m])) for m in sizes}
    return {"n": int(n), "FID": float(a + c / n), "intercept": float(a), "slope": float(c),
            "half_vs_half_by_size": means, "splits": splits, "seed": int(seed)}


def summarize(result: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """{row: {metric: (mean, 95% CI half-width)}}."""
    return {row: {k: metrics.mean_ci(v) for k, v in vals.items()} for row, vals in result["rows"].items()}


def format_table(result: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """Markdown: standard metrics, then plausibility metrics; the protocol line first."""
    summary = summarize(result)
    names = names or {}
    standard = ["R-Precision top-1", "R-Precision top-2", "R-Precision top-3", "FID", "MM-Dist", "Diversity",
                "MultiModality"]
    plaus = ["foot_skating", "floor_penetration", "jerk"] + (
        ["reward"] if any("reward" in v for v in summary.values()) else [])
    by_group = [f"{m} ({g})" for m in ("MM-Dist", "FID", "reward") for g in GROUPS
                if any(f"{m} ({g})" in v for v in summary.values())]
    out = [f"Protocol: {result['protocol']}. Real-row FID is one half of the test set vs the other "
           f"(the metric's floor at this size); real MultiModality is not defined.", ""]
    for cols in (standard, plaus) + ((by_group,) if by_group else ()):
        out.append("| | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for row, vals in summary.items():
            cells = [_cell(*vals[c]) if c in vals else "n/a" for c in cols]
            out.append(f"| {names.get(row, row)} | " + " | ".join(cells) + " |")
        out.append("")
    if by_group:
        out.append("(seen) / (unseen): the motions whose (content, style) combination training shows / never shows; "
                   "a group's FID compares its generated motions with the same group's real ones (real row: one "
                   "half of the group against the other).")
        out.append("")
    floor = result.get("fid_floor")
    if floor:
        sizes = ", ".join(f"{m}: {v:.3f}" for m, v in floor["half_vs_half_by_size"].items())
        out.append(f"FID floor at the generated rows' size ({floor['n']} motions against {floor['n']}): "
                   f"{floor['FID']:.3f}, extrapolated as a + c/m from the test set's half-vs-half FID at m = {sizes} "
                   f"(a = {floor['intercept']:.3f}).")
        out.append("")
    return "\n".join(out)


def _cell(mean: float, half: float) -> str:
    digits = 3 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


# === loading the real test split and the generator ======================================================

def load_test_set(data: str, split: str, mean: np.ndarray | None, std: np.ndarray | None, tiny: int = 0,
                  max_motions: int = 0) -> TestSet:
    from easytune.motion.dataset import combination_groups, load_dataset_info
    from easytune.reward import caption_choices, label_key, open_dataset

    ds = open_dataset(data, split, tiny=tiny, mean=mean, std=std, random_crop=False)
    n = len(ds) if not max_motions else min(max_motions, len(ds))
    motions, captions, labels = [], [], []
    for i in range(n):
        it = ds[i]
        motions.append(np.asarray(it["motion"], dtype=np.float32)[: int(it["length"])])
        captions.append(caption_choices(ds, i))
        labels.append(label_key(it["label"]))
    m = np.asarray(ds.mean if mean is None else mean, dtype=np.float64)
    s = np.asarray(ds.std if std is None else std, dtype=np.float64)
    names = list(ds.names[:n])
    return TestSet(motions, captions, labels, m, s, names, combination_groups(load_dataset_info(data), names))


def composition_set(data: str, per_combination: int = 2, seed: int = 0) -> tuple[list[str], list[tuple], list[int]]:
    """(captions, (content, style) labels, lengths in frames) for the combinations no motion of the dataset has
    (`absent_combinations`), `per_combination` captions each from the held-out caption templates (so they differ from
    the training templates of `--extra-prompts` files), each at the median length of its content's training motions
    (6 s for a content with none). Empty when the dataset has no labels or no absent combination.

    R-Precision and MM-Dist need only captions and generated motions, so these compositions, which no real motion
    shows, can still be scored: a view of unseen combinations that does not touch the test split."""
    from easytune.motion.captions import TEMPLATES, sample_captions
    from easytune.motion.dataset import absent_combinations, load_dataset_info

    info = load_dataset_info(data)
    labels = info["labels"] or {}
    held_out = sorted(set((info["info"] or {}).get("heldout_templates", [])))
    templates = held_out or list(range(len(TEMPLATES)))
    frames: dict[str, list[int]] = {}
    for v in labels.values():
        if v.get("split") == "train" and "frames" in v:
            frames.setdefault(v["content"], []).append(int(v["frames"]))
    captions, keys, lengths = [], [], []
    for c, s in absent_combinations(labels):
        n = int(np.median(frames[c])) if c in frames else 120
        for _, cap in sample_captions(c, s, templates, per_combination, f"probe{seed}:{c}:{s}"):
            captions.append(cap)
            keys.append((c, s))
            lengths.append(n)
    return captions, keys, lengths


def composition_metrics(embedder: Any, captions: Sequence[str], keys: Sequence[tuple], lengths: Sequence[int],
                        generate: Generator, cache: MotionCache | None, protocol: Protocol,
                        seed: int = 0) -> dict[str, float]:
    """The evaluator's MM-Dist (and R-Precision top-1, when there are a batch's worth of combinations) of generated
    motions for a `composition_set`; keys end in "(absent)"."""
    make = lambda: generate(captions, lengths, seed, protocol.steps)  # noqa: E731
    motions = cache.get_or_make("absent", seed, captions, lengths, make) if cache else make()
    _check_generated(motions, lengths)
    text_emb, motion_emb = embedder.texts(list(captions)), embedder.motions(motions)
    out = {"MM-Dist (absent)": metrics.mm_dist(text_emb, motion_emb)}
    if len(set(keys)) >= protocol.r_batch:
        out["R-Precision top-1 (absent)"] = float(metrics.r_precision(text_emb, motion_emb, list(keys), 1,
                                                                      protocol.r_batch, seed)[0])
    return out


def checkpoint_generator(checkpoint: str, device: str, guidance: float | None,
                         dataset_stamp: str | dict | None = None, chunk: int = 32) -> tuple[Generator, Path]:
    """(Generator, checkpoint folder) over a base checkpoint (easytune.generate); the generator returns
    normalized features.

    Lengths are clamped to the sampler's 20..196 frames (1 to 9.8 s). Motion i of a call with seed s
    starts from noise seeded s * 100003 + i, so it does not depend on the chunking."""
    from easytune import generate as G

    bundle = G.load_base(checkpoint, device=device, dataset_stamp=dataset_stamp)
    lo, hi = round(G.MIN_SECONDS * G.FPS), round(G.MAX_SECONDS * G.FPS)

    def gen(texts, lengths, seed, steps):
        out = []
        for i in range(0, len(texts), chunk):
            frames = [min(hi, max(lo, int(n))) for n in lengths[i:i + chunk]]
            g = G.generate(bundle, list(texts[i:i + chunk]), [f / G.FPS for f in frames], seed=seed * 100003 + i,
                           steps=steps, guidance=guidance)
            x = (g.features - bundle.mean.cpu().numpy()) / bundle.std.cpu().numpy()
            out += [x[j, :n].astype(np.float32) for j, n in enumerate(g.lengths)]
        return out
    return gen, bundle.path


def protocol_for(name: str, steps: int = 0, replications: int = 0) -> Protocol:
    """A named protocol, with its sampling steps and/or replications overridden when non-zero."""
    from easytune.diffusion import check_steps

    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    if replications < 0:
        raise UserError(f"replications must be positive (or 0 for the protocol's), got {replications}")
    protocol = PROTOCOLS[name]
    if steps:
        protocol = dataclasses.replace(protocol, steps=check_steps(steps))
    if replications:
        protocol = dataclasses.replace(protocol, replications=replications)
    return protocol


def cache_tag(checkpoint: str | Path, guidance: float | None, steps: int | None) -> str:
    """What a generated motion depends on besides its caption, length and seed: the weights' hash and the
    effective sampler (steps, guidance and eta; None = the checkpoint's defaults, read from its config)."""
    from easytune.checkpoints import CONFIG, checkpoint_hash, resolve

    path = resolve(checkpoint)
    try:
        sampling = json.loads((path / CONFIG).read_text(encoding="utf-8"))["config"]["sampling"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        raise UserError(f"checkpoint {path} has no readable sampling defaults in {CONFIG}") from None
    steps = sampling["steps"] if steps is None else steps
    guidance = sampling["guidance"] if guidance is None else guidance
    return f"{checkpoint_hash(path)}_s{int(steps)}_g{float(guidance):g}_e{float(sampling.get('eta', 0.0)):g}"


def cached_generator(checkpoint: str, device: str, guidance: float | None, protocol: Protocol, cache_root: str,
                     dataset_stamp: str | dict | None = None) -> tuple[Generator, MotionCache]:
    """checkpoint_generator plus its MotionCache (keyed by `cache_tag`), so `evaluate` and `recognize`
    share the motions they both need, and a changed default schedule is never served stale motions."""
    generate, path = checkpoint_generator(checkpoint, device, guidance, dataset_stamp)
    return generate, MotionCache(cache_root, cache_tag(path, guidance, protocol.steps), protocol.name)


# === command =============================================================================================

@dataclass
class EvaluateConfig:
    checkpoint: str = field(default="", metadata={"help": "base/finetune checkpoint to judge (empty = real data only)"})
    evaluator: str = field(default="evaluator", metadata={"help": "evaluator checkpoint (name or folder)"})
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder built by `data build`"})
    split: str = field(default="test", metadata={"help": "split to evaluate on"})
    protocol: Literal["paper", "cpu"] = field(default="cpu", metadata={"help": "named protocol (see PROTOCOLS)"})
    seed: int = field(default=0, metadata={"help": "first replication's seed; replication r uses seed + r"})
    guidance: float | None = field(default=None, metadata={"help": "classifier-free guidance (None = checkpoint's)"})
    steps: int = field(default=0, metadata={"help": "sampling steps (0 = the protocol's; for quality-vs-steps studies)"})
    replications: int = field(default=0, metadata={"help": "replications (0 = the protocol's)"})
    cache: str = field(default=".cache/evaluate", metadata={"help": "generated-motion cache folder"})
    out: str = field(default="runs/evaluate", metadata={"help": "folder for results.json and table.md"})
    max_motions: int = field(default=0, metadata={"help": "use only the first N test motions (0 = all)"})
    tiny: int = field(default=0, metadata={"help": "use only the first N motions of each split (0 = all; smoke runs)"})
    reward: str = field(default="", metadata={"help": "also report this reward model's mean reward (e.g. reward; empty = off)"})
    fid_floor: bool = field(default=True, metadata={"help": "also estimate FID's real floor at the generated rows' size (n test motions against n), extrapolated from half-vs-half FIDs of the test set at n/4, 3n/8, n/2"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})


def main(cfg: EvaluateConfig, text_encoder: Any = None, generate: Generator | None = None) -> dict[str, Any]:
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.fileio import write_json, write_text
    from easytune.device import pick_device
    from easytune.inputs import check_count, check_output_path

    # --- the settings and output folders, before anything loads or is generated ---
    protocol = protocol_for(cfg.protocol, cfg.steps, cfg.replications)
    check_count(cfg.max_motions, "--max-motions (0 = all)", low=0)
    check_count(cfg.tiny, "--tiny (0 = all)", low=0)
    check_output_path(cfg.out, kind="dir")
    check_output_path(cfg.cache, kind="dir", flag="--cache")
    device = pick_device(cfg.device)
    model, ckpt = load_evaluator(cfg.evaluator, device)
    mean = ckpt.state.get("mean")
    std = ckpt.state.get("std")
    test = load_test_set(cfg.data, cfg.split, None if mean is None else mean.numpy(),
                         None if std is None else std.numpy(), cfg.tiny, cfg.max_motions)
    embedder = Embedder(model, text_encoder)
    cache = None
    if cfg.checkpoint and generate is None:
        generate, cache = cached_generator(cfg.checkpoint, str(device), cfg.guidance, protocol, cfg.cache,
                                           ckpt.dataset)
    reward = None
    if cfg.reward:
        from easytune.checkpoints import same_dataset
        from easytune.reward import RewardScorer, load_reward_model

        reward_model, reward_ckpt = load_reward_model(cfg.reward, device)
        if not same_dataset(ckpt.dataset, reward_ckpt.dataset):
            raise UserError(f"reward model {reward_ckpt.path} was trained on another dataset than evaluator "
                            f"{ckpt.path}; their normalizations differ")
        reward = reward_mean(RewardScorer(reward_model, text_encoder))
    result = evaluate_sets(test, embedder, protocol, cfg.seed, generate, cache, reward)
    result.update(config=asdict(cfg), summary=summarize(result), evaluator=str(ckpt.path),
                  test_motions=len(test.motions))
    if cfg.fid_floor:
        result["fid_floor"] = fid_floor(embedder.motions(test.motions), cfg.seed)
    table = format_table(result, {"real": "real test set", "generated": cfg.checkpoint or "generated"})
    out = Path(cfg.out)
    write_json(out / "results.json", result)
    write_text(out / "table.md", table + "\n")
    print(table)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, EvaluateConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    main(config_from_args(EvaluateConfig, args))
    return 0
