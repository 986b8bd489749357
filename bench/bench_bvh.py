"""BVH import speed on the real Bandai Namco files: our vectorized parser vs the PyPI package `bvh`.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_bvh.py [--archive ../shared/data/bandai-namco/bandai-namco-1.tar.xz] [--clips 10]

The archive is read (decompressed) first and not timed; then, per library, the best of `--repeat`
passes over the same texts is reported:
- parse: text -> (frames, channels) float array. For `bvh`, `Bvh(text)` plus reading every joint's
  channels into one array (what a FK step needs), since `Bvh` alone keeps strings;
- parse+FK: ours adds `forward_kinematics` (the package has no FK, so its column is parse only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.motion.bvh import forward_kinematics, iter_archive, parse_bvh  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bandai-namco" / "bandai-namco-1.tar.xz"


def parse_with_bvh_package(text: str) -> np.ndarray:
    from bvh import Bvh

    mocap = Bvh(text)
    cols = [np.asarray(mocap.frames_joint_channels(j, mocap.joint_channels(j)), dtype=np.float64)
            for j in mocap.get_joints_names()]
    return np.concatenate(cols, axis=1)


def best_of(fn, texts, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", type=Path, default=DEFAULT)
    ap.add_argument("--clips", type=int, default=10)  # the bvh package needs ~3 s a clip
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    texts = [e.text for e in iter_archive(args.archive, limit=args.clips)]
    frames = sum(parse_bvh(t).num_frames for t in texts)
    # The two parsers must agree before their speed means anything.
    for t in texts[:5]:
        np.testing.assert_allclose(parse_with_bvh_package(t), parse_bvh(t).data)

    rows = [
        ("ours: parse", best_of(parse_bvh, texts, args.repeat)),
        ("ours: parse + FK", best_of(lambda t: forward_kinematics(parse_bvh(t)), texts, args.repeat)),
        ("bvh 0.3: parse to array", best_of(parse_with_bvh_package, texts, args.repeat)),
    ]
    print(f"{len(texts)} clips, {frames} frames (30 fps) from {args.archive.name}; best of {args.repeat}")
    for name, sec in rows:
        print(f"  {name:<26} {sec:7.3f} s  {1000 * sec / len(texts):7.2f} ms/clip  {frames / sec:9.0f} frames/s")
    print(f"  speed-up of our parser over bvh: {rows[2][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
