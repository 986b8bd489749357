"""Exports: BVH read back by the PyPI `bvh` package and by our importer, a skinned GLB re-skinned by
hand from its own bytes, SMPL npz and joints npy round trips."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from easytune import export as E
from easytune.body import SMPL_JOINT_NAMES, SMPLParams, fit_body, load_body
from easytune.errors import UserError

FRAMES = 12


@pytest.fixture(scope="module")
def body():
    return load_body(lite=True)


@pytest.fixture(scope="module")
def motion(body):
    """Joint positions of a smoothly moving body (made by the body's own FK, so IK has a real target)."""
    t = np.linspace(0, 1, FRAMES)[:, None, None]
    rng = np.random.default_rng(0)
    pose = 0.35 * np.sin(2 * np.pi * t + rng.uniform(0, 6, (1, 23, 3))) * rng.uniform(0.2, 1.0, (1, 23, 3))
    orient = np.stack([np.zeros(FRAMES), 0.8 * np.linspace(0, 1, FRAMES), np.zeros(FRAMES)], axis=1)
    transl = np.stack([0.3 * np.linspace(0, 1, FRAMES), np.zeros(FRAMES), 0.9 * np.linspace(0, 1, FRAMES)], axis=1)
    _, joints = body.forward(SMPLParams(global_orient=orient, body_pose=pose, transl=transl))
    return joints[:, :22].copy()


@pytest.fixture(scope="module")
def fitted(motion, body):
    """What the exporters write: the IK result and the body's joints (T, 24, 3) and vertices for it."""
    params, _ = fit_body(motion, body)
    verts, joints = body.forward(params)
    return params, joints, verts


def _fk(names, parents, offsets, root_pos, euler_deg, order="ZXY"):
    """Independent FK for the test: intrinsic Euler per joint, offsets in parent frames."""
    T, J = euler_deg.shape[:2]
    rot = Rotation.from_euler(order, euler_deg.reshape(-1, 3), degrees=True).as_matrix().reshape(T, J, 3, 3)
    glob_r, glob_p = np.zeros((T, J, 3, 3)), np.zeros((T, J, 3))
    for j in range(J):
        p = parents[j]
        if p < 0:
            glob_r[:, j], glob_p[:, j] = rot[:, j], root_pos
        else:
            glob_r[:, j] = glob_r[:, p] @ rot[:, j]
            glob_p[:, j] = glob_p[:, p] + np.einsum("tab,b->ta", glob_r[:, p], offsets[j])
    return glob_p


def test_bvh_round_trip_through_pypi_bvh_and_our_importer(tmp_path, motion, body, fitted):
    import bvh

    from easytune.motion import bvh as ours

    _, joints, _ = fitted
    path = E.export_motion(motion, tmp_path / "m.bvh", body=body)
    doc = bvh.Bvh(path.read_text())
    names = doc.get_joints_names()
    assert sorted(names) == sorted(SMPL_JOINT_NAMES) and doc.nframes == FRAMES
    assert doc.frame_time == pytest.approx(1 / 20)
    parents = [names.index(doc.joint_parent(n).name) if doc.joint_parent_index(n) >= 0 else -1 for n in names]
    offsets = np.array([doc.joint_offset(n) for n in names])
    assert doc.joint_channels(names[0])[:3] == ["Xposition", "Yposition", "Zposition"]
    root_pos = np.array(doc.frames_joint_channels(names[0], ["Xposition", "Yposition", "Zposition"]), float)
    euler = np.stack([np.array(doc.frames_joint_channels(n, ["Zrotation", "Xrotation", "Yrotation"]), float)
                      for n in names], axis=1)
    order = [names.index(n) for n in SMPL_JOINT_NAMES]
    theirs = _fk(names, parents, offsets, root_pos, euler)[:, order]
    np.testing.assert_allclose(theirs, joints, atol=1e-4)  # metres: the file's 6 decimals
    mine = ours.read_bvh(path)
    np.testing.assert_allclose(ours.forward_kinematics(mine)[:, [mine.names.index(n) for n in SMPL_JOINT_NAMES]],
                               joints, atol=1e-4)
    # The IK lands the body's joints on the motion's, up to the constant lift that grounds the mesh.
    gap = joints[:, :22] - motion
    np.testing.assert_allclose(gap[..., 1], gap[0, 0, 1], atol=0.03)
    assert np.abs(gap[..., [0, 2]]).max() < 0.03


def test_bvh_scale_is_metres_by_default_and_centimetres_on_request(tmp_path, body, fitted):
    params, joints, _ = fitted
    from easytune.motion import bvh as ours

    m = ours.read_bvh(E.write_bvh(tmp_path / "m.bvh", params, body))
    cm = ours.read_bvh(E.write_bvh(tmp_path / "cm.bvh", params, body, scale=100.0))
    np.testing.assert_allclose(ours.forward_kinematics(cm), 100 * ours.forward_kinematics(m), atol=1e-3)
    height = joints[0, :, 1].max() - joints[0, :, 1].min()  # head to foot joint of this body
    assert 1.2 < height < 1.9


def _read_glb(path):
    raw = path.read_bytes()
    magic, version, total = struct.unpack_from("<4sII", raw, 0)
    assert (magic, version, total) == (b"glTF", 2, len(raw))
    jlen, jtype = struct.unpack_from("<I4s", raw, 12)
    assert jtype == b"JSON" and jlen % 4 == 0
    gltf = json.loads(raw[20:20 + jlen])
    blen, btype = struct.unpack_from("<I4s", raw, 20 + jlen)
    assert btype == b"BIN\x00" and blen == gltf["buffers"][0]["byteLength"]
    blob = raw[28 + jlen:28 + jlen + blen]
    sizes = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}
    dtypes = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}

    def accessor(i):
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        n = acc["count"] * sizes[acc["type"]]
        arr = np.frombuffer(blob, dtypes[acc["componentType"]], n, view["byteOffset"])
        return arr.reshape(acc["count"], -1) if sizes[acc["type"]] > 1 else arr

    return gltf, accessor


def test_glb_is_a_skinned_animated_mesh_that_replays_the_body(tmp_path, motion, body, fitted):
    import trimesh

    params, joints, verts = fitted
    path = E.export_motion(motion, tmp_path / "m.glb", body=body)
    gltf, acc = _read_glb(path)
    assert len(gltf["nodes"]) == 25 and len(gltf["skins"][0]["joints"]) == 24
    assert len(gltf["animations"]) == 1
    anim = gltf["animations"][0]
    assert len(anim["channels"]) == 25  # 24 rotations + the root's translation
    assert sorted({c["target"]["path"] for c in anim["channels"]}) == ["rotation", "translation"]
    times = acc(anim["samplers"][0]["input"])
    np.testing.assert_allclose(times, np.arange(FRAMES) / 20, atol=1e-6)
    scene = trimesh.load(path)  # a third-party reader accepts the file
    (geom,) = scene.geometry.values()
    assert geom.vertices.shape == (body.num_vertices, 3) and len(geom.faces) == len(body.faces)

    # Re-skin frame t by the glTF rules from the file alone and compare with the body model.
    prim = gltf["meshes"][0]["primitives"][0]
    rest = acc(prim["attributes"]["POSITION"]).astype(np.float64)
    jidx = acc(prim["attributes"]["JOINTS_0"]).astype(int)
    w = acc(prim["attributes"]["WEIGHTS_0"]).astype(np.float64)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    skin = gltf["skins"][0]
    ibm = acc(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    node_of = {c["target"]["node"]: (c["target"]["path"], acc(anim["samplers"][c["sampler"]]["output"]))
               for c in anim["channels"] if c["target"]["path"] == "rotation"}
    moves = {c["target"]["node"]: acc(anim["samplers"][c["sampler"]]["output"])
             for c in anim["channels"] if c["target"]["path"] == "translation"}
    parent = {c: i for i, n in enumerate(gltf["nodes"]) for c in n.get("children", [])}
    for t in (0, FRAMES // 2, FRAMES - 1):
        world = {}

        def global_of(n):
            if n not in world:
                m = np.eye(4)
                m[:3, :3] = Rotation.from_quat(node_of[n][1][t]).as_matrix()
                m[:3, 3] = moves[n][t] if n in moves else gltf["nodes"][n]["translation"]
                world[n] = global_of(parent[n]) @ m if n in parent else m
            return world[n]

        mats = np.stack([global_of(n) for n in skin["joints"]]) @ ibm  # (24, 4, 4)
        blend = np.einsum("vk,vkab->vab", w, mats[jidx])
        skinned = np.einsum("vab,vb->va", blend[:, :3, :3], rest) + blend[:, :3, 3]
        np.testing.assert_allclose(np.stack([global_of(n)[:3, 3] for n in skin["joints"]]), joints[t], atol=1e-4)
        err = np.linalg.norm(skinned - verts[t], axis=1)
        # Exact where a vertex has at most 4 joints; the rest lose their smallest weights.
        assert (err < 1e-4).mean() > 0.95 and np.percentile(err, 99) < 0.002 and err.max() < 0.02


def test_npz_and_npy_round_trip(tmp_path, motion, body, fitted):
    params, joints, verts = fitted
    npz = E.export_motion(motion, tmp_path / "m.npz", body=body)
    with np.load(npz, allow_pickle=False) as data:
        assert data["poses"].shape == (FRAMES, 72) and data["trans"].shape == (FRAMES, 3)
        assert data["betas"].shape == (10,) and float(data["fps"]) == 20.0
        # The file names its body: SMPL's neutral model (the poses were fitted on the Anny body) ...
        assert (str(data["surface_model_type"]), str(data["gender"])) == ("smpl", "neutral")
        assert str(data["fitted_body"]) == "anny_neutral"
        # ... and trans is valid for it: SMPL's rest pelvis + trans is the motion's pelvis, not 0.42 m below.
        np.testing.assert_allclose(data["trans"] + E.SMPL_NEUTRAL_REST_PELVIS, joints[:, 0], atol=1e-5)
        np.testing.assert_allclose(data["pelvis"], joints[:, 0], atol=1e-5)
        anny_trans = data["pelvis"] - body.rest_joints[0]  # what the Anny body needs instead
    back = SMPLParams.load_npz(npz)
    np.testing.assert_allclose(back.poses, params.poses, atol=1e-6)
    back.transl = anny_trans
    np.testing.assert_allclose(body.forward(back)[0], verts, atol=1e-5)
    npy = E.export_motion(motion, tmp_path / "m.npy")
    np.testing.assert_array_equal(np.load(npy), motion.astype(np.float32))


def test_bad_requests_are_user_errors(tmp_path, motion):
    with pytest.raises(UserError, match="allowed: bvh, glb, npz, npy"):
        E.export_motion(motion, tmp_path / "m.fbx")
    with pytest.raises(UserError, match=r"\(frames, 22, 3\)"):
        E.export_motion(motion[:, :21], tmp_path / "m.bvh")
    assert E.format_of("x.anything", "GLB") == "glb"


def test_export_command(tmp_path, motion):
    from easytune.cli import main

    np.save(tmp_path / "m.npy", motion)
    src = str(tmp_path / "m.npy")
    assert main(["export", "--joints", src, "--format", "bvh", "--out", str(tmp_path / "m.txt")]) == 0
    assert (tmp_path / "m.txt").read_text().startswith("HIERARCHY\nROOT pelvis")
    assert main(["export", "--joints", str(tmp_path / "m.npy"), "--out", str(tmp_path / "m.fbx")]) == 2


# --- the Khronos glTF validator (npm package gltf-validator, run by node) ------------------------

GLTF_VALIDATOR_VERSION = "2.0.0-dev.3.10"
VALIDATE_JS = """
const fs = require("fs");
const validator = require(process.argv[1]);
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 0}).then(
  (report) => console.log(JSON.stringify(report)), (err) => { console.error(String(err)); process.exit(2); });
"""


def gltf_validator() -> tuple[str, str]:
    """(node, the gltf-validator package folder): $EASYTUNE_GLTF_VALIDATOR or .cache/node/node_modules/
    gltf-validator (`.ci/run` installs it there). Locally the test skips without them; in CI it fails."""
    import os
    import shutil
    from pathlib import Path

    folder = Path(os.environ.get("EASYTUNE_GLTF_VALIDATOR")
                  or Path(__file__).resolve().parent.parent / ".cache" / "node" / "node_modules" / "gltf-validator")
    node = shutil.which("node")
    if node is None or not (folder / "package.json").is_file():
        why = (f"the glTF validator needs node and npm's gltf-validator@{GLTF_VALIDATOR_VERSION} at {folder} "
               f"(npm install --prefix .cache/node gltf-validator@{GLTF_VALIDATOR_VERSION})")
        if os.environ.get("CI") or os.environ.get("EASYTUNE_REQUIRE_DATA") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return node, str(folder)


def test_glb_passes_the_khronos_validator_with_no_errors_or_warnings(tmp_path, motion, body):
    import subprocess

    node, package = gltf_validator()
    path = E.export_motion(motion, tmp_path / "m.glb", body=body)
    run = subprocess.run([node, "-e", VALIDATE_JS, package, str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    issues = report["issues"]
    codes = sorted({m["code"] for m in issues["messages"]})
    assert (issues["numErrors"], issues["numWarnings"]) == (0, 0), codes
    assert issues["numInfos"] == 0 and issues["numHints"] == 0, codes
    info = report["info"]
    assert info["animationCount"] == 1 and info["hasSkins"] is True and info["maxInfluences"] == 4


def test_skin_weights_name_joint_zero_where_the_weight_is_zero(body):
    joints, weights = E.skin_weights(body)
    assert joints.dtype == np.uint16 and weights.dtype == np.float32
    assert (weights == 0).any()  # most vertices have fewer than 4 joints
    assert np.all(joints[weights == 0] == 0)
    assert np.abs(weights.sum(axis=1) - 1).max() < 2e-7
