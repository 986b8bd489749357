"""The boundary for user input: every file, path, name and setting a stranger can type or upload is
checked here, once, for the CLI and the playground alike.

Each check either returns a clean value or raises `UserError` with one sentence that names the
file (or flag), the problem, and what is allowed. Nothing here catches unexpected exceptions: a bug
stays a traceback.

    load_motion_file(path)          .npy joints (T, 22, 3) / features (T, 263), or .bvh -> MotionFile
    check_joints(array, source)     the same checks for an in-memory joints array (app callbacks)
    check_features(array, source)   ... and for an in-memory features array
    check_output_path(path, kind=)  an --out that can be written, of the right type, creating nothing
    read_config_file(path)          a JSON or YAML mapping, one sentence on a parse error
    check_registry_name(name)       a plain checkpoint name: no separators, no leading dot, bounded
    check_seed / check_fps / check_count   the numbers that would otherwise overflow or divide by 0

Conventions of motion files (those of HumanML3D and of this project's own outputs):
- joints: (frames, 22, 3) SMPL joint positions in metres, y-up, at 20 fps (HumanML3D new_joints/,
  `sample`'s *_joints.npy);
- features: (frames, 263) HumanML3D features, DENORMALIZED, i.e. as stored in new_joint_vecs/ and in
  `sample`'s *_features.npy (the dataset's Mean/Std not applied). A normalized array is recognised by
  its rotation and foot-contact channels falling outside their ranges, and refused with a hint. The
  joints are recovered from the features with `recover_from_ric` (frame t of the features gives
  joint frame t, so T feature frames give T joint frames);
- .bvh: parsed by easytune.motion.bvh, retargeted to the 22 SMPL joints by easytune.motion.bandai
  (Bandai joint names or SMPL names), units scaled by `bvh_scale` (default centimetres -> metres)
  and resampled to 20 fps.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from easytune.errors import UserError

FPS = 20  # the frame rate of every motion array in the project (HumanML3D's)
NUM_JOINTS = 22
FEATURE_DIM = 263

MAX_BYTES = 8 * 2**20  # an upload larger than this is refused before it is read
MAX_FRAMES = 20 * 60 * 10  # 10 minutes at 20 fps
MAX_BVH_JOINTS = 256
MAX_COORD_M = 1000.0  # no joint farther than 1 km from the origin
MAX_REACH_M = 3.0  # no joint farther than 3 m from the pelvis in the same frame (a body is ~1.8 m)
MIN_REACH_M = 0.1  # some joint must be at least 10 cm from the pelvis in some frame
MAX_FEATURE_ABS = 100.0  # denormalized features are metres, m/frame, 6D rotations, 0/1 contacts
ROT_ABS = 1.5  # 6D rotation channels are rotation-matrix entries in [-1, 1] (+ model overshoot)
CONTACT_RANGE = (-0.75, 1.75)  # foot contacts are 0/1 (+ model overshoot); normalized ones reach -2
BVH_FPS_RANGE = (1.0, 1000.0)
MAX_CONFIG_BYTES = 2**20
MAX_NAME_LENGTH = 64
SEED_MAX = 2**32 - 1  # numpy's legacy seeding and most tools take 32-bit seeds

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --- motion files -------------------------------------------------------------------------------

@dataclass
class MotionFile:
    """A user motion, checked. joints: (T, 22, 3) float32 metres, y-up, at `fps` (always 20);
    features: (T, 263) float32 denormalized HumanML3D features when the file held features, else None;
    kind: what the file held ("joints", "features" or "bvh"); source_fps: the file's own frame rate."""

    source: str
    kind: Literal["joints", "features", "bvh"]
    joints: np.ndarray
    features: np.ndarray | None = None
    fps: float = float(FPS)
    source_fps: float = float(FPS)

    @property
    def frames(self) -> int:
        return int(self.joints.shape[0])


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _check_file(path: str | os.PathLike, what: str, max_bytes: int, *, allow_empty: bool = False) -> Path:
    """An existing regular file of at most `max_bytes` (and not empty, unless `allow_empty`)."""
    if path is None or str(path).strip() == "":
        raise UserError(f"no {what} given; give the path of a file.")
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file.")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file.")
    size = path.stat().st_size
    if size == 0 and not allow_empty:
        raise UserError(f"{what} {path} is empty (0 bytes).")
    if size > max_bytes:
        raise UserError(f"{what} {path} is {_mib(size)}; at most {_mib(max_bytes)} is allowed.")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path} is not readable (check its permissions).")
    return path


def _check_frames(n: int, source: str, min_frames: int, max_frames: int) -> None:
    if n < min_frames:
        raise UserError(f"{source} has {n} frame(s); at least {min_frames} are needed.")
    if n > max_frames:
        raise UserError(f"{source} has {n} frames; at most {max_frames} ({max_frames / FPS:.0f} s at {FPS} fps) "
                        f"are allowed.")


def _check_numbers(array: np.ndarray, source: str, what: str) -> None:
    if array.dtype.fields is not None or array.dtype.kind not in "fiu":
        raise UserError(f"{source} holds {array.dtype} values; {what} must be plain numbers (float or int).")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=tuple(range(1, array.ndim))).sum())
        raise UserError(f"{source} has NaN or infinite {what} in {bad} frame(s); only finite numbers are allowed.")


def check_joints(joints: Any, source: str = "joint positions", *, min_frames: int = 1,
                 max_frames: int = MAX_FRAMES) -> np.ndarray:
    """(T, 22, 3) joint positions in metres -> float32 copy; UserError for a wrong shape or dtype,
    NaN/inf, or magnitudes no human motion in metres has (1e30, centimetres, everything at one point)."""
    array = np.asarray(joints)
    if array.ndim != 3 or array.shape[1:] != (NUM_JOINTS, 3):
        raise UserError(f"{source} has shape {tuple(array.shape)}; joint positions must be (frames, "
                        f"{NUM_JOINTS}, 3) in metres.")
    _check_frames(array.shape[0], source, min_frames, max_frames)
    _check_numbers(array, source, "joint positions")
    array = array.astype(np.float64)
    big = float(np.abs(array).max())
    if big > MAX_COORD_M:
        raise UserError(f"{source} has a joint coordinate of {big:.3g} m; at most {MAX_COORD_M:g} m from the "
                        f"origin is allowed (joint positions are metres).")
    reach = np.linalg.norm(array - array[:, :1], axis=-1).max()
    if reach > MAX_REACH_M:
        raise UserError(f"{source} has a joint {reach:.3g} m from the pelvis; a body in metres spans at most "
                        f"{MAX_REACH_M:g} m (is the file in centimetres? divide by 100).")
    if reach < MIN_REACH_M:
        raise UserError(f"{source}: every joint lies within {MIN_REACH_M * 100:.0f} cm of the pelvis (max "
                        f"{reach:.3g} m); joint positions must form a body in metres.")
    return array.astype(np.float32)


def check_features(features: Any, source: str = "features", *, min_frames: int = 1,
                   max_frames: int = MAX_FRAMES) -> np.ndarray:
    """(T, 263) denormalized HumanML3D features -> float32 copy; UserError for a wrong shape or dtype,
    NaN/inf, huge values, or an array that looks normalized (rotation or contact channels out of range)."""
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[1] != FEATURE_DIM:
        raise UserError(f"{source} has shape {tuple(array.shape)}; features must be (frames, {FEATURE_DIM}).")
    _check_frames(array.shape[0], source, min_frames, max_frames)
    _check_numbers(array, source, "features")
    array = array.astype(np.float64)
    big = float(np.abs(array).max())
    if big > MAX_FEATURE_ABS:
        raise UserError(f"{source} has a feature value of {big:.3g}; denormalized HumanML3D features stay "
                        f"within +-{MAX_FEATURE_ABS:g}.")
    rot = float(np.abs(array[:, 67:193]).max())
    contact = array[:, 259:263]
    lo, hi = CONTACT_RANGE
    if rot > ROT_ABS or contact.min() < lo or contact.max() > hi:
        raise UserError(f"{source} does not look like denormalized HumanML3D features (rotation channels up "
                        f"to {rot:.2f}, allowed {ROT_ABS}; foot contacts in [{contact.min():.2f}, "
                        f"{contact.max():.2f}], allowed [{lo}, {hi}]); give them as in new_joint_vecs/ or "
                        f"sample's *_features.npy, without the dataset's Mean/Std applied.")
    return array.astype(np.float32)


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        raise UserError(f"{path} is a zip archive (an .npz renamed to .npy?); save one array with numpy.save.")
    if head != _NPY_MAGIC:
        raise UserError(f"{path} is not a .npy file (no NumPy header); save the array with numpy.save.")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UserError(f"{path} holds Python objects (a pickled object array); only plain numeric "
                            f"arrays are allowed.") from None
        raise UserError(f"{path} is a damaged .npy file ({e}).") from None
    except (EOFError, OSError) as e:
        raise UserError(f"{path} is a truncated or damaged .npy file ({e}).") from None


def load_motion_file(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_frames: int = MAX_FRAMES,
                     min_frames: int = 1, bvh_scale: float | None = None) -> MotionFile:
    """The one loader for user motion files: .npy joints (T, 22, 3) metres or HumanML3D features
    (T, 263, denormalized), or .bvh (retargeted to the 22 SMPL joints, resampled to 20 fps).

    Checks size, type, shape, dtype, finiteness and plausible magnitudes (see check_joints /
    check_features); any problem is a UserError naming the file, the problem and what is allowed.
    `bvh_scale`: BVH units to metres (default 0.01, centimetres as the Bandai files).
    """
    path = _check_file(path, "motion file", max_bytes)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
        if array.ndim == 3 and array.shape[1:] == (NUM_JOINTS, 3):
            return MotionFile(source, "joints", check_joints(array, source, min_frames=min_frames,
                                                             max_frames=max_frames))
        if array.ndim == 2 and array.shape[1] == FEATURE_DIM:
            from easytune.motion.features import recover_from_ric

            feats = check_features(array, source, min_frames=min_frames, max_frames=max_frames)
            joints = check_joints(recover_from_ric(feats.astype(np.float64)), f"{source} (joints recovered "
                                  f"from its features)", min_frames=min_frames, max_frames=max_frames)
            return MotionFile(source, "features", joints, features=feats)
        raise UserError(f"{source} holds an array of shape {tuple(array.shape)}; allowed are joint positions "
                        f"(frames, {NUM_JOINTS}, 3) in metres or HumanML3D features (frames, {FEATURE_DIM}).")
    if suffix == ".bvh":
        return _load_bvh(path, max_frames=max_frames, min_frames=min_frames, bvh_scale=bvh_scale)
    raise UserError(f"motion file {path} has type {suffix or '(none)'!r}; allowed are .npy (joints (frames, "
                    f"{NUM_JOINTS}, 3) or features (frames, {FEATURE_DIM})) and .bvh.")


def _load_bvh(path: Path, *, max_frames: int, min_frames: int, bvh_scale: float | None) -> MotionFile:
    from easytune.motion.bandai import CM_TO_M, resample, to_smpl_joints
    from easytune.motion.bvh import read_bvh

    source = str(path)
    scale = CM_TO_M if bvh_scale is None else bvh_scale
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"BVH scale must be a positive number (units to metres), got {scale}.")
    motion = read_bvh(path)
    if len(motion.names) > MAX_BVH_JOINTS:
        raise UserError(f"{source} has {len(motion.names)} joints; at most {MAX_BVH_JOINTS} are allowed.")
    lo, hi = BVH_FPS_RANGE
    if not lo <= 1.0 / motion.frame_time <= hi:
        raise UserError(f"{source} has frame time {motion.frame_time:g} s ({1.0 / motion.frame_time:.3g} fps); "
                        f"allowed are {1 / hi:g} to {1 / lo:g} s ({lo:g} to {hi:g} fps).")
    fps = motion.fps
    out_frames = int(np.floor((motion.num_frames - 1) * FPS / fps + 1e-6)) + 1
    _check_frames(out_frames, f"{source} (at {FPS} fps)", min_frames, max_frames)
    joints = resample(to_smpl_joints(motion, scale=scale), fps, FPS)
    joints = check_joints(joints, f"{source} (read with scale {scale:g} units -> metres)", min_frames=min_frames,
                          max_frames=max_frames)
    return MotionFile(source, "bvh", joints, source_fps=fps)


# --- output paths -------------------------------------------------------------------------------

def check_output_path(path: str | os.PathLike, *, kind: Literal["file", "dir"] = "file", flag: str = "--out",
                      suffixes: tuple[str, ...] | None = None) -> Path:
    """An output path that can be written, checked without creating anything: not an existing
    object of the other type, every name a valid length, the nearest existing parent a writable
    folder, and (files) a suffix among `suffixes` when given. Returns it as a Path."""
    if path is None or str(path).strip() == "":
        raise UserError(f"{flag} is empty; give a {'folder' if kind == 'dir' else 'file'} path.")
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"{flag} {str(path)[:80]}...: a name longer than 255 bytes; use a shorter one.")
    if kind == "file":
        if path.is_dir():
            raise UserError(f"{flag} {path} is an existing folder; give a file path.")
        if path.exists() and not path.is_file():
            raise UserError(f"{flag} {path} exists and is not a regular file.")
        if path.name in ("", ".", ".."):
            raise UserError(f"{flag} {path} names no file; give a file path.")
        if suffixes is not None and path.suffix.lower() not in suffixes:
            raise UserError(f"{flag} {path} has type {path.suffix or '(none)'!r}; allowed are {', '.join(suffixes)}.")
    elif path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is an existing file; give a folder path.")
    target = path if (kind == "dir" and path.is_dir()) else path.parent
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {path}: {probe} is a file, so nothing can be written under it.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {probe} is not writable.")
    if path.exists() and kind == "file" and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} exists and is not writable.")
    return path


# --- config files -------------------------------------------------------------------------------

def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file's mapping: JSON for .json, else YAML (which also reads JSON); an empty YAML file
    is an empty mapping. A missing or unreadable file, a parse error (with its line and column) or a top level other than a
    mapping is a one-sentence UserError."""
    path = _check_file(path, "config file", MAX_CONFIG_BYTES, allow_empty=True)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; give a JSON or YAML file.") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"config file {path} is not valid JSON: {e.msg} at line {e.lineno}, column "
                            f"{e.colno}.") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = " ".join(str(getattr(e, "problem", None) or e).split())
            raise UserError(f"config file {path} is not valid YAML: {problem}{where}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}.")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise UserError(f"config file {path} has non-text keys {bad[:3]}; keys are setting names.")
    return data


# --- registry names and numbers -----------------------------------------------------------------

def check_registry_name(name: Any, *, what: str = "checkpoint name") -> str:
    """A plain registry name: letters, digits, '.', '_' and '-', starting with a letter or digit, at
    most MAX_NAME_LENGTH characters; so no path separators, no '..', no hidden names."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{what} is empty; use letters, digits, '.', '_' or '-'.")
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        shown = name if len(name) <= MAX_NAME_LENGTH + 16 else name[:MAX_NAME_LENGTH] + "..."
        raise UserError(f"{what} {shown!r} is not allowed; use 1 to {MAX_NAME_LENGTH} letters, digits, '.', '_' "
                        f"or '-', starting with a letter or digit (no '/', no leading dot).")
    return name


def check_seed(value: Any, flag: str = "--seed") -> int:
    """A seed in [0, 2**32 - 1] (bigger ones overflow numpy's and C seeding)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= SEED_MAX:
        raise UserError(f"{flag} must be an integer in [0, {SEED_MAX}], got {value!r}.")
    return int(value)


def check_fps(value: Any, flag: str = "--fps", *, low: float = 1.0, high: float = 1000.0) -> float:
    """A frame rate in [low, high] frames per second (0, negative, NaN and infinity are refused)."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        fps = math.nan
    if isinstance(value, bool) or not (math.isfinite(fps) and low <= fps <= high):
        raise UserError(f"{flag} must be a frame rate in [{low:g}, {high:g}] fps, got {value!r}.")
    return fps


def check_count(value: Any, flag: str, *, low: int = 1, high: int = 2**31 - 1) -> int:
    """An integer count in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise UserError(f"{flag} must be an integer in [{low}, {high}], got {value!r}.")
    return int(value)
