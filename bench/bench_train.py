"""Training throughput of the base model (not a test): samples/s of the real training loop on CPU/GPU.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_train.py --data DATASET_DIR --steps 30
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_train.py --steps 30 --set frames_per_token=4

Without --data a synthetic HumanML3D-layout folder is written to a temp dir (64 clips of 60..196
frames, the length spread of real data), so the number does not depend on having data. The first
`--warmup` steps (text encoding of new captions, allocator) are excluded. Note the machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.motion.dataset import MotionDataset, collate  # noqa: E402
from easytune.text import load_text_encoder  # noqa: E402
from easytune.device import pick_device  # noqa: E402
from easytune.train_base import PRESETS, train  # noqa: E402


def synthetic_dataset(root: Path, n: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for i in range(n):
        np.save(root / "new_joint_vecs" / f"{i:06d}.npy", rng.standard_normal((int(rng.integers(60, 197)), 263)).astype(np.float32))
        (root / "texts" / f"{i:06d}.txt").write_text(f"a person does motion {i % 16}#x#0.0#0.0\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32))
    (root / "train.txt").write_text("\n".join(f"{i:06d}" for i in range(n)) + "\n")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset folder (default: synthetic)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. batch_size=64 frames_per_token=4")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    args = p.parse_args()
    load = os.getloadavg()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic_dataset(Path(tmp) / "data")
        base = PRESETS[args.preset]()
        overrides = {k: type(getattr(base, k))(v) for k, v in (s.split("=", 1) for s in args.set)}
        cfg = dataclasses.replace(base, **overrides, run_dir=str(Path(tmp) / "run"), val_every=0,
                                  ckpt_every=10**9, max_steps=args.warmup)
        ds = MotionDataset(data, "train", min_frames=cfg.min_frames, max_frames=cfg.max_frames, seed=cfg.seed)
        enc = load_text_encoder(pick_device(cfg.device))
        train(cfg, ds, None, collate=collate, text_encoder=enc, progress=False, resume=False)
        t0 = time.perf_counter()
        summary = train(dataclasses.replace(cfg, max_steps=args.warmup + args.steps), ds, None, collate=collate,
                        text_encoder=enc, progress=False, resume=True)
        wall = time.perf_counter() - t0
        mean_len = float(np.mean([ds[i]["length"] for i in range(len(ds))]))
    print(f"preset {args.preset} {overrides or ''}: batch {cfg.batch_size}, mean clip {mean_len:.0f} frames, "
          f"{args.steps} steps in {wall:.1f} s (incl. resume + final checkpoint) -> "
          f"{summary['samples_per_s']:.1f} samples/s in the loop, {args.steps * cfg.batch_size / wall:.1f} overall")
    print(f"load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
