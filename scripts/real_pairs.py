"""Preference pairs "the real motion matches its caption better than a checkpoint's motion for it", for SPL.

    OMP_NUM_THREADS=1 python scripts/real_pairs.py --checkpoint easytune --split train --max-motions 2048 \
        --out runs/pairs_easytune

The demo reward scores `easytune`'s motions level with real ones (scripts/reward_gap.py: +0.0008 on validation)
while the evaluator still puts them 0.8 MM-Dist behind, so the reward has little left to teach. These pairs give the
reward model that missing signal with no human label: for a training motion and one of its captions (the reward's
even share of the paraphrases), the real motion is preferred to the checkpoint's motion of the same length for that
caption. The file is easytune-pairs/1 (easytune/spl.py) with each side in a .npy of normalized features beside it, so
`python -m easytune train spl --human-pairs runs/pairs_easytune/pairs.jsonl --w-human W` trains on it as it would on
votes from the playground's studies. Only training-split motions are used: validation and test stay unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Generator = Callable[[Sequence[str], Sequence[int], int, int | None], list]


def even_captions(captions: Sequence[Sequence[str]], rng: np.random.Generator) -> list[str]:
    """One caption per motion, drawn from its even positions (the reward's share; the evaluator trains on odd)."""
    return [caps[::2][int(rng.integers(len(caps[::2])))] for caps in captions]


def write_real_pairs(test, generate: Generator, out: Path, checkpoint: str, max_motions: int = 0,
                     seed: int = 0) -> int:
    """Writes out/pairs.jsonl, out/real/NNNNN.npy and out/generated/NNNNN.npy; returns the number of pairs.
    `test` is an evaluate.TestSet of the split; `generate(texts, lengths, seed, steps)` returns normalized
    features (evaluate.checkpoint_generator). Motions are a random subset of `max_motions` (0 = all)."""
    from easytune.fileio import write_text
    from easytune.spl import PAIRS_FORMAT

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test.motions))
    if max_motions:
        order = np.sort(order[:max_motions])
    texts = even_captions([test.captions[i] for i in order], rng)
    real = [test.motions[i] for i in order]
    generated = generate(texts, [len(m) for m in real], seed, None)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "generated").mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (i, text, r, g) in enumerate(zip(order, texts, real, generated)):
        a, b = f"real/{n:05d}.npy", f"generated/{n:05d}.npy"
        np.save(out / a, np.asarray(r, dtype=np.float32))
        np.save(out / b, np.asarray(g, dtype=np.float32))
        name = test.names[i] if test.names else str(int(i))
        lines.append(json.dumps({"format": PAIRS_FORMAT, "prompt": text, "criterion": "text_match", "preferred": "a",
                                 "a": {"features_file": a}, "b": {"features_file": b},
                                 "source": "real_pairs", "motion": name, "generated_by": checkpoint, "seed": seed}))
    write_text(out / "pairs.jsonl", "".join(line + "\n" for line in lines))
    return len(lines)


def main() -> None:
    from easytune import evaluate as E

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="easytune", help="base or fine-tune whose motions are the rejected side")
    p.add_argument("--split", default="train", help="dataset split the motions and captions come from")
    p.add_argument("--max-motions", type=int, default=0, help="random subset of this many motions (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="subset, captions and generation noise")
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--cache", default=".cache/evaluate")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    test = E.load_test_set(a.data, a.split, None, None)
    gen, cache = E.cached_generator(a.checkpoint, "cpu", None, E.PROTOCOLS["cpu"], a.cache)

    def cached(texts, lengths, seed, steps):
        return cache.get_or_make(f"pairs_{a.split}", seed, texts, lengths, lambda: gen(texts, lengths, seed, steps))

    n = write_real_pairs(test, cached, Path(a.out), a.checkpoint, a.max_motions, a.seed)
    print(f"{n} pairs (real preferred to {a.checkpoint}) from the {a.split} split: {Path(a.out) / 'pairs.jsonl'}")


if __name__ == "__main__":
    main()
