"""How far apart does each reward model put real and generated motions? Its mean score (cosine) on a split's real
motions and on each checkpoint's, with the captions `evaluate` draws for replication 0.

    OMP_NUM_THREADS=1 python scripts/reward_gap.py --split val --rewards reward,runs/reward_s1 --checkpoints easytune,base

A reward that scores a fine-tune's motions as high as real ones has little left to teach; two reward models trained
apart that disagree on that gap show that part of one model's saturation is its own. Generated motions come from
`evaluate`'s cache (.cache/evaluate) when it holds them, and are generated (and cached) otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from easytune import evaluate as E
    from easytune.reward import RewardScorer, load_reward_model
    from easytune.text import load_text_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val")
    p.add_argument("--rewards", default="reward", help="comma-separated reward checkpoints")
    p.add_argument("--checkpoints", default="easytune,base", help="comma-separated base/fine-tune checkpoints")
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--cache", default=".cache/evaluate")
    a = p.parse_args()
    encoder = load_text_encoder("cpu")
    test = E.load_test_set(a.data, a.split, None, None)
    texts, lengths = test.draw_captions(0), [len(m) for m in test.motions]
    sets = {"real": test.motions}
    for c in [c for c in a.checkpoints.split(",") if c]:
        gen, cache = E.cached_generator(c, "cpu", None, E.PROTOCOLS["cpu"], a.cache)
        sets[c] = cache.get_or_make("test", 0, texts, lengths, lambda: gen(texts, lengths, 0, None))
    print(f"{a.split} split, {len(texts)} motions; mean reward-model cosine, and real minus generated")
    print("| reward | " + " | ".join(sets) + " | " + " | ".join(f"real - {c}" for c in sets if c != "real") + " |")
    print("|---" * (2 * len(sets)) + "|")
    for r in [r for r in a.rewards.split(",") if r]:
        score = E.reward_mean(RewardScorer(load_reward_model(r, "cpu")[0], encoder))
        vals = {k: score(v, texts) for k, v in sets.items()}
        print(f"| {r} | " + " | ".join(f"{v:.4f}" for v in vals.values()) + " | "
              + " | ".join(f"{vals['real'] - v:+.4f}" for k, v in vals.items() if k != "real") + " |")


if __name__ == "__main__":
    main()
