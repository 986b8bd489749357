"""The SMPL 22-joint skeleton of HumanML3D and its kinematics (IK from positions, FK from rotations).

Coordinates are y-up metres; the body's left is +x and its front +z in the rest pose. Joint `i > 0`
hangs off `PARENTS[i]`; bone `i - 1` (of 21) runs from `PARENTS[i]` to joint `i`. Rotations are
(w, x, y, z) quaternions (see `easytune.motion.quaternion`).

The IK follows HumanML3D's convention, which the 263-d features encode, so it is kept as is:
- the rotation stored at joint `i` turns bone `i`'s rest direction `RAW_OFFSETS[i]`; it is local to
  the rotation of the bone before it in the same kinematic chain;
- each chain starts from the root's facing rotation, including the two arm chains, which start at
  spine3 (joint 9) but are NOT relative to the spine's rotation;
- the root's rotation is only a turn about the vertical, from the facing direction.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from easytune.motion.quaternion import qbetween, qinv, qmul, qrot

FPS = 20  # HumanML3D frame rate

JOINT_NAMES: list[str] = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
NUM_JOINTS = 22

# Chains walked by IK/FK, each starting at its root (0 or spine3).
KINEMATIC_CHAIN: list[list[int]] = [
    [0, 2, 5, 8, 11],       # right leg
    [0, 1, 4, 7, 10],       # left leg
    [0, 3, 6, 9, 12, 15],   # spine to head
    [9, 14, 17, 19, 21],    # right arm
    [9, 13, 16, 18, 20],    # left arm
]

PARENTS: list[int] = [-1] * NUM_JOINTS
for _chain in KINEMATIC_CHAIN:
    for _a, _b in zip(_chain[:-1], _chain[1:]):
        PARENTS[_b] = _a
del _chain, _a, _b

# Rest direction of each joint's incoming bone (unit axes): legs and arms hang down, feet and head
# point forward, hips and collars point sideways. Row 0 (root) is unused.
RAW_OFFSETS = np.array([
    [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0],
    [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1],
    [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
], dtype=np.float64)

# Facing: (right_hip, left_hip, right_shoulder, left_shoulder); "across" = right - left for each
# pair, forward = up x across.
FACE_JOINTS: list[int] = [2, 1, 17, 16]
FOOT_LEFT: list[int] = [7, 10]   # left ankle, left foot
FOOT_RIGHT: list[int] = [8, 11]  # right ankle, right foot

# Swap each left joint with its right twin (the centre line maps to itself).
MIRROR_PERM: list[int] = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20]

# Bone lengths (metres) of HumanML3D's target skeleton, bone i-1 ending at joint i for i = 1..21.
# Provenance: frame 0 of humanml3d-reference/new_joints/012314.npy (HumanML3D repository, MIT),
# |joint[i] - joint[PARENTS[i]]| in float64; every HumanML3D motion was retargeted to these lengths,
# so they hold in every frame of that file to within 1.3e-6 m. tests/test_features.py re-derives them.
TARGET_BONE_LENGTHS = np.array([
    0.10307395, 0.10988336, 0.13156825, 0.39362316, 0.39018814, 0.14319026, 0.43243301,
    0.42564334, 0.05736470, 0.14338175, 0.14941866, 0.21936000, 0.13748683, 0.14338283,
    0.10303927, 0.13161399, 0.12298431, 0.25683985, 0.26309187, 0.26601185, 0.26987630,
], dtype=np.float64)

FORWARD_SMOOTH_SIGMA = 20.0  # frames; HumanML3D smooths the facing direction used for rotations


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 22, 3) joint positions -> (..., 21) lengths of bones ending at joints 1..21."""
    joints = np.asarray(joints, dtype=np.float64)
    parents = np.asarray(PARENTS[1:])
    return np.linalg.norm(joints[..., 1:, :] - joints[..., parents, :], axis=-1)


def rest_offsets(lengths: np.ndarray) -> np.ndarray:
    """(21,) bone lengths -> (22, 3) rest-pose offsets (RAW_OFFSETS scaled; row 0 is zero)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return RAW_OFFSETS * np.concatenate([[0.0], lengths])[:, None]


def _forward_from_across(across: np.ndarray, smooth_sigma: float | None) -> np.ndarray:
    """(T, 3) left-to-right vectors -> (T, 3) unit horizontal forward = up x across."""
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    # up x across with up = +y is (across_z, 0, -across_x)
    forward = np.stack([across[:, 2], np.zeros_like(across[:, 0]), -across[:, 0]], axis=-1)
    if smooth_sigma:
        forward = gaussian_filter1d(forward, smooth_sigma, axis=0, mode="nearest")
    return forward / np.linalg.norm(forward, axis=-1, keepdims=True)


def _turn_to_z(forward: np.ndarray) -> np.ndarray:
    return qbetween(forward, np.broadcast_to(np.array([0.0, 0.0, 1.0]), forward.shape))


def forward_direction(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 3) unit horizontal facing directions of the body.

    across = (right_hip - left_hip) + (right_shoulder - left_shoulder); forward = up x across.
    """
    r_hip, l_hip, r_sdr, l_sdr = FACE_JOINTS
    across = (joints[:, r_hip] - joints[:, l_hip]) + (joints[:, r_sdr] - joints[:, l_sdr])
    return _forward_from_across(across, None)


def facing_rotation(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 4): the turn about +y that makes each frame face +z."""
    return _turn_to_z(forward_direction(joints))


def ik_root_rotation(joints: np.ndarray, smooth_sigma: float | None = FORWARD_SMOOTH_SIGMA) -> np.ndarray:
    """(T, 22, 3) -> (T, 4): the root rotation HumanML3D's IK uses, which its features encode.

    It differs from `facing_rotation` in three ways, each needed to reproduce the reference
    features. Max |error| of the ROT slice on humanml3d-reference/012314 with all three: 0.013;
    undoing one at a time gives the ROT errors in brackets:
    - HumanML3D's IK unpacks FACE_JOINTS as (left_hip, right_hip, ...), so the hip term enters
      with the opposite sign: across = (left_hip - right_hip) + (right_shoulder - left_shoulder);
      the shoulders are wider and win, so it still points to the body's right (right-left hips: 0.61);
    - the forward directions are smoothed over time (Gaussian, `smooth_sigma` frames, 'nearest'
      edges) before normalising; None or 0 skips it (no smoothing: 0.84; edge modes reflect,
      mirror, constant, wrap: 0.86, 0.98, 1.96, 0.68);
    - frame 0's root rotation is the identity, the motion having been turned to face +z there
      (smoothed frame 0 instead: 0.19).
    """
    r_hip, l_hip, r_sdr, l_sdr = FACE_JOINTS
    across = (joints[:, l_hip] - joints[:, r_hip]) + (joints[:, r_sdr] - joints[:, l_sdr])
    quat = _turn_to_z(_forward_from_across(across, smooth_sigma))
    quat[0] = (1.0, 0.0, 0.0, 0.0)
    return quat


def inverse_kinematics(joints: np.ndarray, root_quat: np.ndarray) -> np.ndarray:
    """Local joint rotations from positions, HumanML3D style.

    joints (T, 22, 3), root_quat (T, 4) -> (T, 22, 4): row 0 is `root_quat`; row i turns
    RAW_OFFSETS[i] (in the frame of the previous bone of its chain) onto the bone's direction.
    Twist about a bone is not observable from positions; the shortest-arc rotation is used.
    """
    joints = np.asarray(joints, dtype=np.float64)
    T = joints.shape[0]
    quats = np.zeros((T, NUM_JOINTS, 4))
    quats[:, 0] = root_quat
    for chain in KINEMATIC_CHAIN:
        R = root_quat  # global rotation of the previous bone in this chain
        for parent, child in zip(chain[:-1], chain[1:]):
            bone = joints[:, child] - joints[:, parent]
            global_rot = qbetween(np.broadcast_to(RAW_OFFSETS[child], bone.shape), bone)
            quats[:, child] = qmul(qinv(R), global_rot)
            R = global_rot
    return quats


def forward_kinematics(quats: np.ndarray, root_pos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Positions from local rotations: quats (T, 22, 4), root_pos (T, 3), offsets (22, 3) -> (T, 22, 3)."""
    quats = np.asarray(quats, dtype=np.float64)
    joints = np.zeros(quats.shape[:-2] + (NUM_JOINTS, 3))
    joints[:, 0] = root_pos
    for chain in KINEMATIC_CHAIN:
        R = quats[:, 0]
        for parent, child in zip(chain[:-1], chain[1:]):
            R = qmul(R, quats[:, child])
            joints[:, child] = joints[:, parent] + qrot(R, np.broadcast_to(offsets[child], R.shape[:-1] + (3,)))
    return joints
