"""What the playground loads once at start-up and every tab reads: the generator checkpoints, the reward
model, the evaluator, the caption index, the result cache. Callbacks get a `Resources` and keep no
other state; after `load` only the generators change (a browser fine-tune joins, an old one is pruned),
under a lock (the cache is thread-safe)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.cache import ResultCache
from app.captions import CAPTIONS_FILE, CaptionIndex, read_captions
from app.config import AppConfig
from easytune.errors import UserError

log = logging.getLogger(__name__)
EASYTUNE_DEMO = "easytune"  # the registry name the EasyTune demo checkpoint is promoted under


@dataclass
class Resources:
    cfg: AppConfig
    generators: dict[str, Any]  # registry name -> easytune.generate.BaseBundle
    reward: Any  # easytune.reward.RewardScorer
    evaluator: Any  # easytune.evaluator.Embedder
    captions: CaptionIndex
    cache: ResultCache
    data_dir: Path
    left: str  # default checkpoints of the Compare tab
    right: str
    # GL rendering runs in ONE long-lived thread: an EGL context belongs to its thread, and Gradio's
    # worker pool would otherwise create (and pay for) a context per worker thread.
    render_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="render"))
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # start-up remarks shown under the title
    text_encoder: Any = None
    device: Any = "cpu"
    jobs: Any = None  # app.jobs.JobStore (None in public mode: no browser fine-tunes)
    runner: Any = None  # app.jobs.JobRunner
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_generator(self, name: str) -> None:
        """Load a newly registered checkpoint (a finished browser fine-tune) into the lists."""
        from easytune.generate import load_base

        bundle = load_base(name, self.device, text_encoder=self.text_encoder)
        with self.lock:
            self.generators = {**self.generators, name: bundle}

    def remove_generator(self, name: str) -> None:
        with self.lock:
            if name not in (self.left, self.right):
                self.generators = {k: v for k, v in self.generators.items() if k != name}

    @property
    def limits(self):
        return self.cfg.limits

    @property
    def names(self) -> list[str]:
        return list(self.generators)

    def bundle(self, name: str) -> Any:
        if name not in self.generators:
            raise UserError(f"checkpoint {name!r} is not loaded; choose one of {', '.join(self.generators)}")
        return self.generators[name]

    def results_dir(self) -> Path:
        path = self.data_dir / "results"
        path.mkdir(parents=True, exist_ok=True)
        return path


def generator_names() -> list[str]:
    """Registered checkpoints that make motions (base, full fine-tunes, LoRA adapters), base first."""
    from easytune.checkpoints import list_checkpoints
    from easytune.generate import GENERATOR_KINDS

    names = [e["name"] for e in list_checkpoints() if e["kind"] in GENERATOR_KINDS]
    return sorted(dict.fromkeys(names), key=lambda n: (n != "base", n != EASYTUNE_DEMO, n))


def load(cfg: AppConfig) -> Resources:
    """Load every generator in the registry plus the reward model and the evaluator (one text encoder
    shared by all), then warm them up so the first click is as fast as the next ones."""
    from easytune.device import pick_device
    from easytune.evaluator import Embedder, load_evaluator
    from easytune.generate import load_base
    from easytune.reward import RewardScorer, load_reward_model
    from easytune.text import load_text_encoder

    start = time.perf_counter()
    device = pick_device(cfg.device)
    text_encoder = load_text_encoder(device)
    if not cfg.public:
        from app.jobs import use_registry_root

        use_registry_root(Path(cfg.data_dir))  # browser fine-tunes register there; load them too
    names = generator_names()
    wanted = [n for n in (cfg.base, cfg.compare) if n]
    for name in wanted:
        if name not in names:
            raise UserError(f"checkpoint {name!r} is not a registered generator; registered: "
                            f"{', '.join(names) or 'none'}")
    if not names:
        raise UserError("no generator checkpoint is registered; demo_checkpoints/base is missing")
    generators, notes = {}, []
    base = load_base(cfg.base, device, text_encoder=text_encoder)
    generators[cfg.base] = base
    for name in names:
        if name in generators:
            continue
        try:
            generators[name] = load_base(name, device, text_encoder=text_encoder)
        except UserError as e:  # one broken user checkpoint must not take the demo down
            notes.append(f"Checkpoint {name!r} was skipped: {e}")
            log.warning("skipping checkpoint %s: %s", name, e)
    right = cfg.compare or (EASYTUNE_DEMO if EASYTUNE_DEMO in generators else cfg.base)
    if right not in generators:
        raise UserError(f"checkpoint {right!r} could not be loaded; see the messages above")
    reward = RewardScorer(load_reward_model(cfg.reward, device)[0], text_encoder)
    evaluator = Embedder(load_evaluator(cfg.evaluator, device)[0], text_encoder)
    data_dir = Path(cfg.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    captions_file = Path(cfg.captions) if cfg.captions else CAPTIONS_FILE
    captions = CaptionIndex(read_captions(captions_file), text_encoder, cache_dir=data_dir)
    res = Resources(cfg=cfg, generators=generators, reward=reward, evaluator=evaluator, captions=captions,
                    cache=ResultCache(cfg.cache_entries), data_dir=data_dir, left=cfg.base, right=right,
                    notes=notes, text_encoder=text_encoder, device=device)
    if not cfg.public:
        start_jobs(res)
    if cfg.warm:
        warm_up(res)
    res.load_seconds = time.perf_counter() - start
    return res


def start_jobs(res: Resources) -> None:
    """The fine-tune queue (SQLite in the data folder) and its runner thread; a finished job's checkpoint
    joins the generators, a pruned one leaves them."""
    from app.jobs import JobRunner, JobStore

    res.jobs = JobStore(res.data_dir / "jobs.sqlite")
    res.runner = JobRunner(res.jobs, res.data_dir, res.cfg.jobs, on_registered=res.add_generator,
                           on_pruned=res.remove_generator).start()


def warm_up(res: Resources) -> None:
    """One short request through every model and the body fit, outside the cache: the first click then
    pays no lazy initialisation (allocator, kernels, the body model's arrays)."""
    from easytune import body as body_lib
    from easytune.generate import generate

    prompt = "a person walks forward"
    for name in dict.fromkeys([res.left, res.right]):
        g = generate(res.bundle(name), prompt, 2.0, seed=0, steps=2, keep_steps=True)
    res.reward.score(torch.from_numpy(g.normalized), [prompt])
    res.evaluator.motions([g.normalized[0]])
    res.evaluator.texts([prompt])
    res.captions.warnings(prompt)
    body_lib.fit_body(g.joints[0], body_lib.load_body(lite=True))
    body_lib.load_body(lite=False)
    res.render_pool.submit(_warm_renderer, g.joints[0], res.data_dir, res.limits.render_size).result()


def _warm_renderer(joints: np.ndarray, data_dir: Path, size: int) -> None:
    from easytune import render as R

    out = data_dir / "warm_up.mp4"
    R.render_video(R.body_motions([joints, joints], ["a", "b"]), out, R.RenderConfig(size=size))
    out.unlink(missing_ok=True)


def normalize_for(res: Resources, features: np.ndarray) -> np.ndarray:
    """Denormalized (T, 263) features -> the normalized features the reward and evaluator read."""
    base = res.bundle(res.left)
    mean, std = base.mean.float().cpu().numpy(), base.std.float().cpu().numpy()
    return ((np.asarray(features, np.float32) - mean) / std).astype(np.float32)

