"""`python -m easytune finetune select --run RUN_DIR`: pick a fine-tune's snapshot on the validation split.

Every snapshot a run kept (RUN_DIR/snapshots/step_*; step 0 is the base itself) is judged by the
independent evaluator on the VAL split (never the test split; the evaluator is never the reward),
with the cpu protocol's metrics, one replication and the same seed for every snapshot. The rule:

    among snapshots whose FID is at most the base's (step 0) and whose MultiModality and foot skating
    stay within `mm_keep` x and `skate_slack` x of the base's, take the best R-Precision top-1
    (ties: the lower MM-Dist); if none qualifies, the base: the run did not improve it.

`--rule composition` (an experiment, docs/recipes/README.md "Rule B"): among the same qualifying snapshots, those
whose R-Precision top-1 is within `r1_slack` of the best of them; of these, the lowest MM-Dist (absent) (below).

Beside the default rule, not in it: with `--composition N` (default 2) each snapshot's MM-Dist on captions of the
content-style combinations no motion of the dataset has (`easytune.evaluate.composition_set`, N captions each), the
one view of unseen compositions that does not touch the test split ("MM-Dist (absent)").

It writes RUN_DIR/selection.json and selection.md (selection_composition.* under `--rule composition`; a row per
snapshot, the chosen one marked) and a
PNG of the run (training reward, held-out reward and the selection metrics against trajectories).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from easytune.errors import UserError

METRICS = ("R-Precision top-1", "FID", "MM-Dist", "MultiModality", "foot_skating", "jerk")


@dataclass
class SelectConfig:
    run: str = field(default="runs/easytune", metadata={"help": "fine-tune run folder (with snapshots/)"})
    evaluator: str = field(default="evaluator", metadata={"help": "evaluator checkpoint"})
    data: str = field(default="datasets/bandai", metadata={"help": "dataset folder (its val split is used)"})
    split: str = field(default="val", metadata={"help": "split to select on (never test)"})
    seed: int = field(default=0, metadata={"help": "evaluation seed, the same for every snapshot"})
    replications: int = field(default=1, metadata={"help": "replications per snapshot"})
    mm_keep: float = field(default=0.9, metadata={"help": "MultiModality must stay >= this x the base's"})
    skate_slack: float = field(default=1.0, metadata={"help": "foot skating must stay <= this x the base's"})
    rule: Literal["default", "composition"] = field(default="default", metadata={"help": "default: best R@1 among the qualifying snapshots; composition: of those within r1_slack of it, the lowest MM-Dist (absent)"})
    r1_slack: float = field(default=0.01, metadata={"help": "--rule composition: R@1 margin below the best that still qualifies"})
    composition: int = field(default=2, metadata={"help": "captions per content-style combination no motion has, for the MM-Dist (absent) column (used only by --rule composition; 0 = off)"})
    cache: str = field(default=".cache/evaluate", metadata={"help": "generated-motion cache"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})


def snapshots(run: Path) -> list[tuple[int, Path]]:
    found = sorted((int(p.name.split("_")[1]), p) for p in (run / "snapshots").glob("step_*")
                   if (p / "config.json").is_file())
    if not found:
        raise UserError(f"{run} has no snapshots/step_* checkpoints; run `finetune` with --val-every first")
    return found


def choose(rows: list[dict[str, Any]], mm_keep: float, skate_slack: float, rule: str = "default",
           r1_slack: float = 0.01) -> int:
    """Index of the chosen row (rows[0] is the base) by the rule in the module docstring."""
    base = rows[0]
    ok = [i for i, r in enumerate(rows) if i > 0 and r["FID"] <= base["FID"]
          and r["MultiModality"] >= mm_keep * base["MultiModality"]
          and r["foot_skating"] <= skate_slack * base["foot_skating"]]
    if not ok:
        return 0
    if rule == "composition":
        best = max(rows[i]["R-Precision top-1"] for i in ok)
        near = [i for i in ok if rows[i]["R-Precision top-1"] >= best - r1_slack]
        return min(near, key=lambda i: (rows[i]["MM-Dist (absent)"], -rows[i]["R-Precision top-1"]))
    return max(ok, key=lambda i: (rows[i]["R-Precision top-1"], -rows[i]["MM-Dist"]))


def main(cfg: SelectConfig) -> dict[str, Any]:
    from easytune.evaluate import EvaluateConfig
    from easytune.evaluate import main as evaluate
    from easytune.fileio import write_json, write_text

    if cfg.split == "test" or cfg.split.startswith("test_"):
        raise UserError("selection must not look at the test split; use --split val")
    if cfg.rule not in ("default", "composition"):
        raise UserError(f"rule must be 'default' or 'composition', got {cfg.rule!r}")
    if cfg.rule == "composition" and not cfg.composition:
        raise UserError("--rule composition needs the MM-Dist (absent) column: set --composition to 1 or more")
    if not 0.0 <= float(cfg.r1_slack) <= 1.0:
        raise UserError(f"r1_slack must be in [0, 1], got {cfg.r1_slack}")
    if isinstance(cfg.composition, bool) or not isinstance(cfg.composition, int) or not 0 <= cfg.composition <= 50:
        raise UserError(f"composition must be an integer from 0 (off) to 50 captions per combination, "
                        f"got {cfg.composition!r}")
    run = Path(cfg.run)
    snaps = snapshots(run)
    if snaps[0][0] != 0:
        raise UserError(f"{run} has no step-0 snapshot (the base's row the rule compares with)")
    probe = composition_probe(cfg)
    if cfg.rule == "composition" and probe is None:  # refuse before evaluating any snapshot
        raise UserError(f"--rule composition needs the MM-Dist (absent) column, and {cfg.data} has no content-style "
                        f"combination without a motion (or no labels)")
    rows = []
    for step, path in snaps:
        res = evaluate(EvaluateConfig(checkpoint=str(path), evaluator=cfg.evaluator, data=cfg.data, split=cfg.split,
                                      seed=cfg.seed, replications=cfg.replications, cache=cfg.cache,
                                      out=str(run / "selection" / path.name), device=cfg.device))
        gen = res["summary"]["generated"]
        rows.append({"step": step, "checkpoint": str(path), **{m: gen[m][0] for m in METRICS}})
        if probe:
            rows[-1]["MM-Dist (absent)"] = probe(str(path))
    pick = choose(rows, cfg.mm_keep, cfg.skate_slack, cfg.rule, cfg.r1_slack)
    suffix = "" if cfg.rule == "default" else "_composition"
    result = {"rule": __doc__.split("The rule:")[1].split("Beside the default rule")[0].strip(), "rule_used": cfg.rule,
              "split": cfg.split,
              "rows": rows, "chosen": pick, "chosen_step": rows[pick]["step"],
              "chosen_checkpoint": rows[pick]["checkpoint"]}
    write_json(run / f"selection{suffix}.json", result)
    write_text(run / f"selection{suffix}.md", format_rows(rows, pick) + "\n")
    plot_run(run, run / "run.png", rows)
    print(format_rows(rows, pick))
    return result


def composition_probe(cfg: SelectConfig) -> Any:
    """checkpoint -> its MM-Dist (absent) (see the module docstring), or None: off, or no absent combination."""
    from easytune import evaluate as E
    from easytune.device import pick_device
    from easytune.evaluator import Embedder, load_evaluator

    if not cfg.composition:
        return None
    captions, keys, lengths = E.composition_set(cfg.data, cfg.composition, cfg.seed)
    if not captions:
        return None
    device = pick_device(cfg.device)
    model, ckpt = load_evaluator(cfg.evaluator, device)
    embedder = Embedder(model, None)
    protocol = E.protocol_for("cpu", replications=1)

    def probe(checkpoint: str) -> float:
        gen, cache = E.cached_generator(checkpoint, str(device), None, protocol, cfg.cache, ckpt.dataset)
        return E.composition_metrics(embedder, captions, keys, lengths, gen, cache, protocol, cfg.seed)["MM-Dist (absent)"]
    return probe


def format_rows(rows: list[dict[str, Any]], pick: int) -> str:
    columns = METRICS + tuple(k for k in ("MM-Dist (absent)",) if all(k in r for r in rows))
    lines = ["| trajectories | " + " | ".join(columns) + " | |", "|---" * (len(columns) + 2) + "|"]
    for i, r in enumerate(rows):
        cells = [f"{r[m]:.3f}" if abs(r[m]) < 10 else f"{r[m]:.1f}" for m in columns]
        lines.append(f"| {r['step']} | " + " | ".join(cells) + f" | {'**chosen**' if i == pick else ''} |")
    return "\n".join(lines)


def read_log(run: Path) -> list[dict[str, float]]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_run(run: Path, out: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Training reward (per trajectory, and a 10-trajectory moving mean), held-out reward with its CI,
    and, when given, the selection metrics per snapshot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    log = read_log(run)
    history = json.loads((run / "history.json").read_text(encoding="utf-8")) if (run / "history.json").is_file() else {}
    n = 3 if rows else 1
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.6), squeeze=False)
    ax = axes[0, 0]
    if log:
        x = np.array([m["step"] for m in log])
        for key, label in (("reward", "reward of the optimized steps' x0"), ("final_reward", "reward of the final sample")):
            y = np.array([m.get(key, math.nan) for m in log])
            ax.plot(x, y, alpha=0.25)
            k = min(10, len(y))
            ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=label)
    val = history.get("validation") or []
    if val:
        vx = [v["step"] for v in val]
        ax.errorbar(vx, [v["reward"] for v in val], yerr=[v["ci"] for v in val], fmt="o-k", capsize=3,
                    label="held-out reward (val prompts), 95% CI")
    ax.set_xlabel("trajectories")
    ax.set_ylabel("reward (cosine)")
    ax.legend(fontsize=7)
    ax.set_title(run.name)
    if rows:
        steps = [r["step"] for r in rows]
        ax = axes[0, 1]
        ax.plot(steps, [r["R-Precision top-1"] for r in rows], "o-", label="R-Precision top-1")
        ax.plot(steps, [r["MultiModality"] for r in rows], "s-", label="MultiModality")
        ax.set_xlabel("trajectories")
        ax.legend(fontsize=7)
        ax.set_title("validation split (evaluator)")
        ax = axes[0, 2]
        ax.plot(steps, [r["FID"] for r in rows], "o-", label="FID")
        ax.plot(steps, [r["MM-Dist"] for r in rows], "s-", label="MM-Dist")
        ax.plot(steps, [10 * r["foot_skating"] for r in rows], "^-", label="10 x foot skating")
        ax.set_xlabel("trajectories")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from easytune.config import add_config_args

    add_config_args(parser, SelectConfig)


def run(args: argparse.Namespace) -> int:
    from easytune.config import config_from_args

    main(config_from_args(SelectConfig, args))
    return 0
