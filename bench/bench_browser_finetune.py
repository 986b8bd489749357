"""The Fine-tune tab's default job, measured: wall time and held-out reward gain, against lr = 0.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_browser_finetune.py      # ~10 min on 2 cores

Runs exactly what the tab's defaults submit (app.tabs.finetune.DEFAULT_PROMPTS, app.jobs.JobRequest's
defaults: EasyTune, LoRA rank 8, lr 1e-3, 30 trajectories, guard 1, 4 s), through the same worker
config (app.worker.config_for), once as is and once with lr = 0 (the reference: same prompts, same
noise, no learning). The held-out check is the reward of the typed prompts' final samples from fixed
validation noise, before and after; writes bench/results/browser_finetune.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.jobs import JobRequest  # noqa: E402
from app.tabs.finetune import DEFAULT_PROMPTS  # noqa: E402
from app.worker import config_for  # noqa: E402
from easytune.finetune.harness import finetune  # noqa: E402


def one(lr: float, folder: Path) -> dict:
    req = dataclasses.asdict(JobRequest(prompts=DEFAULT_PROMPTS.splitlines()))
    req["lr"] = lr
    cfg = config_for(req, folder)
    start = time.perf_counter()
    summary = finetune(cfg, progress=False)
    val = summary["validation"]
    return {"lr": lr, "trajectories": summary["step"], "wall_s": time.perf_counter() - start,
            "before": val[0]["reward"], "after": val[-1]["reward"], "gain": summary["held_out_gain"]["gain"],
            "ci": summary["held_out_gain"]["ci"], "peak_rss_mib": summary["peak_rss_mib"]}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr in (JobRequest().lr, 0.0):
            rows.append(one(lr, Path(tmp) / f"lr_{lr:g}"))
            print(rows[-1], flush=True)
    out = REPO / "bench" / "results" / "browser_finetune"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = ["| lr | trajectories | wall (s) | held-out reward before | after | paired gain (95% CI) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['lr']:g} | {r['trajectories']} | {r['wall_s']:.0f} | {r['before']:.4f} | {r['after']:.4f} | "
              f"{r['gain']:+.4f} ± {r['ci']:.4f} | {r['peak_rss_mib']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
