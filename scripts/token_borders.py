"""Tremor check for base checkpoints: do neighbouring motion tokens agree where they meet?

A denoiser that packs k frames per token predicts each token's frames together; if neighbouring tokens
disagree, joints jump at every token border (a 20/k Hz tremor). For a FIXED list of prompts (seed 0,
4 s, each checkpoint's default schedule) this prints the mean per-frame movement of the joints relative
to the pelvis inside a token and across a token border, and the mean jerk (m/s^3; real Bandai test
motions: 54, `python -m easytune evaluate` real row).

    OMP_NUM_THREADS=2 python scripts/token_borders.py --checkpoints base
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.generate import generate, load_base  # noqa: E402
from easytune.metrics import jerk  # noqa: E402

PROMPTS = ["a person walks forward", "a person waves their left hand", "a person walks and turns right",
           "an energetic person runs forward"]


def border_steps(joints: np.ndarray, k: int) -> tuple[float, float]:
    """(mean movement per frame inside a token, across a token border), metres; joints (T, 22, 3)."""
    rel = joints - joints[:, :1]
    step = np.linalg.norm(np.diff(rel, axis=0), axis=-1).mean(1)  # step[i]: frame i -> i + 1
    across = (np.arange(len(step)) % k) == k - 1
    return float(step[~across].mean()), float(step[across].mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=["base"])
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: each checkpoint's)")
    args = parser.parse_args()
    for name in args.checkpoints:
        bundle = load_base(name)
        k = bundle.denoiser.cfg.frames_per_token
        g = generate(bundle, PROMPTS, 4.0, 0, args.steps)
        rows = [border_steps(g.joints[i, : g.lengths[i]], k) + (jerk(g.joints[i, : g.lengths[i]]),)
                for i in range(len(PROMPTS))]
        inside, across, j = np.mean(rows, axis=0)
        print(f"{name}: {k} frames per token, {args.steps or bundle.steps} steps: inside a token "
              f"{100 * inside:.2f} cm/frame, across a border {100 * across:.2f} cm/frame, jerk {j:.0f} m/s^3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
