"""Time to a held-out reward target, the efficiency comparison's definition (bench/bench_time_to_target.py
and `python -m easytune results` both use it).

A run is {"row": method, "seed": int, "points": [(training seconds, held-out reward), ...], "trajectories": n}
with points from the harness's held-out checks: the same val prompts and noise at every check, so a run's
step 0 is the base on that run's prompts. In `results` the held-out prompts are drawn by the run's seed, so runs
of one seed (every method) share their base and runs of different seeds do not; the bench gives every seed one
prompt file, so all its runs share one base. The target is defined once, per
seed: that seed's base plus 50% of the gain DRaFT-50 reaches by the end of its budget (each DRaFT-50 run's
final reward minus its own base, mean over its seeds). A run's time to target is the training time of its
first check at or above its own base plus that half-gain (no interpolation); a run that never reaches it is
"> budget".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, r in points if r >= target), None)


def analyse(runs: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    import numpy as np

    start = lambda r: r["points"][0][1]  # noqa: E731  (step 0: the base on the run's own prompts and noise)
    bases = {r["seed"]: start(r) for r in runs}  # the same for every run of a seed; shown in the table
    gains = [r["points"][-1][1] - start(r) for r in runs if r["row"] == "draft-50"]
    if not gains:
        return {"bases": bases, "target": None, "note": "no draft-50 row: the target is undefined"}
    gain = float(np.mean(gains))
    if gain <= 0:
        return {"bases": bases, "draft50_gain": gain, "target": None,
                "note": "DRaFT-50 did not raise the held-out reward within its budget; no target"}
    targets = {seed: b + 0.5 * gain for seed, b in bases.items()}
    per: dict[str, Any] = {}
    for r in runs:
        t = time_to(r["points"], start(r) + 0.5 * gain)
        r["time_to_target"] = t
        per.setdefault(r["row"], []).append(t)
    rows = {}
    for row, times in per.items():
        reached = [t for t in times if t is not None]
        mine = [r for r in runs if r["row"] == row]
        rows[row] = {"times": times, "reached": len(reached), "of": len(times),
                     "mean_s": float(np.mean(reached)) if len(reached) == len(times) else None,
                     "final_reward": float(np.mean([r["points"][-1][1] for r in mine])),
                     "final_gain": float(np.mean([r["points"][-1][1] - start(r) for r in mine]))}
    d_mean = rows.get("draft-50", {}).get("mean_s")
    for r in rows.values():  # DRaFT-50's mean time over the row's: > 1 is faster; None where either missed a seed
        r["speedup_vs_draft50"] = d_mean / r["mean_s"] if d_mean and r["mean_s"] else None
    out = {"bases": bases, "draft50_gain": gain, "target_gain": 0.5 * gain, "targets": targets,
           "target": float(np.mean(list(targets.values()))), "budget_s": budget, "rows": rows}
    e, d = rows.get("easytune"), rows.get("draft-50")
    if e and d and e["mean_s"]:
        if d["mean_s"]:
            out["speedup_vs_draft50"] = e["speedup_vs_draft50"]
        else:  # DRaFT-50 missed the target on some seed: a lower bound from the budget
            out["speedup_vs_draft50_at_least"] = budget / e["mean_s"]
        speed = out.get("speedup_vs_draft50", out.get("speedup_vs_draft50_at_least"))
        out["met_10x"] = bool(speed >= 10)
    elif e:  # EasyTune missed the target on some seed: no speed-up to state, and the goal is not met
        out["met_10x"] = False
    return out


def table(runs: list[dict[str, Any]], res: dict[str, Any]) -> str:
    if res.get("target") is None:
        return res["note"]
    seeds = sorted(res["bases"])
    per_seed = lambda d: " / ".join(f"{d[s]:.4f}" for s in seeds)  # noqa: E731
    names = ", ".join(map(str, seeds))
    if len({round(b, 6) for b in res["bases"].values()}) == 1:  # one held-out prompt file for every seed
        base = f"(the same held-out prompts and noise for seeds {names}): {res['bases'][seeds[0]]:.4f}"
        target = f"target (the base + 50% of that gain): {res['targets'][seeds[0]]:.4f}"
    else:
        base = f"per seed {names} (each seed draws its own held-out prompts): {per_seed(res['bases'])}"
        target = f"target per seed (its base + 50% of that gain): {per_seed(res['targets'])}"
    lines = [f"Held-out reward of the base {base}; DRaFT-50's mean gain by the end of its budget "
             f"{res['draft50_gain']:+.4f}; {target}.",
             "", "| method | time to target per seed (s) | mean (s) | held-out reward at the end (mean) | "
             "gain over the base at the end (mean) | trajectories | speed-up over DRaFT-50 |", "|---|---|---|---|---|---|---|"]
    for row, r in res["rows"].items():
        times = " / ".join("> budget" if t is None else f"{t:.0f}" for t in r["times"])
        traj = " / ".join(str(x["trajectories"]) for x in runs if x["row"] == row)
        mean = f"{r['mean_s']:.0f}" if r["mean_s"] else f"> budget on {r['of'] - r['reached']} seed(s)"
        x = r.get("speedup_vs_draft50")
        lines.append(f"| {row} | {times} | {mean} | {r['final_reward']:.4f} | {r['final_gain']:+.4f} | {traj} | "
                     f"{'n/a' if x is None else f'{x:.2f}x'} |")
    if "speedup_vs_draft50" in res:
        x = res["speedup_vs_draft50"]
        said = (f"EasyTune reaches the target {x:.1f}x sooner than DRaFT-50" if x >= 1 else
                f"EasyTune takes {1 / x:.1f}x as long as DRaFT-50 to reach the target (a speed-up of {x:.2f}x)")
        lines += ["", f"{said} (goal >= 10x: {'met' if res['met_10x'] else 'not met'}; the paper: 7.3x)."]
    elif "speedup_vs_draft50_at_least" in res:
        lines += ["", f"DRaFT-50 missed the target within the budget on some seed; EasyTune is at least "
                      f"{res['speedup_vs_draft50_at_least']:.1f}x sooner (goal >= 10x: "
                      f"{'met' if res['met_10x'] else 'not met'}; the paper: 7.3x)."]
    elif "easytune" in res["rows"] and res["rows"]["easytune"]["mean_s"] is None:
        e = res["rows"]["easytune"]
        lines += ["", f"EasyTune missed the target within the budget on {e['of'] - e['reached']} of {e['of']} seed(s), "
                      f"so no speed-up is stated (goal >= 10x: not met; the paper: 7.3x)."]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {}
    for r in runs:
        t, y = zip(*r["points"])
        y = [v - r["points"][0][1] for v in y]  # gain over the run's own base (its seed's prompts)
        c = colours.setdefault(r["row"], f"C{len(colours)}")
        ax.plot(t, y, "-o", ms=3, color=c, alpha=0.8, label=r["row"] if r["seed"] == runs[0]["seed"] else None)
    if res.get("target") is not None:
        ax.axhline(res["target_gain"], color="k", ls="--", lw=1, label="target (50% of DRaFT-50's gain)")
    ax.set_xlabel("training time (s, held-out checks excluded)")
    ax.set_ylabel("held-out reward gain over the base")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
