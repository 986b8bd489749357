"""Motion exports: BVH, an animated skinned GLB, SMPL parameters (.npz) and joint positions (.npy).

Everything starts from joint positions (T, 22, 3) (y-up metres, 20 fps): `easytune.body`'s analytic
IK turns them into SMPL parameters for a body, and the files below are written from those.

- BVH: the body's 24-joint SMPL skeleton with its rest offsets, in metres by default (Blender's
  BVH importer reads file units as metres at its default scale 1.0), y-up as BVH files usually are
  (Blender's importer turns y-up into its z-up with its default axes). Root: 6 channels (position,
  then rotation); others: 3 rotation channels `Zrotation Xrotation Yrotation` (R = Rz @ Rx @ Ry,
  as the Bandai Namco files).
- GLB (glTF 2.0 binary): the body mesh in its rest pose, skinned to 24 joint nodes (4 weights per
  vertex, the body's own LBS weights), with one animation: a rotation channel per joint and a
  translation channel on the root. SMPL's linear blend skinning is exactly glTF skinning with these
  bind matrices, so three.js / Gradio's Model3D play it as the body moves (pose blend shapes, which
  the shipped Anny body does not have, are left out).
- npz: an SMPL pose file with AMASS keys (poses, trans, betas, fps, mocap_framerate, gender,
  surface_model_type) that SMPL viewers read as is: `trans` is valid for the SMPL model the file
  names, i.e. SMPL's pelvis lands where the motion's pelvis is. Fitted on the official SMPL body, that
  is its own rest pelvis; fitted on the shipped Anny body (whose rest pelvis sits 0.42 m above SMPL's),
  the file names the SMPL neutral model and `trans` is taken relative to its rest pelvis. Extra keys:
  `fitted_body` (the body the IK ran on, e.g. "anny_neutral") and `pelvis` (T, 3), the pelvis's world
  position, from which any body's trans follows (pelvis - that body's rest pelvis).
  npy: the joints themselves.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from easytune.errors import UserError
from easytune.fileio import atomic_path, save_npy

FORMATS = ("bvh", "glb", "npz", "npy")
BVH_ROTATION_ORDER = "ZXY"  # intrinsic, as channel names "Zrotation Xrotation Yrotation"


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The export format: `fmt` if given, else the file's suffix; UserError names the allowed ones."""
    fmt = (fmt or Path(path).suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} for {Path(path).name}; allowed: {', '.join(FORMATS)}")
    return fmt


def export_motion(joints: np.ndarray, out: str | os.PathLike, fmt: str | None = None, *, body=None,
                  fps: float = 20.0) -> Path:
    """Write joints (T, 22, 3) as `fmt` (default: from the suffix). bvh/glb/npz run the body's IK
    (`body` defaults to the shipped neutral body; GLB uses its light render mesh). Returns the path."""
    from easytune import body as body_lib

    out = Path(out)
    fmt = format_of(out, fmt)
    joints = np.asarray(joints, dtype=np.float32)
    if joints.ndim != 3 or joints.shape[1:] != (22, 3) or len(joints) == 0:
        raise UserError(f"joint positions must have shape (frames, 22, 3), got {tuple(joints.shape)}")
    if fmt == "npy":
        save_npy(out, joints)
        return out
    if body is None:
        body = body_lib.load_body(lite=(fmt == "glb"))
    params, _ = body_lib.fit_body(joints, body, fps=fps)
    if fmt == "npz":
        write_smpl_npz(out, params, body)
    elif fmt == "bvh":
        write_bvh(out, params, body)
    else:
        write_glb(out, params, body)
    return out


# --- SMPL npz ----------------------------------------------------------------------------------

# The official SMPL neutral model's rest (T-pose) pelvis at betas 0 (J_regressor @ v_template, metres,
# y-up): where an SMPL viewer puts the pelvis for trans = 0. Published with SMPL; not a licensed asset.
SMPL_NEUTRAL_REST_PELVIS = np.array([-0.001795, -0.223333, 0.028219])


def write_smpl_npz(path: str | os.PathLike, params, body) -> Path:
    """The SMPL pose file of `params` fitted on `body` (see the module doc for its keys)."""
    pelvis = params.transl.astype(np.float64) + body.joints_at(params.betas)[0]  # (T, 3) world
    if body.kind == "smpl":
        gender, rest_pelvis = body.gender, body.joints_at(params.betas)[0]
    else:  # the poses are SMPL-tree rotations; the file describes them on SMPL's neutral body
        gender, rest_pelvis = "neutral", SMPL_NEUTRAL_REST_PELVIS
    trans = (pelvis - rest_pelvis).astype(np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, poses=params.poses, trans=trans, betas=params.betas, fps=np.float32(params.fps),
                     mocap_framerate=np.float32(params.fps), gender=np.str_(gender),
                     surface_model_type=np.str_("smpl"), fitted_body=np.str_(f"{body.kind}_{body.gender}"),
                     pelvis=pelvis.astype(np.float32))
    return Path(path)


# --- BVH ---------------------------------------------------------------------------------------

def _children(parents: np.ndarray) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            kids[int(p)].append(j)
    return kids


def local_rotations(params) -> np.ndarray:
    """SMPLParams -> (T, 24, 3) axis-angle, root first (each local to its parent joint)."""
    return np.concatenate([params.global_orient[:, None], params.body_pose], axis=1).astype(np.float64)


def write_bvh(path: str | os.PathLike, params, body, *, scale: float = 1.0) -> Path:
    """BVH of `params` on `body`'s skeleton; `scale` = file units per metre (100 for centimetres).

    Positions: the root's channel is the pelvis's world position (transl + rest pelvis); every other
    joint sits at its rest offset from its parent. Leaves get an End Site 5 cm along their bone."""
    from scipy.spatial.transform import Rotation

    parents = np.asarray(body.parents)
    names = _joint_names(body)
    rest = body.joints_at(params.betas)  # (24, 3)
    kids = _children(parents)
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        p = parents[j]
        offset = (rest[j] - rest[p]) * scale if p >= 0 else np.zeros(3)
        lines.append(f"{pad}{'ROOT' if p < 0 else 'JOINT'} {names[j]}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        rot = "Zrotation Xrotation Yrotation"
        lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rot}" if p < 0 else f"{pad}  CHANNELS 3 {rot}")
        for c in kids[j]:
            emit(c, depth + 1)
        if not kids[j]:
            bone = rest[j] - rest[p]
            tip = 0.05 * scale * bone / max(np.linalg.norm(bone), 1e-9)
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET {tip[0]:.6f} {tip[1]:.6f} {tip[2]:.6f}",
                          pad + "  }"])
        lines.append(pad + "}")

    roots = [j for j in range(len(parents)) if parents[j] < 0]
    if len(roots) != 1:
        raise UserError(f"a BVH needs one root joint, the body has {len(roots)}")
    emit(roots[0], 0)
    order = _dfs_order(parents, roots[0])
    aa = local_rotations(params)  # (T, 24, 3)
    T = aa.shape[0]
    euler = Rotation.from_rotvec(aa.reshape(-1, 3)).as_euler(BVH_ROTATION_ORDER, degrees=True).reshape(T, -1, 3)
    root_pos = (params.transl.astype(np.float64) + rest[roots[0]]) * scale
    columns = [root_pos] + [euler[:, j] for j in order]  # root: position then rotation; others: rotation
    data = np.concatenate(columns, axis=1)
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {1.0 / params.fps:.8f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in data]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def _dfs_order(parents: np.ndarray, root: int) -> list[int]:
    """Joints in the order a BVH lists them (depth first, children in index order)."""
    kids = _children(parents)
    order, stack = [], [root]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(kids[j]))
    return order


def _joint_names(body) -> list[str]:
    from easytune.body import SMPL_JOINT_NAMES

    return list(SMPL_JOINT_NAMES)[: len(body.parents)]


# --- GLB ---------------------------------------------------------------------------------------

_FLOAT, _USHORT, _UINT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


class _GLBBuilder:
    """Accumulates binary views/accessors for one glTF buffer (4-byte aligned)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, *, target: int | None = None, minmax: bool = False) -> int:
        comp = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _USHORT, np.dtype(np.uint32): _UINT}[array.dtype]
        while len(self.blob) % 4:
            self.blob.append(0)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += np.ascontiguousarray(array).tobytes()
        self.views.append(view)
        acc = {"bufferView": len(self.views) - 1, "componentType": comp, "count": int(array.shape[0]), "type": kind}
        if minmax:
            flat = array.reshape(array.shape[0], -1)
            acc["min"], acc["max"] = flat.min(axis=0).tolist(), flat.max(axis=0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def skin_weights(body, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The body's LBS weights (V, 24) cut to the `count` largest per vertex and renormalised:
    (joints (V, count) uint16, weights (V, count) float32) as glTF's JOINTS_0 / WEIGHTS_0."""
    w = body.layer.lbs_weights.detach().cpu().numpy().astype(np.float64)
    idx = np.argsort(-w, axis=1, kind="stable")[:, :count]
    top = np.take_along_axis(w, idx, axis=1)
    top /= np.maximum(top.sum(axis=1, keepdims=True), 1e-12)
    top = top.astype(np.float32)
    # glTF: a joint slot whose weight is 0 must name joint 0 (the validator's
    # ACCESSOR_JOINTS_USED_ZERO_WEIGHT); most vertices have fewer than `count` joints.
    idx[top == 0] = 0
    # Weights must sum to 1 within float32 precision: put the rounding error on the largest.
    top[:, 0] += np.float32(1.0) - top.sum(axis=1, dtype=np.float32)
    return idx.astype(np.uint16), top


def rest_vertices(body, betas: np.ndarray) -> np.ndarray:
    """(V, 3) float32 rest-pose (T-pose) vertices of `body` with shape `betas`."""
    import torch

    layer = body.layer
    with torch.no_grad():
        b = torch.as_tensor(np.asarray(betas, np.float32)[None])
        v = layer.v_template + torch.einsum("vck,bk->bvc", layer.shapedirs, b)[0]
    return v.cpu().numpy().astype(np.float32)


def write_glb(path: str | os.PathLike, params, body) -> Path:
    """Animated, skinned glTF 2.0 binary of `params` on `body` (see the module doc)."""
    from scipy.spatial.transform import Rotation

    from easytune.render import vertex_normals

    parents = np.asarray(body.parents)
    names = _joint_names(body)
    rest = body.joints_at(params.betas)  # (24, 3) float64
    verts = rest_vertices(body, params.betas)
    faces = np.asarray(body.faces, dtype=np.uint32)
    normals = vertex_normals(verts[None], faces)[0].astype(np.float32)
    joint_idx, weights = skin_weights(body)
    T, J = params.num_frames, len(parents)

    g = _GLBBuilder()
    pos_acc = g.add(verts, "VEC3", target=_ARRAY_BUFFER, minmax=True)
    nrm_acc = g.add(normals, "VEC3", target=_ARRAY_BUFFER)
    jnt_acc = g.add(joint_idx, "VEC4", target=_ARRAY_BUFFER)
    wgt_acc = g.add(weights, "VEC4", target=_ARRAY_BUFFER)
    idx_acc = g.add(faces.reshape(-1), "SCALAR", target=_ELEMENT_ARRAY_BUFFER)
    # Joint j's bind pose is a pure translation to its rest position (SMPL's rest pose has no rotation).
    ibm = np.tile(np.eye(4, dtype=np.float32), (J, 1, 1))
    ibm[:, :3, 3] = -rest
    ibm_acc = g.add(ibm.transpose(0, 2, 1).reshape(J, 16), "MAT4")  # glTF matrices are column-major

    times = (np.arange(T, dtype=np.float32) / np.float32(params.fps))
    time_acc = g.add(times, "SCALAR", minmax=True)
    quats = Rotation.from_rotvec(local_rotations(params).reshape(-1, 3)).as_quat().reshape(T, J, 4)  # xyzw
    quats *= np.where(quats[..., 3:] < 0, -1.0, 1.0)  # w >= 0 (either sign is valid; one is tidier)
    root = int(np.flatnonzero(parents < 0)[0])
    root_t = (params.transl.astype(np.float64) + rest[root]).astype(np.float32)

    joint_node = {j: 1 + j for j in range(J)}  # node 0 is the skinned mesh
    nodes: list[dict] = [{"name": "body", "mesh": 0, "skin": 0}]
    kids = _children(parents)
    for j in range(J):
        local = rest[j] - rest[parents[j]] if parents[j] >= 0 else rest[j]
        node = {"name": names[j], "translation": local.astype(np.float32).tolist(), "rotation": [0.0, 0.0, 0.0, 1.0]}
        if kids[j]:
            node["children"] = [joint_node[c] for c in kids[j]]
        nodes.append(node)
    channels, samplers = [], []
    for j in range(J):
        samplers.append({"input": time_acc, "output": g.add(quats[:, j].astype(np.float32), "VEC4"),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": joint_node[j], "path": "rotation"}})
    samplers.append({"input": time_acc, "output": g.add(root_t, "VEC3"), "interpolation": "LINEAR"})
    channels.append({"sampler": len(samplers) - 1, "target": {"node": joint_node[root], "path": "translation"}})

    gltf = {
        "asset": {"version": "2.0", "generator": "easytune.export"},
        "scene": 0,
        "scenes": [{"nodes": [0, joint_node[root]]}],
        "nodes": nodes,
        "meshes": [{"name": "body", "primitives": [{
            "attributes": {"POSITION": pos_acc, "NORMAL": nrm_acc, "JOINTS_0": jnt_acc, "WEIGHTS_0": wgt_acc},
            "indices": idx_acc, "material": 0}]}],
        "materials": [{"name": "skin", "pbrMetallicRoughness": {
            "baseColorFactor": [0.62, 0.68, 0.78, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.8}}],
        "skins": [{"name": "smpl", "joints": [joint_node[j] for j in range(J)], "inverseBindMatrices": ibm_acc,
                   "skeleton": joint_node[root]}],
        "animations": [{"name": "motion", "channels": channels, "samplers": samplers}],
        "buffers": [{"byteLength": 0}],
        "bufferViews": g.views,
        "accessors": g.accessors,
    }
    while len(g.blob) % 4:
        g.blob.append(0)
    gltf["buffers"][0]["byteLength"] = len(g.blob)
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)  # the JSON chunk is padded with spaces
    total = 12 + 8 + len(text) + 8 + len(g.blob)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<4sII", b"glTF", 2, total))
            f.write(struct.pack("<I4s", len(text), b"JSON") + text)
            f.write(struct.pack("<I4s", len(g.blob), b"BIN\x00") + bytes(g.blob))
    return Path(path)


# --- `python -m easytune export` ---------------------------------------------------------------

def add_arguments(parser) -> None:
    from pathlib import Path as _Path

    parser.add_argument("--joints", type=_Path, required=True, help="motion: .npy of shape (frames, 22, 3), metres")
    parser.add_argument("--format", choices=FORMATS, default=None, help="file format (default: from --out's suffix)")
    parser.add_argument("--out", type=_Path, required=True, help="output file")
    parser.add_argument("--body", choices=("default", "anny", "smpl"), default="default",
                        help="body whose skeleton and mesh the file uses (bvh, glb, npz)")
    parser.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral", help="body preset")
    parser.add_argument("--smpl-path", default=None, help="official SMPL .pkl or folder (else $EASYTUNE_SMPL_PATH)")
    parser.add_argument("--fps", type=float, default=20.0, help="frame rate of the motion (HumanML3D: 20)")


def run(args) -> int:
    from easytune import body as body_lib
    from easytune.render_cli import load_joints

    fmt = format_of(args.out, args.format)
    joints = load_joints(args.joints)
    body = None
    if fmt != "npy":
        body = body_lib.load_body(args.body, args.gender, smpl_path=args.smpl_path, lite=(fmt == "glb"))
    out = export_motion(joints, args.out, fmt, body=body, fps=args.fps)
    print(f"wrote {out} ({fmt}, {len(joints)} frames)")
    return 0
