"""Alignment on compositions no motion of the dataset shows, without the test split: a selection signal for unseen
combinations.

    OMP_NUM_THREADS=1 python scripts/composition_probe.py --checkpoints base,easytune --per-combination 2
    OMP_NUM_THREADS=1 python scripts/composition_probe.py --checkpoints easytune --steps 20   # a sampler setting

R-Precision and MM-Dist need only captions and generated motions, not real ones. So the (content, style) pairs that
no motion of any split carries (the 171 of `easytune.motion.dataset.absent_combinations`; none of them is one of the test
split's held-out combinations, which have motions) can be scored by the evaluator, captioned with the dataset's
held-out caption templates (so the captions differ from the training templates that `--extra-prompts` files use),
each at the median length of its content's training motions. FID cannot be: there is no real motion to compare with.
`easytune.evaluate.composition_set` and `composition_metrics` do the work; `finetune select` reports the same
MM-Dist for every snapshot. The question this answers: does a checkpoint's alignment here track its alignment on the test split's unseen
combinations, so that the validation-only selection can see what it misses today?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from easytune import evaluate as E
    from easytune.diffusion import check_guidance
    from easytune.errors import UserError
    from easytune.inputs import check_count
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.text import load_text_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="base,easytune", help="comma-separated base/fine-tune checkpoints")
    p.add_argument("--per-combination", type=int, default=2)
    p.add_argument("--replications", type=int, default=1, help="generation seeds 0..N-1")
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--evaluator", default="evaluator")
    p.add_argument("--cache", default=".cache/evaluate")
    p.add_argument("--steps", type=int, default=0, help="sampling steps (0 = each checkpoint's default)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: each checkpoint's)")
    a = p.parse_args(argv)
    try:  # out-of-range settings stop before anything loads
        protocol = E.protocol_for("cpu", a.steps, 0)
        check_count(a.per_combination, "--per-combination")
        check_count(a.replications, "--replications")
        if a.guidance is not None:
            check_guidance(a.guidance)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    captions, keys, lengths = E.composition_set(a.data, a.per_combination)
    if not captions:
        print(f"error: {a.data} has no labels or no content-style combination without a motion", file=sys.stderr)
        return 2
    model, ckpt = load_evaluator(a.evaluator, "cpu")
    embedder = Embedder(model, load_text_encoder("cpu"))
    print(f"{len(set(keys))} absent combinations x {a.per_combination} captions = {len(captions)} motions, held-out "
          f"templates, {a.replications} replication(s); sampler steps {protocol.steps or 'default'}, guidance "
          f"{'default' if a.guidance is None else a.guidance}; evaluator {ckpt.path}")
    print("| checkpoint | R@1 | MM-Dist |\n|---|---|---|")
    for name in [c for c in a.checkpoints.split(",") if c]:
        try:  # the evaluator's whole dataset record: a rebuilt dataset matches by its content stamp
            gen, cache = E.cached_generator(name, "cpu", a.guidance, protocol, a.cache, ckpt.dataset)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        rows = [E.composition_metrics(embedder, captions, keys, lengths, gen, cache, protocol, s)
                for s in range(a.replications)]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        r1 = mean.get("R-Precision top-1 (absent)", float("nan"))
        print(f"| {name} | {r1:.3f} | {mean['MM-Dist (absent)']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
