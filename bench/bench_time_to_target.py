"""Wall time to a held-out reward target, EasyTune against its baselines (a benchmark, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_time_to_target.py                       # the defaults below
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_time_to_target.py --rows easytune draft-50 refl --budget 120

Every (method, seed) is one `python -m easytune finetune` run in its own process, on the same base, reward,
guard, training prompts (the train split's captions, at most --max-seconds), batch, optimizer (AdamW at
--lr, one warm-up trajectory, then constant: the cosine spans far more trajectories than the budget) and
the same training-time budget (`--time-budget`: seconds spent inside trajectories; the held-out checks
and saves are not on that clock). Every --val-every trajectories (per method, so that every run gets a
few points) the harness measures the held-out reward: a separate no-grad pass of the tuned model over
the same fixed held-out prompts (the val split's, written once to a file) from the same fixed noise.

The target is defined once (easytune/time_to_target.py): each run's own base (its step-0 held-out reward)
plus 50% of the gain DRaFT-50 reaches over its base by the end of its budget (mean over seeds); here every
seed reads the same prompts file, so the bases agree. A run's time to target is the training time of its
first held-out check at or above its target (no interpolation); a run that never reaches it is "> budget".

Runs are kept under --work (default .cache/bench_ttt/<row>_s<seed>) and reused when their config matches
(a run made with other flags is refused, never overwritten, unless --redo), so the benchmark can be re-run or
extended cheaply; a run that was stopped resumes from its last save (every
5 trajectories). --lr-row gives a row its own learning rate (a method that makes many optimizer steps per
trajectory, as EasyTune at 50 steps, needs a smaller one); a row written ROW@LR (easytune@5e-6) is that row
at that rate, in its own folder <row>@<lr>_s<seed> and its own table line: a learning-rate grid point.
--runs-only runs the rows and skips the analysis, so two cores can run one row each into the same --work, and a
third call with every row reads them all:

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_time_to_target.py --rows draft-50 --runs-only ... &
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_time_to_target.py --rows easytune --runs-only ...
    .venv/bin/python bench/bench_time_to_target.py --rows easytune draft-50 ...      # reuses both, writes the results

Writes bench/results/time_to_target_<steps>steps.json, .md and .png (held-out reward against training time,
per method), one set per number of sampling steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from easytune.finetune.harness import VARIANTS as ROWS  # noqa: E402  (row name -> (method, settings))
from easytune.time_to_target import analyse, plot, table  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_EVERY = {"easytune": 2, "easytune-k3": 6, "refl": 20, "draft-1": 10, "draft-10": 4, "draft-50": 2, "draft-lv": 8,
                 "alignprop": 2, "drtune": 6}


def held_out_file(data: str, n: int, out: Path) -> Path:
    """The fixed held-out prompts: n val-split captions drawn with seed 0, one per line."""
    from easytune.finetune.harness import prompts_from_split

    caps = prompts_from_split(data, "val", n, seed=0).captions
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(caps) + "\n", encoding="utf-8")
    return out


def row_spec(row: str) -> tuple[str, float | None]:
    """"easytune" -> ("easytune", None); "easytune@5e-6" -> ("easytune", 5e-06): a row at its own learning rate
    (a learning-rate grid point, kept in its own run folder beside the row's)."""
    name, _, lr = row.partition("@")
    if name not in ROWS:
        raise argparse.ArgumentTypeError(f"unknown row {name!r}; rows: {', '.join(ROWS)} (optionally ROW@LR)")
    if not lr:
        return name, None
    try:
        rate = float(lr)
    except ValueError:
        rate = 0.0  # refused below, with the same message
    if not 0 < rate < 1:
        raise argparse.ArgumentTypeError(f"{row!r}: the learning rate after @ must be a number in (0, 1)")
    return name, rate


def parse_row(row: str) -> str:
    """--rows' type: the row, its rate written one way ("easytune@5e-6" -> "easytune@5e-06"), so one folder."""
    name, rate = row_spec(row)
    return name if rate is None else f"{name}@{rate:g}"


def run_args(row: str, seed: int, args: argparse.Namespace, val_file: Path, out: Path) -> list[str]:
    name, rate = row_spec(row)
    method, settings = ROWS[name]
    flags = ["--method", method, "--base", args.base, "--reward", args.reward, "--data", args.data,
             "--max-seconds", str(args.max_seconds), "--val-file", str(val_file), "--seconds", str(args.seconds),
             "--val-prompts", str(args.held_out), "--val-every", str(args.every.get(name, DEFAULT_EVERY[name])),
             "--save-every", "5", "--trajectories", "1000000", "--time-budget", str(args.budget),
             "--batch-size", str(args.batch), "--steps", str(args.steps),
             "--lr", str(rate or args.lr_row.get(name, args.lr)),
             "--warmup", "1",
             "--min-lr-ratio", "1.0", "--base-penalty", str(args.base_penalty), "--seed", str(seed),
             "--device", args.device, "--out", str(out), "--no-progress"]
    for k, v in settings.items():
        if k.startswith("align_k"):
            v = min(v, args.steps)
        flags += [f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v)]
    return flags


def flag_dict(flags: list[str]) -> dict[str, str | None]:
    """{"--flag": value or None} from a command line."""
    out: dict[str, str | None] = {}
    for i, a in enumerate(flags):
        if a.startswith("--"):
            nxt = flags[i + 1] if i + 1 < len(flags) else None
            out[a] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def one_run(row: str, seed: int, args: argparse.Namespace, val_file: Path) -> dict[str, Any]:
    out = Path(args.work) / f"{row}_s{seed}"
    flags = run_args(row, seed, args, val_file, out)
    done = out / "summary.json"
    stamp = out / "bench_flags.json"
    same = stamp.is_file() and json.loads(stamp.read_text()) == flags
    if done.is_file() and same:
        print(f"{row} seed {seed}: reusing {out}", flush=True)
    else:
        if stamp.is_file() and not same:  # another config: start over only when asked; the same one resumes
            if not args.redo:
                old, new = flag_dict(json.loads(stamp.read_text())), flag_dict(flags)
                diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                sys.exit(f"{out} was run with other settings ({', '.join(diff)} differ); pass the same flags to "
                         f"reuse it, another --work, or --redo to delete it and start over")
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(flags), encoding="utf-8")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "easytune", "finetune", *flags], capture_output=True,
                              text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"{row} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"{row} seed {seed}: {time.perf_counter() - t0:.0f} s wall", flush=True)
    summary = json.loads(done.read_text(encoding="utf-8"))
    points = [(float(v["train_s"]), float(v["reward"])) for v in summary["validation"]]
    return {"row": row, "seed": seed, "trajectories": summary["step"], "train_s": summary["train_s"],
            "points": points, "out": str(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=["easytune", "draft-50"], type=parse_row, metavar="ROW[@LR]",
                   help=f"rows: {', '.join(ROWS)}; ROW@LR runs the row at that learning rate (a grid point)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per run (the same for all)")
    p.add_argument("--steps", type=int, default=50, help="DDIM sampling steps (DRaFT-50 is full backprop at 50)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, the same for every method")
    p.add_argument("--lr-row", type=json.loads, default={}, help='JSON {"row": learning rate} overriding --lr')
    p.add_argument("--runs-only", action="store_true", help="run the rows' fine-tunes and stop (no target, no files)")
    p.add_argument("--redo", action="store_true", help="delete and re-run a run made with other settings")
    p.add_argument("--base-penalty", type=float, default=1.0, help="the guard, the same for every method")
    p.add_argument("--held-out", type=int, default=8, help="held-out prompts")
    p.add_argument("--seconds", type=float, default=4.0, help="held-out motion length")
    p.add_argument("--max-seconds", type=float, default=4.0, help="cap on training prompts' lengths")
    p.add_argument("--every", type=json.loads, default={}, help='JSON {"row": trajectories between checks}')
    p.add_argument("--data", default="datasets/bandai")
    p.add_argument("--base", default="base")
    p.add_argument("--reward", default="reward")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_ttt"))
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    if not isinstance(args.lr_row, dict) or set(args.lr_row) - {row_spec(r)[0] for r in args.rows}:
        sys.exit(f"--lr-row takes a JSON object of rows in --rows ({' '.join(args.rows)}) to learning rates")
    if not args.runs_only and "draft-50" not in args.rows:
        sys.exit("the target is defined by DRaFT-50: keep draft-50 in --rows")
    import torch

    load = os.getloadavg()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg_before": [round(x, 2) for x in load],
            "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} .venv/bin/python "
                       + shlex.join(["bench/bench_time_to_target.py", *sys.argv[1:]])}
    val_file = held_out_file(args.data, args.held_out, Path(args.work) / "held_out.txt")
    t0 = time.perf_counter()
    order = sorted(args.rows, key=lambda r: r != "draft-50")  # DRaFT-50 first: it defines the target
    runs = [one_run(row, seed, args, val_file) for seed in args.seeds for row in order]
    if args.runs_only:
        return
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    res = analyse(runs, args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"time_to_target_{args.steps}steps"
    (out / f"{stem}.json").write_text(json.dumps({"info": info, "result": res, "runs": runs}, indent=2) + "\n",
                                      encoding="utf-8")
    md = table(runs, res)
    (out / f"{stem}.md").write_text(
        f"Command: `{info['command']}` (torch {info['torch']}, {info['threads']} thread(s), load avg before "
        f"{info['load_avg_before'][0]}; {args.steps} steps, batch {args.batch}, lr {args.lr}"
        f"{''.join(f', {r} lr {v:g}' for r, v in args.lr_row.items())}, base penalty "
        f"{args.base_penalty}, budget {args.budget:.0f} s of training per run, seeds {args.seeds})\n\n{md}\n",
        encoding="utf-8")
    plot(runs, res, out / f"{stem}.png")
    print(md)


if __name__ == "__main__":
    main()
