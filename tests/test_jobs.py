"""Browser fine-tunes: the SQLite job store, and the Fine-tune tab through a real Gradio server on
127.0.0.1 driven by gradio_client, with real worker processes (tiny LoRA runs on the demo checkpoints):
a job to completion whose adapter joins the Compare lists, pruning, the queue and its limit,
cancellation, a worker killed with SIGKILL, a restart, access rules and out-of-range settings."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from app.config import AppConfig, Limits
from app_client import api_error
from app.jobs import JobLimits, JobRequest, JobStore, check_request

PROMPTS = "a person waves the right hand\na person walks forward"


def _settings(trajectories: int, **kw) -> list:
    """/finetune's inputs: token, method, trajectories, K, lr, LoRA rank, guard, source, prompts, seconds, seed,
    study."""
    values = dict(token="", method="easytune", trajectories=trajectories, k=2, lr=1e-3, lora_rank=4, guard=1.0,
                  source="typed prompts", prompts=PROMPTS, seconds=1.0, seed=0, study="")
    values.update(kw)
    return list(values.values())


def _wait(res, job_id: int, states: tuple[str, ...], timeout: float = 180.0, step: int | None = None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = res.jobs.get(job_id)
        if job["state"] in states and (step is None or job["progress"].get("step", 0) >= step):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s: {res.jobs.get(job_id)}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from app import resources, ui

    cfg = AppConfig(port=7920, data_dir=str(tmp_path_factory.mktemp("jobs_app")), warm=False, max_queued_jobs=1,
                    keep_finetunes=1, limits=Limits(render_size=96))
    res = resources.load(cfg)
    demo = ui.build(res)
    url = ui.launch(demo, res)
    yield res, Client(url, verbose=False)
    res.runner.stop()
    demo.close()


# --- the store alone ---------------------------------------------------------------------------------

def test_store_queue_positions_cancel_and_restart(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    assert sqlite3.connect(tmp_path / "jobs.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a, b = store.submit(JobRequest(), 2), store.submit(JobRequest(), 2)
    assert (store.position(a), store.position(b)) == (1, 2)
    with pytest.raises(Exception, match="already waiting"):
        store.submit(JobRequest(), 2)
    assert store.claim_next()["id"] == a and store.position(b) == 1
    assert "before it started" in store.cancel(b) and store.get(b)["state"] == "cancelled"
    assert "next trajectory" in store.cancel(a) and store.cancel_requested(a)
    # a new app on the same file: the job left running is queued again (it resumes from its checkpoint)
    again = JobStore(tmp_path / "jobs.sqlite")
    assert again.recover() == [a]
    job = again.get(a)
    assert job["state"] == "queued" and "resumes" in job["message"]


@pytest.mark.parametrize("change, message", [
    (dict(trajectories=201), "trajectories must be a whole number from 1 to 200"),
    (dict(lr=0.5), "learning rate must be a number from 1e-07 to 0.01"),
    (dict(lora_rank=2.5), "LoRA rank must be a whole number"),
    (dict(base_penalty=float("nan")), "guard weight must be"),
    (dict(seconds=60), "length (seconds) must be"),
    (dict(method="sgd"), "method must be one of"),
    (dict(prompts=[" ", ""]), "type at least one training prompt"),
    (dict(prompts=["x" * 301]), "longer than 300 characters"),
    (dict(base="nope"), "base checkpoint 'nope' is not loaded"),
])
def test_out_of_range_settings_are_one_sentence(change, message):
    req = JobRequest(**{**dict(prompts=["a person waves"]), **change})
    with pytest.raises(Exception) as info:
        check_request(req, JobLimits(), ["base"], has_dataset=False)
    assert message in str(info.value)


# --- through the server -------------------------------------------------------------------------------

def test_job_runs_registers_and_prunes(served):
    res, client = served
    first = client.predict(*_settings(2), api_name="/finetune")
    job_id = int(first.split()[1])
    job = _wait(res, job_id, ("done", "failed"))
    assert job["state"] == "done", job["message"]
    name = job["adapter"]
    assert re.fullmatch(rf"ft-{job_id:04d}-easytune-[0-9a-f]{{6}}", name) and name in res.names
    assert "held-out reward" in job["message"] and "registered as" in job["message"]
    rows, text, curve, tail = client.predict(job_id, api_name="/jobs")
    assert rows["data"][0][:3] == [job_id, "done", "easytune"] and "held-out reward" in text
    assert [p[0] for p in curve["data"]] == [1, 2]
    # the new checkpoint is at once a Compare choice
    scores = client.predict("a person waves", 1.0, 0, 2.5, 2, "base", name, api_name="/compare")[1]["data"]
    assert [r[1] for r in scores] == ["base", name]
    # keep_finetunes=1: the next finished job prunes this one from the lists and the disk
    second = int(client.predict(*_settings(1, seed=1), api_name="/finetune").split()[1])
    assert _wait(res, second, ("done", "failed"))["state"] == "done"
    assert name not in res.names and not (res.data_dir / "checkpoints" / name).exists()


def test_queue_limit_and_cancel(served):
    res, client = served
    running = int(client.predict(*_settings(200), api_name="/finetune").split()[1])
    _wait(res, running, ("running",), step=1)
    waiting = client.predict(*_settings(2), api_name="/finetune")
    assert "position 1 in the queue" in waiting
    assert "already waiting" in api_error(client, *_settings(2), api_name="/finetune")
    assert "before it started" in client.predict("", int(waiting.split()[1]), api_name="/cancel_job")
    assert "next trajectory" in client.predict("", running, api_name="/cancel_job")
    job = _wait(res, running, ("cancelled", "failed"), timeout=60)
    assert job["state"] == "cancelled" and "last checkpoint is kept" in job["message"]
    assert (res.data_dir / "jobs" / f"job_{running:04d}" / "run" / "last" / "config.json").is_file()
    assert "only queued or running" in api_error(client, "", running, api_name="/cancel_job")


def test_killed_worker_fails_the_job_not_the_app(served):
    res, client = served
    job_id = int(client.predict(*_settings(200), api_name="/finetune").split()[1])
    job = _wait(res, job_id, ("running",), step=1)
    os.kill(job["pid"], signal.SIGKILL)
    job = _wait(res, job_id, ("failed",), timeout=60)
    assert "exited with status -9" in job["message"] and "end of its log" in job["message"]
    scores = client.predict("a person waves", 1.0, 0, 2.5, 2, "base", "base", api_name="/compare")[1]["data"]
    assert len(scores) == 2  # still serving


def test_access_token_and_bad_settings(served, monkeypatch):
    res, client = served
    assert "learning rate must be" in api_error(client, *_settings(2, lr=1.0), api_name="/finetune")
    assert "at least one training prompt" in api_error(client, *_settings(2, prompts="  \n "), api_name="/finetune")
    assert "no study on this server" in api_error(client, *_settings(2, source="a study's prompts", study="x"),
                                               api_name="/finetune")
    monkeypatch.setenv("EASYTUNE_ADMIN_TOKEN", "s3cret")
    assert "admin token is wrong" in api_error(client, *_settings(2), api_name="/finetune")
    assert "admin token is wrong" in api_error(client, "guess", 1, api_name="/cancel_job")


def test_public_mode_refuses_fine_tunes(tmp_path):
    from gradio_client import Client

    from app import resources, ui

    res = resources.load(AppConfig(port=7930, data_dir=str(tmp_path), warm=False, public=True))
    demo = ui.build(res)
    try:
        client = Client(ui.launch(demo, res), verbose=False)
        assert res.jobs is None
        assert "off in this public demo" in api_error(client, *_settings(2), api_name="/finetune")
    finally:
        demo.close()
    assert not Path(tmp_path, "jobs.sqlite").exists()
