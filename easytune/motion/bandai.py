"""From a BVH clip to HumanML3D-ready motion: retarget the Bandai Namco skeleton (or one already named
like SMPL) to the 22 SMPL joints, centimetres to metres, resample to 20 fps, cut into windows.

Joint map (Bandai -> SMPL, `_L` is the performer's own left): Hips -> pelvis, UpperLeg -> hip,
LowerLeg -> knee, Foot -> ankle, Toes -> foot, Spine -> spine1, Chest -> spine3, spine2 = midpoint
of Spine and Chest, Neck -> neck, Head -> head, Shoulder -> collar, UpperArm -> shoulder,
LowerArm -> elbow, Hand -> wrist. Both skeletons are y-up and right-handed with the performer's
left on +x when facing +z, so no axis flip is needed (tests/test_bvh.py checks it on real clips).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from easytune.errors import UserError
from easytune.motion.bvh import BVHMotion, forward_kinematics
from easytune.motion.skeleton import FPS, JOINT_NAMES

# SMPL joint -> accepted source names, first match wins. None = derived (spine2).
JOINT_ALIASES: dict[str, tuple[str, ...] | None] = {
    "pelvis": ("Hips",), "left_hip": ("UpperLeg_L",), "right_hip": ("UpperLeg_R",),
    "spine1": ("Spine",), "left_knee": ("LowerLeg_L",), "right_knee": ("LowerLeg_R",),
    "spine2": None, "left_ankle": ("Foot_L",), "right_ankle": ("Foot_R",), "spine3": ("Chest",),
    "left_foot": ("Toes_L",), "right_foot": ("Toes_R",), "neck": ("Neck",),
    "left_collar": ("Shoulder_L",), "right_collar": ("Shoulder_R",), "head": ("Head",),
    "left_shoulder": ("UpperArm_L",), "right_shoulder": ("UpperArm_R",),
    "left_elbow": ("LowerArm_L",), "right_elbow": ("LowerArm_R",),
    "left_wrist": ("Hand_L",), "right_wrist": ("Hand_R",),
}

CM_TO_M = 0.01  # Bandai BVH units are centimetres


def smpl_joint_indices(motion: BVHMotion) -> tuple[list[int], bool]:
    """Source joint index for each SMPL joint (spine2 gets -1 when derived) and whether spine2 is
    derived. A BVH may name joints the Bandai way or with the SMPL names themselves."""
    names = {n: i for i, n in enumerate(motion.names)}
    index, missing = [], []
    derived = False
    for smpl in JOINT_NAMES:
        aliases = JOINT_ALIASES[smpl]
        candidates = (smpl,) + (aliases or ())
        hit = next((names[c] for c in candidates if c in names), None)
        if hit is None and aliases is None:
            derived, hit = True, -1
        if hit is None:
            missing.append(f"{smpl} ({'/'.join(candidates)})")
        index.append(hit)
    if missing:
        raise UserError(f"{motion.source}: the skeleton lacks joints needed for SMPL: {', '.join(missing)}; "
                        f"its joints are {motion.names}. Name joints the Bandai way (Hips, UpperLeg_L, ...) "
                        f"or with SMPL names.")
    return index, derived


def to_smpl_joints(motion: BVHMotion, scale: float = CM_TO_M) -> np.ndarray:
    """BVH motion -> (T, 22, 3) SMPL joint positions in metres, at the file's frame rate."""
    pos = forward_kinematics(motion) * scale
    index, derived = smpl_joint_indices(motion)
    out = pos[:, [max(i, 0) for i in index]]
    if derived:
        s2 = JOINT_NAMES.index("spine2")
        out[:, s2] = 0.5 * (out[:, JOINT_NAMES.index("spine1")] + out[:, JOINT_NAMES.index("spine3")])
    return out


def resample(joints: np.ndarray, fps_in: float, fps_out: float = FPS) -> np.ndarray:
    """(T, ...) at fps_in -> (T', ...) at fps_out by linear interpolation over time; the clip keeps
    its duration: T' = floor((T - 1) * fps_out / fps_in) + 1 (30 -> 20 fps: 31 frames -> 21)."""
    T = joints.shape[0]
    n_out = int(np.floor((T - 1) * fps_out / fps_in + 1e-6)) + 1
    t = np.arange(n_out) * (fps_in / fps_out)
    lo = np.minimum(np.floor(t).astype(int), T - 1)
    hi = np.minimum(lo + 1, T - 1)
    w = (t - lo).reshape((-1,) + (1,) * (joints.ndim - 1))
    return joints[lo] * (1 - w) + joints[hi] * w


def windows(n_frames: int, size: int, hop: int) -> list[tuple[int, int]]:
    """[start, end) joint-frame windows: one if n_frames <= size, else windows of `size` every `hop`
    frames with the last one aligned to the clip's end (so the tail is never lost)."""
    if n_frames <= size:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - size + 1, hop))
    if starts[-1] != n_frames - size:
        starts.append(n_frames - size)
    return [(s, s + size) for s in starts]


# --- labels -----------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^(?:dataset-(?P<ds>\d+)_)?(?P<content>[a-z-]+)_(?P<style>[a-z-]+)_(?P<take>\d+)$")

# Synonymous style names across the two Bandai sets, merged so that SPL sees one label.
STYLE_SYNONYMS = {"masculinity": "masculine", "old": "elderly", "exhausted": "tired"}


@dataclass(frozen=True)
class ClipLabel:
    """(content, style) of a clip, parsed from its file name `[dataset-N_]content_style_take`."""

    content: str
    style: str
    take: str
    dataset: str  # "1", "2", or "" for other folders
    style_raw: str


def parse_label(file_name: str, meta: dict | None = None) -> ClipLabel:
    """Labels from the file name; a JSON `meta` with string "content"/"style" overrides them (the
    Bandai JSON holds indices into cfg/*.txt, which name the same labels as the file name)."""
    stem = file_name.rsplit("/", 1)[-1]
    stem = stem[:-4] if stem.lower().endswith(".bvh") else stem
    m = _NAME_RE.match(stem)
    content = style = None
    take, ds = "000", ""
    if m:
        content, style, take, ds = m["content"], m["style"], m["take"], m["ds"] or ""
    if meta and isinstance(meta.get("content"), str) and isinstance(meta.get("style"), str):
        content, style = meta["content"], meta["style"]
    if content is None or style is None:
        raise UserError(f"{file_name}: no labels; name the file content_style_take.bvh (e.g. walk_happy_001.bvh) "
                        f"or put a JSON beside it with string 'content' and 'style'.")
    return ClipLabel(content=content, style=STYLE_SYNONYMS.get(style, style), take=take, dataset=ds,
                     style_raw=style)
