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
from easytune.diffusion import (DDIMScheduler, DiffusionConfig, Sampler, TextCondition, check_guidance,
                                check_steps, initial_noise)
from easytune.errors import UserError
from easytune.motion.features import FEATURE_DIM, denormalize, recover_from_ric
from easytune.motion.skeleton import FPS
from models.denoiser import DenoiserConfig, MotionDenoiser

MIN_SECONDS, MAX_SECONDS = 1.0, 9.8  # 20..196 frames, HumanML3D's range
MAX_PROMPT_CHARS = 300
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
    normalized: np.ndarray | None = None  # (N, T, 263) the sampler's output, as rewards read it
    step_x0: np.ndarray | None = None  # (steps, N, T, 263) each step's guided x0 prediction (keep_steps)
    timesteps: list[int] | None = None  # the schedule's training timesteps, noisiest first
    fps: int = FPS


GENERATOR_KINDS = ("base", "finetune", "lora")


def load_base(checkpoint: str | Path, device: str | torch.device = "cpu", *, text_encoder: Any = None,
              dataset_stamp: str | dict | None = None) -> BaseBundle:
    """Load a generator checkpoint (path or registry name; a run dir means its last/ checkpoint):
    a base model, a full fine-tune (same layout, kind "finetune") or a LoRA adapter (kind "lora",
    loaded on its recorded parent by registry name and merged into plain weights)."""
    path = Path(checkpoint)
    if (path / "last" / "config.json").is_file() and not (path / "config.json").is_file():
        path = path / "last"
    ckpt: Checkpoint = load_checkpoint(path)
    if ckpt.kind not in GENERATOR_KINDS:
        raise UserError(f"checkpoint {ckpt.path} holds a {ckpt.kind!r} model; motions come from a base, "
                        f"finetune or lora checkpoint")
    check_dataset(ckpt, dataset_stamp)
    if ckpt.kind == "lora":
        return _load_lora(ckpt, device, text_encoder, dataset_stamp)
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


def _load_lora(ckpt: Checkpoint, device: str | torch.device, text_encoder: Any,
               dataset_stamp: str | dict | None) -> BaseBundle:
    """A LoRA checkpoint: its parent (by registry name or path, hash-checked), plus the merged adapter."""
    import dataclasses

    from easytune.checkpoints import checkpoint_hash
    from easytune.finetune.lora import LoraSettings, add_lora, load_lora_state, merged

    parent = ckpt.meta.get("parent")
    if not parent:
        raise UserError(f"LoRA checkpoint {ckpt.path} does not name its parent base checkpoint")
    want = ckpt.meta.get("parent_hash")
    have = checkpoint_hash(parent)
    if want and have != want:
        raise UserError(f"LoRA checkpoint {ckpt.path} was trained on {parent!r} with weights {want}, but "
                        f"{parent!r} now has weights {have}; the adapter would not mean the same thing")
    base = load_base(parent, device, text_encoder=text_encoder, dataset_stamp=dataset_stamp)
    settings = LoraSettings(**{**ckpt.config["lora"], "targets": tuple(ckpt.config["lora"]["targets"])})
    model = add_lora(_trainable_copy(base.denoiser), settings)
    state = {k[len("denoiser."):]: v for k, v in ckpt.state.items() if k.startswith("denoiser.")}
    load_lora_state(model, state, source=f"LoRA checkpoint {ckpt.path}")
    denoiser = merged(model).to(base.device).eval().requires_grad_(False)
    sampling = ckpt.config.get("sampling") or {}
    return dataclasses.replace(base, denoiser=denoiser, path=ckpt.path,
                               steps=int(sampling.get("steps", base.steps)),
                               guidance=float(sampling.get("guidance", base.guidance)),
                               eta=float(sampling.get("eta", base.eta)))


def _trainable_copy(denoiser: MotionDenoiser) -> MotionDenoiser:
    """A copy of a denoiser with dropout 0 (fine-tuning and adapters run in train mode, see
    easytune.finetune.lora), same weights."""
    import dataclasses

    cfg = dataclasses.replace(denoiser.cfg, dropout=0.0)
    copy = MotionDenoiser(cfg).to(next(denoiser.parameters()).device)
    copy.load_state_dict(denoiser.state_dict())
    return copy.train()


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
        if not any(ch.isalnum() for ch in p):
            raise UserError(f"the prompt {p.strip()[:40]!r} has no words (no letter or digit); describe the "
                            f"motion in words (1 to 300 characters)")
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


@dataclass
class Prepared:
    """A batch ready to denoise: the condition, frame mask, starting noise and the resolved schedule.
    cond: text tokens (B, L, C) + mask; mask: (B, T) bool, True = valid frame; x_T: (B, T, 263) noise;
    lengths: (B,) frames. Sample i starts from noise seeded with seed + i."""

    prompts: list[str]
    cond: TextCondition
    mask: torch.Tensor
    x_T: torch.Tensor
    lengths: list[int]
    steps: int
    guidance: float
    eta: float
    seed: int

    def sampler(self, denoiser: Any, diffusion: DiffusionConfig) -> Sampler:
        """A Sampler for this batch over `denoiser` (a fresh scheduler each time: set_timesteps mutates it)."""
        return Sampler(denoiser, DDIMScheduler(diffusion), self.cond, self.mask, guidance=self.guidance,
                       steps=self.steps, eta=self.eta, generator=torch.Generator().manual_seed(self.seed))


def prepare(bundle: BaseBundle, prompts: str | Sequence[str], seconds: float | Sequence[float] = 4.0,
            seed: int = 0, steps: int | None = None, guidance: float | None = None, *, eta: float | None = None,
            frames: Sequence[int] | None = None) -> Prepared:
    """Check the request and build condition, mask and starting noise; steps/guidance/eta default to the
    checkpoint's schedule. `frames` (one per prompt) overrides `seconds`."""
    prompts = check_prompts(prompts)
    if frames is None:
        frames = seconds_to_frames(seconds, len(prompts))
    else:
        frames = [int(n) for n in frames]
        lo, hi = round(MIN_SECONDS * FPS), round(MAX_SECONDS * FPS)
        if len(frames) != len(prompts) or not all(lo <= n <= hi for n in frames):
            raise UserError(f"give one length per prompt, each {lo} to {hi} frames")
    steps = check_steps(bundle.steps if steps is None else steps)
    guidance = check_guidance(bundle.guidance if guidance is None else guidance)
    eta = bundle.eta if eta is None else float(eta)
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"eta must be in [0, 1], got {eta}")
    seed = check_seed(seed)
    device, T = bundle.device, max(frames)
    with torch.no_grad():
        tokens, tmask = bundle.text_encoder.encode_tokens(prompts)
    cond = TextCondition(tokens.to(device), tmask.to(device))
    lengths = torch.tensor(frames, device=device)
    mask = torch.arange(T, device=device)[None] < lengths[:, None]
    x_T = torch.cat([initial_noise((1, T, FEATURE_DIM), torch.Generator().manual_seed(seed + i), device)
                     for i in range(len(prompts))])
    return Prepared(prompts=prompts, cond=cond, mask=mask, x_T=x_T, lengths=list(frames), steps=steps,
                    guidance=guidance, eta=eta, seed=seed)


MAX_SEED = 2**62  # seed + i must stay a valid 64-bit generator seed


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def to_motion(bundle: BaseBundle, x0: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Normalized (N, T, 263) -> (features denormalized, joints (N, T, 22, 3)), padding zeroed."""
    with torch.no_grad():
        feats = denormalize(x0.float(), bundle.mean.float(), bundle.std.float())
        joints = recover_from_ric(feats) * mask[..., None, None]
        feats = feats * mask[..., None]
    return feats.cpu().numpy(), joints.cpu().numpy()


def generate(bundle: BaseBundle, prompts: str | Sequence[str], seconds: float | Sequence[float] = 4.0,
             seed: int = 0, steps: int | None = None, guidance: float | None = None, *,
             eta: float | None = None, denoiser: Any = None, keep_steps: bool = False) -> Generation:
    """Sample one motion per prompt; steps/guidance/eta default to the checkpoint's schedule.

    Sample i starts from noise seeded with seed + i, so a prompt's motion does not depend on what
    else is in the batch (with eta = 0). `denoiser` replaces the bundle's (a fine-tune on the same base:
    same noise, same schedule). `keep_steps` keeps every step's guided x0 prediction (normalized) in
    `Generation.step_x0` with its timesteps: the step-aware view of a trajectory.
    """
    prep = prepare(bundle, prompts, seconds, seed, steps, guidance, eta=eta)
    sampler = prep.sampler(denoiser if denoiser is not None else bundle.denoiser, bundle.diffusion)
    x, step_x0 = prep.x_T, []
    for s in sampler.iterate(prep.x_T):
        x = s.out.prev_sample
        if keep_steps:
            step_x0.append(sampler.finish(s.out.pred_x0).cpu().numpy())
    x0 = sampler.finish(x)
    feats, joints = to_motion(bundle, x0, prep.mask)
    return Generation(prompts=prep.prompts, features=feats, joints=joints, lengths=np.asarray(prep.lengths),
                      normalized=x0.cpu().numpy(), step_x0=np.stack(step_x0) if keep_steps else None,
                      timesteps=list(sampler.timesteps))


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


SAMPLES_JSON = "samples.json"


def _previous_samples(out: Path) -> tuple[list[dict[str, Any]], int]:
    """What earlier runs left in `out`: the samples its samples.json lists ([] when there is none) and
    the first free file number. A second `sample` into the same --out adds to the listing (merge) and
    numbers its files after every numbered file already there, so nothing listed is dropped or
    overwritten; a samples.json that is not such a listing is refused, since rewriting it would lose it."""
    import json

    path = out / SAMPLES_JSON
    samples: list[dict[str, Any]] = []
    if path.is_file():
        try:
            listing = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"--out {out}: {path} is not a samples listing (not valid JSON: {e}); give another "
                            f"--out or move the file away (it is not overwritten).") from None
        samples = listing.get("samples") if isinstance(listing, dict) else None
        if not isinstance(samples, list) or not all(isinstance(r, dict) for r in samples):
            raise UserError(f"--out {out}: {path} is not a samples listing (no list of samples); give another "
                            f"--out or move the file away (it is not overwritten).")
    elif path.exists():
        raise UserError(f"--out {out}: {path} exists and is not a regular file.")
    names = [f.name for f in out.iterdir()] if out.is_dir() else []
    numbers = [int(m.group(1)) for name in names if (m := re.match(r"(\d+)_", name))]
    return samples, max(numbers, default=-1) + 1


def run(args: argparse.Namespace) -> int:
    from easytune.fileio import save_npy, write_json
    from easytune.device import pick_device
    from easytune.inputs import check_output_path

    if not 1 <= args.num <= MAX_NUM:
        raise UserError(f"--num must be from 1 to {MAX_NUM}, got {args.num}")
    prompts = check_prompts(args.prompt)
    seconds_to_frames(args.seconds, 1)
    if args.steps is not None:
        check_steps(args.steps)
    if args.guidance is not None:
        check_guidance(args.guidance)
    out_dir = check_output_path(args.out, kind="dir")
    previous, first = _previous_samples(out_dir)
    bundle = load_base(args.checkpoint, pick_device(args.device))
    batch = [p for p in prompts for _ in range(args.num)]
    out = generate(bundle, batch, args.seconds, args.seed, args.steps, args.guidance, eta=args.eta)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = args.steps or bundle.steps
    guidance = bundle.guidance if args.guidance is None else args.guidance
    records = []
    for i, prompt in enumerate(out.prompts):
        name = f"{first + i:02d}_{_slug(prompt)}"
        n = int(out.lengths[i])
        save_npy(out_dir / f"{name}_joints.npy", out.joints[i, :n].astype(np.float32))
        save_npy(out_dir / f"{name}_features.npy", out.features[i, :n].astype(np.float32))
        rec = {"prompt": prompt, "seed": args.seed + i, "frames": n, "joints": f"{name}_joints.npy",
               "features": f"{name}_features.npy", "checkpoint": str(bundle.path), "steps": steps,
               "guidance": guidance}
        if args.video:
            from easytune.preview import stick_figure_video

            stick_figure_video(out.joints[i, :n], out_dir / f"{name}.mp4", fps=out.fps, title=prompt)
            rec["video"] = f"{name}.mp4"
        records.append(rec)
        print(f"{prompt!r} -> {out_dir / name}_*")
    if previous:
        print(f"{out_dir / SAMPLES_JSON}: {len(previous)} earlier sample(s) kept, {len(records)} added")
    # checkpoint/steps/guidance at the top are the latest run's; each sample records its own
    write_json(out_dir / SAMPLES_JSON, {"checkpoint": str(bundle.path), "steps": steps, "guidance": guidance,
                                        "samples": previous + records})
    return 0
