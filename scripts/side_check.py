"""Quick left/right sanity check of a base checkpoint (not the model card's full confusion matrix).

For a FIXED list of one-hand prompts and seeds, generate each motion with the checkpoint's default
schedule and say which wrist moved more (path length relative to the pelvis). Prints one line per prompt
and the share of samples whose moving hand matches the prompt's side.

    OMP_NUM_THREADS=2 python scripts/side_check.py --checkpoint base
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.generate import generate, load_base  # noqa: E402
from easytune.motion.skeleton import JOINT_NAMES  # noqa: E402

PROMPTS = {
    "a person waves their left hand": "left",
    "a person waves their right hand": "right",
    "someone raises their left hand": "left",
    "someone raises their right hand": "right",
}
SEEDS = (0, 1, 2, 3)
SECONDS = 4.0


def moving_side(joints: np.ndarray) -> str:
    """'left' or 'right': the wrist with the longer path relative to the pelvis, joints (T, 22, 3)."""
    rel = joints - joints[:, :1]
    path = lambda j: float(np.linalg.norm(np.diff(rel[:, j], axis=0), axis=-1).sum())  # noqa: E731
    return "left" if path(JOINT_NAMES.index("left_wrist")) > path(JOINT_NAMES.index("right_wrist")) else "right"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="base", help="base checkpoint (registry name or folder)")
    args = parser.parse_args()
    bundle = load_base(args.checkpoint)
    hits = total = 0
    for prompt, side in PROMPTS.items():
        sides = []
        for seed in SEEDS:
            g = generate(bundle, [prompt], seconds=SECONDS, seed=seed)
            sides.append(moving_side(g.joints[0, : int(g.lengths[0])]))
        hits += sum(s == side for s in sides)
        total += len(sides)
        print(f"{prompt!r:40} expected {side:5}  got {' '.join(sides)}")
    print(f"side matches the prompt in {hits}/{total} samples "
          f"(seeds {list(SEEDS)}, {SECONDS:g} s, the checkpoint's default steps and guidance)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
