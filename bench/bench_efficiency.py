"""Efficiency of EasyTune against its baselines (a benchmark, not a test): memory held for backward and
time per update, every method on the same model and batch, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_efficiency.py                  # a few minutes of CPU
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_efficiency.py --trajectories 3 --steps 10 20 50

Rows: EasyTune (every step optimized, `step` variant), ReFL (M = 10), DRaFT-1, DRaFT-10, DRaFT-50 (K
clipped to the step count, so at n <= K it is full backpropagation through sampling), DRaFT-LV (n = 2),
AlignProp (K = n, the worst case of its random truncation, with checkpointed calls) and DRTune (k = 5,
M = 10), each at 10, 20 and 50 DDIM steps, on the demo checkpoints `base` and `reward`, a batch of 8
prompts of 6 s, guidance on (the base's 2.5), full fine-tuning (4.0M parameters), AdamW, reward only
(no guards: they add no-grad calls, not memory). Each (method, steps) cell runs in its own process so
peak RSS is its own. Per cell:

- held_mib: bytes of tensors autograd saves for backward (torch.autograd.graph.saved_tensors_hooks),
  each storage counted once while any saved tensor on it is alive, the model's parameters (held by
  no-grad sampling too) not counted; the peak over the trajectory. No-grad sampling saves nothing, so
  this is the extra over it. AlignProp's recomputation during backward (one call's activations at a
  time) is transient and not in it; peak RSS sees it.
- held_plus_state_mib: held + the gradients and AdamW's two moments of the trainable parameters.
- rss_extra_mib / rss_peak_mib: the process's peak RSS after the trajectories minus (and) its peak
  after a plain no-grad sample of the same batch (ru_maxrss).
- cuda_extra_mib: torch.cuda.max_memory_allocated over the trajectories minus that of the no-grad
  sample, when the run is on CUDA.
- s_per_trajectory, s_per_update: wall time of a trajectory, and divided by its optimizer steps
  (EasyTune makes one per step; the others one per trajectory), means over `--trajectories`.

Writes bench/results/efficiency.json, efficiency.md (the table) and efficiency_memory.png /
efficiency_time.png (against sampling steps, per method). Note the machine load printed at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = ROOT / "bench" / "results"
PROMPTS = ["a person walks forward and turns around", "a person waves with the right hand",
           "a person jumps up and down", "a person kicks with the left leg", "a person sits down slowly",
           "a person runs in a circle", "a person raises both arms over the head", "a person bows"]
MiB = 2 ** 20

from easytune.finetune.harness import VARIANTS as ROWS  # noqa: E402  (row name -> (method, settings))


class SavedBytes:
    """Peak bytes of the storages autograd holds for backward, each storage counted once while any saved
    tensor on it is alive; `params` (held anyway) are not counted. (tests/test_baselines.py has a twin.)"""

    def __init__(self, params=()):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def pack(self, t):
        key = t.untyped_storage().data_ptr()
        return t if key in self.skip else _Held(self, key, t.untyped_storage().nbytes(), t)

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda h: h if torch.is_tensor(h) else h.t)


class _Held:
    def __init__(self, counter: SavedBytes, key: int, nbytes: int, t):
        self.counter, self.key, self.t = counter, key, t
        entry = counter.live.setdefault(key, [0, nbytes])
        entry[0] += 1
        if entry[0] == 1:
            counter.now += nbytes
            counter.peak = max(counter.peak, counter.now)

    def __del__(self):
        entry = self.counter.live[self.key]
        entry[0] -= 1
        if entry[0] == 0:
            self.counter.now -= entry[1]
            del self.counter.live[self.key]


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- one cell, in its own process ------------------------------------------------------------------

def cell(row: str, steps: int, trajectories: int, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses
    import tempfile

    import torch

    from easytune.finetune import harness as H

    method, settings = ROWS[row]
    settings = {k: (min(v, steps) if k.startswith("align_k") else v) for k, v in settings.items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench_eff_"))
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS[:args.batch]) + "\n", encoding="utf-8")
    cfg = dataclasses.replace(H.FinetuneConfig(), method=method, base=args.base, reward=args.reward,
                              prompts=str(tmp / "prompts.txt"), seconds=args.seconds, val_prompts=0,
                              batch_size=args.batch, steps=steps, trajectories=trajectories, warmup=0,
                              lora_rank=args.lora_rank, base_penalty=args.base_penalty, device=args.device,
                              out=str(tmp / "run"), seed=args.seed, **settings)
    run = H.setup(cfg)
    traj = H._method(method)
    cuda = run.device.type == "cuda"
    # --- the reference: a plain no-grad sample of the same batch ---
    prep = run.prepare_batch(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        prep.sampler(run.model, run.bundle.diffusion).sample(prep.x_T)
    if cuda:
        torch.cuda.synchronize()
    sample_s = time.perf_counter() - t0
    rss_ref = _maxrss_mib()
    if cuda:
        cuda_ref = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    # --- the trajectories, counted ---
    updates = [0]
    step = run.optimizer.step

    def counted(*a, **k):
        updates[0] += 1
        return step(*a, **k)
    run.optimizer.step = counted
    held, times = 0, []
    for index in range(trajectories):
        counter = SavedBytes(run.model.parameters())
        t0 = time.perf_counter()
        with counter.hooks():
            metrics = traj(run, index)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        held = max(held, counter.peak)
    state = sum(p.numel() * p.element_size() for p in run.params) * 3  # grad + AdamW exp_avg, exp_avg_sq
    out = {"row": row, "method": method, "steps": steps, "settings": settings, "trajectories": trajectories,
           "updates_per_trajectory": updates[0] / trajectories, "trainable_params": sum(p.numel() for p in run.params),
           "held_mib": held / MiB, "held_plus_state_mib": (held + state) / MiB,
           "rss_peak_mib": _maxrss_mib(), "rss_extra_mib": _maxrss_mib() - rss_ref,
           "s_per_trajectory": sum(times) / len(times), "s_per_update": sum(times) / max(1, updates[0]),
           "s_no_grad_sample": sample_s, "last_reward": float(metrics.get("reward", float("nan"))),
           "device": str(run.device)}
    if cuda:
        out["cuda_extra_mib"] = (torch.cuda.max_memory_allocated() - cuda_ref) / MiB
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / MiB
    return out


# --- the run: every cell side by side ----------------------------------------------------------------

def table(rows: list[dict[str, Any]], steps: list[int]) -> str:
    cuda = any("cuda_extra_mib" in r for r in rows)
    head = ["method", "steps", "updates/traj", "held MiB", "held+grad+Adam MiB", "% of DRaFT-50 (held)",
            "peak RSS MiB", "RSS extra MiB"] + (["CUDA extra MiB"] if cuda else []) + ["s/traj", "s/update"]
    ref = {r["steps"]: r["held_mib"] for r in rows if r["row"] == "draft-50"}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (list(ROWS).index(r["row"]), r["steps"])):
        pct = f"{100 * r['held_mib'] / ref[r['steps']]:.1f}%" if ref.get(r["steps"]) else "-"
        cells = [r["row"], r["steps"], f"{r['updates_per_trajectory']:.0f}", f"{r['held_mib']:.1f}",
                 f"{r['held_plus_state_mib']:.1f}", pct, f"{r['rss_peak_mib']:.0f}", f"{r['rss_extra_mib']:.0f}"]
        cells += [f"{r['cuda_extra_mib']:.1f}"] if cuda else []
        cells += [f"{r['s_per_trajectory']:.2f}", f"{r['s_per_update']:.3f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]], steps: list[int]) -> dict[str, Any]:
    """The issue's goals: EasyTune's extra memory at most 4% of DRaFT-50's, and flat in the steps."""
    by = {(r["row"], r["steps"]): r for r in rows}
    n = max(steps)
    e, d = by.get(("easytune", n)), by.get(("draft-50", n))
    if not (e and d):
        return {}
    held = [by[("easytune", s)]["held_mib"] for s in steps if ("easytune", s) in by]
    ratio = e["held_mib"] / d["held_mib"]
    ratio_state = e["held_plus_state_mib"] / d["held_plus_state_mib"]
    return {"at_steps": n, "easytune_over_draft50_held": ratio, "easytune_over_draft50_held_plus_state": ratio_state,
            "met_4pct_held": ratio <= 0.04, "met_4pct_held_plus_state": ratio_state <= 0.04,
            "easytune_held_mib_by_steps": dict(zip(steps, held)),
            "flat_in_steps": max(held) - min(held) <= 0.01 * max(held), "paper_ratio": 0.3116}


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label, name in (("held_mib", "memory held for backward (MiB, log)", "efficiency_memory.png"),
                             ("s_per_trajectory", "seconds per trajectory (log)", "efficiency_time.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for row in ROWS:
            pts = sorted((r["steps"], r[key]) for r in rows if r["row"] == row)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=row)
        ax.set_xlabel("DDIM sampling steps")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("batch 8 x 6 s, demo base + reward, guidance 2.5")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="sampling step counts")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="methods to run")
    p.add_argument("--trajectories", type=int, default=1, help="timed trajectories per cell (memory: their peak)")
    p.add_argument("--batch", type=int, default=8, choices=range(1, len(PROMPTS) + 1), metavar="1..8",
                   help="prompts per batch")
    p.add_argument("--seconds", type=float, default=6.0, help="motion length")
    p.add_argument("--base", default=str(ROOT / "demo_checkpoints" / "base"))
    p.add_argument("--reward", default=str(ROOT / "demo_checkpoints" / "reward"))
    p.add_argument("--lora-rank", type=int, default=0, help="0 = full fine-tuning")
    p.add_argument("--base-penalty", type=float, default=0.0, help="the harness's guard (adds no-grad calls)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("--cell", nargs=2, metavar=("ROW", "STEPS"), help=argparse.SUPPRESS)  # internal: one cell
    args = p.parse_args()
    if args.cell:
        print("RESULT " + json.dumps(cell(args.cell[0], int(args.cell[1]), args.trajectories, args)), flush=True)
        return
    import torch

    load = os.getloadavg()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": [round(x, 2) for x in load],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "command": "OMP_NUM_THREADS=" + str(os.environ.get("OMP_NUM_THREADS", "")) + " .venv/bin/python "
                       + " ".join(["bench/bench_efficiency.py"] + sys.argv[1:])}
    print(f"torch {info['torch']}, threads {info['threads']}, load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)
    passthrough = ["--trajectories", str(args.trajectories), "--batch", str(args.batch), "--seconds", str(args.seconds),
                   "--base", args.base, "--reward", args.reward, "--lora-rank", str(args.lora_rank),
                   "--base-penalty", str(args.base_penalty), "--device", args.device, "--seed", str(args.seed)]
    rows, t0 = [], time.perf_counter()
    for steps in args.steps:
        for row in args.rows:
            proc = subprocess.run([sys.executable, __file__, "--cell", row, str(steps), *passthrough],
                                  capture_output=True, text=True, cwd=ROOT)
            result = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not result:
                sys.exit(f"cell {row} at {steps} steps failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = json.loads(result[0][len("RESULT "):])
            rows.append(r)
            print(f"{row:10s} {steps:3d} steps: held {r['held_mib']:8.1f} MiB, RSS extra {r['rss_extra_mib']:6.0f} MiB, "
                  f"{r['s_per_trajectory']:6.2f} s/traj, {r['s_per_update']:.3f} s/update", flush=True)
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"info": info, "goals": goals(rows, args.steps), "rows": rows}
    (out / "efficiency.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = table(rows, args.steps)
    g = summary["goals"]
    if g:
        by = ", ".join(f"{v:.1f}" for v in g["easytune_held_mib_by_steps"].values())
        md += (f"\n\nAt {g['at_steps']} steps EasyTune holds {100 * g['easytune_over_draft50_held']:.1f}% of DRaFT-50's "
               f"saved tensors ({100 * g['easytune_over_draft50_held_plus_state']:.1f}% counting gradients and AdamW "
               f"state; goal <= 4%: {'met' if g['met_4pct_held_plus_state'] else 'not met'} with state, "
               f"{'met' if g['met_4pct_held'] else 'not met'} without; the paper: 31.16%). EasyTune's held MiB at "
               f"{', '.join(map(str, g['easytune_held_mib_by_steps']))} steps: {by} "
               f"({'flat' if g['flat_in_steps'] else 'NOT flat'}).")
    (out / "efficiency.md").write_text(f"Command: `{info['command']}` (torch {info['torch']}, "
                                       f"{info['threads']} thread(s), {info['cuda'] or 'CPU'}, load avg before "
                                       f"{info['load_avg_before'][0]})\n\n{md}\n", encoding="utf-8")
    plots(rows, out)
    print(md)
    print(json.dumps(summary["goals"], indent=2))


if __name__ == "__main__":
    main()
