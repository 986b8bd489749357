"""Make a study ready to rate: plan its pairs, generate every motion, render every pair's video.

Everything is done ahead of time so a rater never waits for a model. Motions are cached on disk
under media/motions/, keyed by (checkpoint hash, prompt, seed, seconds, steps, guidance): preparing
the same study again, or another study with overlapping pairs, reuses them. Each pair gets one
side-by-side video (media/<study>/pair_NNNN_<digest>.mp4) whose left lane is the motion the pair
records as `left`; the digest names what is in it, so a re-run never shows a stale video.

Pairs, planned with an RNG seeded by the config hash (the same config always gives the same pairs):
- normal: one per (prompt, seed): motion a from the first checkpoint, b from the second, same
  starting noise; the left side is drawn at random and recorded.
- repeat (attention check): an earlier normal pair again, sides swapped; a rater who prefers the
  other motion this time was not looking.
- mismatch (attention check): both motions from one checkpoint, one of them generated for a clearly
  different prompt (DECOY_PROMPTS, least word overlap); text alignment must pick the other one.
The checks alternate repeat, mismatch, repeat, ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from easytune.errors import UserError
from easytune.study import store
from easytune.study.config import StudyConfig, config_hash

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what is happening now)
Bundles = Callable[[str], Any]  # registry name -> easytune.generate.BaseBundle
InRenderThread = Callable[..., Any]  # (fn, *args) -> fn(*args), run in the thread that owns the GL context

MOTIONS = "motions"  # cache folder under the media root
RENDER_VERSION = 1  # bump when the video layout changes, so old videos are not reused
VIDEO_LABELS = ("Left", "Right")

# Full-body actions far from each other; a mismatch pair shows one made for the least similar.
DECOY_PROMPTS = (
    "a person does jumping jacks",
    "a person crawls forward on hands and knees",
    "a person sits down on the floor and stays seated",
    "a person does push-ups on the ground",
    "a person spins around in place with both arms out",
    "a person lies down flat on the ground",
    "a person kicks high with the right leg",
    "a person waves both arms above the head",
    "a person squats down and stands up again and again",
    "a person jogs in a small circle",
    "a person walks backwards slowly",
    "a person throws a ball overhand",
)
_STOP = {"a", "an", "the", "person", "man", "woman", "someone", "they", "he", "she", "with", "and", "his", "her",
         "their", "then", "is", "to", "in", "on", "of", "up", "down", "again", "both", "while", "at", "it", "for"}


# --- planning ------------------------------------------------------------------------------------

def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {re.sub(r"(ing|es|s)$", "", w) or w for w in words if w not in _STOP}


def decoy_prompt(prompt: str, rng: random.Random) -> str:
    """The decoy prompt sharing the fewest content words with `prompt` (ties drawn by `rng`)."""
    mine = _stems(prompt)

    def overlap(d: str) -> float:
        theirs = _stems(d)
        return len(mine & theirs) / max(1, len(mine | theirs))

    candidates = [d for d in DECOY_PROMPTS if d != prompt]
    best = min(overlap(d) for d in candidates)
    return rng.choice([d for d in candidates if overlap(d) == best])


def motion_key(recipe: dict[str, Any]) -> str:
    """Cache key of a motion: what determines it, never its checkpoint's (renameable) name."""
    what = {k: recipe[k] for k in ("checkpoint_hash", "prompt", "seed", "seconds", "steps", "guidance")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def _recipe(checkpoint: str, setting: dict[str, Any], prompt: str, seed: int, seconds: float) -> dict[str, Any]:
    recipe = {"checkpoint": checkpoint, "checkpoint_hash": setting["checkpoint_hash"], "prompt": prompt,
              "seed": seed, "seconds": seconds, "steps": setting["steps"], "guidance": setting["guidance"]}
    recipe["motion"] = f"{MOTIONS}/{motion_key(recipe)}.npz"
    return recipe


def plan_pairs(cfg: StudyConfig, settings: dict[str, dict[str, Any]]) -> list[store.Pair]:
    """Every pair of the study, without videos. settings: checkpoint name -> {checkpoint_hash, steps,
    guidance} (the sampler settings resolved for that checkpoint)."""
    rng = random.Random(int(config_hash(cfg)[:16], 16))
    first, second = cfg.checkpoints
    pairs: list[store.Pair] = []
    for prompt in cfg.prompts:
        for seed in cfg.seeds:
            pairs.append(store.Pair(index=len(pairs), kind="normal", prompt=prompt, seed=seed,
                                    a=_recipe(first, settings[first], prompt, seed, cfg.seconds),
                                    b=_recipe(second, settings[second], prompt, seed, cfg.seconds),
                                    left=rng.choice("ab")))
    normal = list(pairs)
    repeats = (cfg.attention_checks + 1) // 2
    originals = rng.sample(normal, repeats)
    mismatched = rng.sample(normal, cfg.attention_checks - repeats)
    for k in range(cfg.attention_checks):
        if k % 2 == 0:
            orig = originals[k // 2]
            pairs.append(store.Pair(index=len(pairs), kind="repeat", prompt=orig.prompt, seed=orig.seed, a=orig.a,
                                    b=orig.b, left=orig.right, original=orig.index))
        else:
            base = mismatched[k // 2]
            checkpoint = rng.choice(cfg.checkpoints)
            decoy = decoy_prompt(base.prompt, rng)
            pairs.append(store.Pair(
                index=len(pairs), kind="mismatch", prompt=base.prompt, seed=base.seed,
                a=_recipe(checkpoint, settings[checkpoint], base.prompt, base.seed, cfg.seconds),
                b=_recipe(checkpoint, settings[checkpoint], decoy, base.seed, cfg.seconds), left=rng.choice("ab")))
    return pairs


# --- motions ---------------------------------------------------------------------------------------

def loader(bundles: Bundles | None = None, device: str = "cpu") -> Bundles:
    """`bundles` as given (the playground passes its loaded models), else load_base with a cache."""
    if bundles is not None:
        return bundles
    from easytune.generate import load_base

    cache: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in cache:
            cache[name] = load_base(name, device)
        return cache[name]
    return load


def generate_motion(bundle: Any, prompt: str, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One motion from a recipe (seed, seconds, steps, guidance): normalized features (T, 263), as the
    reward model reads them, and joint positions (T, 22, 3) in metres."""
    from easytune.generate import generate

    out = generate(bundle, [prompt], float(spec["seconds"]), int(spec["seed"]), int(spec["steps"]),
                   float(spec["guidance"]))
    n = int(out.lengths[0])
    return out.normalized[0, :n].astype(np.float32), out.joints[0, :n].astype(np.float32)


def _check_hash(spec: dict[str, Any], what: str) -> None:
    from easytune.checkpoints import checkpoint_hash

    have = checkpoint_hash(spec["checkpoint"])
    if have != spec["checkpoint_hash"]:
        raise UserError(f"checkpoint {spec['checkpoint']!r} has weights {have}, but {what} was made with weights "
                        f"{spec['checkpoint_hash']}; the motion cannot be regenerated, so create a new study")


def regenerator(bundles: Bundles | None = None, device: str = "cpu") -> Callable[[str, dict[str, Any]], np.ndarray]:
    """An easytune.spl Regenerator for exported pairs: `regenerate(prompt, spec) -> (T, 263)` normalized
    features, after checking that the checkpoint still has the weights the vote was cast on.

        spl.main(cfg, regenerate=regenerator())"""
    load = loader(bundles, device)

    def regenerate(prompt: str, spec: dict[str, Any]) -> np.ndarray:
        _check_hash(spec, "the voted motion")
        return generate_motion(load(spec["checkpoint"]), prompt, spec)[0]
    return regenerate


def motion_path(media: Path, recipe: dict[str, Any]) -> Path:
    return Path(media) / recipe["motion"]


def load_motion(media: str | Path, recipe: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A prepared motion from the cache: (normalized features (T, 263), joints (T, 22, 3))."""
    path = motion_path(Path(media), recipe)
    if not path.is_file():
        raise UserError(f"motion file {path} is missing; prepare the study again to regenerate it")
    with np.load(path, allow_pickle=False) as z:
        return z["normalized"], z["joints"]


def _save_motion(path: Path, normalized: np.ndarray, joints: np.ndarray) -> None:
    from easytune.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, normalized=normalized, joints=joints)


# --- videos ----------------------------------------------------------------------------------------

def video_name(pair: store.Pair, size: int) -> str:
    left, right = pair.recipe(pair.left)["motion"], pair.recipe(pair.right)["motion"]
    digest = hashlib.sha256(f"{left}|{right}|{size}|{RENDER_VERSION}".encode()).hexdigest()[:10]
    return f"pair_{pair.index:04d}_{digest}.mp4"


def _render_unavailable() -> UserError:
    from easytune.render import GL_PACKAGES, RenderUnavailable

    return RenderUnavailable(f"the study's videos cannot be rendered because OpenGL offscreen rendering (EGL) is "
                             f"unavailable here; install the Debian packages {GL_PACKAGES}, or prepare the study "
                             f"without videos (--no-video, render=False)")


def _check_gl() -> None:
    from easytune.render import gl_unavailable_reason

    reason = gl_unavailable_reason()
    if reason is not None:
        log.warning("%s", reason)
        raise _render_unavailable()


def _render_pair(left: np.ndarray, right: np.ndarray, out: Path, size: int) -> Path:
    from easytune import render as R

    motions = R.body_motions([left, right], list(VIDEO_LABELS))
    try:
        return R.render_video(motions, out, R.RenderConfig(size=size, backend="mesh"))
    except R.RenderUnavailable:
        raise _render_unavailable() from None


# --- the whole preparation -------------------------------------------------------------------------

def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def prepare_study(cfg: StudyConfig, db: str | Path, media: str | Path, *, render: bool = True,
                  bundles: Bundles | None = None, device: str = "cpu", render_size: int = 320,
                  progress: Progress | None = None, in_render_thread: InRenderThread | None = None) -> store.Study:
    """Create (or complete) a study: every motion generated and, with `render`, every pair's video
    rendered, then the study and its pairs stored. Idempotent: the same config again only fills in
    what is missing (e.g. videos for a study first prepared with render=False); another config under
    an existing name is refused before anything is generated.

    bundles: registry name -> loaded BaseBundle (default: easytune.generate.load_base on `device`).
    progress(done, total, what): after each motion and video. in_render_thread(fn, *args): runs the
    GL work where the app's renderer lives (default: this thread). Raises RenderUnavailable (a
    UserError, one sentence) when videos are asked for and EGL cannot start."""
    call = in_render_thread or _direct
    media = Path(media)
    existing = store.find_study(db, cfg.name)
    if existing is not None and existing.config_hash != config_hash(cfg):
        raise store.config_changed(cfg.name)
    if render:
        call(_check_gl)  # before minutes of generation, not after
    load = loader(bundles, device)
    if existing is not None:
        if existing.media != media.resolve():
            log.info("study %s keeps its media in %s", cfg.name, existing.media)
        media = existing.media
        pairs = store.get_pairs(db, cfg.name)
    else:
        settings = {}
        from easytune.checkpoints import checkpoint_hash

        for name in cfg.checkpoints:
            bundle = load(name)
            settings[name] = {"checkpoint_hash": checkpoint_hash(name),
                              "steps": bundle.steps if cfg.steps is None else cfg.steps,
                              "guidance": bundle.guidance if cfg.guidance is None else cfg.guidance}
        pairs = plan_pairs(cfg, settings)

    recipes = {r["motion"]: r for p in pairs for r in (p.a, p.b)}
    missing = [r for key, r in recipes.items() if not motion_path(media, r).is_file()]
    videos = {p.index: video_name(p, render_size) for p in pairs} if render else {}
    to_render = [p for p in pairs if render and not (media / cfg.name / videos[p.index]).is_file()]
    total, done = len(missing) + len(to_render), 0
    if progress:
        progress(0, total, f"study {cfg.name}: {len(missing)} motions to generate, {len(to_render)} videos to render")
    for r in missing:
        if existing is not None:  # a new study's hashes were read just now
            _check_hash(r, f"study {cfg.name!r}")
        normalized, joints = generate_motion(load(r["checkpoint"]), r["prompt"], r)
        _save_motion(motion_path(media, r), normalized, joints)
        done += 1
        if progress:
            progress(done, total, f"motion {done}/{len(missing)}: {r['checkpoint']}, seed {r['seed']}, "
                                  f"{r['prompt'][:50]!r}")
    for p in to_render:
        left, right = (load_motion(media, p.recipe(side))[1] for side in (p.left, p.right))
        call(_render_pair, left, right, media / cfg.name / videos[p.index], render_size)
        done += 1
        if progress:
            progress(done, total, f"video {done - len(missing)}/{len(to_render)}: pair {p.index} ({p.kind})")

    if existing is None:
        pairs = [dataclasses.replace(p, video=videos.get(p.index)) for p in pairs]
        return store.create_study(db, cfg, pairs, media)
    stale = {p.index: videos[p.index] for p in pairs if render and p.video != videos[p.index]}
    if stale:
        store.set_videos(db, cfg.name, stale)
    return existing


def pair_motions(study: store.Study, pair: store.Pair) -> dict[str, np.ndarray]:
    """The joints (T, 22, 3) shown on each side of a pair: {"left": ..., "right": ...}."""
    return {"left": load_motion(study.media, pair.recipe(pair.left))[1],
            "right": load_motion(study.media, pair.recipe(pair.right))[1]}


def prepare_from_file(path: str | Path, db: str | Path, media: str | Path, **kwargs: Any) -> store.Study:
    """`load_config(path)` then `prepare_study`: what `python -m easytune study create` does."""
    from easytune.study.config import load_config

    return prepare_study(load_config(path), db, media, **kwargs)

