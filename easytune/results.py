"""`python -m easytune results`: RESULTS.md, a table shaped like the paper's Table 1, by one command.

    python -m easytune results                                 # every method, 3 seeds, 3 learning rates
    python -m easytune results --methods easytune,draft-50 --budget 600 --seeds 0

Every method (easytune.finetune.harness.VARIANTS) fine-tunes the same base against the same reward,
with the same guard, training prompts, batch, optimizer (AdamW, one warm-up trajectory, then constant)
and the same training-time budget (`finetune --time-budget`: seconds inside trajectories). Per method,
a small learning-rate grid runs on the first seed and the rate with the best held-out (val split)
reward at the end of the budget is kept; the other seeds run at that rate. Each kept run's final
checkpoint is judged on the test split by the independent evaluator (`evaluate`, cpu protocol, one
replication per seed, every row at the same sampling steps) and by `recognize` (seen and unseen
combinations); the table gives mean ± 95% CI over seeds, the base row first (replications = seeds),
the reward model's reward on the test prompts, peak RSS, and FID's real floor at the generated rows'
size.

Every stage writes its outputs under --work and is reused when its settings match, and fine-tunes
resume from their last checkpoint, so the command can be stopped and re-run cheaply (the next run
picks up where this one stopped). Each finished row (its metrics, learning-rate grid and reward
curves) is also kept in --rows, one JSON file per row, committed to git: a later run in a fresh
checkout, where runs/ is empty, reuses every row whose settings (checkpoint hashes, dataset stamp,
budget, guard, grid, seeds, steps, the method's own settings) match, and runs only the rest. So rows
measured in different sessions, or on two cores at once with two --work folders, combine into one
table:

    python -m easytune results --methods refl --work runs/results_refl      # one core
    python -m easytune results --methods drtune --work runs/results_drtune  # the other
    python -m easytune results --methods easytune,draft-50,refl,drtune       # the table, from kept rows
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from easytune.errors import UserError

COLUMNS = [("R-Precision top-1", "R@1", 3), ("R-Precision top-2", "R@2", 3), ("R-Precision top-3", "R@3", 3),
           ("FID", "FID", 3), ("MM-Dist", "MM-Dist", 3), ("Diversity", "Diversity", 2),
           ("MultiModality", "MultiModality", 3), ("foot_skating", "foot skating", 3), ("jerk", "jerk", 1)]


@dataclass
class ResultsConfig:
    methods: str = field(default="easytune,easytune-k3,refl,draft-1,draft-50,draft-lv,alignprop,drtune", metadata={
        "help": "comma-separated variants (easytune.finetune.harness.VARIANTS); draft-50 is needed for the goal"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma-separated training seeds"})
    lrs: str = field(default="3e-6,1e-5,3e-5", metadata={"help": "learning-rate grid, tried on the first seed"})
    budget: float = field(default=1200.0, metadata={"help": "training seconds per run (the same for every method)"})
    steps: int = field(default=0, metadata={"help": "sampling steps for training and evaluation (0 = the base's)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per trajectory"})
    base_penalty: float = field(default=2.0, metadata={"help": "the guard every method shares"})
    skate_weight: float = field(default=0.3, metadata={"help": "foot-skating guard weight (every method)"})
    jerk_weight: float = field(default=0.0005, metadata={"help": "jerk guard weight (every method)"})
    floor_weight: float = field(default=1.0, metadata={"help": "floor-penetration guard weight (every method)"})
    checks: int = field(default=8, metadata={
        "help": "held-out checks per run, evenly spaced in training time (reward-against-time curves, time to target)"})
    max_seconds: float = field(default=9.8, metadata={"help": "cap on training prompts' lengths"})
    val_prompts: int = field(default=64, metadata={"help": "held-out val prompts that pick the learning rate"})
    base: str = field(default="base", metadata={"help": "base checkpoint"})
    reward: str = field(default="reward", metadata={"help": "reward model"})
    evaluator: str = field(default="evaluator", metadata={"help": "evaluator (never the reward)"})
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder"})
    tiny: int = field(default=0, metadata={"help": "evaluate on the first N motions of each split only (smoke runs)"})
    cache: str = field(default=".cache/evaluate", metadata={"help": "generated-motion cache (shared with evaluate)"})
    work: str = field(default="runs/results", metadata={"help": "folder for every run and evaluation (reused)"})
    rows: str = field(default="docs/results", metadata={
        "help": "folder of finished rows, one JSON each, kept in git and reused when their settings match ('' = off)"})
    out: str = field(default="RESULTS.md", metadata={"help": "the table"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})

    def lists(self) -> tuple[list[str], list[int], list[float]]:
        from easytune.finetune.harness import VARIANTS

        methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in VARIANTS]
        if not methods or bad:
            raise UserError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(VARIANTS)}")
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
            lrs = [float(x) for x in self.lrs.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--seeds takes integers and --lrs numbers, comma-separated; got {self.seeds!r}, "
                            f"{self.lrs!r}") from None
        if not seeds or not lrs or any(s < 0 for s in seeds) or any(not 0 < x <= 1 for x in lrs):
            raise UserError("give at least one seed (>= 0) and one learning rate in (0, 1]")
        if not 1.0 <= self.budget <= 1e7:
            raise UserError(f"budget must be 1 to 1e7 seconds, got {self.budget}")
        if isinstance(self.checks, bool) or not isinstance(self.checks, int) or not 1 <= self.checks <= 1000:
            raise UserError(f"checks must be an integer from 1 to 1000, got {self.checks!r}")
        return methods, seeds, lrs


# --- stages (each reused when its settings match) ---------------------------------------------------

def _reuse(folder: Path, settings: dict[str, Any], output: str) -> bool:
    stamp = folder / "stage.json"
    return (folder / output).is_file() and stamp.is_file() and \
        json.loads(stamp.read_text(encoding="utf-8")) == settings


def _stamp(folder: Path, settings: dict[str, Any]) -> None:
    from easytune.fileio import write_json

    write_json(folder / "stage.json", settings)


def finetune_stage(cfg: ResultsConfig, variant: str, lr: float, seed: int, steps: int, encoder: Any) -> dict:
    """One fine-tune under the budget (resumed if it was stopped); its summary."""
    from easytune.finetune import harness as H

    method, settings = H.VARIANTS[variant]
    settings = {k: (min(v, steps) if k.startswith("align_k") else v) for k, v in settings.items()}
    folder = Path(cfg.work) / variant / f"lr{lr:g}_s{seed}"
    ft = H.FinetuneConfig(method=method, base=cfg.base, reward=cfg.reward, data=cfg.data, out=str(folder),
                          max_seconds=cfg.max_seconds, val_prompts=cfg.val_prompts, val_every=0,
                          val_every_s=cfg.budget / cfg.checks, trajectories=1_000_000,
                          time_budget=cfg.budget, batch_size=cfg.batch_size, steps=steps, lr=lr, warmup=1,
                          min_lr_ratio=1.0, base_penalty=cfg.base_penalty, skate_weight=cfg.skate_weight,
                          jerk_weight=cfg.jerk_weight, floor_weight=cfg.floor_weight, seed=seed, save_every=20,
                          device=cfg.device, **settings)
    wanted = asdict(ft)
    if _reuse(folder, wanted, "summary.json"):
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        if summary.get("budget_spent"):
            return summary
    elif (folder / "stage.json").is_file():  # settings changed: start this run afresh
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _stamp(folder, wanted)
    return H.finetune(ft, text_encoder=encoder, progress=False,
                      command=f"python -m easytune results (run {variant} lr {lr:g} seed {seed})")


def evaluate_stage(cfg: ResultsConfig, name: str, checkpoint: str, replications: int, steps: int,
                   encoder: Any) -> tuple[dict, dict]:
    """(evaluate results, recognize results) of a checkpoint on the test split."""
    from easytune import evaluate as E
    from easytune import recognize as R
    from easytune.checkpoints import checkpoint_hash

    folder = Path(cfg.work) / "eval" / name
    ev = E.EvaluateConfig(checkpoint=checkpoint, evaluator=cfg.evaluator, data=cfg.data, protocol="cpu", seed=0,
                          steps=steps, replications=replications, out=str(folder / "evaluate"), reward=cfg.reward,
                          cache=cfg.cache, tiny=cfg.tiny, max_motions=cfg.tiny, device=cfg.device)
    rc = R.RecognizeConfig(checkpoint=checkpoint, evaluator=cfg.evaluator, data=cfg.data, seed=0, steps=steps,
                           out=str(folder / "recognize"), max_motions=cfg.tiny, cache=cfg.cache, device=cfg.device)
    settings = {"weights": checkpoint_hash(checkpoint), "evaluate": asdict(ev), "recognize": asdict(rc)}
    if _reuse(folder, settings, "recognize/results.json") and (folder / "evaluate" / "results.json").is_file():
        return tuple(json.loads((folder / p / "results.json").read_text(encoding="utf-8"))
                     for p in ("evaluate", "recognize"))
    folder.mkdir(parents=True, exist_ok=True)
    result = E.main(ev, text_encoder=encoder), R.main(rc, text_encoder=encoder)
    _stamp(folder, settings)
    return result


# --- finished rows, kept across sessions ------------------------------------------------------------

def row_settings(cfg: ResultsConfig, row: str, steps: int, seeds: list[int], lrs: list[float]) -> dict[str, Any]:
    """Everything a row's numbers depend on; a kept row is reused only when these are equal."""
    from easytune.checkpoints import checkpoint_hash
    from easytune.finetune import harness as H
    from easytune.motion.build import _stamp_of

    common = {"row": row, "steps": steps, "tiny": cfg.tiny, "dataset": _stamp_of(Path(cfg.data)),
              "weights": {k: checkpoint_hash(getattr(cfg, k)) for k in ("base", "reward", "evaluator")}}
    if row == "base":
        return {**common, "replications": len(seeds)}
    method, settings = H.VARIANTS[row]
    return {**common, "method": method, "settings": settings, "seeds": seeds, "lrs": lrs,
            **{k: getattr(cfg, k) for k in ("budget", "batch_size", "base_penalty", "skate_weight", "jerk_weight",
                                            "floor_weight", "checks", "max_seconds", "val_prompts")}}


def kept_row(cfg: ResultsConfig, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The kept row with these settings, or None (none kept, or kept with other settings)."""
    path = Path(cfg.rows) / f"{settings['row']}.json" if cfg.rows else None
    if path is None or not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        same = kept.get("settings") == settings and "row" in kept
    except (ValueError, AttributeError):
        raise UserError(f"kept row {path} is not a row file (corrupt JSON?); restore it from git or delete it to "
                        f"measure that row again") from None
    if not same:
        return None
    if "grid" in kept["row"]:  # JSON keys are strings; the grid's are learning rates
        kept["row"]["grid"] = {float(lr): v for lr, v in kept["row"]["grid"].items()}
    return kept


def keep_row(cfg: ResultsConfig, settings: dict[str, Any], row: dict[str, Any], **extra: Any) -> None:
    from easytune.fileio import write_json

    if cfg.rows:
        write_json(Path(cfg.rows) / f"{settings['row']}.json", {"settings": settings, "row": row, **extra})


# --- the table --------------------------------------------------------------------------------------

def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    from easytune.metrics import mean_ci

    return mean_ci(list(values))


def _cell(values: Sequence[float], digits: int) -> str:
    mean, half = _mean_ci(values)
    return f"{mean:.{digits}f}" + ("" if half is None or math.isnan(half) else f" ± {half:.{digits}f}")


def row_values(evals: Sequence[dict]) -> dict[str, list[float]]:
    """Metric -> one value per replication (the base) or per seed (a method: its one replication each)."""
    out: dict[str, list[float]] = {}
    for ev in evals:
        for k, v in ev["rows"]["generated"].items():
            out.setdefault(k, []).extend(v)
    return out


def recognized(recs: Sequence[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in recs:
        rows = r["rows"]["generated"]
        for group in ("seen", "unseen"):
            for what in ("action", "style"):
                v = rows.get(group, {}).get(what)
                if v is not None:
                    out.setdefault(f"{what}, {group}", []).append(v)
    return out


def goal(rows: dict[str, dict[str, Any]]) -> str:
    """The 8.2% MM-Dist goal for the `easytune` row, then one sentence for each other EasyTune variant row."""
    from easytune.finetune.harness import VARIANTS

    base, d = rows.get("base"), rows.get("draft-50")
    if not (base and rows.get("easytune") and d):
        return "The goal (EasyTune's MM-Dist gain over the base at least 8.2% larger than DRaFT-50's, with an FID " \
               "no worse) needs the base, easytune and draft-50 rows."
    text = _goal_sentence("EasyTune", rows["easytune"], base, d)
    for name, row in rows.items():
        if name != "easytune" and VARIANTS.get(name, ("",))[0] == "easytune":
            text += " " + _goal_sentence(name, row, base, d)
    return text


def _goal_sentence(who: str, e: dict[str, Any], base: dict[str, Any], d: dict[str, Any]) -> str:
    b = _mean_ci(base["metrics"]["MM-Dist"])[0]
    ge, gd = b - _mean_ci(e["metrics"]["MM-Dist"])[0], b - _mean_ci(d["metrics"]["MM-Dist"])[0]
    fe, fd = _mean_ci(e["metrics"]["FID"])[0], _mean_ci(d["metrics"]["FID"])[0]
    if gd <= 0:
        ratio_text = f"DRaFT-50 did not improve MM-Dist ({-gd:+.3f}); {who}'s gain is {ge:+.3f}"
        met = ge > 0 and fe <= fd
    else:
        ratio = ge / gd
        ratio_text = (f"{who}'s MM-Dist gain over the base is {ge:.3f}, DRaFT-50's {gd:.3f}: "
                      f"{100 * (ratio - 1):+.1f}% (the paper: +8.2%)")
        met = ratio >= 1.082 and fe <= fd
    return (f"{ratio_text}; FID {fe:.3f} against DRaFT-50's {fd:.3f}. Goal (at least +8.2% with an FID no worse): "
            f"{'met' if met else 'not met'}.")


def clipped_draft(names: Sequence[str], steps: int) -> str:
    """Which DRaFT-K variants are one method at this step count: K >= steps backpropagates through the whole chain."""
    from easytune.finetune.harness import VARIANTS

    full = [v for v, (m, kw) in VARIANTS.items() if m == "draft" and kw.get("draft_k", 1) >= steps]
    shown = [v for v in full if v in names]
    if len(full) < 2 or not shown:
        return ""
    same = f"{', '.join(full[:-1])} and {full[-1]}"
    return (f"At {steps} sampling steps DRaFT's K is clipped to the chain, so {same} are one method (full "
            f"backpropagation through sampling); the table shows it as {', '.join(shown)}.")


def write_table(cfg: ResultsConfig, rows: dict[str, dict[str, Any]], floor: dict | None, command: str,
                steps: int, speed: str = "") -> str:
    from easytune.fileio import write_text

    head = "| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = ["# Results: EasyTune and its baselines on the demo base", "",
             f"Written by `{command}`. Every method: the same base (`{cfg.base}`), reward (`{cfg.reward}`), guard "
             f"(base penalty {cfg.base_penalty:g}, skate {cfg.skate_weight:g}, jerk {cfg.jerk_weight:g}, floor "
             f"{cfg.floor_weight:g}), training prompts (train split, at most {cfg.max_seconds:g} s), batch "
             f"{cfg.batch_size}, AdamW, {steps} sampling steps, and {cfg.budget:.0f} s of training. Learning rate "
             f"per method from {cfg.lrs} on the held-out val reward of seed {cfg.seeds.split(',')[0]}. Test split, "
             f"evaluator with the cpu protocol at {steps} steps, mean ± 95% CI over seeds (the base: over as "
             f"many replications).", "", head, "|---" * (len(COLUMNS) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(r["metrics"][k], d) if k in r["metrics"] else "n/a"
                                                 for k, _, d in COLUMNS) + " |")
    lines += ["", "| method | learning rate | val reward per rate | trajectories | reward (test prompts) | "
                  "action seen / unseen | style seen / unseen | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rec = r["recognized"]
        pct = lambda k: _cell([100 * v for v in rec[k]], 1) + "%" if k in rec else "n/a"  # noqa: E731
        grid = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in r.get("grid", {}).items()) or "n/a"
        reward = _cell(r["metrics"]["reward"], 4) if "reward" in r["metrics"] else "n/a"
        traj = " / ".join(str(t) for t in r.get("trajectories", [])) or "n/a"
        rss = " / ".join(f"{m:.0f}" for m in r.get("rss", [])) or "n/a"
        lines.append(f"| {name} | {r.get('lr', 'n/a')} | {grid} | {traj} | {reward} | {pct('action, seen')} / "
                     f"{pct('action, unseen')} | {pct('style, seen')} / {pct('style, unseen')} | {rss} |")
    if floor:
        lines += ["", f"FID's real floor at the generated rows' size ({floor['n']} motions against {floor['n']}; "
                      f"`evaluate`'s extrapolation of the test set's half-vs-half FID): {floor['FID']:.3f}. A generated "
                      f"row's FID near it is as close to the test set as the metric can tell at this size."]
    clipped = clipped_draft(list(rows), steps)
    lines += ["", goal(rows), ""] + ([clipped, ""] if clipped else [])
    if speed:
        lines += ["## Time to a held-out reward target", "", f"Each kept run checks its held-out (val) reward {cfg.checks} "
                  f"times, evenly spaced in training time (`easytune.time_to_target`).", "", speed, ""]
    text = "\n".join(lines)
    write_text(Path(cfg.out), text)
    return text


def speed_section(cfg: ResultsConfig, curves: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The time-to-target table of the kept runs and its plot beside the table (PNG)."""
    from easytune import time_to_target as T

    curves = [c for c in curves if c["points"]]
    if not curves:
        return "", {}
    res = T.analyse(curves, cfg.budget)
    png = Path(cfg.out).with_name(Path(cfg.out).stem + "_reward_vs_time.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    T.plot(curves, res, png)
    return T.table(curves, res) + f"\n\n![held-out reward against training time]({png.name})", res


def main(cfg: ResultsConfig, text_encoder: Any = None, command: str = "python -m easytune results") -> dict:
    from easytune.checkpoints import load_checkpoint
    from easytune.generate import load_base

    methods, seeds, lrs = cfg.lists()
    if text_encoder is None:
        from easytune.device import pick_device
        from easytune.text import load_text_encoder

        text_encoder = load_text_encoder(pick_device(cfg.device))
    steps = cfg.steps or load_base(cfg.base, "cpu", text_encoder=text_encoder).steps
    settings = row_settings(cfg, "base", steps, seeds, lrs)
    kept = kept_row(cfg, settings)
    if kept is None:
        base_ev, base_rec = evaluate_stage(cfg, "base", cfg.base, len(seeds), steps, text_encoder)
        kept = {"row": {"metrics": row_values([base_ev]), "recognized": recognized([base_rec])},
                "floor": base_ev.get("fid_floor")}
        keep_row(cfg, settings, **kept)
    floor = kept["floor"]
    rows: dict[str, dict[str, Any]] = {"base": kept["row"]}
    curves: list[dict[str, Any]] = []
    for variant in methods:
        settings = row_settings(cfg, variant, steps, seeds, lrs)
        kept = kept_row(cfg, settings)
        if kept is not None:
            rows[variant] = kept["row"]
            curves += kept["curves"]
            continue
        grid = {}
        for lr in lrs:
            summary = finetune_stage(cfg, variant, lr, seeds[0], steps, text_encoder)
            val = summary["validation"]
            grid[lr] = val[-1]["reward"] if val else float("nan")
        best = max(grid, key=lambda lr: -math.inf if math.isnan(grid[lr]) else grid[lr])
        summaries = [finetune_stage(cfg, variant, best, s, steps, text_encoder) for s in seeds]
        evals, recs = [], []
        for s, summary in zip(seeds, summaries):
            last = Path(summary["out"]) / "last"
            load_checkpoint(last)  # a clear message if the run left no checkpoint
            ev, rec = evaluate_stage(cfg, f"{variant}_lr{best:g}_s{s}", str(last), 1, steps, text_encoder)
            evals.append(ev)
            recs.append(rec)
        rows[variant] = {"metrics": row_values(evals), "recognized": recognized(recs), "lr": f"{best:g}",
                         "grid": grid, "trajectories": [s["step"] for s in summaries],
                         "rss": [s["peak_rss_mib"] for s in summaries]}
        mine = [{"row": variant, "seed": s, "trajectories": summary["step"],
                 "points": [(float(v["train_s"]), float(v["reward"])) for v in summary["validation"]]}
                for s, summary in zip(seeds, summaries)]
        keep_row(cfg, settings, rows[variant], curves=mine)
        curves += mine
    speed, ttt = speed_section(cfg, curves)
    text = write_table(cfg, rows, floor, command, steps, speed)
    from easytune.fileio import write_json

    write_json(Path(cfg.work) / "results.json", {"config": asdict(cfg), "rows": rows, "steps": steps,
                                                 "time_to_target": ttt, "curves": curves})
    print(text)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, ResultsConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import command_for, config_from_args

    cfg = config_from_args(ResultsConfig, args)
    main(cfg, command=command_for("python -m easytune results", cfg))
    return 0
