"""Compare tab: one prompt, two checkpoints, the same seed and starting noise.

Two events per click, both with the same public inputs so the API can call either:
  /compare        motions, scores and the per-step reward plot (and the animated GLBs), fast;
  /compare_video  the side-by-side body-mesh video and the downloads, from the same cached result.
Identical requests are served from the bounded cache (app.cache.ResultCache)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from easytune.errors import UserError

DATASET_EXAMPLES = ["a person raises the right hand and waves", "the young person walks forward and turns to the right",
                    "an old figure walks forward like an elderly person"]
COMPOSITIONAL_EXAMPLES = ["an elderly person waves with both arms", "a happy person walks backwards",
                          "a tired person kicks with the left leg"]  # content/style pairs the data never shows
DEFAULT_SECONDS = 6.0
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class CompareRequest:
    prompt: str
    seconds: float
    seed: int
    guidance: float
    steps: int
    left: str
    right: str

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


def check_request(res, prompt, seconds, seed, guidance, steps, left, right) -> CompareRequest:
    """Every input checked against the app's limits; a UserError names the first bad one."""
    from app.ui import check_number
    from easytune.diffusion import MAX_GUIDANCE, MIN_GUIDANCE
    from easytune.generate import MIN_SECONDS, check_prompts

    if not isinstance(prompt, str):
        raise UserError("the prompt must be text")
    prompt = check_prompts(prompt)[0]
    lim = res.limits
    seconds = check_number(seconds, "length (seconds)", MIN_SECONDS, lim.max_seconds)
    seed = check_number(seed, "seed", 0, MAX_SEED, integer=True)  # the page sends floats: stay exact
    guidance = check_number(guidance, "guidance", MIN_GUIDANCE, MAX_GUIDANCE)
    steps = check_number(steps, "sampling steps", 1, lim.max_steps, integer=True)
    for side, name in (("left", left), ("right", right)):
        if name not in res.generators:
            raise UserError(f"the {side} checkpoint {name!r} is not available; choose one of "
                            f"{', '.join(res.generators)}")
    return CompareRequest(prompt, round(seconds, 2), seed, round(guidance, 3), steps, left, right)


@dataclass
class Side:
    name: str
    label: str
    joints: np.ndarray  # (T, 22, 3), valid frames only
    normalized: np.ndarray  # (T, 263)
    score: object  # app.scoring.Score
    steps: list[float]  # reward of each step's x0 prediction, noisiest first


@dataclass
class CompareResult:
    request: CompareRequest
    folder: Path
    sides: list[Side]
    warnings: list[str]
    glbs: list[Path] = field(default_factory=list)
    video: Path | None = None
    files: list[Path] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "model"


def make_result(res, req: CompareRequest) -> CompareResult:
    """Generate both motions from the same seed (same starting noise), score them and each step's x0."""
    from app.scoring import score_pairs, step_rewards
    from easytune.export import export_motion
    from easytune.generate import generate

    sides = []
    labels = [req.left, req.right] if req.left != req.right else [f"{req.left} (left)", f"{req.right} (right)"]
    for name, label in zip((req.left, req.right), labels):
        g = generate(res.bundle(name), req.prompt, req.seconds, seed=req.seed, steps=req.steps,
                     guidance=req.guidance, keep_steps=True)
        n = int(g.lengths[0])
        sides.append(Side(name, label, g.joints[0, :n], g.normalized[0, :n], None,
                          step_rewards(res, g.step_x0[:, 0], n, req.prompt)))
    scores = score_pairs(res, [s.normalized for s in sides], [s.joints for s in sides], [req.prompt] * 2)
    for s, sc in zip(sides, scores):
        s.score = sc
    folder = res.results_dir() / req.key()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    result = CompareResult(req, folder, sides, res.captions.warnings(req.prompt))
    body = _glb_body()
    result.glbs = [export_motion(s.joints, folder / f"{side}_{_safe(s.name)}.glb", body=body)
                   for side, s in zip(("left", "right"), sides)]
    return result


def _glb_body():
    from easytune import body as body_lib

    return body_lib.load_body(lite=True)


def get_result(res, req: CompareRequest) -> CompareResult:
    return res.cache.get_or_make(("compare", req.key()), lambda: make_result(res, req))


def finish(res, result: CompareResult) -> tuple[Path, list[Path]]:
    """The side-by-side MP4 and the downloads (BVH, SMPL npz, joints npy per side), made once: the
    video in the render thread while this thread writes the files."""
    from easytune import body as body_lib
    from easytune import render as R
    from easytune.export import export_motion

    with result.lock:
        if result.video is None:
            folder, sides = result.folder, result.sides
            motions = R.body_motions([s.joints for s in sides], [s.label for s in sides])
            video = res.render_pool.submit(R.render_video, motions, folder / "side_by_side.mp4",
                                           R.RenderConfig(size=res.limits.render_size))
            body = body_lib.load_body(lite=False)
            files = []
            for side, s in zip(("left", "right"), sides):
                stem = folder / f"{side}_{_safe(s.name)}"
                files += [export_motion(s.joints, stem.with_suffix(".bvh"), body=body),
                          export_motion(s.joints, stem.with_suffix(".npz"), body=body),
                          export_motion(s.joints, stem.with_suffix(".npy"))]
            result.video = video.result()
            result.files = [result.video] + files + result.glbs
    return result.video, result.files


# --- what the page shows --------------------------------------------------------------------------

SCORE_HEADERS = ["side", "checkpoint", "reward (reward model, higher = better)",
                 "text distance (evaluator, lower = better)", "foot skating", "jerk (m/s^3)"]


def score_table(result: CompareResult) -> list[list]:
    return [[side, s.name, round(s.score.reward, 4), round(s.score.text_distance, 3),
             round(s.score.foot_skating, 3), round(s.score.jerk, 1)]
            for side, s in zip(("left", "right"), result.sides)]


def step_frame(result: CompareResult):
    import pandas as pd

    rows = [{"step": i + 1, "reward of x0": round(r, 4), "model": s.label}
            for s in result.sides for i, r in enumerate(s.steps)]
    return pd.DataFrame(rows)


def notes_markdown(result: CompareResult) -> str:
    from app.scoring import REAL_JERK, REAL_MM_DIST, REAL_SKATE

    lines = [f"**{result.request.prompt}**: {result.request.seconds:g} s, seed {result.request.seed}, "
             f"{result.request.steps} steps, guidance {result.request.guidance:g}; both models start from the "
             f"same noise."]
    lines += [f"> {w}" for w in result.warnings]
    lines.append(f"Real test motions average a text distance of {REAL_MM_DIST}, foot skating {REAL_SKATE} and "
                 f"jerk {REAL_JERK}: a higher reward with a worse text distance or more skating is reward hacking.")
    return "\n\n".join(lines)


def build(res) -> None:
    """The tab's components and events (inside a gr.Blocks / gr.Tab context)."""
    import random

    import gradio as gr

    from app.ui import guarded
    from easytune.diffusion import MAX_GUIDANCE, MIN_GUIDANCE
    from easytune.generate import MIN_SECONDS

    lim = res.limits
    left_default = res.bundle(res.left)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DATASET_EXAMPLES[0], max_lines=2, max_length=300,
                                placeholder="describe a motion, e.g. 'a person waves the left hand'")
            gr.Examples([[p] for p in DATASET_EXAMPLES + COMPOSITIONAL_EXAMPLES], inputs=[prompt],
                        label="Examples: dataset captions, then content/style pairs the data never shows")
        with gr.Column(scale=2):
            with gr.Row():
                left = gr.Dropdown(res.names, value=res.left, label="Left checkpoint", allow_custom_value=True)
                right = gr.Dropdown(res.names, value=res.right, label="Right checkpoint", allow_custom_value=True)
            with gr.Row():
                seconds = gr.Slider(MIN_SECONDS, lim.max_seconds, value=min(DEFAULT_SECONDS, lim.max_seconds),
                                    step=0.5, label="Length (s)")
                steps = gr.Slider(1, lim.max_steps, value=min(left_default.steps, lim.max_steps), step=1,
                                  label="Sampling steps")
            with gr.Row():
                guidance = gr.Slider(MIN_GUIDANCE, min(MAX_GUIDANCE, 10.0), value=left_default.guidance, step=0.1,
                                     label="Guidance")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                dice = gr.Button("Random seed", size="sm")
            go = gr.Button("Generate both", variant="primary")
    notes = gr.Markdown()
    with gr.Row():
        scores = gr.Dataframe(headers=SCORE_HEADERS, label="Scores", interactive=False)
    with gr.Row():
        video = gr.Video(label="Side by side (left | right)", autoplay=True, loop=True, interactive=False)
        plot = gr.LinePlot(x="step", y="reward of x0", color="model", label="Reward of each step's x0 prediction",
                           x_title="denoising step (noisiest first)", y_title="reward", height=300)
    with gr.Row():
        glb_left = gr.Model3D(label="Left (drag to turn)", interactive=False, height=320)
        glb_right = gr.Model3D(label="Right (drag to turn)", interactive=False, height=320)
    files = gr.File(label="Downloads: MP4, BVH, SMPL .npz, joints .npy, GLB", file_count="multiple",
                    interactive=False)

    inputs = [prompt, seconds, seed, guidance, steps, left, right]

    @guarded
    def compare(*args):
        result = get_result(res, check_request(res, *args))
        for w in result.warnings:
            gr.Warning(w)
        return (notes_markdown(result), score_table(result), step_frame(result),
                str(result.glbs[0]), str(result.glbs[1]))

    @guarded
    def compare_video(*args):
        result = get_result(res, check_request(res, *args))
        mp4, paths = finish(res, result)
        return str(mp4), [str(p) for p in paths]

    event = gr.on([go.click, prompt.submit], compare, inputs, [notes, scores, plot, glb_left, glb_right],
                  api_name="compare")
    event.success(compare_video, inputs, [video, files], api_name="compare_video")
    dice.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_name="random_seed", queue=False)
    # a browser fine-tune registered since the page loaded joins the lists (the server checks every name,
    # hence allow_custom_value: the choices a page was built with may be older than the registry)
    for box in (left, right):
        box.focus(lambda: gr.update(choices=res.names), None, box, api_name=False, queue=False)
