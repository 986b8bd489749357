"""Body models: the shipped Anny bodies through smplx, SMPL parameters on disk, and the official
SMPL pickles read without chumpy (a fake one is built here), with fallback when they are missing."""

from __future__ import annotations

import copyreg
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import smplx
from scipy import sparse

from easytune.body import (BODY_FORMAT, SMPL_PATH_ENV, Body, SMPLParams, bodies_dir, load_anny_arrays,
                           load_body)
from easytune.errors import UserError

PRESETS = ("neutral", "male", "female")


def _zero_params(T: int = 2, transl=(0.0, 0.0, 0.0)) -> SMPLParams:
    return SMPLParams(global_orient=np.zeros((T, 3)), body_pose=np.zeros((T, 23, 3)),
                      transl=np.tile(np.asarray(transl, dtype=np.float32), (T, 1)))


# --- the shipped Anny bodies ------------------------------------------------------------------------

def test_default_body_is_anny_through_smplx(monkeypatch):
    monkeypatch.delenv(SMPL_PATH_ENV, raising=False)
    body = load_body()
    assert isinstance(body, Body) and isinstance(body.layer, smplx.SMPL)
    assert body.kind == "anny" and body.gender == "neutral"
    assert body.num_vertices == 13492 and body.faces.shape == (26972, 3)
    assert body.faces.min() == 0 and body.faces.max() == body.num_vertices - 1
    assert body.rest_joints.shape == (24, 3)
    # T-pose: wrists level with the shoulders, far out along +-x; left on +x
    rj = body.rest_joints
    assert rj[20, 0] > 0.6 and rj[21, 0] < -0.6
    assert abs(rj[20, 1] - rj[16, 1]) < 1e-3
    verts, joints = body.forward(_zero_params(transl=(0.5, 1.0, -2.0)))
    assert verts.dtype == np.float32 and verts.shape == (2, 13492, 3) and joints.shape == (2, 24, 3)
    template = body.layer.v_template.numpy()
    np.testing.assert_allclose(verts[0], template + [0.5, 1.0, -2.0], atol=1e-5)
    np.testing.assert_allclose(joints[1], body.rest_joints + [0.5, 1.0, -2.0], atol=1e-5)
    assert load_body() is body  # cached per arguments


@pytest.mark.parametrize("gender,height", [("neutral", 1.838), ("male", 1.909), ("female", 1.769)])
def test_presets_heights(gender, height):
    body = load_body("anny", gender)
    v = body.layer.v_template.numpy()
    assert np.ptp(v[:, 1]) == pytest.approx(height, abs=0.002)
    # faces +z: the nose is the front-most head vertex, in front of the head joint
    assert v[:, 2].max() > body.rest_joints[15, 2]


@pytest.mark.parametrize("gender", PRESETS)
def test_regressor_reproduces_anny_joints(gender):
    """The stored reference joints are Anny's own (T-posed) joints; the fitted regressor must give
    them back within 1 cm at the preset (betas 0) and within 4 cm along each shape axis."""
    with np.load(bodies_dir() / f"anny_{gender}.npz") as z:
        ref_betas, ref_joints, reg = z["ref_betas"], z["ref_joints"], z["J_regressor"]
        assert int(z["format"]) == BODY_FORMAT
    assert (reg >= 0).all()
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-5)
    body = load_body("anny", gender)
    assert np.abs(ref_betas[0]).max() == 0
    err0 = np.linalg.norm(body.rest_joints - ref_joints[0], axis=1).max()
    assert err0 < 0.01, f"preset joints off by {err0 * 100:.2f} cm"
    errs = [np.linalg.norm(body.joints_at(b) - j, axis=1).max() for b, j in zip(ref_betas[1:], ref_joints[1:])]
    assert len(errs) >= 9 and max(errs) < 0.04


# Angles (degrees) between the bones leaving pelvis (hips, spine1) and spine3 (collars, neck) in the
# Bandai Namco skeleton (scripts/build_body.py BRANCH_ANGLES; tests/test_ik.py meets them on real clips).
BANDAI_BRANCHES = {0: ((1, 2, 3), 142.557, 108.722), 9: ((13, 14, 12), 41.934, 20.993)}


@pytest.mark.parametrize("lite", [False, True])
@pytest.mark.parametrize("gender,hip_width,thigh", [("neutral", 0.230, 0.447), ("male", 0.249, 0.471),
                                                    ("female", 0.210, 0.426)])
def test_branch_angles_are_the_bandai_skeletons(gender, hip_width, thigh, lite):
    """A rotation keeps angles between bones, so IK + FK can reproduce the data's bones leaving a
    branching joint only if the body's rest bones meet at the same angles: within 1 degree (the
    regressor's few-millimetre error on 12 cm bones; measured 0.73). The build moves the pelvis (free:
    a root's pivot changes no vertex) and the collars; the hips keep Anny's own place and width, so
    the thighs keep their length (Anny's hip-to-knee joints, unchanged from the earlier build)."""
    J = load_body("anny", gender, lite=lite).rest_joints

    def angle(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))

    for j, ((left, right, third), pair, side) in BANDAI_BRANCHES.items():
        assert angle(J[left] - J[j], J[right] - J[j]) == pytest.approx(pair, abs=1.0), j
        for k in (left, right):
            assert angle(J[k] - J[j], J[third] - J[j]) == pytest.approx(side, abs=1.0), (j, k)
    assert J[1, 0] - J[2, 0] == pytest.approx(hip_width, abs=0.002)
    assert np.linalg.norm(J[4] - J[1]) == pytest.approx(thigh, abs=0.002)


def test_betas_change_the_shape():
    body = load_body("anny")
    tall = np.zeros(10)
    tall[0] = 1.0  # beta 0 = Anny's height phenotype
    verts, _ = body.forward(SMPLParams(np.zeros((1, 3)), np.zeros((1, 23, 3)), np.zeros((1, 3)), betas=tall))
    base = body.layer.v_template.numpy()
    assert np.ptp(verts[0, :, 1]) > np.ptp(base[:, 1]) + 0.03
    assert body.joints_at(tall)[15, 1] > body.rest_joints[15, 1] + 0.02


def test_lite_mesh_is_small_and_shares_the_skeleton():
    full, lite = load_body("anny"), load_body("anny", lite=True)
    assert 3000 <= lite.num_vertices <= 5000 and lite.faces.max() == lite.num_vertices - 1
    assert np.linalg.norm(lite.rest_joints - full.rest_joints, axis=1).max() < 0.01
    data, ids = load_anny_arrays(bodies_dir() / "anny_neutral.npz", lite=True)
    assert all(0 <= i < lite.num_vertices for i in ids.values())
    # the same pose moves both meshes alike: the lite vertices are a subset of the full ones
    params = _zero_params(1)
    params.body_pose[0, 17] = [0.0, 0.0, 1.0]  # raise the left arm at the shoulder
    vf, _ = full.forward(params)
    vl, _ = lite.forward(params)
    with np.load(bodies_dir() / "anny_neutral.npz") as z:
        index = z["lite_index"]
    assert np.abs(vl[0] - vf[0, index]).max() < 0.01


def test_bad_kind_and_gender():
    with pytest.raises(UserError, match="unknown body kind"):
        load_body("smplx")
    with pytest.raises(UserError, match="unknown body gender"):
        load_body("anny", "child")


# --- SMPL parameters on disk ------------------------------------------------------------------------

def test_smpl_params_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    p = SMPLParams(global_orient=rng.normal(size=(5, 3)), body_pose=rng.normal(size=(5, 69)),
                   transl=rng.normal(size=(5, 3)), betas=rng.normal(size=4), fps=30.0)
    assert p.body_pose.shape == (5, 23, 3) and p.betas.shape == (10,) and p.betas[4:].max() == 0
    path = tmp_path / "motion.npz"
    p.save_npz(path)
    with np.load(path) as z:
        assert z["poses"].shape == (5, 72) and z["trans"].shape == (5, 3) and z["betas"].shape == (10,)
        assert float(z["fps"]) == 30.0 and float(z["mocap_framerate"]) == 30.0
    q = SMPLParams.load_npz(path)
    np.testing.assert_array_equal(q.poses, p.poses)
    np.testing.assert_array_equal(q.transl, p.transl)
    np.testing.assert_array_equal(q.betas, p.betas)
    assert q.fps == 30.0


def test_smpl_params_reads_amass_smplh(tmp_path):
    poses = np.arange(3 * 156, dtype=np.float64).reshape(3, 156)
    path = tmp_path / "amass.npz"
    np.savez(path, poses=poses, trans=np.zeros((3, 3)), betas=np.ones(16), mocap_framerate=120.0)
    p = SMPLParams.load_npz(path)
    np.testing.assert_array_equal(p.global_orient, poses[:, :3])
    np.testing.assert_array_equal(p.body_pose[:, :21].reshape(3, -1), poses[:, 3:66])
    assert np.all(p.body_pose[:, 21:] == 0)  # SMPL-H finger joints are not SMPL's hands
    assert p.fps == 120.0 and p.betas.shape == (10,)


def test_smpl_params_bad_files(tmp_path):
    np.savez(tmp_path / "a.npz", poses=np.zeros((3, 72)))
    with pytest.raises(UserError, match="no 'trans'"):
        SMPLParams.load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", poses=np.zeros((3, 10)), trans=np.zeros((3, 3)))
    with pytest.raises(UserError, match="poses must be"):
        SMPLParams.load_npz(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        SMPLParams.load_npz(tmp_path / "c.npz")


# --- official SMPL pickles without chumpy -------------------------------------------------------------

class _FakeCh:
    """Pickles like a Python-2 chumpy.ch.Ch: copy_reg._reconstructor + a state dict holding 'x'."""

    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return copyreg._reconstructor, (type(self), object, None), {"x": self.x, "_dirty_vars": set()}


def _write_fake_smpl(path, monkeypatch, data):
    """An SMPL-format pickle (chumpy shapedirs, scipy-sparse J_regressor) from body arrays."""
    fake = types.ModuleType("chumpy.ch")
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = _FakeCh
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        m.setitem(sys.modules, "chumpy.ch", fake)
        V = data["v_template"].shape[0]
        shapedirs = np.zeros((V, 3, 10))
        shapedirs[:, :, :data["shapedirs"].shape[2]] = data["shapedirs"]
        model = {
            "v_template": data["v_template"].astype(np.float64),
            "shapedirs": _FakeCh(shapedirs),
            "posedirs": np.zeros((V, 3, 207), dtype=np.float32),
            "J_regressor": sparse.csc_matrix(data["J_regressor"].astype(np.float64)),
            "weights": data["weights"].astype(np.float64),
            "kintree_table": np.stack([np.concatenate([[4294967295], data["parents"][1:].astype(np.int64)]),
                                       np.arange(24)]),
            "f": data["faces"].astype(np.uint32),
            "bs_type": "lrotmin", "bs_style": "lbs",
        }
        path.write_bytes(pickle.dumps(model, protocol=2))


def test_fake_official_smpl_pickle_loads_without_chumpy(tmp_path, monkeypatch):
    data, _ = load_anny_arrays(bodies_dir() / "anny_female.npz", lite=True)
    folder = tmp_path / "models"
    folder.mkdir()
    _write_fake_smpl(folder / "SMPL_FEMALE.pkl", monkeypatch, data)
    assert "chumpy" not in sys.modules
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning
        body = load_body("smpl", "female", smpl_path=folder)
    assert "chumpy" not in sys.modules
    assert body.kind == "smpl" and body.source.name == "SMPL_FEMALE.pkl"
    anny = load_body("anny", "female", lite=True)
    np.testing.assert_allclose(body.rest_joints, anny.rest_joints, atol=1e-5)
    params = _zero_params(1)
    params.body_pose[0, 3] = [0.8, 0.0, 0.0]  # bend the left knee
    params.betas[0] = 1.0
    np.testing.assert_allclose(body.forward(params)[0], anny.forward(params)[0], atol=1e-5)
    # via the environment variable, kind="default" picks SMPL
    monkeypatch.setenv(SMPL_PATH_ENV, str(folder / "SMPL_FEMALE.pkl"))
    assert load_body(gender="female").kind == "smpl"


def test_missing_smpl_file_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.delenv(SMPL_PATH_ENV, raising=False)
    with pytest.warns(UserWarning, match=r"does not exist.*Falling back to the license-free Anny body"):
        body = load_body("smpl", smpl_path=tmp_path / "SMPL_NEUTRAL.pkl")
    assert body.kind == "anny"
    with pytest.warns(UserWarning, match="no SMPL model path given"):
        assert load_body("smpl", "male").kind == "anny"
    monkeypatch.setenv(SMPL_PATH_ENV, str(tmp_path / "empty_dir_that_is_missing"))
    with pytest.warns(UserWarning, match="Falling back"):
        assert load_body().kind == "anny"


@pytest.mark.parametrize("payload,reason", [
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "truncated"),
    (b"this is not a pickle at all", "garbage"),
    (pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2), "lacks SMPL arrays"),
])
def test_corrupt_smpl_pickle_warns_and_falls_back(tmp_path, payload, reason):
    path = tmp_path / f"SMPL_{reason.replace(' ', '_')}.pkl"
    path.write_bytes(payload)
    with pytest.warns(UserWarning, match=r"corrupt or not an SMPL pickle|lacks SMPL arrays"):
        body = load_body("smpl", smpl_path=path)
    assert body.kind == "anny"


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned > /dev/null",)


def test_hostile_pickle_is_refused_not_run(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.warns(UserWarning, match="refusing to load"):
        assert load_body("smpl", smpl_path=path).kind == "anny"


def test_fast_skinning_matches_the_smplx_layer():
    """Without pose blend shapes Body.forward skips smplx's zero pose-offset product; it must give
    what the smplx layer itself gives."""
    import torch

    body = load_body("anny", "male", lite=True)
    assert not body.has_pose_blend_shapes
    rng = np.random.default_rng(1)
    p = SMPLParams(global_orient=rng.normal(size=(4, 3)), body_pose=0.5 * rng.normal(size=(4, 23, 3)),
                   transl=rng.normal(size=(4, 3)), betas=rng.normal(size=10))
    verts, joints = body.forward(p)
    with torch.no_grad():
        out = body.layer(betas=torch.tensor(p.betas[None]).expand(4, -1), global_orient=torch.tensor(p.global_orient),
                         body_pose=torch.tensor(p.body_pose.reshape(4, 69)), transl=torch.tensor(p.transl))
    np.testing.assert_allclose(verts, out.vertices.numpy(), atol=2e-5)
    np.testing.assert_allclose(joints, out.joints[:, :24].numpy(), atol=2e-5)
