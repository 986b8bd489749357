"""One browser fine-tune in its own process: `python -m app.worker DB JOB_ID DATA_DIR` (started by
app.jobs.JobRunner). Builds the FinetuneConfig from the job's request, runs easytune's harness with
on_step writing progress to the job row and should_stop reading its cancel flag, and exits 0 when the
harness returned (finished or cancelled; summary.json says which), non-zero on any failure (the
runner then marks the job failed with the end of the log this process writes)."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path


def config_for(request: dict, run_dir: Path):
    """The harness config of a browser job: the browser preset with the job's settings."""
    from easytune.fileio import write_text
    from easytune.finetune.harness import preset_browser

    cfg = preset_browser()
    cfg = dataclasses.replace(cfg, method=request["method"], base=request["base"], trajectories=request["trajectories"],
                              k=request["k"], lr=request["lr"], lora_rank=request["lora_rank"],
                              base_penalty=request["base_penalty"], seconds=request["seconds"],
                              max_seconds=request["seconds"], seed=request["seed"], out=str(run_dir / "run"),
                              save_every=max(1, min(10, request["trajectories"])), device="cpu")
    if request["prompts"]:  # typed prompts: trained on, and their held-out check uses fixed validation noise
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "prompts.txt", "\n".join(request["prompts"]) + "\n")
        cfg = dataclasses.replace(cfg, prompts=str(run_dir / "prompts.txt"), val_file=str(run_dir / "prompts.txt"))
    return cfg


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db, job_id, data_dir = argv[0], int(argv[1]), Path(argv[2])
    from app.jobs import JobStore, job_dir, use_registry_root
    from easytune.finetune.harness import finetune

    use_registry_root(data_dir)
    store = JobStore(db)
    job = store.get(job_id)
    cfg = config_for(job["request"], job_dir(data_dir, job_id))
    start, total = time.perf_counter(), cfg.trajectories
    first: dict[str, int] = {}  # the first trajectory this process ran (a resumed job starts later)

    def on_step(metrics: dict) -> None:
        step = int(metrics["step"])
        first.setdefault("step", step)
        per = (time.perf_counter() - start) / (step - first["step"] + 1)
        store.progress(job_id, {**{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                                "total": total, "eta_s": per * (total - step)})

    print(f"job {job_id}: {cfg.method}, {total} trajectories, lr {cfg.lr:g}, LoRA rank {cfg.lora_rank}", flush=True)
    summary = finetune(cfg, on_step=on_step, should_stop=lambda: store.cancel_requested(job_id), progress=False,
                       command=f"playground job {job_id}")
    print(f"job {job_id}: {'stopped' if summary['stopped'] else 'finished'} at trajectory {summary['step']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
