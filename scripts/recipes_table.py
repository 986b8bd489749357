"""Markdown table of fine-tuning recipes from their evaluate / recognize / finetune outputs.

    python scripts/recipes_table.py --rows base=runs/eval1_base,runs/rec_base \
        pen2_phys=runs/eval1_pen2_phys,runs/rec_pen2_phys,runs/ft_pen2_phys

Each row: NAME=EVALUATE_OUT,RECOGNIZE_OUT[,FINETUNE_RUN]. Columns: the evaluator's R@1, MM-Dist, FID,
MultiModality, foot skating and jerk (mean over the replications evaluate ran, with the CI when it
ran several), style recognised on seen combinations and action on unseen ones, and, for fine-tunes,
trajectories, wall time and the paired held-out reward gain.

    python scripts/recipes_table.py --selections runs/recipes/ref runs/recipes/lora ...

Validation-split rows instead, from each run's `finetune select` output (selection.json): the base (step 0) once,
then each run's last snapshot and the snapshot the rule chose, with the run's paired held-out reward gain and wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

COLUMNS = [("R-Precision top-1", "R@1", 3), ("MM-Dist", "MM-Dist", 3), ("FID", "FID", 3),
           ("MultiModality", "MultiModality", 3), ("foot_skating", "foot skating", 3), ("jerk", "jerk", 0)]


def _cell(mean: float, half: float, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if half is None or math.isnan(half) else f" ± {half:.{digits}f}")


def row(name: str, evaluate: dict, recognize: dict | None, finetune: dict | None = None) -> str:
    gen = evaluate["summary"]["generated"]
    cells = [_cell(*gen[key], digits) for key, _, digits in COLUMNS]
    if recognize is not None:
        r = recognize["rows"]["generated"]
        cells += [f"{100 * r['seen']['style']:.1f}%", f"{100 * r['unseen']['action']:.1f}%"]
    else:
        cells += ["", ""]
    if finetune:
        g = finetune.get("held_out_gain") or {}
        wall = finetune.get("wall_s")
        cells += [str(finetune["step"]), f"{wall / 60:.1f} min" if wall else "",
                  f"{g['gain']:+.4f} ± {g['ci']:.4f}" if g else ""]
    else:
        cells += ["", "", ""]
    return f"| {name} | " + " | ".join(cells) + " |"


def header() -> str:
    names = [label for _, label, _ in COLUMNS] + ["style seen", "action unseen", "trajectories", "wall time",
                                                  "held-out reward gain (val prompts)"]
    return "| recipe | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|"


SELECTION = [("R-Precision top-1", 3), ("FID", 3), ("MM-Dist", 3), ("MultiModality", 3), ("foot_skating", 3),
             ("jerk", 1)]


def _selection_cells(r: dict) -> str:
    return " | ".join(f"{r[k]:.{d}f}" for k, d in SELECTION)


def selection_rows(run: Path) -> list[str]:
    """The last and the chosen snapshot of one run, validation split (one replication each)."""
    sel = _load(run, "selection.json")
    if sel is None:
        print(f"skipping {run}: no selection.json (run `finetune select --run {run}`)", file=sys.stderr)
        return []
    ft = _load(run, "summary.json") or {}
    g = ft.get("held_out_gain") or {}
    gain = f"{g['gain']:+.4f} ± {g['ci']:.4f}" if g else ""
    wall = f"{ft['wall_s'] / 60:.1f} min" if ft.get("wall_s") else ""  # over every session of the run
    last = max(sel["rows"], key=lambda r: r["step"])
    chosen = sel["rows"][sel["chosen"]]  # step 0 (the base) when no snapshot passed the rule
    out = []
    for label, r in [("last", last)] + ([("chosen", chosen)] if chosen is not last else []):
        out.append(f"| {run.name} ({label}, step {r['step']}) | {_selection_cells(r)} | {gain} | {wall} |")
    return out


def base_row(runs: list[Path]) -> list[str]:
    """The base itself (every run's step-0 snapshot; the first run that has one), so the rows read against it."""
    for run in runs:
        sel = _load(run, "selection.json")
        zero = [r for r in (sel or {}).get("rows", []) if r["step"] == 0]
        if zero:
            return [f"| base (step 0) | {_selection_cells(zero[0])} | | |"]
    return []


def selection_header() -> str:
    names = ["R@1", "FID", "MM-Dist", "MultiModality", "foot skating", "jerk", "held-out reward gain", "wall"]
    return "| run (validation split) | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|"


def _load(path: Path, name: str) -> dict | None:
    file = path / name if path.is_dir() else path
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--rows", nargs="+", metavar="NAME=EVAL,REC[,RUN]")
    group.add_argument("--selections", nargs="+", metavar="RUN", type=Path)
    args = p.parse_args(argv)
    if args.selections:
        rows = [line for run in args.selections for line in selection_rows(run)]
        print("\n".join([selection_header()] + base_row(args.selections) + rows))
        return 0
    lines = [header()]
    for spec in args.rows:
        name, _, paths = spec.partition("=")
        parts = [Path(x) for x in paths.split(",")]
        ev = _load(parts[0], "results.json")
        if ev is None:
            print(f"skipping {name}: no results.json in {parts[0]}", file=sys.stderr)
            continue
        rec = _load(parts[1], "results.json") if len(parts) > 1 else None
        ft = _load(parts[2], "summary.json") if len(parts) > 2 else None
        lines.append(row(name, ev, rec, ft))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
