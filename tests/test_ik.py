"""Analytic IK (joints -> SMPL parameters) and the mesh pipeline on real motion and on motion made
by the body itself."""

from __future__ import annotations

import numpy as np
import pytest

from easytune.body import SMPLParams, fit_body, joints_to_smpl, load_body, mesh_sequence
from easytune.errors import UserError
from easytune.motion.quaternion import axis_angle_to_quat
from easytune.motion.skeleton import PARENTS

# Bones whose direction the IK matches exactly: each is the only observed child of its joint.
PELVIS_BONES = [1, 2, 3]          # pelvis -> hips, spine1 (one best-fit rotation for three bones)
SPINE3_BONES = [12, 13, 14]       # spine3 -> neck, collars
LIMB_BONES = [c for c in range(1, 22) if c not in PELVIS_BONES + SPINE3_BONES]
# The bones leaving a branching joint turn with one rotation, which keeps the angles between them:
# FK reproduces them only as well as the body's rest bones meet at the data's angles. The Anny
# bodies are built to the Bandai Namco skeleton's (scripts/build_body.py, BRANCH_ANGLES), which the
# project's motions have; HumanML3D's (SMPL's) skeleton meets at other angles (hip bones 68.9
# degrees apart instead of 142.6), so no one rest skeleton brings both within 2 degrees.
BRANCHES = {0: PELVIS_BONES, 9: SPINE3_BONES}


@pytest.fixture(scope="module")
def body():
    return load_body("anny")


@pytest.fixture(scope="module")
def hml_joints(humanml3d_reference):
    return np.load(humanml3d_reference / "new_joints" / "012314.npy").astype(np.float64)


def bone_errors_deg(data: np.ndarray, fk: np.ndarray) -> np.ndarray:
    """(T, 22, 3), (T, >=22, 3) -> (21,) max angle (degrees) between data and FK bone c-1 (c = 1..21)."""
    out = []
    for c in range(1, 22):
        a = data[:, c] - data[:, PARENTS[c]]
        b = fk[:, c] - fk[:, PARENTS[c]]
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())
    return np.array(out)


def branch_floor_deg(data: np.ndarray, rest: np.ndarray, joint: int) -> float:
    """Lower bound (degrees) on the largest bone error at a branching joint under any rotation: half
    the largest difference between an angle two of its data bones make (frame 0; they are rigid)
    and the same angle at rest (triangle inequality on the sphere)."""
    def angles(x: np.ndarray) -> np.ndarray:  # (3, 3) pairwise angles of the joint's bones
        u = x[BRANCHES[joint]] - x[joint]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        return np.degrees(np.arccos(np.clip(u @ u.T, -1.0, 1.0)))

    return float(np.abs(angles(data[0]) - angles(rest)).max() / 2)


def max_rotation_step_deg(p: SMPLParams) -> np.ndarray:
    """(24,) largest frame-to-frame change of each joint's local rotation, in degrees."""
    q = axis_angle_to_quat(np.concatenate([p.global_orient[:, None], p.body_pose], 1).astype(np.float64))
    dot = np.abs((q[1:] * q[:-1]).sum(-1)).clip(0.0, 1.0)
    return np.degrees(2 * np.arccos(dot)).max(0)


def test_ik_reproduces_humanml3d_bones(body, hml_joints):
    for smooth in (True, False):
        p = joints_to_smpl(hml_joints, body, smooth=smooth)
        assert p.global_orient.shape == (170, 3) and p.body_pose.shape == (170, 23, 3)
        assert p.betas.shape == (10,) and p.fps == 20.0
        _, fk = body.forward(p)
        err = bone_errors_deg(hml_joints, fk)
        assert err[np.array(LIMB_BONES) - 1].max() < 0.1, err  # measured 0.03
        # SMPL's branch angles are not the body's (see BRANCHES): the best-fit rotation stays within
        # 1 degree of the lower bound for any rotation (measured 0.90 and 0.31 above it)
        floors = {j: branch_floor_deg(hml_joints, body.rest_joints, j) for j in BRANCHES}
        assert floors[0] == pytest.approx(36.59, abs=0.1) and floors[9] == pytest.approx(9.83, abs=0.1), floors
        for j, bones in BRANCHES.items():
            assert err[np.array(bones) - 1].max() < floors[j] + 1.0, (j, err)
        np.testing.assert_allclose(fk[:, 0], hml_joints[:, 0], atol=1e-5)  # pelvis lands on the data's


def test_ik_has_no_flips_on_real_motion(body, hml_joints):
    """The clip turns on the spot with a straight right arm that re-bends the other way; a twist
    read naively from the elbow plane flips the shoulder by ~170 degrees there. The data's own
    forearm turns by up to 66 degrees between frames, so 60 bounds the joints' rotation steps."""
    p = joints_to_smpl(hml_joints, body)
    steps = max_rotation_step_deg(p)
    assert steps.max() < 65.0, np.round(steps, 1)            # measured 59 (right elbow)
    assert steps[[16, 17]].max() < 50.0, np.round(steps, 1)  # shoulders: measured 35 and 47


def test_ik_round_trip_on_the_bodys_own_motion(body):
    """Joints made by the body itself (a smooth swing of every limb, elbows and knees bending about
    their hinge axes) come back at the same positions and with the same twist."""
    T = 60
    J = body.rest_joints
    knee_axis = [np.cross(J[k] - J[h], J[a] - J[k]) for h, k, a in ((1, 4, 7), (2, 5, 8))]
    knee_axis = [n / np.linalg.norm(n) for n in knee_axis]  # the rest legs are slightly bent
    t = np.linspace(0, 1, T)[:, None]
    pose = np.zeros((T, 23, 3))
    pose[:, 0] = np.hstack([-1.2 * t, 0.2 * t, 0.1 * t])        # left hip: flex forward
    pose[:, 1] = np.hstack([-0.6 * t, -0.3 * t, -0.2 * t])      # right hip
    pose[:, 3] = 1.5 * t * knee_axis[0]                          # left knee folds back
    pose[:, 4] = 0.7 * t * knee_axis[1]                          # right knee
    pose[:, 15] = np.hstack([0.3 * t, 0.6 * t, -0.9 * t])        # left shoulder: down and forward
    pose[:, 16] = np.hstack([0.2 * t, -0.5 * t, 1.0 * t])        # right shoulder
    pose[:, 17, 1] = -1.6 * t[:, 0]                               # left elbow folds forward
    pose[:, 18, 1] = 1.2 * t[:, 0]                                # right elbow
    pose[:, 2, 0] = 0.3 * t[:, 0]                                 # spine1 bends forward
    src = SMPLParams(global_orient=np.hstack([0 * t, 2.5 * t, 0 * t]), body_pose=pose,
                     transl=np.hstack([t, 0 * t, 2 * t]))
    _, joints = body.forward(src)
    p = joints_to_smpl(joints[:, :22], body, smooth=False)
    _, back = body.forward(p)
    np.testing.assert_allclose(back[:, :22], joints[:, :22], atol=2e-4)
    # the hips and shoulders recover the source twist once the limb is bent (weight 1 past ~15 deg)
    bent = t[:, 0] > 0.35
    for j in (0, 1, 15, 16):
        src_q = axis_angle_to_quat(src.body_pose[bent, j].astype(np.float64))
        ik_q = axis_angle_to_quat(p.body_pose[bent, j].astype(np.float64))
        ang = np.degrees(2 * np.arccos(np.abs((src_q * ik_q).sum(-1)).clip(0, 1)))
        assert ang.max() < 1.0, (j, ang.max())


@pytest.mark.parametrize("archive", ["bandai-namco-1.tar.xz", "bandai-namco-2.tar.xz"])
def test_ik_reproduces_bandai_bones(body, bandai_dir, archive):
    """The issue's bound: IK then FK gives every bone of real Bandai clips within 2 degrees, the
    hips included (the body's branch angles are the Bandai skeleton's); first clip of each archive."""
    from easytune.motion import bandai, bvh

    entry = next(bvh.iter_archive(bandai_dir / archive, limit=1))
    motion = bvh.parse_bvh(entry.text, entry.source)
    joints = bandai.resample(bandai.to_smpl_joints(motion), motion.fps)
    floors = [branch_floor_deg(joints, body.rest_joints, j) for j in BRANCHES]
    assert max(floors) < 0.5, (entry.name, floors)  # the body's angles are the data's: measured 0.25
    p = joints_to_smpl(joints, body)
    _, fk = body.forward(p)
    err = bone_errors_deg(joints, fk)
    assert err.max() < 2.0, (entry.name, err)
    assert err[:2].max() < 0.5, (entry.name, err)                      # hips: measured 0.28
    assert err[np.array(PELVIS_BONES + SPINE3_BONES) - 1].max() < 0.5, (entry.name, err)
    assert err[np.array(LIMB_BONES) - 1].max() < 0.1, (entry.name, err)
    assert max_rotation_step_deg(p).max() < 65.0, entry.name


def test_mesh_is_regrounded(body, hml_joints):
    """Feet neither sink nor float: the lowest vertex of the clip is on y = 0 and, frame by frame,
    the mesh's lowest point follows the data's lowest joint above its floor (the foot lifts of the
    clip reach 3.6 cm); lifting the input by 1 m changes nothing."""
    lite = load_body("anny", lite=True)
    verts, faces = mesh_sequence(hml_joints, lite)
    assert verts.shape == (170, lite.num_vertices, 3) and faces.shape == (lite.faces.shape[0], 3)
    lowest = verts[..., 1].min(axis=1)
    assert lowest.min() == pytest.approx(0.0, abs=1e-5)
    data_lowest = hml_joints[..., 1].min(axis=1) - hml_joints[..., 1].min()
    gap = np.abs(lowest - data_lowest)
    # measured 0.015, 0.047 (0.010, 0.039 with the earlier pelvis, built to SMPL's angles: this clip's)
    assert gap.mean() < 0.02 and gap.max() < 0.05, (gap.mean(), gap.max())
    lifted, _ = mesh_sequence(hml_joints + [0.0, 1.0, 0.0], lite)
    np.testing.assert_allclose(lifted, verts, atol=1e-4)
    params, v2 = fit_body(hml_joints, lite)
    np.testing.assert_allclose(v2, verts, atol=1e-5)
    np.testing.assert_allclose(lite.forward(params)[0], verts, atol=1e-4)  # transl holds the shift


def test_ik_rejects_bad_input(body):
    with pytest.raises(UserError, match=r"\(frames, 22, 3\)"):
        joints_to_smpl(np.zeros((10, 24, 3)), body)
    bad = np.zeros((3, 22, 3))
    bad[1, 4, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        joints_to_smpl(bad, body)


def test_single_frame_and_t_pose(body):
    """The body's own rest joints give (near) zero rotations."""
    p = joints_to_smpl(body.rest_joints[None, :22], body)
    assert np.abs(p.body_pose).max() < 3e-3 and np.abs(p.global_orient).max() < 1e-4  # measured 1.5e-3
    np.testing.assert_allclose(p.transl, 0.0, atol=1e-6)
