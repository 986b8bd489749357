"""Validation loss of base checkpoints on the same fixed batches (train_base.validation_loss), so
checkpoints from different runs or seeds can be compared; training logs use 4 batches, this uses more.

    OMP_NUM_THREADS=2 python scripts/val_loss.py --data datasets/bandai --checkpoints base runs/base2/last
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.diffusion import DDIMScheduler  # noqa: E402
from easytune.generate import load_base  # noqa: E402
from easytune.motion.dataset import MotionDataset, collate  # noqa: E402
from easytune.train_base import validation_loss  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/bandai")
    parser.add_argument("--checkpoints", nargs="+", default=["base"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    for name in args.checkpoints:
        bundle = load_base(name)
        data = MotionDataset(args.data, args.split, mean=bundle.mean.numpy(), std=bundle.std.numpy(),
                             random_crop=False)
        encode = lambda caps: bundle.text_encoder.encode_tokens(caps)  # noqa: E731
        loss = validation_loss(bundle.denoiser, DDIMScheduler(bundle.diffusion), data, collate, encode,
                               args.batch_size, args.batches)
        print(f"{name}: {args.split} loss {loss:.4f} ({args.batches} fixed batches of {args.batch_size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
