"""The Study tab through a real Gradio server on 127.0.0.1 (gradio_client): an admin creates a study
(motions generated, videos rendered ahead of time), two raters vote on the pre-rendered videos, one
fails an attention check and is flagged, results and exports; a kill -9 of the server process during
voting loses no committed vote; public mode refuses administration."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import AppConfig, Limits
from app_client import api_error
from easytune.study import store

REPO = Path(__file__).resolve().parent.parent
CONFIG = """name: tab-study
prompts: [a person waves the right hand, a person walks forward]
checkpoints: [base, easytune]
seeds: [0]
seconds: 1
steps: 2
attention_checks: 2
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from app import resources, ui
    from easytune.render import gl_unavailable_reason

    if gl_unavailable_reason() and os.environ.get("CI") != "true":
        pytest.skip(f"study videos need EGL: {gl_unavailable_reason()}")
    cfg = AppConfig(port=7940, data_dir=str(tmp_path_factory.mktemp("study_app")), warm=False,
                    limits=Limits(render_size=96))
    res = resources.load(cfg)
    demo = ui.build(res)
    url = ui.launch(demo, res)
    yield res, url, Client
    res.runner.stop()
    demo.close()


@pytest.fixture(scope="module")
def study(served):
    """The study, created once by an admin through the API (creating it again is idempotent)."""
    res, url, Client = served
    return Client(url, verbose=False).predict("", CONFIG, api_name="/study_create")


def _code(greeting: str) -> str:
    return re.search(r"code: `([A-Za-z0-9]+)`", greeting).group(1)


def _rate(res, client, code: str, pick) -> int:
    """Vote until done; pick(pair) -> (text, realism). Returns the number of votes cast."""
    from app.tabs.study import paths

    db, _ = paths(res)
    cast = 0
    while True:
        nxt = store.next_pair(db, "tab-study", code)
        if nxt.pair is None:
            return cast
        video, text = client.predict("tab-study", code, *pick(nxt.pair), "", api_name="/study_vote")
        cast += 1


def test_create_vote_flag_results_and_export(served, study):
    res, url, Client = served
    admin = Client(url, verbose=False)
    made = admin.predict("", CONFIG, api_name="/study_create")  # again: the same study, nothing regenerated
    assert made == study and "tab-study" in made and "4 pairs" in made  # 2 prompts x 1 seed + 2 attention checks
    assert "configuration cannot change" in api_error(admin, "", CONFIG.replace("seconds: 1", "seconds: 2"),
                                                   api_name="/study_create")
    # rater 1: careful (always the true motion on mismatches); rater 2 picks the decoy once
    careful, sloppy = Client(url, verbose=False), Client(url, verbose=False)
    code, greet, video, prompt = careful.predict("tab-study", "Ada", "", "", api_name="/study_start")
    assert code == _code(greet)
    assert Path(video).stat().st_size > 1000 and "Pair 1 of 4" in prompt and "Prompt:" in prompt
    ada = _code(greet)

    def truthful(pair):
        true_side = "Left" if pair.left == "a" else "Right"
        return true_side, true_side

    def decoy(pair):
        if pair.kind == "mismatch":
            wrong = "Right" if pair.left == "a" else "Left"
            return wrong, wrong
        return "Tie", "Left"

    assert _rate(res, careful, ada, truthful) == 4
    greet2 = sloppy.predict("tab-study", "Bob", "", "", api_name="/study_start")[1]
    bob = _code(greet2)
    assert _rate(res, sloppy, bob, decoy) == 4
    # done: the next start says so; a new browser with the code continues (here: is done too)
    again = Client(url, verbose=False).predict("tab-study", "", ada, "", api_name="/study_start")
    assert again[0] == ada and again[2] is None and "rated all 4 pairs" in again[3]
    # the stored browser code continues too; a vote past the end is one sentence
    assert "rated all 4 pairs" in Client(url, verbose=False).predict("tab-study", "", "", bob, api_name="/study_start")[3]
    assert "there is no pair to vote on" in api_error(sloppy, "tab-study", bob, "Left", "Left", "", api_name="/study_vote")

    report, files = admin.predict("", "tab-study", api_name="/study_results")
    assert "Bob" in report and "flag" in report.lower() and "Wilson" in report
    names = sorted(Path(f).name for f in files)
    assert names == ["tab-study_spl_pairs.jsonl", "tab-study_votes.csv"]
    csv_rows = Path([f for f in files if f.endswith(".csv")][0]).read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 8
    from easytune.spl import read_pairs

    pairs = read_pairs([f for f in files if f.endswith(".jsonl")][0])
    assert pairs and all(p.extra.get("rater") != bob for p in pairs)  # flagged raters are left out


def test_bad_study_inputs_are_one_sentence(served, study, monkeypatch):
    res, url, Client = served
    client = Client(url, verbose=False)
    assert "not valid YAML" in api_error(client, "", "name: [unclosed", api_name="/study_create")
    assert "prompts" in api_error(client, "", "name: x\ncheckpoints: [base, easytune]\n", api_name="/study_create")
    assert "rater name must be" in api_error(client, "tab-study", "", "", "", api_name="/study_start")
    assert "no study named 'nope'; studies: tab-study" in api_error(client, "nope", "Ada", "", "", api_name="/study_start")
    code = client.predict("tab-study", "Cy", "", "", api_name="/study_start")[0]
    assert "not in the list of choices" in api_error(client, "tab-study", code, "Maybe", "Left", "", api_name="/study_vote")
    assert "no rater" in api_error(client, "tab-study", "", "", "ZZZZZZZZ", api_name="/study_start").lower()
    monkeypatch.setenv("EASYTUNE_ADMIN_TOKEN", "s3cret")
    assert "admin token is wrong" in api_error(client, "", CONFIG, api_name="/study_create")
    assert "admin token is wrong" in api_error(client, "x", "tab-study", api_name="/study_results")


def _start_app(data_dir: Path, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", str(data_dir), "--no-warm"],
                            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        found = re.search(r"open (http://127\.0\.0\.1:\d+/?)", log.read_text())
        if found:
            return proc, found.group(1)
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("app.py did not start in 180 s")


def test_kill_9_of_the_server_loses_no_committed_vote(served, study, tmp_path):
    """A real `python app.py` process: votes answered to the rater are in the database after SIGKILL, and
    a restarted app continues the rater where they stopped."""
    from gradio_client import Client

    from app.tabs.study import paths

    res = served[0]
    data = tmp_path / "data"
    (data / "studies").mkdir(parents=True)
    db, media = paths(res)
    import shutil

    shutil.copytree(media, data / "studies" / "media")  # the prepared study, as a second server's data
    with sqlite3.connect(db) as src, sqlite3.connect(data / "studies" / "studies.sqlite") as dst:
        src.backup(dst)  # a consistent copy, WAL included
    proc, url = _start_app(data, 7945, tmp_path / "app.log")
    try:
        client = Client(url, verbose=False)
        code = client.predict("tab-study", "Dee", "", "", api_name="/study_start")[0]
        for _ in range(2):
            client.predict("tab-study", code, "Left", "Tie", "", api_name="/study_vote")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    db2 = data / "studies" / "studies.sqlite"
    assert [v.rater for v in store.votes(db2, "tab-study")].count(code) == 2
    proc, url = _start_app(data, 7946, tmp_path / "app2.log")
    try:
        prompt = Client(url, verbose=False).predict("tab-study", "", code, "", api_name="/study_start")[3]
        assert "Pair 3 of 4" in prompt
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_study_s_prompts_train_a_browser_fine_tune(served, study):
    res, url, Client = served
    client = Client(url, verbose=False)
    message = client.predict("", "easytune", 1, 2, 1e-3, 4, 1.0, "a study's prompts", "", 1.0, 0, "tab-study",
                             api_name="/finetune")
    job = res.jobs.get(int(message.split()[1]))
    assert job["request"]["prompts"] == ["a person waves the right hand", "a person walks forward"]
    deadline = time.time() + 120
    while res.jobs.get(job["id"])["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
    assert res.jobs.get(job["id"])["state"] == "done", res.jobs.get(job["id"])["message"]
