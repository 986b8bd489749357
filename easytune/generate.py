"""Text-to-motion generation: `load_base(checkpoint) -> BaseBundle`, then `generate(bundle, prompts, ...)`.

`generate` is a plain function with no global state: the bundle is read-only (a fresh scheduler is
built per call; the text encoder's prompt cache is locked), so the playground may call it from
several worker threads at once. A fine-tuned model reuses a base bundle with another denoiser:
`dataclasses.replace(bundle, denoiser=finetuned)`.

    python -m easytune sample --checkpoint runs/base/last --prompt "a person walks forward" \
        --seconds 4 --seed 0 --steps 50 --guidance 2.5 --num 3 --out samples/
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from easytune.checkpoints import Checkpoint, check_dataset, load_checkpoint, load_weights
from easytune.config import apply_overrides
from easytune.diffusion import (DDIMScheduler, DiffusionConfig, TextCondition, check_guidance, initial_noise,
                                sample_loop)
from easytune.errors import UserError
from easytune.motion.features import FEATURE_DIM, denormalize, recover_from_ric
from easytune.motion.skeleton import FPS
from models.denoiser import DenoiserConfig, MotionDenoiser

MIN_SECONDS, MAX_SECONDS = 1.0, 9.8  # 20..196 frames, HumanML3D's range
MAX_PROMPT_CHARS = 300
MAX_STEPS = 1000
MAX_NUM = 32


@dataclass(frozen=True)
class BaseBundle:
    """A loaded base model: everything `generate` needs, treated as read-only."""

    denoiser: MotionDenoiser
    text_encoder: Any  # models.text_encoder.TextEncoder (shared, frozen)
    diffusion: DiffusionConfig
    mean: torch.Tensor  # (263,) dataset feature mean, for denormalising
    std: torch.Tensor  # (263,)
    steps: int  # default DDIM steps, from the checkpoint's `sampling`
    guidance: float  # default guidance scale
    eta: float
    device: torch.device
    path: Path
    dataset: dict[str, Any]


@dataclass
class Generation:
    """Output of `generate`, one row per prompt. features: (N, T, 263) denormalized HumanML3D features;
    joints: (N, T, 22, 3) metres, y-up, 20 fps; lengths: (N,) valid frames (rows past it are padding)."""

    prompts: list[str]
    features: np.ndarray
    joints: np.ndarray
    lengths: np.ndarray
    fps: int = FPS


def load_base(checkpoint: str | Path, device: str | torch.device = "cpu", *, text_encoder: Any = None,
              dataset_stamp: str | None = None) -> BaseBundle:
    """Load a base checkpoint (path or registry name; a run dir means its last/ checkpoint)."""
    path = Path(checkpoint)
    if (path / "last" / "config.json").is_file() and not (path / "config.json").is_file():
        path = path / "last"
    ckpt: Checkpoint = load_checkpoint(path, kind="base")
    check_dataset(ckpt, dataset_stamp)
    try:
        model_cfg = apply_overrides(DenoiserConfig(), ckpt.config["model"])
        diff_cfg = apply_overrides(DiffusionConfig(), ckpt.config["diffusion"])
        sampling = ckpt.config["sampling"]
    except KeyError as e:
        raise UserError(f"checkpoint {ckpt.path} is missing config entry {e}; is it a base-model checkpoint?") from None
    device = torch.device(device)
    denoiser = MotionDenoiser(model_cfg)
    load_weights(denoiser, ckpt.state, source=f"checkpoint {ckpt.path}", prefix="denoiser.")
    denoiser.to(device).eval().requires_grad_(False)
    for key in ("mean", "std"):
        if key not in ckpt.state or tuple(ckpt.state[key].shape) != (FEATURE_DIM,):
            raise UserError(f"checkpoint {ckpt.path} lacks the dataset's {key} as a ({FEATURE_DIM},) tensor")
    if text_encoder is None:
        from easytune.text import load_text_encoder

        text_encoder = load_text_encoder(device)
    return BaseBundle(denoiser=denoiser, text_encoder=text_encoder, diffusion=diff_cfg,
                      mean=ckpt.state["mean"].to(device), std=ckpt.state["std"].to(device),
                      steps=int(sampling["steps"]), guidance=float(sampling["guidance"]),
                      eta=float(sampling.get("eta", 0.0)), device=device, path=ckpt.path, dataset=ckpt.dataset)


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise UserError("no prompt given; give at least one text prompt")
    out = []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise UserError("the prompt is empty; describe the motion in words (1 to 300 characters)")
        if len(p.strip()) > MAX_PROMPT_CHARS:
            raise UserError(f"the prompt has {len(p.strip())} characters; the limit is {MAX_PROMPT_CHARS}")
        out.append(" ".join(p.split()))
    return out


def seconds_to_frames(seconds: float | Sequence[float], n: int) -> list[int]:
    values = [seconds] * n if isinstance(seconds, (int, float)) else list(seconds)
    if len(values) != n:
        raise UserError(f"got {len(values)} lengths for {n} prompts; give one length or one per prompt")
    frames = []
    for s in values:
        s = float(s)
        if not (MIN_SECONDS <= s <= MAX_SECONDS):
            raise UserError(f"length must be between {MIN_SECONDS} and {MAX_SECONDS} seconds, got {s}")
        frames.append(int(round(s * FPS)))
    return frames


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or not 1 <= int(steps) <= MAX_STEPS:
        raise UserError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps}")
    return int(steps)


def generate(bundle: BaseBundle, prompts: str | Sequence[str], seconds: float | Sequence[float] = 4.0,
             seed: int = 0, steps: int | None = None, guidance: float | None = None, *,
             eta: float | None = None) -> Generation:
    """Sample one motion per prompt; steps/guidance/eta default to the checkpoint's schedule.

    Sample i starts from noise seeded with seed + i, so a prompt's motion does not depend on what
    else is in the batch (with eta = 0).
    """
    prompts = check_prompts(prompts)
    frames = seconds_to_frames(seconds, len(prompts))
    steps = check_steps(bundle.steps if steps is None else steps)
    guidance = check_guidance(bundle.guidance if guidance is None else guidance)
    eta = bundle.eta if eta is None else float(eta)
    device, N, T = bundle.device, len(prompts), max(frames)
    with torch.inference_mode():
        tokens, tmask = bundle.text_encoder.encode_tokens(prompts)
        cond = TextCondition(tokens.to(device), tmask.to(device))
        lengths = torch.tensor(frames, device=device)
        mask = torch.arange(T, device=device)[None] < lengths[:, None]
        x_T = torch.cat([initial_noise((1, T, FEATURE_DIM), torch.Generator().manual_seed(seed + i), device)
                         for i in range(N)])
        scheduler = DDIMScheduler(bundle.diffusion)  # per call: set_timesteps mutates it
        x0 = sample_loop(bundle.denoiser, scheduler, cond, (N, T, FEATURE_DIM), guidance, steps=steps, eta=eta,
                         motion_mask=mask, x_T=x_T, generator=torch.Generator().manual_seed(seed))
        feats = denormalize(x0.float(), bundle.mean.float(), bundle.std.float())
        joints = recover_from_ric(feats)
        feats = feats * mask[..., None]
        joints = joints * mask[..., None, None]
    return Generation(prompts=prompts, features=feats.cpu().numpy(), joints=joints.cpu().numpy(),
                      lengths=np.asarray(frames))


# --- `python -m easytune sample` -------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="base checkpoint folder, run dir or registry name")
    parser.add_argument("--prompt", required=True, action="append",
                        help="text prompt (repeat the flag for several prompts)")
    parser.add_argument("--seconds", type=float, default=4.0, help=f"motion length, {MIN_SECONDS} to {MAX_SECONDS}")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; sample i of a run uses seed + i")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta, 0 = deterministic (default: checkpoint's)")
    parser.add_argument("--num", type=int, default=1, help=f"samples per prompt, 1 to {MAX_NUM}")
    parser.add_argument("--out", type=Path, default=Path("samples"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-video", dest="video", action="store_false", help="skip the MP4 previews")


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def run(args: argparse.Namespace) -> int:
    from easytune.fileio import save_npy, write_json
    from easytune.train_base import pick_device

    if not 1 <= args.num <= MAX_NUM:
        raise UserError(f"--num must be from 1 to {MAX_NUM}, got {args.num}")
    prompts = check_prompts(args.prompt)
    seconds_to_frames(args.seconds, 1)
    if args.steps is not None:
        check_steps(args.steps)
    if args.guidance is not None:
        check_guidance(args.guidance)
    bundle = load_base(args.checkpoint, pick_device(args.device))
    batch = [p for p in prompts for _ in range(args.num)]
    out = generate(bundle, batch, args.seconds, args.seed, args.steps, args.guidance, eta=args.eta)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, prompt in enumerate(out.prompts):
        name = f"{i:02d}_{_slug(prompt)}"
        n = int(out.lengths[i])
        save_npy(args.out / f"{name}_joints.npy", out.joints[i, :n].astype(np.float32))
        save_npy(args.out / f"{name}_features.npy", out.features[i, :n].astype(np.float32))
        rec = {"prompt": prompt, "seed": args.seed + i, "frames": n, "joints": f"{name}_joints.npy",
               "features": f"{name}_features.npy"}
        if args.video:
            from easytune.preview import stick_figure_video

            stick_figure_video(out.joints[i, :n], args.out / f"{name}.mp4", fps=out.fps, title=prompt)
            rec["video"] = f"{name}.mp4"
        records.append(rec)
        print(f"{prompt!r} -> {args.out / name}_*")
    write_json(args.out / "samples.json", {
        "checkpoint": str(bundle.path), "steps": args.steps or bundle.steps,
        "guidance": bundle.guidance if args.guidance is None else args.guidance, "samples": records})
    return 0
