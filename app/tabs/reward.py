"""Reward tab: score prompts against motions with the reward model and the evaluator, and rank them.

Motions are uploaded files (.npy joints (frames, 22, 3) or HumanML3D features (frames, 263), .bvh;
read by easytune.inputs.load_motion_file, size-limited, no pickles) and/or motions generated here
for the first prompt. Every (motion, prompt) pair gets a row; rows are ranked by reward."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from easytune.errors import UserError

MIN_FRAMES = 10  # 0.5 s: the evaluator and the jerk need a few frames; shorter is not a motion
HEADERS = ["rank", "motion", "prompt", "reward (higher = better)", "text distance (lower = better)",
           "foot skating", "jerk (m/s^3)"]


@dataclass
class Candidate:
    label: str
    joints: np.ndarray  # (T, 22, 3)
    normalized: np.ndarray  # (T', 263)


def parse_prompts(text, limit: int) -> list[str]:
    from easytune.generate import check_prompts

    if not isinstance(text, str) or not text.strip():
        raise UserError("give at least one prompt (one per line)")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > limit:
        raise UserError(f"{len(lines)} prompts given; at most {limit} are ranked at once")
    return check_prompts(lines)


def _paths(files) -> list[str]:
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    out = []
    for f in items:
        path = f if isinstance(f, str) else getattr(f, "name", None) or (f.get("path") if isinstance(f, dict) else None)
        if not path:
            raise UserError("an upload could not be read; upload .npy or .bvh files")
        out.append(str(path))
    return out


BVH_UNITS = {"centimetres": 0.01, "metres": 1.0}  # Bandai/Mixamo files are in cm; our exports and Blender's in m


def load_uploads(res, files, bvh_units: str = "centimetres") -> list[Candidate]:
    from app.resources import normalize_for
    from easytune.inputs import load_motion_file
    from easytune.motion.features import extract_features
    from easytune.motion.skeleton import FPS

    lim = res.limits
    if bvh_units not in BVH_UNITS:
        raise UserError(f"BVH units must be one of {', '.join(BVH_UNITS)}, got {bvh_units!r}")
    out = []
    for path in _paths(files):
        name = Path(path).name  # shown only; the file is the upload's own temporary copy
        try:
            mf = load_motion_file(path, max_bytes=int(lim.max_upload_mb * 2**20), min_frames=MIN_FRAMES,
                                  max_frames=round(lim.max_seconds * FPS) + 1, bvh_scale=BVH_UNITS[bvh_units])
        except UserError as e:  # name the upload, not the server's temporary path
            message = str(e).replace(path, name).rstrip(".")
            if name.lower().endswith(".bvh") and "within 10 cm" in message and bvh_units == "centimetres":
                message += "; if the file is in metres (as this playground's exports), choose BVH units: metres"
            raise UserError(message) from None
        feats = mf.features if mf.features is not None else extract_features(mf.joints)
        out.append(Candidate(f"{name} ({mf.kind})", mf.joints, normalize_for(res, feats)))
    return out


def generated(res, names, prompt: str, seconds: float, seed: int) -> list[Candidate]:
    from easytune.generate import generate

    out = []
    for name in names or []:
        g = generate(res.bundle(name), prompt, seconds, seed=seed)
        n = int(g.lengths[0])
        out.append(Candidate(f"{name} (generated, seed {seed})", g.joints[0, :n], g.normalized[0, :n]))
    return out


def rank(res, candidates: list[Candidate], prompts: list[str]) -> list[list]:
    """Rows of HEADERS for every (motion, prompt) pair, best reward first."""
    from app.scoring import score_pairs

    pairs = [(c, p) for c in candidates for p in prompts]
    scores = score_pairs(res, [c.normalized for c, _ in pairs], [c.joints for c, _ in pairs], [p for _, p in pairs])
    rows = sorted(zip(pairs, scores), key=lambda item: -item[1].reward)
    return [[i + 1, c.label, p, round(s.reward, 4), round(s.text_distance, 3), round(s.foot_skating, 3),
             round(s.jerk, 1)] for i, ((c, p), s) in enumerate(rows)]


def summary(rows: list[list], n_motions: int, n_prompts: int) -> str:
    if n_motions > 1 and n_prompts == 1:
        return f"Best motion for this prompt by the reward model: **{rows[0][1]}**."
    if n_prompts > 1 and n_motions == 1:
        return f"Prompt this motion matches best by the reward model: **{rows[0][2]}**."
    return f"Best pair by the reward model: **{rows[0][1]}** with **{rows[0][2]}**."


def score(res, prompts_text, files, bvh_units, names, seconds, seed) -> tuple[str, list[list]]:
    from app.tabs.compare import MAX_SEED
    from app.ui import check_number
    from easytune.generate import MIN_SECONDS

    lim = res.limits
    prompts = parse_prompts(prompts_text, lim.max_candidates)
    names = list(names or [])
    for name in names:
        res.bundle(name)
    seconds = check_number(seconds, "length (seconds)", MIN_SECONDS, lim.max_seconds)
    seed = check_number(seed, "seed", 0, MAX_SEED, integer=True)
    candidates = load_uploads(res, files, bvh_units)
    if len(candidates) + len(names) > lim.max_candidates:
        raise UserError(f"{len(candidates) + len(names)} motions given; at most {lim.max_candidates} are ranked at once")
    candidates += generated(res, names, prompts[0], seconds, seed)
    if not candidates:
        raise UserError("no motion to score: upload a .npy or .bvh file, or tick a checkpoint to generate one")
    rows = rank(res, candidates, prompts)
    return summary(rows, len(candidates), len(prompts)), rows


def build(res) -> None:
    import gradio as gr

    from app.ui import guarded
    from easytune.generate import MIN_SECONDS

    lim = res.limits
    gr.Markdown("Score prompts against motions. The **reward** is the reward model's (what EasyTune optimizes); "
                "the **text distance** is the independent evaluator's (never trained on), so a motion that "
                "games the reward shows up there.")
    with gr.Row():
        with gr.Column():
            prompts = gr.Textbox(label=f"Prompts, one per line (at most {lim.max_candidates})", lines=3,
                                 value="a person raises the right hand and waves\na person walks forward")
            files = gr.File(label=f"Motion files (.npy joints or features, .bvh; at most {lim.max_upload_mb:g} MB each)",
                            file_count="multiple", file_types=[".npy", ".bvh"], type="filepath")
            bvh_units = gr.Radio(list(BVH_UNITS), value="centimetres", label="BVH units")
        with gr.Column():
            names = gr.CheckboxGroup(res.names, value=[res.right], label="Also generate a motion for the first "
                                     "prompt from")
            with gr.Row():
                seconds = gr.Slider(MIN_SECONDS, lim.max_seconds, value=min(4.0, lim.max_seconds), step=0.5,
                                    label="Length (s)")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            go = gr.Button("Score and rank", variant="primary")
    verdict = gr.Markdown()
    table = gr.Dataframe(headers=HEADERS, label="Ranked by reward", interactive=False)
    go.click(guarded(lambda *a: score(res, *a)), [prompts, files, bvh_units, names, seconds, seed], [verdict, table],
             api_name="score")
