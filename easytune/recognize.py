"""`python -m easytune recognize`: does a generated motion show the prompt's action and side?

For every test motion, one of its captions (drawn with the seed, as `evaluate` does) is given to the
checkpoint, which generates a motion of the real motion's length. The evaluator then names the label
of each motion by nearest prototype: a (content, style) label's prototype is the mean evaluator text
embedding of the dataset's captions of that label, and the motion gets the label whose prototype is
nearest its motion embedding (Euclidean, as in R-Precision). (Per-content prototypes averaged over styles
were measured first and recognised only 62% of the real seen test motions' contents against 97% here.)
The content is split into an action and a side:

    raise-up-left-hand -> action "raise-up-hand", side "left";  walk-turn-right -> "walk-turn", "right"
    raise-up-both-hands -> "raise-up-hand", "both";              run -> "run", "none"

and we report how often the recognised action, side, both (= content) and style match the prompt's label,
separately for the test motions whose (content, style) combination was seen in training and the
unseen ones, with confusion matrices. The real test motions go through the same recogniser: their
row is the recogniser's own accuracy, the ceiling a generator can be measured against.

    python -m easytune recognize --checkpoint base --evaluator evaluator --data datasets/bandai

Generated motions are shared with `evaluate` through its cache (same captions, lengths and seeds).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from easytune.errors import UserError

SIDES = ("left", "right", "both", "none")
GROUPS = ("seen", "unseen")
_SIDE_WORD = re.compile(r"^(left|right|both)$")


def split_label(content: str) -> tuple[str, str]:
    """(action, side) of a content label: the side word (left/right/both) is taken out of the label and
    a plural "hands"/"arms" made singular, so one-hand and two-hand versions share the action."""
    parts = str(content).split("-")
    sides = [p for p in parts if _SIDE_WORD.match(p)]
    rest = [{"hands": "hand", "arms": "arm"}.get(p, p) if sides else p for p in parts if not _SIDE_WORD.match(p)]
    return "-".join(rest) or str(content), sides[0] if sides else "none"


def prototypes(embedder: Any, captions_by_label: dict[tuple[str, str], Sequence[str]],
               per_label: int = 50) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(labels sorted, (L, E) mean evaluator text embeddings of up to `per_label` captions each)."""
    labels = sorted(lab for lab, caps in captions_by_label.items() if caps)
    if len({c for c, _ in labels}) < 2:
        raise UserError(f"recognition needs at least 2 contents with captions, got {labels}")
    protos = []
    for lab in labels:
        caps = sorted(set(captions_by_label[lab]))
        if len(caps) > per_label:  # an even spread over the sorted captions: deterministic
            caps = [caps[i] for i in np.linspace(0, len(caps) - 1, per_label).round().astype(int)]
        protos.append(embedder.texts(caps).mean(0))
    return labels, np.stack(protos)


def classify(motion_emb: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """Index of the nearest prototype for each (N, E) motion embedding."""
    from easytune.metrics import euclidean_distance_matrix

    return euclidean_distance_matrix(motion_emb, protos).argmin(1)


def confusion(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> list[list[int]]:
    """counts[i][j]: motions whose prompt says classes[i] and that were recognised as classes[j]."""
    index = {c: i for i, c in enumerate(classes)}
    counts = [[0] * len(classes) for _ in classes]
    for t, p in zip(truth, predicted):
        counts[index[t]][index[p]] += 1
    return counts


def score(truth: Sequence[tuple[str, str]], predicted: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Accuracies (content, action, side, style) and action/side confusion matrices of one group of
    motions, from (content, style) labels."""
    truth_contents, predicted_contents = [t[0] for t in truth], [p[0] for p in predicted]
    t_split = [split_label(c) for c in truth_contents]
    p_split = [split_label(c) for c in predicted_contents]
    n = len(truth_contents)
    if n == 0:
        return {"n": 0}
    actions = sorted({a for a, _ in t_split} | {a for a, _ in p_split})
    sides = [s for s in SIDES if s in {s for _, s in t_split} | {s for _, s in p_split}]
    sided = [i for i, (_, s) in enumerate(t_split) if s != "none"]
    return {
        "n": n,
        "content": sum(t == p for t, p in zip(truth_contents, predicted_contents)) / n,
        "action": sum(t[0] == p[0] for t, p in zip(t_split, p_split)) / n,
        "side": sum(t[1] == p[1] for t, p in zip(t_split, p_split)) / n,
        "style": sum(t[1] == p[1] for t, p in zip(truth, predicted)) / n,
        "side_of_sided": (sum(t_split[i][1] == p_split[i][1] for i in sided) / len(sided)) if sided else None,
        "n_sided": len(sided),
        "actions": actions,
        "action_confusion": confusion([a for a, _ in t_split], [a for a, _ in p_split], actions),
        "sides": sides,
        "side_confusion": confusion([s for _, s in t_split], [s for _, s in p_split], sides),
    }


def recognise_sets(truth: Sequence[tuple[str, str]], groups: Sequence[str],
                   predicted: dict[str, Sequence[tuple[str, str]]]) -> dict:
    """{row: {group: score}} for rows like "real"/"generated" and groups "seen"/"unseen"/"all"."""
    out: dict[str, dict[str, Any]] = {}
    for row, pred in predicted.items():
        out[row] = {}
        for g in (*GROUPS, "all"):
            idx = [i for i, gi in enumerate(groups) if g == "all" or gi == g]
            out[row][g] = score([truth[i] for i in idx], [pred[i] for i in idx])
    return out


# === report ==============================================================================================

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def matrix_markdown(classes: Sequence[str], counts: Sequence[Sequence[int]]) -> str:
    """A confusion matrix as a markdown table: rows = the prompt's class, columns = recognised."""
    lines = ["| prompt \\ recognised | " + " | ".join(classes) + " | n | correct |",
             "|---" * (len(classes) + 3) + "|"]
    for c, row in zip(classes, counts):
        n = sum(row)
        if n == 0:
            continue
        correct = row[list(classes).index(c)] / n
        lines.append(f"| **{c}** | " + " | ".join(str(v) if v else "." for v in row) + f" | {n} | {_pct(correct)} |")
    return "\n".join(lines)


def per_content_markdown(motions: Sequence[dict], names: dict[str, str]) -> str:
    """Per prompt content: how many motions were recognised as exactly that content, in each row."""
    rows = [r for r in ("real", "generated") if motions and r in motions[0]]
    contents = sorted({m["label"][0] for m in motions})
    lines = ["| prompt content | n | " + " | ".join(f"{names.get(r, r)}: recognised as the content" for r in rows) + " |",
             "|---|---|" + "---|" * len(rows)]
    for c in contents:
        ms = [m for m in motions if m["label"][0] == c]
        cells = [f"{sum(m[r][0] == c for m in ms)}/{len(ms)}" for r in rows]
        lines.append(f"| {c} | {len(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(result: dict[str, Any], names: dict[str, str]) -> str:
    rows = result["rows"]
    lines = [f"Recognition by the evaluator ({result['evaluator']}) on the {result['split']} split, captions drawn "
             f"with seed {result['seed']}, {result['steps_text']}.", "",
             "| motions | group | n | action | side | action and side | side, sided prompts only | style |",
             "|---|---|---|---|---|---|---|---|"]
    for row, groups in rows.items():
        for g in (*GROUPS, "all"):
            s = groups[g]
            if s["n"]:
                lines.append(f"| {names.get(row, row)} | {g} | {s['n']} | {_pct(s['action'])} | {_pct(s['side'])} | "
                             f"{_pct(s['content'])} | {_pct(s['side_of_sided'])} (n={s['n_sided']}) | "
                             f"{_pct(s['style'])} |")
    lines += ["", per_content_markdown(result["motions"], names)]
    for row in rows:
        if row == "real":
            continue
        for g in GROUPS:
            s = rows[row][g]
            if not s["n"]:
                continue
            lines += ["", f"Side confusion, {names.get(row, row)}, {g} combinations:", "",
                      matrix_markdown(s["sides"], s["side_confusion"]),
                      "", f"Action confusion, {names.get(row, row)}, {g} combinations:", "",
                      matrix_markdown(s["actions"], s["action_confusion"])]
    return "\n".join(lines)


# === command =============================================================================================

@dataclass
class RecognizeConfig:
    checkpoint: str = field(default="", metadata={"help": "base/finetune checkpoint (empty = real test motions only)"})
    evaluator: str = field(default="evaluator", metadata={"help": "evaluator checkpoint (name or folder)"})
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder built by `data build`"})
    split: str = field(default="test", metadata={"help": "split to recognise (its motions' labels say seen/unseen)"})
    seed: int = field(default=0, metadata={"help": "caption draw and generation seed (as `evaluate` replication 0)"})
    steps: int = field(default=0, metadata={"help": "sampling steps (0 = the checkpoint's default)"})
    guidance: float | None = field(default=None, metadata={"help": "classifier-free guidance (None = checkpoint's)"})
    per_label: int = field(default=50, metadata={"help": "captions averaged into each (content, style) prototype"})
    cache: str = field(default=".cache/evaluate", metadata={"help": "generated-motion cache (shared with evaluate)"})
    out: str = field(default="runs/recognize", metadata={"help": "folder for results.json and report.md"})
    max_motions: int = field(default=0, metadata={"help": "use only the first N test motions (0 = all)"})
    device: str = field(default="auto", metadata={"help": "auto = cuda if available, else cpu"})


def label_captions(data: str, splits: Sequence[str] = ("train", "val", "test")) -> dict[tuple[str, str], list[str]]:
    """{(content, style): captions of the motions with that label} over `splits` of a dataset with
    labels.json. The captions are written from the labels, so the test split's captions carry no test
    motion; they let the labels of unseen combinations (and contents only in the test split) be named."""
    from easytune.motion.dataset import MotionDataset, load_dataset_info

    present = load_dataset_info(data)["splits"]
    out: dict[tuple[str, str], list[str]] = {}
    for split in (s for s in splits if s in present):
        ds = MotionDataset(data, split, random_crop=False)
        if ds.labels is None:
            raise UserError(f"{data} has no labels.json: recognition needs (content, style) labels")
        for i, label in enumerate(ds.labels):
            if label is not None:
                out.setdefault((str(label[0]), str(label[1])), []).extend(ds.captions(i))
    return out


def main(cfg: RecognizeConfig, text_encoder: Any = None, generate: Any = None) -> dict[str, Any]:
    from easytune.evaluate import cached_generator, load_test_set, protocol_for
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.fileio import write_json, write_text
    from easytune.motion.dataset import load_dataset_info
    from easytune.device import pick_device
    from easytune.inputs import check_count, check_output_path

    # --- the settings and output folders, before anything loads or is generated ---
    check_count(cfg.per_label, "--per-label")
    check_count(cfg.max_motions, "--max-motions (0 = all)", low=0)
    protocol = protocol_for("cpu", cfg.steps)
    check_output_path(cfg.out, kind="dir")
    check_output_path(cfg.cache, kind="dir", flag="--cache")
    device = pick_device(cfg.device)
    model, ckpt = load_evaluator(cfg.evaluator, device)
    mean, std = ckpt.state.get("mean"), ckpt.state.get("std")
    test = load_test_set(cfg.data, cfg.split, None if mean is None else mean.numpy(),
                         None if std is None else std.numpy(), max_motions=cfg.max_motions)
    info = load_dataset_info(cfg.data)
    if info["labels"] is None or any(lab is None for lab in test.labels):
        raise UserError(f"{cfg.data}: every {cfg.split} motion needs a (content, style) label in labels.json")
    truth = [(str(lab[0]), str(lab[1])) for lab in test.labels]
    groups = test.groups
    embedder = Embedder(model, text_encoder)
    known, protos = prototypes(embedder, label_captions(cfg.data), cfg.per_label)

    def recognise(motions: list[np.ndarray]) -> list[tuple[str, str]]:
        return [known[k] for k in classify(embedder.motions(motions), protos)]

    predicted = {"real": recognise(test.motions)}
    captions = None
    if cfg.checkpoint or generate is not None:
        cache = None
        if generate is None:
            generate, cache = cached_generator(cfg.checkpoint, str(device), cfg.guidance, protocol, cfg.cache,
                                               ckpt.dataset)
        texts, lengths = test.draw_captions(cfg.seed), [len(m) for m in test.motions]
        make = lambda: generate(texts, lengths, cfg.seed, protocol.steps)  # noqa: E731
        gen = cache.get_or_make("test", cfg.seed, texts, lengths, make) if cache else make()
        predicted["generated"] = recognise(gen)
        captions = texts
    result = {"config": asdict(cfg), "evaluator": str(ckpt.path), "split": cfg.split, "seed": cfg.seed,
              "steps_text": "the checkpoint's default sampling steps" if not cfg.steps else f"{cfg.steps} sampling steps",
              "labels": [list(lab) for lab in known], "groups": dict(Counter(groups)),
              "rows": recognise_sets(truth, groups, predicted),
              "motions": [{"name": n, "group": g, "label": list(t), "caption": captions[i] if captions else None,
                           **{row: list(pred[i]) for row, pred in predicted.items()}}
                          for i, (n, g, t) in enumerate(zip(test.names, groups, truth))]}
    report = format_report(result, {"real": "real test motions", "generated": cfg.checkpoint or "generated"})
    out = Path(cfg.out)
    write_json(out / "results.json", result)
    write_text(out / "report.md", report + "\n")
    print(report)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, RecognizeConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    main(config_from_args(RecognizeConfig, args))
    return 0
