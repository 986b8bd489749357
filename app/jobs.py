"""Browser fine-tunes: a job queue in SQLite and one worker process at a time.

The page submits a `JobRequest` (bounded settings, checked here); `JobStore` keeps every job and its
state in SQLite (WAL, so the worker process writes progress while the app reads it); `JobRunner`, a
thread in the app, starts the queued jobs one at a time as `python -m app.worker DB ID` subprocesses, so a
crash or a kill of a job never takes the app down: the job is marked failed with the end of its log.
A finished job's LoRA adapter (or full fine-tune) is registered under a generated name (`ft-<id>-<method>-<stamp>`,
never a user-given string) in `<data_dir>/checkpoints`, a registry root, and loaded into the playground;
the oldest browser fine-tunes beyond `keep` are pruned. Cancel sets a flag the worker reads before each
trajectory (`should_stop`): the run saves its last checkpoint and stops. On start-up, jobs left
"running" by a previous app (a restart or a crash) are queued again and resume from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from easytune.errors import UserError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PROMPT_SOURCES = ("typed prompts", "a study's prompts", "dataset train split")
MAX_PROMPTS, MAX_PROMPT_CHARS = 64, 300


@dataclass
class JobLimits:
    """Bounds of one browser fine-tune, shown beside each control."""

    max_trajectories: int = 200
    max_seconds: float = 6.0
    max_queued: int = 4  # jobs waiting; more are refused
    keep: int = 5  # browser fine-tunes kept in the registry; older ones are pruned


@dataclass
class JobRequest:
    method: str = "easytune"
    trajectories: int = 30
    k: int = 0  # optimized steps (0 = all)
    lr: float = 1e-3
    lora_rank: int = 8  # 0 = full fine-tuning
    base_penalty: float = 1.0  # the guard: stay near the frozen base's x0
    prompt_source: str = "typed prompts"
    prompts: list[str] = field(default_factory=list)
    seconds: float = 4.0
    base: str = "base"
    seed: int = 0


def check_request(req: JobRequest, limits: JobLimits, bases: list[str], has_dataset: bool) -> JobRequest:
    """The request with numbers coerced, or a UserError naming the first setting out of bounds."""
    from app.ui import check_number
    from easytune.finetune.harness import METHODS
    if req.method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {req.method!r}")
    if req.base not in bases:
        raise UserError(f"base checkpoint {req.base!r} is not loaded; choose one of {', '.join(bases)}")
    out = JobRequest(method=req.method, base=req.base, prompt_source=req.prompt_source,
                     trajectories=check_number(req.trajectories, "trajectories", 1, limits.max_trajectories,
                                               integer=True),
                     k=check_number(req.k, "optimized steps K", 0, 100, integer=True),
                     lr=check_number(req.lr, "learning rate", 1e-7, 1e-2),
                     lora_rank=check_number(req.lora_rank, "LoRA rank", 0, 64, integer=True),
                     base_penalty=check_number(req.base_penalty, "guard weight", 0, 100),
                     seconds=check_number(req.seconds, "length (seconds)", 1, limits.max_seconds),
                     seed=check_number(req.seed, "seed", 0, 2**31 - 1, integer=True))
    if req.prompt_source in ("typed prompts", "a study's prompts"):  # the tab fills a study's prompts in
        from easytune.generate import check_prompts

        lines = [p.strip() for p in (req.prompts or []) if isinstance(p, str) and p.strip()]
        if not lines:
            raise UserError("type at least one training prompt (one per line)" if req.prompt_source == "typed prompts"
                            else "the chosen study has no prompts")
        if len(lines) > MAX_PROMPTS:
            raise UserError(f"{len(lines)} prompts typed; at most {MAX_PROMPTS} per fine-tune")
        if max(len(p) for p in lines) > MAX_PROMPT_CHARS:
            raise UserError(f"a prompt is longer than {MAX_PROMPT_CHARS} characters")
        out.prompts = check_prompts(lines)
    elif req.prompt_source == "dataset train split":
        if not has_dataset:
            raise UserError("the dataset is not on this server (datasets/bandai); type the training prompts")
        out.prompts = []
    else:
        raise UserError(f"prompt source must be one of {', '.join(PROMPT_SOURCES)}, got {req.prompt_source!r}")
    return out


# === the store ========================================================================================

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    request TEXT NOT NULL,
    created REAL NOT NULL, started REAL, ended REAL,
    cancel INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    message TEXT NOT NULL DEFAULT '',
    adapter TEXT,
    pid INTEGER
);
"""


class JobStore:
    """Jobs in SQLite. Each call opens its own connection (Gradio and the runner call from several
    threads; the worker is another process), commits, and closes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(sql, args)
            db.execute("COMMIT")
            return cur

    def submit(self, req: JobRequest, max_queued: int) -> int:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
            if waiting >= max_queued:
                db.execute("ROLLBACK")
                raise UserError(f"{waiting} fine-tunes are already waiting (the limit); try again when one has run")
            cur = db.execute("INSERT INTO jobs (state, request, created) VALUES ('queued', ?, ?)",
                             (json.dumps(asdict(req)), time.time()))
            db.execute("COMMIT")
            return int(cur.lastrowid)

    def get(self, job_id: int) -> dict[str, Any]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise UserError(f"there is no fine-tune job {job_id}")
        return _job(row)

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def position(self, job_id: int) -> int:
        """1 = next to run; 0 = not waiting."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != "queued":
                return 0
            return int(db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND id <= ?",
                                  (job_id,)).fetchone()[0])

    def claim_next(self) -> dict[str, Any] | None:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            db.execute("UPDATE jobs SET state = 'running', started = COALESCE(started, ?) WHERE id = ?",
                       (time.time(), row["id"]))
            db.execute("COMMIT")
        return self.get(row["id"])

    def set_pid(self, job_id: int, pid: int | None) -> None:
        self._write("UPDATE jobs SET pid = ? WHERE id = ?", (pid, job_id))

    def progress(self, job_id: int, metrics: dict[str, Any]) -> None:
        self._write("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(metrics), job_id))

    def cancel(self, job_id: int) -> str:
        job = self.get(job_id)
        if job["state"] == "queued":
            self._write("UPDATE jobs SET state = 'cancelled', ended = ?, message = ? WHERE id = ? AND state = 'queued'",
                        (time.time(), "cancelled before it started", job_id))
            return "cancelled before it started"
        if job["state"] == "running":
            self._write("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
            return "stopping at the next trajectory; its last checkpoint is kept"
        raise UserError(f"job {job_id} is {job['state']}; only queued or running jobs can be cancelled")

    def cancel_requested(self, job_id: int) -> bool:
        with closing(self._connect()) as db:
            return bool(db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])

    def finish(self, job_id: int, state: str, message: str, adapter: str | None = None) -> None:
        assert state in ("done", "failed", "cancelled")
        self._write("UPDATE jobs SET state = ?, ended = ?, message = ?, adapter = ?, pid = NULL WHERE id = ?",
                    (state, time.time(), message, adapter, job_id))

    def recover(self) -> list[int]:
        """Jobs a previous app left running: queued again (they resume from their last checkpoint)."""
        with closing(self._connect()) as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
        for job_id in ids:
            self._write("UPDATE jobs SET state = 'queued', pid = NULL, message = ? WHERE id = ?",
                        ("interrupted by an app restart; queued again, resumes from its last checkpoint", job_id))
        return ids


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["request"] = json.loads(job["request"])
    job["progress"] = json.loads(job["progress"] or "{}")
    return job


# === running jobs ====================================================================================

def adapter_name(job: dict[str, Any]) -> str:
    """ft-<job>-<method>-<6 hex of the job's creation time>: job ids restart with each data folder, and
    registry names must be unique across every registry root."""
    stamp = hashlib.sha256(repr(job["created"]).encode()).hexdigest()[:6]
    return f"ft-{int(job['id']):04d}-{job['request']['method']}-{stamp}"


def job_dir(data_dir: Path, job_id: int) -> Path:
    return Path(data_dir) / "jobs" / f"job_{int(job_id):04d}"


def registry_root(data_dir: Path) -> Path:
    return Path(data_dir) / "checkpoints"


def use_registry_root(data_dir: Path) -> Path:
    """Add <data_dir>/checkpoints to the registry's roots (this process and the workers it starts)."""
    root = registry_root(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    roots = [p for p in os.environ.get("EASYTUNE_CHECKPOINTS", "").split(":") if p]
    if str(root) not in roots:
        os.environ["EASYTUNE_CHECKPOINTS"] = ":".join(roots + [str(root)])
    return root


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


class JobRunner:
    """Runs queued jobs one at a time in worker subprocesses; `on_registered(name)` is called in the
    runner's thread when a job's checkpoint has been registered (the app loads it)."""

    def __init__(self, store: JobStore, data_dir: Path, limits: JobLimits, on_registered=None,
                 on_pruned=None, poll_s: float = 0.5):
        self.store, self.data_dir, self.limits = store, Path(data_dir), limits
        self.on_registered, self.on_pruned, self.poll_s = on_registered, on_pruned, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: subprocess.Popen | None = None

    def start(self) -> "JobRunner":
        self.store.recover()
        self._thread = threading.Thread(target=self._loop, name="finetune-jobs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.current is not None and self.current.poll() is None:
            self.current.terminate()

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._stop.wait(self.poll_s)
                continue
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - the runner must survive anything a job does
                log.exception("job %s", job["id"])
                self.store.finish(job["id"], "failed", f"the runner failed: {type(e).__name__}: {e}")

    def _run(self, job: dict[str, Any]) -> None:
        folder = job_dir(self.data_dir, job["id"])
        folder.mkdir(parents=True, exist_ok=True)
        logfile = folder / "log.txt"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "PYTHONUNBUFFERED": "1"}
        with open(logfile, "a", encoding="utf-8") as out:
            self.current = subprocess.Popen([sys.executable, "-m", "app.worker", str(self.store.path), str(job["id"]),
                                             str(self.data_dir)], cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
            self.store.set_pid(job["id"], self.current.pid)
            rc = self.current.wait()
        self.current = None
        if self._stop.is_set() and rc != 0:
            return  # the app is stopping: the job stays 'running' and is queued again at the next start
        summary_file = folder / "run" / "summary.json"
        summary = json.loads(summary_file.read_text()) if rc == 0 and summary_file.is_file() else None
        if summary is None:
            why = f"the worker exited with status {rc}" if rc else "the worker wrote no summary"
            self.store.finish(job["id"], "failed", f"{why}; end of its log:\n{log_tail(logfile)}")
            return
        if summary["stopped"]:
            self.store.finish(job["id"], "cancelled", f"cancelled at trajectory {summary['step']}; its last "
                              f"checkpoint is kept in {folder / 'run' / 'last'}")
            return
        name = self._register(job, folder / "run" / "last")
        text = f"done: {summary['step']} trajectories in {summary['wall_s']:.0f} s; registered as {name}"
        gain, val = summary.get("held_out_gain"), summary.get("validation") or []
        if gain and len(val) >= 2:
            text += (f"; held-out reward {val[0]['reward']:.4f} -> {val[-1]['reward']:.4f} "
                     f"(paired gain {gain['gain']:+.4f} ± {gain['ci']:.4f})")
        self.store.finish(job["id"], "done", text, adapter=name)

    def _register(self, job: dict[str, Any], last: Path) -> str:
        from easytune.checkpoints import promote

        root = use_registry_root(self.data_dir)
        name = adapter_name(job)
        promote(last, name, root=root)
        if self.on_registered is not None:
            self.on_registered(name)
        self.prune(root)
        return name

    def prune(self, root: Path) -> list[str]:
        """Delete the oldest browser fine-tunes beyond `keep` (by job id, which names them)."""
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("ft-")
                       and (p / "config.json").is_file())
        gone = names[: max(0, len(names) - self.limits.keep)]
        for name in gone:
            if self.on_pruned is not None:
                self.on_pruned(name)
            shutil.rmtree(root / name, ignore_errors=True)
        return gone
