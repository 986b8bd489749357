"""Where along the sampling chain does a fine-tune lose its variety? (issue 9's diversity guard)

    OMP_NUM_THREADS=1 .venv/bin/python scripts/diversity_probe.py --tuned runs/recipes/light/snapshots/step_00150

For N prompts of a split (val by default), each sampled from two noises (rows 2j, 2j+1), runs the base's chain and the tuned model's
chain from the same noise and prints per step the mean pair distance (RMS over valid frames and features,
easytune.finetune.harness.pair_distance) of x_t and of each model's guided x0 prediction on its own chain,
and the ratio the diversity guard reads (tuned x0 pair distance over the base's x0 pair distance at the
tuned chain's own x_t). It also gives the final samples' pair distance in two embedding spaces: the reward
model's motion embedding (unit vectors) and the evaluator's (the space MultiModality is measured in; here
only as a diagnosis, never as a training signal). Feature-space distance can grow while the embedding
distance shrinks: the samples then differ in detail but not in what they show.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np
    import torch

    from easytune.finetune.harness import pair_distance, prompts_from_split
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.generate import load_base, prepare
    from easytune.reward import load_reward_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="base")
    p.add_argument("--tuned", required=True)
    p.add_argument("--reward", default="reward")
    p.add_argument("--evaluator", default="evaluator")
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--split", default="val")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(0)
    base, tuned = load_base(args.base), load_base(args.tuned)
    split = prompts_from_split(args.data, args.split)
    pick = np.random.default_rng(args.seed).choice(len(split.captions), args.prompts, replace=False)
    pick = np.repeat(pick, 2)  # one prompt, two noises
    prep = prepare(base, [split.captions[i] for i in pick], frames=[split.frames[i] for i in pick], seed=args.seed)

    def d(x):  # mean pair distance over the batch
        return float(pair_distance(x, prep.mask).mean())

    rows = []
    with torch.no_grad():
        sb, st = prep.sampler(base.denoiser, base.diffusion), prep.sampler(tuned.denoiser, tuned.diffusion)
        xb = xt = prep.x_T
        for i in range(len(sb)):
            ob, ot = sb.step(xb, i), st.step(xt, i)
            ref = sb.step(xt, i).out.pred_x0  # the base at the tuned chain's x_t: what the guard compares with
            rows.append((i, d(xb), d(xt), d(ob.out.pred_x0), d(ot.out.pred_x0),
                         float((pair_distance(ot.out.pred_x0, prep.mask)
                                / pair_distance(ref, prep.mask).clamp_min(1e-6)).mean())))
            xb, xt = ob.out.prev_sample, ot.out.prev_sample
        fb, ft = sb.finish(xb), st.finish(xt)
        reward_model = load_reward_model(args.reward)[0]
        embedder = Embedder(load_evaluator(args.evaluator)[0], text_encoder=base.text_encoder)

        def emb_dist(x0):  # mean L2 distance between the pair's unit embeddings: (reward, evaluator)
            r = reward_model.encode_motion(x0, prep.mask)
            e = torch.as_tensor(embedder.motions([x0[j, :n] for j, n in enumerate(prep.lengths)]))
            return tuple(float((v[0::2] - v[1::2]).norm(dim=-1).mean()) for v in (r, e))

        (rb, eb), (rt, et) = emb_dist(fb), emb_dist(ft)
        fb, ft = d(fb), d(ft)
    print(f"base {args.base} vs tuned {args.tuned}: {args.prompts} {args.split} prompts x 2 noises, seed {args.seed}\n")
    print("| step | x_t pair dist base | x_t pair dist tuned | x0 pair dist base (own chain) | "
          "x0 pair dist tuned (own chain) | own-chain ratio | guard ratio (same x_t) |")
    print("|---|---|---|---|---|---|---|")
    for i, a, b, c, e, g in rows:
        print(f"| {i} | {a:.3f} | {b:.3f} | {c:.3f} | {e:.3f} | {e / c:.3f} | {g:.3f} |")
    print(f"\nfinal samples' pair distance, base / tuned (ratio): features {fb:.3f} / {ft:.3f} ({ft / fb:.3f}); "
          f"reward embedding {rb:.3f} / {rt:.3f} ({rt / rb:.3f}); evaluator embedding {eb:.3f} / {et:.3f} "
          f"({et / eb:.3f})")


if __name__ == "__main__":
    main()
