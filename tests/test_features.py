"""HumanML3D 263-d features: acceptance against the real reference motion, invariances, retargeting,
mirroring, recovery (numpy and differentiable torch) and normalisation statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from easytune.errors import UserError
from easytune.motion.features import (
    FEATURE_DIM,
    FEATURE_GROUPS,
    FOOT,
    RIC,
    ROOT,
    ROT,
    STD_EPS,
    VEL,
    canonicalize,
    compute_mean_std,
    denormalize,
    extract_features,
    load_mean_std,
    mirror_features,
    mirror_joints,
    normalize,
    recover_from_ric,
    retarget,
    save_mean_std,
)
from easytune.motion.quaternion import qrot, y_rotation
from easytune.motion.skeleton import (
    FACE_JOINTS,
    FOOT_LEFT,
    FOOT_RIGHT,
    FPS,
    JOINT_NAMES,
    KINEMATIC_CHAIN,
    MIRROR_PERM,
    PARENTS,
    RAW_OFFSETS,
    TARGET_BONE_LENGTHS,
    bone_lengths,
    forward_kinematics,
    ik_root_rotation,
    inverse_kinematics,
    rest_offsets,
)

FAST = settings(max_examples=15, deadline=None)
SLICES = {"root": ROOT, "ric": RIC, "rot": ROT, "vel": VEL}


@pytest.fixture(scope="module")
def ref(humanml3d_reference):
    joints = np.load(humanml3d_reference / "new_joints" / "012314.npy")
    vecs = np.load(humanml3d_reference / "new_joint_vecs" / "012314.npy")
    assert joints.shape == (170, 22, 3) and vecs.shape == (170, FEATURE_DIM)
    return joints, vecs


# --- skeleton constants ------------------------------------------------------------------------

def test_skeleton_tables_are_consistent():
    assert len(JOINT_NAMES) == 22 and FPS == 20
    assert PARENTS[0] == -1 and all(0 <= PARENTS[i] < i for i in range(1, 22))
    assert sorted(j for chain in KINEMATIC_CHAIN for j in chain[1:]) == list(range(1, 22))
    assert [JOINT_NAMES[i] for i in FACE_JOINTS] == ["right_hip", "left_hip", "right_shoulder", "left_shoulder"]
    assert [JOINT_NAMES[i] for i in FOOT_LEFT + FOOT_RIGHT] == ["left_ankle", "left_foot", "right_ankle", "right_foot"]
    swapped = [n.replace("left", "@").replace("right", "left").replace("@", "right") for n in JOINT_NAMES]
    assert [JOINT_NAMES[i] for i in MIRROR_PERM] == swapped
    flip = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(RAW_OFFSETS[MIRROR_PERM] * flip, RAW_OFFSETS)  # rest pose is symmetric
    assert [PARENTS[i] for i in MIRROR_PERM] == [MIRROR_PERM[p] if p >= 0 else -1 for p in PARENTS]


def test_target_bone_lengths_match_reference_frame0(ref):
    joints, _ = ref
    assert TARGET_BONE_LENGTHS.shape == (21,)
    np.testing.assert_allclose(bone_lengths(joints[0]), TARGET_BONE_LENGTHS, atol=1e-7)


def test_ik_then_fk_reproduces_the_motion(ref):
    joints = ref[0].astype(np.float64)
    quats = inverse_kinematics(joints, ik_root_rotation(joints))
    np.testing.assert_allclose(np.linalg.norm(quats, axis=-1), 1.0, atol=1e-12)
    back = forward_kinematics(quats, joints[:, 0], rest_offsets(bone_lengths(joints[0])))
    np.testing.assert_allclose(back, joints, atol=1e-5)  # reference bone lengths vary by 1.3e-6


# --- acceptance on the real reference motion ---------------------------------------------------

def test_recover_matches_reference_joints(ref):
    joints, vecs = ref
    np.testing.assert_allclose(recover_from_ric(vecs), joints, atol=1e-4, rtol=0)
    out = recover_from_ric(torch.from_numpy(vecs))
    assert isinstance(out, torch.Tensor) and out.shape == (170, 22, 3)
    np.testing.assert_allclose(out.numpy(), joints, atol=1e-4, rtol=0)


# Brief's acceptance bounds; measured max errors (2026-11-29): root 3.0e-4, ric 6.8e-3, rot 1.3e-2,
# vel 4.1e-4, foot contacts 100% identical.
BOUNDS = {"root": 1e-3, "ric": 1.5e-2, "rot": 3e-2, "vel": 1e-3}


@pytest.mark.parametrize("retarget_first", [True, False])
def test_extract_matches_reference_features(ref, retarget_first):
    joints, vecs = ref
    feats = extract_features(joints, retarget_first=retarget_first)
    assert feats.shape == (169, FEATURE_DIM) and feats.dtype == np.float32
    want = vecs[:169]
    errors = {k: float(np.abs(feats[:, sl] - want[:, sl]).max()) for k, sl in SLICES.items()}
    assert all(errors[k] <= BOUNDS[k] for k in BOUNDS), errors
    assert np.mean(feats[:, FOOT] == want[:, FOOT]) >= 0.99


def test_recover_inverts_extract(ref):
    """recover_from_ric(extract_features(j)) is j on the floor, centred, facing +z (minus the last frame)."""
    joints = ref[0][:60]
    back = recover_from_ric(extract_features(joints, retarget_first=False))
    np.testing.assert_allclose(back, canonicalize(joints)[:-1], atol=1e-5)


def test_recover_inverts_extract_through_full_turns(ref):
    """A body turning 3 degrees per frame for 300 frames crosses +-180 degrees several times."""
    pose = ref[0][0].astype(np.float64)
    t = np.arange(300)
    spin = qrot(y_rotation(np.radians(3.0) * t)[:, None], pose[None] - pose[0] * [1, 0, 1])
    spin = spin + (0.01 * t)[:, None, None] * np.array([1.0, 0.0, 0.5])
    feats = extract_features(spin, retarget_first=False)
    # Half the turn per frame, with the sign of the facing rotation (opposite to the body's turn);
    # away from the ends, where the smoothing window is cut off.
    np.testing.assert_allclose(feats[60:240, 0], -np.radians(1.5), atol=2e-4)
    np.testing.assert_allclose(recover_from_ric(feats), canonicalize(spin)[:-1], atol=1e-5)


# --- invariances (hypothesis) ------------------------------------------------------------------

def rigid(joints, angle, dx, dz, dy=0.0):
    return qrot(y_rotation(np.array(angle)), joints) + np.array([dx, dy, dz])


@FAST
@given(angle=st.floats(-np.pi, np.pi), dx=st.floats(-5, 5), dz=st.floats(-5, 5), dy=st.floats(-1, 1))
def test_extract_ignores_vertical_rotation_and_translation(ref, angle, dx, dz, dy):
    clip = ref[0][:40].astype(np.float64)
    base = extract_features(clip)
    moved = extract_features(rigid(clip, angle, dx, dz, dy))
    np.testing.assert_allclose(moved, base, atol=1e-4, rtol=0)


@FAST
@given(angle=st.floats(-np.pi, np.pi), dx=st.floats(-5, 5), dz=st.floats(-5, 5))
def test_extract_commutes_with_mirror(ref, angle, dx, dz):
    # Includes frames 20-30, where the body spins fast and the facing is most sensitive.
    clip = rigid(ref[0][:60].astype(np.float64), angle, dx, dz)
    a = mirror_features(extract_features(clip, retarget_first=False))
    b = extract_features(mirror_joints(clip), retarget_first=False)
    np.testing.assert_allclose(b[:, :FOOT.start], a[:, :FOOT.start], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(b[:, FOOT], a[:, FOOT])


def test_mirror_with_retargeting_is_close(ref):
    """The target skeleton is not symmetric (left/right bones differ by up to 8.6 mm), so with
    retargeting the mirror identity holds only approximately; measured max 0.014 on frames 40-100."""
    clip = ref[0][40:100]
    d = np.abs(extract_features(mirror_joints(clip)) - mirror_features(extract_features(clip)))
    assert d[:, :FOOT.start].max() < 0.03
    asym = np.abs(TARGET_BONE_LENGTHS - TARGET_BONE_LENGTHS[np.array(MIRROR_PERM[1:]) - 1]).max()
    assert asym == pytest.approx(0.00863, abs=1e-5)


def test_mirror_is_an_involution(ref):
    joints, vecs = ref
    np.testing.assert_array_equal(mirror_joints(mirror_joints(joints)), joints)
    np.testing.assert_array_equal(mirror_features(mirror_features(vecs)), vecs)
    t = torch.from_numpy(vecs)
    np.testing.assert_array_equal(mirror_features(t).numpy(), mirror_features(vecs))
    # Mirroring the joints and recovering agree: the left wrist becomes the right wrist, x negated.
    np.testing.assert_allclose(recover_from_ric(mirror_features(vecs))[:, 20],
                               joints[:, 21] * np.array([-1, 1, 1]), atol=1e-4)


# --- retargeting -------------------------------------------------------------------------------

def other_body(joints, seed=0, leg_scale=1.0):
    """The same motion on a body with random bone lengths (legs scaled by `leg_scale`)."""
    factors = np.random.default_rng(seed).uniform(0.7, 1.4, size=21)
    factors[[4, 7]] = leg_scale  # the right-leg bones that set the root scale
    quats = inverse_kinematics(joints, ik_root_rotation(joints, None))
    return forward_kinematics(quats, joints[:, 0] * leg_scale, rest_offsets(bone_lengths(joints[0]) * factors))


def test_retarget_sets_target_lengths_and_keeps_directions(ref):
    joints = ref[0][:50].astype(np.float64)
    body = other_body(joints, seed=1, leg_scale=1.3)
    out = retarget(body)
    np.testing.assert_allclose(bone_lengths(out), np.broadcast_to(TARGET_BONE_LENGTHS, (50, 21)), atol=1e-9)
    parents = np.array(PARENTS[1:])

    def unit(j):
        b = j[:, 1:] - j[:, parents]
        return b / np.linalg.norm(b, axis=-1, keepdims=True)

    np.testing.assert_allclose(unit(out), unit(body), atol=1e-9)
    assert out[..., 1].min() == pytest.approx(body[..., 1].min(), abs=1e-12)  # floor kept


def test_features_do_not_depend_on_body_proportions(ref):
    joints = ref[0][:50].astype(np.float64)
    base = extract_features(joints)
    for seed, leg in [(2, 1.0), (3, 0.8)]:
        np.testing.assert_allclose(extract_features(other_body(joints, seed, leg)), base, atol=1e-4, rtol=0)
    # Without retargeting the proportions show: RIC changes by centimetres.
    assert np.abs(extract_features(other_body(joints, 2), retarget_first=False)[:, RIC] - base[:, RIC]).max() > 0.01


# --- recovery on torch: batched and differentiable ----------------------------------------------

def test_recover_torch_batched_and_differentiable(ref):
    vecs = torch.from_numpy(ref[1][:30])
    batch = torch.stack([vecs, mirror_features(vecs)]).requires_grad_(True)  # (2, 30, 263)
    out = recover_from_ric(batch)
    assert out.shape == (2, 30, 22, 3)
    np.testing.assert_allclose(out[1].detach().numpy(), recover_from_ric(mirror_features(ref[1][:30])), atol=1e-5)
    out[..., 1].mean().backward()  # mean height depends on root height and RIC y only
    assert torch.isfinite(batch.grad).all()
    assert batch.grad[..., 3].abs().sum() > 0 and batch.grad[..., ROT].abs().sum() == 0


def test_recover_gradcheck():
    x = torch.randn(1, 4, FEATURE_DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.1
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(recover_from_ric, (x,))


# --- normalisation -----------------------------------------------------------------------------

def test_feature_groups_match_humanml3d_std(humanml3d_reference):
    std = np.load(humanml3d_reference / "Std.npy")
    bounds = [0] + [i for i in range(1, FEATURE_DIM) if std[i] != std[i - 1]] + [FEATURE_DIM]
    assert bounds == [0] + [sl.stop for sl, _ in FEATURE_GROUPS]
    assert all(w == 1.0 for _, w in FEATURE_GROUPS)


def test_compute_mean_std_groups_like_humanml3d(ref):
    vecs = ref[1]
    mean, std = compute_mean_std([vecs[:100], vecs[100:]])
    assert mean.shape == std.shape == (FEATURE_DIM,) and mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, vecs.astype(np.float64).mean(0), atol=1e-6)
    per_dim = vecs.astype(np.float64).std(0)
    for sl, _ in FEATURE_GROUPS:
        np.testing.assert_allclose(std[sl], per_dim[sl].mean() + STD_EPS, rtol=1e-6)
    # Pinned on 012314: one std per group.
    np.testing.assert_allclose(
        [std[sl.start] for sl, _ in FEATURE_GROUPS],
        [0.0345947, 0.0299014, 0.0667409, 0.1008074, 0.3076306, 0.0321207, 0.41616], rtol=1e-5)


def test_own_and_humanml3d_statistics_are_interchangeable(ref, humanml3d_reference, tmp_path):
    vecs = ref[1]
    hm_mean, hm_std = load_mean_std(humanml3d_reference)
    own_mean, own_std = compute_mean_std([vecs])
    save_mean_std(tmp_path, own_mean, own_std)
    re_mean, re_std = load_mean_std(tmp_path)
    np.testing.assert_array_equal(re_mean, own_mean)
    np.testing.assert_array_equal(re_std, own_std)
    for mean, std in [(hm_mean, hm_std), (own_mean, own_std)]:
        assert mean.dtype == std.dtype == np.float32 and std.shape == (FEATURE_DIM,)
        for sl, _ in FEATURE_GROUPS:  # same group structure
            assert np.ptp(std[sl]) == 0
        z = normalize(vecs, mean, std)
        np.testing.assert_allclose(denormalize(z, mean, std), vecs, atol=1e-5)
        zt = normalize(torch.from_numpy(vecs), mean, std)
        np.testing.assert_allclose(zt.numpy(), z, atol=1e-6)
    # Under its own statistics the clip is standardised: mean 0, group-mean std 1 (up to eps).
    z = normalize(vecs.astype(np.float64), own_mean, own_std)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    assert z[:, RIC].std(0).mean() == pytest.approx(1.0, abs=1e-4)


def test_constant_group_gets_eps_not_zero():
    x = np.zeros((5, FEATURE_DIM), np.float32)
    x[:, :259] = np.random.default_rng(0).normal(size=(5, 259))
    mean, std = compute_mean_std([x])
    assert np.all(std[FOOT] == np.float32(STD_EPS))
    assert np.all(np.isfinite(normalize(x, mean, std)))


# --- user errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 21, 3)), "shape"),
    (np.zeros((10, 22)), "shape"),
    (np.zeros((1, 22, 3)), "at least 2"),
    (np.full((4, 22, 3), np.nan), "NaN"),
])
def test_extract_rejects_bad_joints(bad, match):
    with pytest.raises(UserError, match=match):
        extract_features(bad)


def test_feature_functions_reject_bad_input(tmp_path):
    with pytest.raises(UserError, match="263"):
        recover_from_ric(np.zeros((10, 262)))
    with pytest.raises(UserError, match="frames"):
        recover_from_ric(np.zeros(263))
    with pytest.raises(UserError, match="infinite"):
        recover_from_ric(torch.full((3, 263), float("inf")))
    with pytest.raises(UserError, match="263"):
        mirror_features(np.zeros((4, 200)))
    with pytest.raises(UserError, match="mean and std"):
        normalize(np.zeros((2, 263)), np.zeros(10), np.ones(10))
    with pytest.raises(UserError, match="empty"):
        compute_mean_std([])
    with pytest.raises(UserError, match="motion 1"):
        compute_mean_std([np.zeros((3, 263)), np.zeros((3, 100))])
    with pytest.raises(UserError, match="Mean.npy"):
        load_mean_std(tmp_path)
    with pytest.raises(UserError, match="zero length"):
        retarget(np.zeros((3, 22, 3)))
