"""Fine-tune tab: launch a short EasyTune (or baseline) fine-tune from the browser and follow it.

Jobs run one at a time in a worker process (app.jobs); this tab submits, lists, cancels and shows the
selected job's progress (refreshed by a gr.Timer). Off in public mode; when EASYTUNE_ADMIN_TOKEN is set,
launching and cancelling need that token (checked on the server)."""

from __future__ import annotations

import json

from easytune.errors import UserError

JOB_HEADERS = ["job", "state", "method", "trajectory", "reward (last)", "ETA (s)", "checkpoint", "message"]
DEFAULT_PROMPTS = "a person waves the right hand\na person walks forward happily\na person bows politely"


def check_access(res, token) -> None:
    from app.access import check_admin

    check_admin(res, token, "fine-tuning")
    if res.jobs is None:
        raise UserError("fine-tuning is not running on this server (no job queue was started)")


def has_dataset() -> bool:
    from app.jobs import REPO

    return (REPO / "datasets" / "bandai" / "dataset.json").is_file()


def launch(res, token, method, trajectories, k, lr, lora_rank, guard, source, prompts_text, seconds, seed,
           study="") -> str:
    from app.jobs import JobRequest, check_request

    check_access(res, token)
    lines = str(prompts_text or "").splitlines()
    if source == "a study's prompts":
        from app.tabs.study import _study

        lines = list(_study(res, study).config.prompts)
    req = JobRequest(method=method, trajectories=trajectories, k=k, lr=lr, lora_rank=lora_rank, base_penalty=guard,
                     prompt_source=source, prompts=lines, seconds=seconds, base=res.left, seed=seed)
    req = check_request(req, res.cfg.jobs, res.names, has_dataset())
    job_id = res.jobs.submit(req, res.cfg.jobs.max_queued)
    position = res.jobs.position(job_id)
    where = "starting now" if position <= 1 and not _running(res) else f"position {position} in the queue"
    return f"Job {job_id} submitted ({where})."


def _running(res) -> bool:
    return any(j["state"] == "running" for j in res.jobs.jobs(10))


def cancel(res, token, job_id) -> str:
    check_access(res, token)
    if job_id is None or str(job_id).strip() == "":
        raise UserError("choose a job number to cancel")
    try:
        job_id = int(float(job_id))
    except ValueError:
        raise UserError(f"job number must be a whole number, got {job_id!r}") from None
    return f"Job {job_id}: {res.jobs.cancel(job_id)}."


def job_rows(res) -> list[list]:
    if res.jobs is None:
        return []
    rows = []
    for j in res.jobs.jobs(30):
        p, req = j["progress"], j["request"]
        reward = p.get("final_reward", p.get("reward"))
        step = f"{int(p['step'])}/{req['trajectories']}" if "step" in p else f"0/{req['trajectories']}"
        state = j["state"] + (f" (#{res.jobs.position(j['id'])})" if j["state"] == "queued" else "")
        eta = round(p["eta_s"]) if j["state"] == "running" and "eta_s" in p else ""
        rows.append([j["id"], state, req["method"], step, "" if reward is None else round(reward, 4), eta,
                     j["adapter"] or "", j["message"].splitlines()[0] if j["message"] else ""])
    return rows


def details(res, job_id) -> tuple[str, list[dict], str]:
    """Markdown summary, the per-trajectory reward curve, and the end of the log, for one job."""
    from app.jobs import job_dir, log_tail

    if res.jobs is None or job_id is None or str(job_id).strip() == "":
        return "", [], ""
    try:
        job = res.jobs.get(int(float(job_id)))
    except (ValueError, UserError):
        return f"There is no job {job_id}.", [], ""
    folder = job_dir(res.data_dir, job["id"])
    curve = []
    log_file = folder / "run" / "log.jsonl"
    if log_file.is_file():
        for line in log_file.read_text(encoding="utf-8").splitlines():
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            curve.append({"trajectory": int(m["step"]), "reward": float(m.get("final_reward", m.get("reward", 0.0)))})
    p, req = job["progress"], job["request"]
    lines = [f"**Job {job['id']}**: {job['state']}; {req['method']}, {req['trajectories']} trajectories, lr {req['lr']:g}, "
             f"LoRA rank {req['lora_rank']}, guard {req['base_penalty']:g}, {req['prompt_source']}"]
    if p:
        lines.append(f"trajectory {int(p.get('step', 0))}/{req['trajectories']}, memory {p.get('rss_mib', 0):.0f} MiB, "
                     f"ETA {p.get('eta_s', 0):.0f} s" if job["state"] == "running" else
                     f"last trajectory {int(p.get('step', 0))}, memory {p.get('rss_mib', 0):.0f} MiB")
    history = folder / "run" / "history.json"
    if history.is_file():
        try:
            val = json.loads(history.read_text()).get("validation", [])
        except json.JSONDecodeError:
            val = []
        if val:
            lines.append("held-out reward: " + ", ".join(f"{v['reward']:.4f} at trajectory {v['step']}" for v in val))
    if job["message"]:
        lines.append(job["message"].splitlines()[0])
    return "\n\n".join(lines), curve, log_tail(folder / "log.txt", 12)


def build(res) -> None:
    import gradio as gr
    import pandas as pd

    from app.access import token_required
    from app.jobs import PROMPT_SOURCES
    from easytune.finetune.harness import METHODS
    from app.tabs.study import study_names
    from app.ui import guarded

    lim = res.cfg.jobs
    if res.cfg.public:
        gr.Markdown("Fine-tuning from the browser is **off in this public demo** (it would hold the CPU for "
                    "minutes). Run `python app.py` on your own machine to use it.")
    gr.Markdown("A short EasyTune fine-tune of the left-hand default checkpoint against the reward model, in a "
                "worker process (one job at a time; others wait in a queue). The default run (LoRA rank 8, "
                "30 trajectories of 4 prompts drawn from yours, 4 s motions) took about 2 minutes on 2 CPU cores "
                "and raised its 3 default prompts' reward from 0.702 to 0.955, against no change at lr 0 "
                "(bench/bench_browser_finetune.py). When it is done its checkpoint "
                "joins the Compare tab's lists.")
    with gr.Row():
        with gr.Column():
            method = gr.Dropdown(list(METHODS), value="easytune", label="Method")
            trajectories = gr.Slider(1, lim.max_trajectories, value=min(30, lim.max_trajectories), step=1,
                                     label=f"Trajectories (1 to {lim.max_trajectories})")
            k = gr.Slider(0, 10, value=0, step=1, label="Optimized steps K (0 = all, at most 10 of the 10 steps)")
            lr = gr.Number(value=1e-3, label="Learning rate (1e-7 to 1e-2; LoRA: 1e-3, full weights: 1e-5)")
            lora_rank = gr.Slider(0, 64, value=8, step=1, label="LoRA rank (0 = full weights)")
            guard = gr.Slider(0, 100, value=1.0, step=0.5, label="Guard weight: stay near the base's x0 (0 to 100)")
        with gr.Column():
            source = gr.Radio(list(PROMPT_SOURCES), value="typed prompts", label="Training prompts")
            study = gr.Dropdown(study_names(res), label="Study (for a study's prompts)", allow_custom_value=True)
            prompts = gr.Textbox(value=DEFAULT_PROMPTS, lines=4, label="Typed prompts, one per line (at most 64); "
                                 "the held-out reward is measured on them with fixed validation noise")
            with gr.Row():
                seconds = gr.Slider(1, lim.max_seconds, value=min(4.0, lim.max_seconds), step=0.5,
                                    label=f"Length (1 to {lim.max_seconds:g} s)")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            token = gr.Textbox(label="Admin token", type="password", visible=token_required())
            go = gr.Button("Start fine-tune", variant="primary")
    status = gr.Markdown()
    table = gr.Dataframe(headers=JOB_HEADERS, value=job_rows(res), label="Jobs (newest first)", interactive=False)
    with gr.Row():
        job_id = gr.Number(label="Job", precision=0)
        stop = gr.Button("Cancel job")
    summary = gr.Markdown()
    curve = gr.LinePlot(x="trajectory", y="reward", label="Reward of each trajectory's final sample", height=250)
    log_box = gr.Textbox(label="End of the job's log", lines=8, interactive=False)

    def refresh(selected):
        text, points, tail = details(res, selected)
        # typed even when empty: a numeric axis, not categories
        frame = pd.DataFrame(points, columns=["trajectory", "reward"]).astype({"trajectory": "int64", "reward": "float64"})
        return job_rows(res), text, frame, tail

    def submitted(message):
        job = int(message.split()[1])
        return (message, job, *refresh(job))

    go.click(guarded(lambda *a: launch(res, *a)), [token, method, trajectories, k, lr, lora_rank, guard, source,
                                                   prompts, seconds, seed, study], status, api_name="finetune") \
        .success(submitted, status, [status, job_id, table, summary, curve, log_box], api_name=False)
    stop.click(guarded(lambda t, j: cancel(res, t, j)), [token, job_id], status, api_name="cancel_job")
    study.focus(lambda: gr.update(choices=study_names(res)), None, study, api_name=False, queue=False)
    job_id.change(refresh, job_id, [table, summary, curve, log_box], api_name=False, queue=False)
    gr.Timer(2.0).tick(refresh, job_id, [table, summary, curve, log_box], api_name="jobs", queue=False)
