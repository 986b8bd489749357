"""The playground's settings: command-line flags over environment variables over defaults.

    python app.py                          # 127.0.0.1:7860, demo checkpoints, private mode
    python app.py --public                 # a hosted demo: tighter limits, heavy features off
    EASYTUNE_PORT=8000 python app.py --queue-size 32

Every flag has an environment variable (EASYTUNE_HOST, EASYTUNE_PORT, ...); Gradio's own
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set by Hugging Face Spaces) are honoured too.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Limits:
    """What one request may ask for; `public` mode tightens them."""

    max_seconds: float = 9.8   # longest motion (HumanML3D's 196 frames)
    max_steps: int = 100       # DDIM steps per request
    max_upload_mb: float = 5.0  # each uploaded motion file
    max_candidates: int = 8    # motions or prompts ranked at once on the Reward tab
    render_size: int = 320     # pixels per body lane in the video (the 2-core speed goal allows 320)


def public_limits() -> Limits:
    return Limits(max_seconds=6.0, max_steps=25, max_upload_mb=2.0, max_candidates=4, render_size=256)


@dataclass
class AppConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 0.0.0.0 serves the network"})
    port: int = field(default=7860, metadata={"help": "port (the next free one if taken)"})
    share: bool = field(default=False, metadata={"help": "open a public gradio.live link (needs network)"})
    queue_size: int = field(default=16, metadata={"help": "requests waiting at most; more are refused"})
    concurrency: int = field(default=1, metadata={"help": "requests computed at once per event (CPU: 1)"})
    data_dir: str = field(default=str(REPO_ROOT / ".cache" / "app"),
                          metadata={"help": "folder for generated files and caches"})
    public: bool = field(default=False, metadata={"help": "hosted-demo mode: tighter limits, heavy features off"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    base: str = field(default="base", metadata={"help": "registry name of the left-hand checkpoint"})
    compare: str = field(default="", metadata={
        "help": "registry name of the right-hand checkpoint (default: the EasyTune demo one, else the base)"})
    reward: str = field(default="reward", metadata={"help": "reward-model checkpoint"})
    evaluator: str = field(default="evaluator", metadata={"help": "evaluator checkpoint (text-match score)"})
    captions: str = field(default="", metadata={"help": "training captions file for the prompt check "
                                                        "(default: app/assets/train_captions.txt)"})
    cache_entries: int = field(default=32, metadata={"help": "identical requests served from this many results"})
    warm: bool = field(default=True, metadata={"help": "run one request at start so the first click is fast"})
    max_trajectories: int = field(default=200, metadata={"help": "longest browser fine-tune (trajectories)"})
    max_queued_jobs: int = field(default=4, metadata={"help": "browser fine-tunes waiting at most; more are refused"})
    keep_finetunes: int = field(default=5, metadata={"help": "browser fine-tunes kept; older ones are pruned"})
    limits: Limits = field(default_factory=Limits)

    @property
    def jobs(self):
        from app.jobs import JobLimits

        return JobLimits(max_trajectories=self.max_trajectories, max_seconds=min(6.0, self.limits.max_seconds),
                         max_queued=self.max_queued_jobs, keep=self.keep_finetunes)


def _env(name: str) -> str | None:
    return os.environ.get(f"EASYTUNE_{name.upper()}")


def parse(argv: list[str] | None = None) -> AppConfig:
    """AppConfig from flags, then EASYTUNE_* variables, then defaults."""
    parser = argparse.ArgumentParser(prog="python app.py", description="EasyTune playground")
    defaults = AppConfig()
    env_defaults = {"host": os.environ.get("GRADIO_SERVER_NAME"), "port": os.environ.get("GRADIO_SERVER_PORT")}
    for f in fields(AppConfig):
        if f.name == "limits":
            continue
        default = getattr(defaults, f.name)
        raw = _env(f.name) or env_defaults.get(f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            value = default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f.metadata["help"])
        else:
            value = default if raw is None else type(default)(raw)
            parser.add_argument(flag, type=type(default), default=value, help=f.metadata["help"])
    args = parser.parse_args(argv)
    cfg = AppConfig(**{k: v for k, v in vars(args).items()})
    cfg.limits = public_limits() if cfg.public else Limits()
    if cfg.public:
        cfg.queue_size = min(cfg.queue_size, 16)
    if cfg.queue_size < 1 or cfg.concurrency < 1:
        parser.error("--queue-size and --concurrency must be at least 1")
    if cfg.max_trajectories < 1 or cfg.max_queued_jobs < 1 or cfg.keep_finetunes < 1:
        parser.error("--max-trajectories, --max-queued-jobs and --keep-finetunes must be at least 1")
    return cfg
