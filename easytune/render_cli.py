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
from easytune.inputs import check_output_path, load_motion_file
from easytune.render import BODY_KINDS, VIDEO_SUFFIXES, RenderConfig, body_motions, render_video


def load_joints(path: str | Path) -> np.ndarray:
    """(T, 22, 3) float32 joint positions in metres from a user's motion file (.npy joints or
    features, or .bvh), checked by the one loader, `easytune.inputs.load_motion_file`."""
    return load_motion_file(path).joints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--joints", type=Path, required=True,
                        help="first motion: .npy joints (frames, 22, 3) in metres or features (frames, 263), or .bvh")
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
    out_path = check_output_path(args.out, suffixes=VIDEO_SUFFIXES)
    check_output_path(out_path.with_name(out_path.stem + ".render.json"), flag="--out (its .render.json)")
    paths = [args.joints] + ([args.joints2] if args.joints2 else [])
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels has {len(labels)} names for {len(paths)} motions; give one per motion")
    start = time.perf_counter()
    body = "none" if cfg.backend == "stick" else args.body  # stick figures need no IK or mesh
    motions = body_motions([load_joints(p) for p in paths], labels, body=body, gender=args.gender,
                           smpl_path=args.smpl_path, lite=not args.full_mesh)
    out = render_video(motions, out_path, cfg)
    frames = max(m.frames for m in motions)
    write_json(out.with_name(out.stem + ".render.json"),
               {"render": vars(cfg), "joints": [str(p) for p in paths], "labels": labels, "body": args.body,
                "gender": args.gender, "full_mesh": args.full_mesh})
    print(f"wrote {out} ({frames} frames, {len(motions)} bod{'y' if len(motions) == 1 else 'ies'}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
