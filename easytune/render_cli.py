"""`python -m easytune render`: joint-position files (.npy, (T, 22, 3)) to an MP4 or GIF of body meshes.

    python -m easytune render --joints base.npy --joints2 tuned.npy --labels base,easytune --out cmp.mp4
    python -m easytune render --joints a.npy --out a.gif --body capsule --size 320

The resolved settings are written next to the video as <name>.render.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from easytune.config import add_config_args, config_from_args
from easytune.errors import UserError
from easytune.fileio import write_json
from easytune.render import BODY_KINDS, RenderConfig, body_motions, render_video


def load_joints(path: str | Path) -> np.ndarray:
    """A (T, 22, 3) joint-position .npy file; UserError says what is wrong with any other file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"joint file {path} does not exist")
    try:
        joints = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable .npy array ({e})") from None
    if joints.ndim != 3 or joints.shape[1:] != (22, 3) or len(joints) == 0:
        raise UserError(f"{path} must hold joint positions of shape (frames, 22, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise UserError(f"{path} contains NaN or infinite joint positions")
    return joints.astype(np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--joints", type=Path, required=True,
                        help="first motion: .npy of shape (frames, 22, 3), metres")
    parser.add_argument("--joints2", type=Path, default=None, help="optional second motion, drawn side by side")
    parser.add_argument("--labels", default=None, help="comma-separated lane labels, e.g. base,easytune")
    parser.add_argument("--out", type=Path, required=True, help="video file: .mp4 (H.264) or .gif")
    parser.add_argument("--body", choices=BODY_KINDS, default="default",
                        help="body mesh: default (SMPL if configured, else Anny), anny, smpl, capsule, none (sticks)")
    parser.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral", help="body preset")
    parser.add_argument("--smpl-path", default=None, help="official SMPL .pkl or folder (else $EASYTUNE_SMPL_PATH)")
    parser.add_argument("--full-mesh", action="store_true", help="render the full body mesh, not the ~4k-vertex one")
    add_config_args(parser, RenderConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(RenderConfig, args)
    cfg.validate()
    paths = [args.joints] + ([args.joints2] if args.joints2 else [])
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels has {len(labels)} names for {len(paths)} motions; give one per motion")
    start = time.perf_counter()
    body = "none" if cfg.backend == "stick" else args.body  # stick figures need no IK or mesh
    motions = body_motions([load_joints(p) for p in paths], labels, body=body, gender=args.gender,
                           smpl_path=args.smpl_path, lite=not args.full_mesh)
    out = render_video(motions, args.out, cfg)
    frames = max(m.frames for m in motions)
    write_json(out.with_name(out.stem + ".render.json"),
               {"render": vars(cfg), "joints": [str(p) for p in paths], "labels": labels, "body": args.body,
                "gender": args.gender, "full_mesh": args.full_mesh})
    print(f"wrote {out} ({frames} frames, {len(motions)} bod{'y' if len(motions) == 1 else 'ies'}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
