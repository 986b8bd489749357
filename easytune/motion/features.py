"""HumanML3D's 263-d motion features: extract them from joint positions, recover positions from them.

Layout of one frame (22 joints, root = pelvis):
    ROOT  0:4     root angular velocity: per-frame change of the rotation that turns the body to
                  face +z, as a half angle about +y in radians (so its sign is opposite to the
                  body's turn); root linear velocity (x, z) in the body's facing frame; root height
    RIC   4:67    joints 1..21 relative to the root's xz position, turned to face +z (21 x 3)
    ROT   67:193  joints 1..21 local rotations from the skeleton's IK, 6D (21 x 6)
    VEL   193:259 joints 0..21 velocities, turned by the facing of the earlier frame (22 x 3)
    FOOT  259:263 contacts: left ankle, left foot, right ankle, right foot (1 = still)
Frame t of the features describes joint frame t plus the step t -> t+1, so T joint frames give
T-1 feature frames. Velocities are per frame at `FPS` = 20.

Extraction (our own implementation of the HumanML3D recipe): retarget to the target skeleton, put
on the floor, centre frame 0's root in xz, turn frame 0 to face +z, then compute the features with
the facing direction smoothed over time (Gaussian, sigma 20 frames, 'nearest' edges) for the
root rotation. Recovery uses only ROOT and RIC, and works on numpy arrays or (batched,
differentiable) torch tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from easytune.errors import UserError
from easytune.fileio import save_npy
from easytune.motion.quaternion import qinv, qmul, qrot, quat_to_cont6d, y_rotation
from easytune.motion.skeleton import (
    FOOT_LEFT,
    FOOT_RIGHT,
    MIRROR_PERM,
    NUM_JOINTS,
    TARGET_BONE_LENGTHS,
    bone_lengths,
    facing_rotation,
    forward_kinematics,
    ik_root_rotation,
    inverse_kinematics,
    rest_offsets,
)

Array = Union[np.ndarray, torch.Tensor]

FEATURE_DIM = 263
ROOT = slice(0, 4)
RIC = slice(4, 67)
ROT = slice(67, 193)
VEL = slice(193, 259)
FOOT = slice(259, 263)

FOOT_THRESHOLD = 0.002  # squared per-frame displacement (m^2) below which a foot joint is "in contact"

# Normalisation groups: one standard deviation shared within each group, divided by its weight.
# Inferred from humanml3d-reference/Std.npy: it is constant on exactly these 7 runs
# (0.01283, 0.01693, 0.15377, 0.12224, 0.29969, 0.01947, 0.35593), i.e. root angular velocity,
# root xz velocity, root height, RIC, ROT, VEL and FOOT; a weight other than 1 is not visible in
# Std.npy alone, and HumanML3D's statistics script divides every group by 1.0.
FEATURE_GROUPS: list[tuple[slice, float]] = [
    (slice(0, 1), 1.0), (slice(1, 3), 1.0), (slice(3, 4), 1.0),
    (RIC, 1.0), (ROT, 1.0), (VEL, 1.0), (FOOT, 1.0),
]
STD_EPS = 1e-8  # keeps a constant group (e.g. no foot contact in a tiny dataset) from dividing by 0

_LEG_LENGTH_BONES = [4, 7]  # right knee, right ankle bones: the leg length that sets the root scale


# --- input checks -----------------------------------------------------------------------------


def _check_finite(x: Array, what: str) -> None:
    ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not ok:
        raise UserError(f"{what} contain NaN or infinite values; only finite numbers are allowed.")


def _check_joints(joints: np.ndarray, min_frames: int = 1) -> np.ndarray:
    if isinstance(joints, torch.Tensor):
        joints = joints.detach().cpu().numpy()
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise UserError(f"joint positions must have shape (frames, {NUM_JOINTS}, 3), got {joints.shape}.")
    if joints.shape[0] < min_frames:
        raise UserError(f"motion has {joints.shape[0]} frame(s); at least {min_frames} are needed.")
    if joints.dtype.kind not in "fiu":
        raise UserError(f"joint positions must be numbers, got dtype {joints.dtype}.")
    _check_finite(joints, "joint positions")
    return joints.astype(np.float64)


def _check_features(x: Array, min_ndim: int = 1) -> None:
    if x.ndim < min_ndim or x.shape[-1] != FEATURE_DIM:
        raise UserError(
            f"features must have shape (..., {'frames, ' if min_ndim > 1 else ''}{FEATURE_DIM}), "
            f"got {tuple(x.shape)}.")
    _check_finite(x, "features")


# --- extraction -------------------------------------------------------------------------------


def retarget(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 22, 3): the same motion on the target skeleton (TARGET_BONE_LENGTHS).

    Bone directions are kept (IK, then FK with the target lengths); the root trajectory is scaled by
    the ratio of target to source leg length (from frame 0), and the result is shifted vertically so
    its lowest point is as high as the input's (feet stay on the floor).
    """
    joints = _check_joints(joints)
    src = bone_lengths(joints[0])
    if np.any(src < 1e-6):
        raise UserError("frame 0 has a bone of zero length; joint positions must form a skeleton.")
    scale = TARGET_BONE_LENGTHS[_LEG_LENGTH_BONES].sum() / src[_LEG_LENGTH_BONES].sum()
    quats = inverse_kinematics(joints, ik_root_rotation(joints, None))  # the root cancels in FK
    out = forward_kinematics(quats, joints[:, 0] * scale, rest_offsets(TARGET_BONE_LENGTHS))
    out[..., 1] += joints[..., 1].min() - out[..., 1].min()
    return out


def canonicalize(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 22, 3) float64: the lowest joint of the clip at y=0, frame 0's root at the
    xz origin, frame 0 facing +z. `recover_from_ric(extract_features(j, retarget_first=False))`
    returns `canonicalize(j)[:-1]`.
    """
    pos = _check_joints(joints)
    pos[..., 1] -= pos[..., 1].min()
    pos = pos - pos[0, 0] * np.array([1.0, 0.0, 1.0])
    return qrot(facing_rotation(pos[:1]), pos)  # (1, 4) broadcasts over (T, 22)


def extract_features(joints: np.ndarray, *, retarget_first: bool = True,
                     foot_threshold: float = FOOT_THRESHOLD) -> np.ndarray:
    """Joint positions (T, 22, 3), y-up metres at 20 fps -> features (T-1, 263) float32.

    `retarget_first=False` skips retargeting, for motions already on the target skeleton.
    """
    pos = _check_joints(joints, min_frames=2)
    if retarget_first:
        pos = retarget(pos)
    pos = canonicalize(pos)
    T = pos.shape[0]

    step = pos[1:] - pos[:-1]  # (T-1, 22, 3)
    contact = (step * step).sum(-1) < foot_threshold
    feet = np.concatenate([contact[:, FOOT_LEFT], contact[:, FOOT_RIGHT]], axis=-1)

    # Smoothed facing (T, 4) drives the root rotation, the IK and the body frame.
    r_rot = ik_root_rotation(pos)
    rot6d = quat_to_cont6d(inverse_kinematics(pos, r_rot)[:, 1:])  # (T, 21, 6)

    root_vel = qrot(r_rot[1:], pos[1:, 0] - pos[:-1, 0])  # (T-1, 3), in the later frame's facing
    turn = qmul(r_rot[1:], qinv(r_rot[:-1]))
    # Shortest-way sign (w >= 0). HumanML3D skips this, which flips the sign of the turn whenever
    # the facing crosses +-180 degrees from frame 0's; the reference clip never does.
    turn = np.where(turn[:, :1] < 0, -turn, turn)
    root_ang = np.arcsin(np.clip(turn[:, 2], -1.0, 1.0))  # half the turn angle about +y

    local = pos - pos[:, :1] * np.array([1.0, 0.0, 1.0])
    local = qrot(r_rot[:, None], local)  # (T, 22, 3)
    local_vel = qrot(r_rot[:-1, None], step)  # (T-1, 22, 3)

    feats = np.concatenate([
        root_ang[:, None], root_vel[:, [0, 2]], local[:-1, 0, 1:2],
        local[:-1, 1:].reshape(T - 1, -1),
        rot6d[:-1].reshape(T - 1, -1),
        local_vel.reshape(T - 1, -1),
        feet.astype(np.float64),
    ], axis=-1)
    return feats.astype(np.float32)


# --- recovery ---------------------------------------------------------------------------------


def _cumsum(x: Array, axis: int) -> Array:
    return torch.cumsum(x, dim=axis) if isinstance(x, torch.Tensor) else np.cumsum(x, axis=axis)


def _cat(parts: Sequence[Array], axis: int) -> Array:
    return torch.cat(list(parts), dim=axis) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts, axis=axis)


def recover_root(features: Array) -> tuple[Array, Array]:
    """(..., T, 263) -> root rotations (..., T, 4) and root positions (..., T, 3).

    Integrates ROOT from frame 0 at the xz origin with the identity rotation. A root rotation turns
    the body to face +z (the inverse of its heading), as in the features' RIC and VEL slices.
    """
    ang_vel = features[..., :-1, 0]
    ang = _cumsum(_cat([ang_vel[..., :1] * 0, ang_vel], -1), -1)  # (..., T) half angles
    r_rot = y_rotation(2 * ang)
    vel = features[..., :-1, 1:3]  # (..., T-1, 2): xz steps t -> t+1, in frame t+1's facing
    step = _cat([vel[..., 0:1], vel[..., 0:1] * 0, vel[..., 1:2]], -1)
    step = _cat([step[..., :1, :] * 0, step], -2)  # (..., T, 3): row t is the step into frame t
    step = qrot(qinv(r_rot), step)
    root = _cumsum(step, -2)
    root = _cat([root[..., 0:1], features[..., 3:4], root[..., 2:3]], -1)
    return r_rot, root


def recover_from_ric(features: Array) -> Array:
    """Features (..., T, 263) -> joint positions (..., T, 22, 3), same type (numpy or torch).

    Uses the root velocities and RIC; differentiable for torch inputs.
    """
    if not isinstance(features, torch.Tensor):
        features = np.asarray(features)
        if features.dtype.kind != "f":
            features = features.astype(np.float64)
    _check_features(features, min_ndim=2)
    r_rot, root = recover_root(features)
    ric = features[..., RIC].reshape(tuple(features.shape[:-1]) + (NUM_JOINTS - 1, 3))
    body = qrot(qinv(r_rot)[..., None, :], ric)
    body = body + _cat([root[..., None, 0:1], root[..., None, 1:2] * 0, root[..., None, 2:3]], -1)
    return _cat([root[..., None, :], body], -2)


# --- mirroring --------------------------------------------------------------------------------


def mirror_joints(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) -> (T, 22, 3): reflect x and swap left/right joints (a mirror image of the motion)."""
    joints = _check_joints(joints)
    out = joints[:, MIRROR_PERM].copy()
    out[..., 0] *= -1
    return out


def _mirror_index_and_sign() -> tuple[np.ndarray, np.ndarray]:
    """Feature index map and signs so that mirror_features(x) = x[..., index] * sign."""
    index = np.arange(FEATURE_DIM)
    sign = np.ones(FEATURE_DIM)
    sign[0] = -1  # turning left becomes turning right
    sign[1] = -1  # sideways root velocity
    ric_perm = np.asarray(MIRROR_PERM[1:]) - 1  # joints 1..21
    ric = np.arange(RIC.start, RIC.stop).reshape(21, 3)
    index[RIC] = ric[ric_perm].reshape(-1)
    sign[RIC] = np.tile([-1.0, 1.0, 1.0], 21)
    rot = np.arange(ROT.start, ROT.stop).reshape(21, 6)
    index[ROT] = rot[ric_perm].reshape(-1)
    # R -> M R M with M = diag(-1, 1, 1): column 0 -> (c0x, -c0y, -c0z), column 1 -> (-c1x, c1y, c1z)
    sign[ROT] = np.tile([1.0, -1.0, -1.0, -1.0, 1.0, 1.0], 21)
    vel = np.arange(VEL.start, VEL.stop).reshape(22, 3)
    index[VEL] = vel[MIRROR_PERM].reshape(-1)
    sign[VEL] = np.tile([-1.0, 1.0, 1.0], 22)
    index[FOOT] = [FOOT.start + 2, FOOT.start + 3, FOOT.start, FOOT.start + 1]
    return index, sign


_MIRROR_INDEX, _MIRROR_SIGN = _mirror_index_and_sign()


def mirror_features(features: Array) -> Array:
    """(..., 263) -> (..., 263): the features of the mirrored motion (numpy or torch)."""
    _check_features(features)
    if isinstance(features, torch.Tensor):
        sign = torch.as_tensor(_MIRROR_SIGN, dtype=features.dtype, device=features.device)
        return features[..., torch.as_tensor(_MIRROR_INDEX, device=features.device)] * sign
    return (features[..., _MIRROR_INDEX] * _MIRROR_SIGN).astype(features.dtype)


# --- normalisation ----------------------------------------------------------------------------


def compute_mean_std(features_list: Sequence[np.ndarray], eps: float = STD_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Dataset statistics the HumanML3D way: per-dimension mean; per-dimension std averaged within
    each of FEATURE_GROUPS and divided by its weight, plus `eps`. Returns (263,), (263,) float32.
    """
    if len(features_list) == 0:
        raise UserError("compute_mean_std needs at least one motion; got an empty list.")
    for i, f in enumerate(features_list):
        if np.ndim(f) != 2 or np.shape(f)[-1] != FEATURE_DIM:
            raise UserError(f"motion {i} has shape {np.shape(f)}; each must be (frames, {FEATURE_DIM}).")
    data = np.concatenate([np.asarray(f, dtype=np.float64) for f in features_list], axis=0)
    _check_finite(data, "features")
    mean = data.mean(axis=0)
    std = data.std(axis=0)
    for sl, weight in FEATURE_GROUPS:
        std[sl] = std[sl].mean() / weight
    return mean.astype(np.float32), (std + eps).astype(np.float32)


def load_mean_std(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read `Mean.npy` and `Std.npy` (263,) from `folder` (HumanML3D's or `save_mean_std`'s)."""
    folder = Path(folder)
    out = []
    for name in ("Mean.npy", "Std.npy"):
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} does not exist; the folder must hold Mean.npy and Std.npy.")
        arr = np.load(path, allow_pickle=False)
        if arr.shape != (FEATURE_DIM,):
            raise UserError(f"{path} has shape {arr.shape}; it must be ({FEATURE_DIM},).")
        _check_finite(arr, str(path))
        out.append(arr.astype(np.float32))
    if np.any(out[1] <= 0):
        raise UserError(f"{folder / 'Std.npy'} has entries <= 0; standard deviations must be positive.")
    return out[0], out[1]


def save_mean_std(folder: str | Path, mean: np.ndarray, std: np.ndarray) -> None:
    """Write `Mean.npy` and `Std.npy` to `folder` atomically, in HumanML3D's file layout."""
    save_npy(Path(folder) / "Mean.npy", np.asarray(mean, dtype=np.float32))
    save_npy(Path(folder) / "Std.npy", np.asarray(std, dtype=np.float32))


def _stats_like(x: Array, mean: Array, std: Array) -> tuple[Array, Array]:
    """Check x, then return mean and std (263,) as the same kind (and dtype/device for torch) as x."""
    _check_features(x)
    if tuple(np.shape(mean)) != (FEATURE_DIM,) or tuple(np.shape(std)) != (FEATURE_DIM,):
        raise UserError(f"mean and std must have shape ({FEATURE_DIM},), "
                        f"got {tuple(np.shape(mean))} and {tuple(np.shape(std))}.")
    if isinstance(x, torch.Tensor):
        return (torch.as_tensor(mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(std, dtype=x.dtype, device=x.device))
    return np.asarray(mean), np.asarray(std)


def normalize(x: Array, mean: Array, std: Array) -> Array:
    """(x - mean) / std over the last axis (263); numpy or torch."""
    mean, std = _stats_like(x, mean, std)
    return (x - mean) / std


def denormalize(x: Array, mean: Array, std: Array) -> Array:
    """x * std + mean over the last axis (263); numpy or torch."""
    mean, std = _stats_like(x, mean, std)
    return x * std + mean
