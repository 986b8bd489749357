"""Rotation utilities for numpy arrays and torch tensors alike.

Conventions (all functions):
- A quaternion is `(w, x, y, z)`, real part first, in the last axis of size 4. Rotations are unit
  quaternions; `q` and `-q` are the same rotation. Composition is the Hamilton product, so
  `qrot(qmul(a, b), v) == qrot(a, qrot(b, v))` (apply `b` first).
- Rotations are active and right-handed: `qrot(q, v)` turns the vector `v`; a matrix acts on column
  vectors, `v' = R @ v`.
- The 6D ("cont6d") form of a rotation matrix is its first two columns, `[R[:, 0], R[:, 1]]` (the
  HumanML3D layout); `cont6d_to_matrix` re-orthonormalises it with Gram-Schmidt, so any 6 numbers
  whose halves are not parallel map to a rotation.
- Axis-angle is a 3-vector whose direction is the axis and whose norm is the angle in radians.

Every function takes numpy arrays or torch tensors and returns the same kind. Leading dimensions
broadcast. The torch paths use only differentiable operations (no in-place writes into inputs), so
gradients flow through them; special cases (zero angle, antiparallel vectors) are handled with
`where` on both branches so neither produces NaN gradients.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]

# --- backend helpers: one implementation serves numpy and torch ---------------------------------


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _stack(parts: Sequence[Array], like: Array) -> Array:
    return torch.stack(list(parts), dim=-1) if _is_torch(like) else np.stack(parts, axis=-1)


def _cat(parts: Sequence[Array], like: Array) -> Array:
    return torch.cat(list(parts), dim=-1) if _is_torch(like) else np.concatenate(parts, axis=-1)


def _const(values: Sequence[float], like: Array) -> Array:
    if _is_torch(like):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype if like.dtype.kind == "f" else np.float64)


def _sqrt(x: Array) -> Array:
    return torch.sqrt(x) if _is_torch(x) else np.sqrt(x)


def _where(cond: Array, a: Array, b: Array) -> Array:
    return torch.where(cond, a, b) if _is_torch(cond) else np.where(cond, a, b)


def _atan2(y: Array, x: Array) -> Array:
    return torch.atan2(y, x) if _is_torch(y) else np.arctan2(y, x)


def _sumsq(x: Array) -> Array:
    """Sum of squares over the last axis, keeping it (shape (..., 1))."""
    return (x * x).sum(-1, keepdims=True) if not _is_torch(x) else (x * x).sum(-1, keepdim=True)


def _float(x: Array) -> Array:
    """Integer inputs become float64 (numpy) / float32 (torch); floats pass through."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _cross(a: Array, b: Array) -> Array:
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return _stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], a)


def _check_last(x: Array, size: int, name: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {size}, got shape {tuple(x.shape)}")


# --- quaternion algebra -----------------------------------------------------------------------


def qmul(q: Array, r: Array) -> Array:
    """Hamilton product `q * r` of (..., 4) quaternions (broadcast); the rotation `r` then `q`."""
    q, r = _float(q), _float(r)
    _check_last(q, 4, "q")
    _check_last(r, 4, "r")
    w1, x1, y1, z1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    w2, x2, y2, z2 = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    return _stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], q)


def qinv(q: Array) -> Array:
    """Inverse of unit quaternions (the conjugate), (..., 4)."""
    q = _float(q)
    _check_last(q, 4, "q")
    return q * _const([1.0, -1.0, -1.0, -1.0], q)


def qnormalize(q: Array, eps: float = 1e-12) -> Array:
    """Scale (..., 4) quaternions to unit norm."""
    q = _float(q)
    return q / _sqrt(_sumsq(q) + eps * eps)


def qrot(q: Array, v: Array) -> Array:
    """Rotate (..., 3) vectors by (..., 4) unit quaternions (broadcast): `q v q^-1`."""
    q, v = _float(q), _float(v)
    _check_last(q, 4, "q")
    _check_last(v, 3, "v")
    u = q[..., 1:]
    t = 2.0 * _cross(u, v)
    return v + q[..., :1] * t + _cross(u, t)


def qbetween(v0: Array, v1: Array) -> Array:
    """Shortest-arc unit quaternion turning the direction of `v0` onto that of `v1`, (..., 3) -> (..., 4).

    The vectors need not be unit length. For antiparallel inputs (no unique shortest arc) it returns
    a half turn about an axis perpendicular to `v0`.
    """
    v0, v1 = _float(v0), _float(v1)
    _check_last(v0, 3, "v0")
    _check_last(v1, 3, "v1")
    axis = _cross(v0, v1)
    w = _sqrt(_sumsq(v0) * _sumsq(v1)) + (v0 * v1).sum(-1)[..., None]
    q = _cat([w, axis], axis)
    norm2 = _sumsq(q)
    scale2 = _sumsq(v0) * _sumsq(v1)
    degenerate = norm2 <= 1e-12 * (scale2 + 1e-30)
    # Half turn about v0 x e (e = the coordinate axis least aligned with v0): used only when antiparallel.
    absv = abs(v0)
    use_x = (absv[..., 0:1] <= absv[..., 1:2]) & (absv[..., 0:1] <= absv[..., 2:3])
    ex = _const([1.0, 0.0, 0.0], v0) + 0 * v0
    ez = _const([0.0, 0.0, 1.0], v0) + 0 * v0
    perp = _cross(v0, _where(use_x, ex, ez))
    q_half = _cat([0 * w, perp], perp)
    q = _where(degenerate, q_half, q)
    return qnormalize(q)


def qfix(q: np.ndarray) -> np.ndarray:
    """Flip signs along time so consecutive quaternions are on the same hemisphere, (T, ..., 4)."""
    q = np.asarray(q)
    flips = np.sum(q[1:] * q[:-1], axis=-1) < 0  # (T-1, ...)
    first = np.zeros((1,) + flips.shape[1:], dtype=bool)  # frame 0 keeps its sign (also when T == 1)
    negate = np.concatenate([first, np.cumsum(flips, axis=0) % 2 == 1], axis=0)
    return np.where(negate[..., None], -q, q)


def y_rotation(angle: Array) -> Array:
    """Quaternion of a rotation by `angle` radians about +y (vertical), (...) -> (..., 4)."""
    angle = _float(angle)
    z = 0 * angle
    h = angle / 2
    c, s = (torch.cos(h), torch.sin(h)) if _is_torch(h) else (np.cos(h), np.sin(h))
    return _stack([c, z, s, z], h)


# --- matrices and 6D --------------------------------------------------------------------------


def quat_to_matrix(q: Array) -> Array:
    """(..., 4) quaternions (normalised here) -> (..., 3, 3) rotation matrices."""
    q = _float(q)
    _check_last(q, 4, "q")
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    s = 2.0 / (q * q).sum(-1)
    rows = [
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    ]
    m = _stack(rows, q)
    return m.reshape(tuple(q.shape[:-1]) + (3, 3))


def matrix_to_quat(m: Array) -> Array:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions with w >= 0.

    Shepperd's method: of the four ways to read the quaternion off the matrix, use the one whose
    divisor is largest, so the result is accurate for every rotation (including half turns).
    """
    m = _float(m)
    if tuple(m.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation matrices must have trailing shape (3, 3), got {tuple(m.shape)}")
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    traces = _stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], m)
    # 4*q_i^2 for each component; the largest gives the stable divisor.
    root = _sqrt(traces.clip(1e-12) if not _is_torch(traces) else traces.clamp(min=1e-12))
    cands = [
        _stack([root[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], m) / (2 * root[..., 0:1]),
        _stack([m21 - m12, root[..., 1] ** 2, m10 + m01, m02 + m20], m) / (2 * root[..., 1:2]),
        _stack([m02 - m20, m10 + m01, root[..., 2] ** 2, m12 + m21], m) / (2 * root[..., 2:3]),
        _stack([m10 - m01, m20 + m02, m21 + m12, root[..., 3] ** 2], m) / (2 * root[..., 3:4]),
    ]
    if _is_torch(m):
        stacked = torch.stack(cands, dim=-2)  # (..., 4 candidates, 4)
        best = traces.argmax(dim=-1)
        q = torch.gather(stacked, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    else:
        stacked = np.stack(cands, axis=-2)
        best = traces.argmax(axis=-1)
        q = np.take_along_axis(stacked, best[..., None, None], axis=-2)[..., 0, :]
    q = _where(q[..., :1] < 0, -q, q)
    return qnormalize(q)


def matrix_to_cont6d(m: Array) -> Array:
    """(..., 3, 3) -> (..., 6): the first two columns, concatenated."""
    m = _float(m)
    return _cat([m[..., :, 0], m[..., :, 1]], m)


def cont6d_to_matrix(d6: Array) -> Array:
    """(..., 6) -> (..., 3, 3) rotation matrices by Gram-Schmidt on the two 3-vectors."""
    d6 = _float(d6)
    _check_last(d6, 6, "cont6d")
    a, b = d6[..., 0:3], d6[..., 3:6]
    x = a / _sqrt(_sumsq(a) + 1e-24)
    z = _cross(x, b)
    z = z / _sqrt(_sumsq(z) + 1e-24)
    y = _cross(z, x)
    if _is_torch(d6):
        return torch.stack([x, y, z], dim=-1)
    return np.stack([x, y, z], axis=-1)


def quat_to_cont6d(q: Array) -> Array:
    """(..., 4) -> (..., 6)."""
    return matrix_to_cont6d(quat_to_matrix(q))


def cont6d_to_quat(d6: Array) -> Array:
    """(..., 6) -> (..., 4), w >= 0."""
    return matrix_to_quat(cont6d_to_matrix(d6))


# --- axis-angle -------------------------------------------------------------------------------


def axis_angle_to_quat(aa: Array) -> Array:
    """(..., 3) axis-angle -> (..., 4) unit quaternions."""
    aa = _float(aa)
    _check_last(aa, 3, "axis-angle")
    angle2 = _sumsq(aa)
    small = angle2 < 1e-8
    angle = _sqrt(_where(small, 1.0 + 0 * angle2, angle2))  # safe where small (value unused)
    half = angle / 2
    sin_h, cos_h = (torch.sin(half), torch.cos(half)) if _is_torch(aa) else (np.sin(half), np.cos(half))
    # sin(a/2)/a -> 1/2 - a^2/48 near zero; cos(a/2) -> 1 - a^2/8
    k = _where(small, 0.5 - angle2 / 48.0, sin_h / angle)
    w = _where(small, 1.0 - angle2 / 8.0, cos_h)
    return _cat([w, aa * k], aa)


def quat_to_axis_angle(q: Array) -> Array:
    """(..., 4) unit quaternions -> (..., 3) axis-angle with angle in [0, 2 pi).

    The hemisphere of `q` is kept (angle > pi when w < 0), so a sequence made continuous with
    `qfix` gives continuous axis-angles; pass w >= 0 quaternions to get angles in [0, pi].
    """
    q = _float(q)
    _check_last(q, 4, "q")
    xyz = q[..., 1:]
    s2 = _sumsq(xyz)
    small = s2 < 1e-12
    s = _sqrt(_where(small, 1.0 + 0 * s2, s2))
    angle = 2 * _atan2(s, q[..., :1])
    # angle / sin(angle/2) -> 2 / w near zero (and near 2 pi, where it gives the tiny equivalent turn)
    k = _where(small, 2.0 / q[..., :1], angle / s)
    return xyz * k


def axis_angle_to_matrix(aa: Array) -> Array:
    """(..., 3) -> (..., 3, 3)."""
    return quat_to_matrix(axis_angle_to_quat(aa))


def matrix_to_axis_angle(m: Array) -> Array:
    """(..., 3, 3) -> (..., 3)."""
    return quat_to_axis_angle(matrix_to_quat(m))
