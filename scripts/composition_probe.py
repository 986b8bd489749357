"""Alignment on compositions no motion of the dataset shows, without the test split: a selection signal for unseen
combinations.

    OMP_NUM_THREADS=1 python scripts/composition_probe.py --checkpoints base,easytune --per-combination 2

R-Precision and MM-Dist need only captions and generated motions, not real ones. So the (content, style) pairs that
no motion of any split carries (the 171 of `scripts/absent_combination_prompts.py`; none of them is one of the test
split's held-out combinations, which have motions) can be scored by the evaluator, captioned with the dataset's
held-out caption templates (so the captions differ from the training templates that `--extra-prompts` files use),
each at the median length of its content's training motions. FID cannot be: there is no real motion to compare with.
The question this answers: does a checkpoint's alignment here track its alignment on the test split's unseen
combinations, so that the validation-only selection can see what it misses today?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def probe_set(data: str, per_combination: int, seed: int = 0) -> tuple[list[str], list[tuple[str, str]], list[int]]:
    """(captions, (content, style) labels, lengths in frames), `per_combination` captions per absent combination."""
    from absent_combination_prompts import absent_combinations

    from easytune.errors import UserError
    from easytune.motion.captions import TEMPLATES, sample_captions
    from easytune.motion.dataset import load_dataset_info

    info = load_dataset_info(data)
    labels = info["labels"]
    if not labels:
        raise UserError(f"{data} has no labels.json: combinations need (content, style) labels")
    held_out = sorted(set((info["info"] or {}).get("heldout_templates", [])))
    templates = held_out or list(range(len(TEMPLATES)))
    frames: dict[str, list[int]] = {}
    for v in labels.values():
        if v.get("split") == "train":
            frames.setdefault(v["content"], []).append(int(v["frames"]))
    captions, keys, lengths = [], [], []
    for c, s in absent_combinations(labels):
        n = int(np.median(frames[c])) if c in frames else 120
        for _, cap in sample_captions(c, s, templates, per_combination, f"probe{seed}:{c}:{s}"):
            captions.append(cap)
            keys.append((c, s))
            lengths.append(n)
    return captions, keys, lengths


def main(argv: list[str] | None = None) -> int:
    from easytune import evaluate as E
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.text import load_text_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="base,easytune", help="comma-separated base/fine-tune checkpoints")
    p.add_argument("--per-combination", type=int, default=2)
    p.add_argument("--replications", type=int, default=1, help="generation seeds 0..N-1")
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--evaluator", default="evaluator")
    p.add_argument("--cache", default=".cache/evaluate")
    a = p.parse_args(argv)
    captions, keys, lengths = probe_set(a.data, a.per_combination)
    model, ckpt = load_evaluator(a.evaluator, "cpu")
    embedder = Embedder(model, load_text_encoder("cpu"))
    text_emb = embedder.texts(captions)
    protocol = E.PROTOCOLS["cpu"]
    print(f"{len(set(keys))} absent combinations x {a.per_combination} captions = {len(captions)} motions, held-out "
          f"templates, {a.replications} replication(s); evaluator {ckpt.path}")
    print("| checkpoint | R@1 | R@3 | MM-Dist |\n|---|---|---|---|")
    for name in [c for c in a.checkpoints.split(",") if c]:
        gen, cache = E.cached_generator(name, "cpu", None, protocol, a.cache, ckpt.dataset.get("stamp"))
        rows = []
        for s in range(a.replications):
            motions = cache.get_or_make("absent", s, captions, lengths, lambda: gen(captions, lengths, s, None))
            rows.append(E.set_metrics(text_emb, embedder.motions(motions), keys, None, protocol, s))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("R-Precision top-1", "R-Precision top-3", "MM-Dist")}
        print(f"| {name} | {mean['R-Precision top-1']:.3f} | {mean['R-Precision top-3']:.3f} | {mean['MM-Dist']:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
