"""Rotation utilities: pinned values, round trips, numpy/torch agreement, finite gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from easytune.motion.quaternion import (
    axis_angle_to_matrix,
    axis_angle_to_quat,
    cont6d_to_matrix,
    cont6d_to_quat,
    matrix_to_axis_angle,
    matrix_to_cont6d,
    matrix_to_quat,
    qbetween,
    qfix,
    qinv,
    qmul,
    qnormalize,
    qrot,
    quat_to_axis_angle,
    quat_to_cont6d,
    quat_to_matrix,
    y_rotation,
)

FAST = settings(max_examples=15, deadline=None)
finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)


def random_quats(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def same_rotation(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    """q and -q are the same rotation."""
    return bool(np.all(np.minimum(np.abs(a - b).max(-1), np.abs(a + b).max(-1)) < atol))


# --- pinned values: conventions (w, x, y, z), active right-handed rotations ---------------------

def test_quarter_turn_about_y_sends_x_to_minus_z():
    q = axis_angle_to_quat(np.array([0.0, math.pi / 2, 0.0]))
    np.testing.assert_allclose(q, [math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0], atol=1e-12)
    np.testing.assert_allclose(qrot(q, np.array([1.0, 0.0, 0.0])), [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(y_rotation(np.array(math.pi / 2)), q, atol=1e-12)


def test_qmul_applies_right_operand_first():
    a = axis_angle_to_quat(np.array([0.0, 0.0, math.pi / 2]))  # z quarter turn: x -> y
    b = axis_angle_to_quat(np.array([math.pi / 2, 0.0, 0.0]))  # x quarter turn: y -> z
    v = np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(qrot(qmul(a, b), v), [0.0, 0.0, 1.0], atol=1e-12)  # b: y->z, a keeps z
    np.testing.assert_allclose(qrot(qmul(b, a), v), [-1.0, 0.0, 0.0], atol=1e-12)  # a: y->-x, b keeps x


def test_cont6d_is_first_two_columns():
    m = quat_to_matrix(random_quats(1, seed=3))[0]
    np.testing.assert_allclose(matrix_to_cont6d(m), np.concatenate([m[:, 0], m[:, 1]]))


# --- algebra and round trips -------------------------------------------------------------------

def test_qmul_matches_matrix_product_and_qrot_matches_matrix():
    a, b = random_quats(64, 1), random_quats(64, 2)
    v = np.random.default_rng(4).normal(size=(64, 3))
    np.testing.assert_allclose(quat_to_matrix(qmul(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)
    np.testing.assert_allclose(qrot(a, v), (quat_to_matrix(a) @ v[..., None])[..., 0], atol=1e-12)
    np.testing.assert_allclose(qmul(a, qinv(a)), np.tile([1.0, 0, 0, 0], (64, 1)), atol=1e-12)


def test_qrot_broadcasts_one_quaternion_over_many_vectors():
    q = random_quats(1, 5)  # (1, 4)
    v = np.random.default_rng(6).normal(size=(7, 22, 3))
    out = qrot(q, v)
    assert out.shape == (7, 22, 3)
    np.testing.assert_allclose(out[3, 9], qrot(q[0], v[3, 9]), atol=1e-12)


@FAST
@given(arrays(np.float64, (4,), elements=finite).filter(lambda q: np.linalg.norm(q) > 0.1))
def test_matrix_round_trip(q):
    q = q / np.linalg.norm(q)
    back = matrix_to_quat(quat_to_matrix(q))
    assert back[0] >= 0
    assert same_rotation(back, q)


def test_matrix_to_quat_is_accurate_for_half_turns_and_identity():
    half_turns = np.array([[0.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0, 0.8]])
    ident = np.array([[1.0, 0, 0, 0]])
    q = np.concatenate([half_turns, ident])
    assert same_rotation(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-12)


@FAST
@given(arrays(np.float64, (6,), elements=finite))
def test_cont6d_gives_orthonormal_matrix_and_round_trips(d6):
    a, b = d6[:3], d6[3:]
    if np.linalg.norm(np.cross(a, b)) < 1e-2 * (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9):
        return  # parallel halves do not define a rotation
    m = cont6d_to_matrix(d6)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(m[:, 0], a / np.linalg.norm(a), atol=1e-12)  # first column kept
    np.testing.assert_allclose(cont6d_to_matrix(matrix_to_cont6d(m)), m, atol=1e-12)
    assert same_rotation(cont6d_to_quat(quat_to_cont6d(matrix_to_quat(m))), matrix_to_quat(m))


@FAST
@given(arrays(np.float64, (3,), elements=st.floats(-3.0, 3.0)))
def test_axis_angle_round_trip(aa):
    if np.linalg.norm(aa) > math.pi - 1e-3:
        return  # angles above pi come back as the equivalent angle below pi
    np.testing.assert_allclose(quat_to_axis_angle(axis_angle_to_quat(aa)), aa, atol=1e-9)
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa, atol=1e-9)


def test_quat_to_axis_angle_keeps_the_hemisphere():
    aa = np.array([0.3, -1.2, 0.5])  # angle 1.33 rad
    q = axis_angle_to_quat(aa)
    other = quat_to_axis_angle(-q)  # same rotation, the long way round
    angle = np.linalg.norm(aa)
    np.testing.assert_allclose(other, aa / angle * (angle - 2 * np.pi), atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_matrix(other), axis_angle_to_matrix(aa), atol=1e-12)


def test_axis_angle_small_angles_and_zero():
    for aa in (np.zeros(3), np.array([1e-7, -2e-7, 3e-8])):
        q = axis_angle_to_quat(aa)
        np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
        np.testing.assert_allclose(quat_to_axis_angle(q), aa, atol=1e-15)


@FAST
@given(arrays(np.float64, (2, 3), elements=finite).filter(lambda v: np.all(np.linalg.norm(v, axis=1) > 0.1)))
def test_qbetween_turns_v0_onto_v1(v):
    v0, v1 = v
    q = qbetween(v0, v1)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
    np.testing.assert_allclose(qrot(q, v0 / np.linalg.norm(v0)), v1 / np.linalg.norm(v1), atol=1e-7)


def test_qbetween_antiparallel_gives_half_turn():
    for v0 in (np.array([0.0, -1.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.3, -0.2, 0.9])):
        q = qbetween(v0, -2.5 * v0)
        assert np.all(np.isfinite(q))
        np.testing.assert_allclose(qrot(q, v0), -v0, atol=1e-12)


def test_qfix_removes_sign_flips():
    q = random_quats(1, 7)[0]
    seq = np.stack([q, -q, -q, q, -q])[:, None]  # (T=5, J=1, 4)
    fixed = qfix(seq)
    np.testing.assert_allclose(fixed[:, 0], np.tile(q, (5, 1)))
    np.testing.assert_array_equal(qfix(seq[:1]), seq[:1])  # a single frame is returned as is


# --- numpy/torch agreement and gradients -------------------------------------------------------

FUNCS_Q = [qinv, qnormalize, quat_to_matrix, quat_to_cont6d, quat_to_axis_angle]


@pytest.mark.parametrize("fn", FUNCS_Q, ids=lambda f: f.__name__)
def test_torch_matches_numpy_for_quaternion_inputs(fn):
    q = random_quats(32, 8)
    np.testing.assert_allclose(fn(torch.from_numpy(q)).numpy(), fn(q), atol=1e-12)


def test_torch_matches_numpy_for_other_inputs():
    rng = np.random.default_rng(9)
    a, b = random_quats(16, 10), random_quats(16, 11)
    v, w = rng.normal(size=(16, 3)), rng.normal(size=(16, 3))
    d6 = rng.normal(size=(16, 6))
    m = quat_to_matrix(a)
    t = torch.from_numpy
    pairs = [
        (qmul(t(a), t(b)), qmul(a, b)), (qrot(t(a), t(v)), qrot(a, v)), (qbetween(t(v), t(w)), qbetween(v, w)),
        (matrix_to_quat(t(m)), matrix_to_quat(m)), (cont6d_to_matrix(t(d6)), cont6d_to_matrix(d6)),
        (axis_angle_to_quat(t(v)), axis_angle_to_quat(v)), (y_rotation(t(v[:, 0])), y_rotation(v[:, 0])),
    ]
    for got, want in pairs:
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_float32_stays_float32():
    q = random_quats(4, 12).astype(np.float32)
    assert qrot(q, np.ones((4, 3), np.float32)).dtype == np.float32
    assert quat_to_matrix(torch.from_numpy(q)).dtype == torch.float32


def test_gradients_are_finite_at_singular_points():
    """Zero angles and antiparallel vectors are handled with `where`; no NaN may leak into grads."""
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_quat(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    quat_to_axis_angle(q).sum().backward()
    assert torch.isfinite(q.grad).all()
    v0 = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    qbetween(v0, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(v0.grad).all()


def test_gradcheck_through_cont6d_and_qrot():
    d6 = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    v = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda x: qrot(cont6d_to_quat(x), v), (d6,))


def test_wrong_last_dimension_is_rejected():
    with pytest.raises(ValueError, match="last dimension 4"):
        qmul(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="last dimension 6"):
        cont6d_to_matrix(np.zeros(5))
