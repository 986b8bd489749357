"""Sampling latency of the base model (not a test): median wall time of `generate` for a 6-second motion,
split into denoiser time and everything else (text encoding, scheduler, feature recovery).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_sampling.py                     # random weights, cpu preset
    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_sampling.py --checkpoint runs/base/last --quality

Weights do not change the cost, so without --checkpoint a randomly initialised model of the chosen
preset is timed. --quality (needs a trained checkpoint) also reports how far an N-step sample lies
from a 200-step sample of the same noise (mean joint distance, metres): the solver error that fewer
steps buy. Note the machine load (printed) when quoting numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easytune.checkpoints import save_checkpoint  # noqa: E402
from easytune.generate import generate, load_base  # noqa: E402
from easytune.train_base import PRESETS, base_checkpoint_config  # noqa: E402
from models.denoiser import MotionDenoiser  # noqa: E402

PROMPT = "a person walks forward, turns around and walks back"


class TimedDenoiser(torch.nn.Module):
    """Wraps a denoiser and adds up the wall time spent inside it."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def forward(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def random_checkpoint(preset: str, overrides: dict, folder: Path) -> Path:
    cfg = dataclasses.replace(PRESETS[preset](), **overrides)
    torch.manual_seed(0)
    model = MotionDenoiser(cfg.denoiser_config())
    state = {f"denoiser.{k}": v for k, v in model.state_dict().items()}
    state |= {"mean": torch.zeros(263), "std": torch.ones(263)}
    save_checkpoint(folder, state, kind="base", config=base_checkpoint_config(cfg), dataset={"stamp": "bench"})
    return folder


def time_generate(bundle, batch: int, seconds: float, steps: int, guidance: float, repeats: int) -> dict:
    timed = TimedDenoiser(bundle.denoiser)
    b = dataclasses.replace(bundle, denoiser=timed)
    prompts = [PROMPT] * batch
    generate(b, prompts, seconds, 0, steps, guidance)  # warm-up (allocator, text cache, kernels)
    totals, inner = [], []
    for r in range(repeats):
        timed.seconds = 0.0
        t0 = time.perf_counter()
        generate(b, prompts, seconds, r, steps, guidance)
        totals.append(time.perf_counter() - t0)
        inner.append(timed.seconds)
    total, den = statistics.median(totals), statistics.median(inner)
    return {"batch": batch, "steps": steps, "guidance": guidance, "median_s": total, "denoiser_s": den,
            "other_s": total - den, "min_s": min(totals), "max_s": max(totals)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a trained base checkpoint (default: random weights)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--set", nargs="*", default=[], help="config overrides for the random model, e.g. frames_per_token=4")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--steps", type=int, nargs="*", default=None, help="step counts (default: checkpoint's and 50)")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 2])
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quality", action="store_true", help="solver error vs a 200-step sample (trained checkpoint)")
    args = p.parse_args()

    load = os.getloadavg()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            bundle = load_base(args.checkpoint)
        else:
            overrides = {k: type(getattr(PRESETS[args.preset](), k))(v) for k, v in (s.split("=", 1) for s in args.set)}
            bundle = load_base(random_checkpoint(args.preset, overrides, Path(tmp) / "ckpt"))
        n_params = sum(p.numel() for p in bundle.denoiser.parameters())
        c = bundle.denoiser.cfg
        print(f"model: {n_params / 1e6:.2f}M params, d_model {c.d_model}, layers {c.layers}, "
              f"frames_per_token {c.frames_per_token}; default steps {bundle.steps}, guidance {bundle.guidance}")
        guidance = bundle.guidance if args.guidance is None else args.guidance
        steps_list = args.steps or sorted({bundle.steps, 50})
        print(f"{'batch':>5} {'steps':>5} {'median s':>9} {'denoiser s':>10} {'other s':>8} {'min':>6} {'max':>6}")
        for steps in steps_list:
            for batch in args.batches:
                r = time_generate(bundle, batch, args.seconds, steps, guidance, args.repeats)
                print(f"{r['batch']:>5} {r['steps']:>5} {r['median_s']:>9.3f} {r['denoiser_s']:>10.3f} "
                      f"{r['other_s']:>8.3f} {r['min_s']:>6.3f} {r['max_s']:>6.3f}")
        if args.quality:
            prompts = ["a person walks forward", "a person waves with the right hand", "a person jumps",
                       "a person bows", "a person runs in a circle", "a person kicks"]
            ref = generate(bundle, prompts, args.seconds, 0, 200, guidance).joints
            for steps in (5, 10, 20, 30, 50, 100):
                j = generate(bundle, prompts, args.seconds, 0, steps, guidance).joints
                err = float(np.linalg.norm(j - ref, axis=-1).mean())
                print(f"steps {steps:>3}: mean joint distance to the 200-step sample {err * 100:.2f} cm")
    print(f"load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
