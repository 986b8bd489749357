"""BVH import: a vectorized numpy parser, forward kinematics to joint positions, and readers for a
folder of BVH files or a tar archive streamed in place (no unpacking to disk).

Conventions (the BVH format as MotionBuilder and the Bandai Namco dataset write it):
- a joint's CHANNELS list its Euler angles in the order they compose: `Zrotation Xrotation
  Yrotation` means R = Rz @ Rx @ Ry acting on column vectors (intrinsic z, then x, then y);
- a joint with position channels uses them as its local translation (they replace OFFSET; in the
  Bandai files they equal OFFSET for every joint but the root and Hips); one without uses OFFSET;
- End Site offsets are parsed and ignored (a site is not a joint).
Positions come out in the file's units (the Bandai files: centimetres, y-up).

Why our own parser: bench/bench_bvh.py times it against the PyPI package `bvh` (which parses but
has no forward kinematics) on the real files; see the numbers there.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from easytune.errors import UserError

_ROT_AXES = {"Xrotation": 0, "Yrotation": 1, "Zrotation": 2}
_POS_AXES = {"Xposition": 0, "Yposition": 1, "Zposition": 2}


@dataclass
class BVHMotion:
    """One parsed BVH file.

    names (J,), parents (J,) with -1 for the root, offsets (J, 3), channels: per joint its channel
    names, channel_index: per joint the column of its first channel in `data`; data (T, C) float64;
    frame_time in seconds.
    """

    source: str
    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[list[str]]
    channel_index: list[int]
    frame_time: float
    data: np.ndarray = field(repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def fps(self) -> float:
        """Frames per second, rounded to 1/1000: files store a rounded frame time (0.0333333 for 30
        fps), and the exact inverse would lose a frame when resampling long clips."""
        return round(1.0 / self.frame_time, 3)

    def joint(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise UserError(f"{self.source}: no joint named {name!r}; joints are {self.names}") from None


def _bad(source: str, what: str) -> UserError:
    return UserError(f"{source}: malformed BVH, {what}.")


def parse_bvh(text: str, source: str = "<string>") -> BVHMotion:
    """Parse BVH text; any structural problem, bad number, NaN or infinity raises UserError naming
    `source`. The MOTION block is read with one vectorized float conversion."""
    head, sep, motion = text.partition("MOTION")
    if not sep:
        raise _bad(source, "no MOTION section")
    tokens = head.split()
    if not tokens or tokens[0] != "HIERARCHY":
        raise _bad(source, "it does not start with HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    stack: list[int] = []  # joint index per open brace; -2 marks an End Site
    pending: int | None = None  # joint declared, its brace not yet open
    i = 1
    try:
        while i < len(tokens):
            tok = tokens[i]
            if tok in ("ROOT", "JOINT"):
                if tok == "ROOT" and stack:
                    raise _bad(source, "a ROOT inside another joint")
                if tok == "JOINT" and not stack:
                    raise _bad(source, f"JOINT {tokens[i + 1]} outside any ROOT")
                parent = next((s for s in reversed(stack) if s >= 0), -1)
                names.append(tokens[i + 1])
                parents.append(parent)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                pending = len(names) - 1
                i += 2
            elif tok == "End":
                if tokens[i + 1] != "Site":
                    raise _bad(source, f"'End {tokens[i + 1]}' (expected 'End Site')")
                pending = -2
                i += 2
            elif tok == "{":
                if pending is None:
                    raise _bad(source, "a '{' that opens no joint")
                stack.append(pending)
                pending = None
                i += 1
            elif tok == "}":
                if not stack:
                    raise _bad(source, "an unmatched '}'")
                stack.pop()
                i += 1
            elif tok == "OFFSET":
                if not stack:
                    raise _bad(source, "an OFFSET outside any joint")
                values = [float(t) for t in tokens[i + 1:i + 4]]
                if len(values) != 3:
                    raise _bad(source, "an OFFSET with fewer than 3 numbers")
                if stack[-1] >= 0:
                    offsets[stack[-1]] = values
                i += 4
            elif tok == "CHANNELS":
                if not stack or stack[-1] < 0:
                    raise _bad(source, "CHANNELS outside a joint")
                n = int(tokens[i + 1])
                chans = tokens[i + 2:i + 2 + n]
                unknown = [c for c in chans if c not in _ROT_AXES and c not in _POS_AXES]
                if len(chans) != n or unknown:
                    raise _bad(source, f"joint {names[stack[-1]]} has bad channels {chans}")
                channels[stack[-1]] = chans
                i += 2 + n
            else:
                raise _bad(source, f"unexpected token {tok!r} in HIERARCHY")
    except (IndexError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise _bad(source, f"a truncated or non-numeric HIERARCHY entry near token {i}") from None
    if stack or pending is not None:
        raise _bad(source, "unbalanced braces in HIERARCHY")
    if not names:
        raise _bad(source, "no joints")
    if len(set(names)) != len(names):
        raise _bad(source, "duplicate joint names")

    # MOTION: "Frames: N", "Frame Time: dt", then N rows of numbers.
    lines = motion.lstrip().split("\n", 2)
    if len(lines) < 2 or not lines[0].startswith("Frames:") or not lines[1].startswith("Frame Time:"):
        raise _bad(source, "the MOTION section lacks 'Frames:' and 'Frame Time:' lines")
    try:
        n_frames = int(lines[0].split(":", 1)[1])
        frame_time = float(lines[1].split(":", 1)[1])
    except ValueError:
        raise _bad(source, "a non-numeric frame count or frame time") from None
    if n_frames < 1 or not np.isfinite(frame_time) or frame_time <= 0:
        raise _bad(source, f"{n_frames} frames at frame time {frame_time} (need >= 1 frame, time > 0)")
    n_channels = sum(len(c) for c in channels)
    body = lines[2] if len(lines) > 2 else ""
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise _bad(source, "a non-numeric value in the MOTION data") from None
    if values.size != n_frames * n_channels:
        raise _bad(source, f"{values.size} numbers in MOTION, expected {n_frames} frames x "
                           f"{n_channels} channels = {n_frames * n_channels}")
    if not np.isfinite(values).all():
        raise UserError(f"{source}: the MOTION data contain NaN or infinite values; only finite numbers "
                        f"are allowed.")
    index = np.cumsum([0] + [len(c) for c in channels[:-1]]).tolist()
    return BVHMotion(source=source, names=names, parents=np.asarray(parents), offsets=np.asarray(offsets),
                     channels=channels, channel_index=index, frame_time=frame_time,
                     data=values.reshape(n_frames, n_channels))


def _axis_matrices(axis: int, angles_deg: np.ndarray) -> np.ndarray:
    """(T,) degrees -> (T, 3, 3) rotation about one axis."""
    a = np.deg2rad(angles_deg)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[:, axis, axis] = 1.0
    m[:, i, i] = c
    m[:, j, j] = c
    m[:, i, j] = -s
    m[:, j, i] = s
    return m


def local_transforms(motion: BVHMotion) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint local rotations (T, J, 3, 3) and translations (T, J, 3) from the channels."""
    T, J = motion.num_frames, len(motion.names)
    rot = np.broadcast_to(np.eye(3), (T, J, 3, 3)).copy()
    trans = np.broadcast_to(motion.offsets, (T, J, 3)).copy()
    for j, (chans, start) in enumerate(zip(motion.channels, motion.channel_index)):
        for k, ch in enumerate(chans):
            col = motion.data[:, start + k]
            if ch in _POS_AXES:
                trans[:, j, _POS_AXES[ch]] = col
            else:
                rot[:, j] = rot[:, j] @ _axis_matrices(_ROT_AXES[ch], col)
    return rot, trans


def forward_kinematics(motion: BVHMotion) -> np.ndarray:
    """World positions of every joint, (T, J, 3) in the file's units; vectorized over frames."""
    rot, trans = local_transforms(motion)
    g_rot = np.empty_like(rot)
    g_pos = np.empty_like(trans)
    for j, p in enumerate(motion.parents):
        if p < 0:
            g_rot[:, j] = rot[:, j]
            g_pos[:, j] = trans[:, j]
        else:  # parents precede children in file order
            g_rot[:, j] = g_rot[:, p] @ rot[:, j]
            g_pos[:, j] = g_pos[:, p] + np.einsum("tij,tj->ti", g_rot[:, p], trans[:, j])
    return g_pos


def read_bvh(path: str | os.PathLike) -> BVHMotion:
    """Parse a BVH file from disk (UserError if it is missing, not UTF-8/ASCII, or malformed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give the path of a .bvh file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; a BVH file is plain ASCII text.") from None
    return parse_bvh(text, source=str(path))


@dataclass
class BVHEntry:
    """A BVH file found in a folder or archive, with the JSON beside it (None if there is none,
    BadMeta if it cannot be read)."""

    name: str  # file name without folders, e.g. dataset-1_walk_happy_001.bvh
    source: str  # where it came from, for messages: archive.tar.xz:member or a path
    text: str
    meta: "dict | BadMeta | None"


def _parse_meta(raw: bytes, source: str) -> dict | BadMeta:
    """A label file's JSON object, or BadMeta saying why it is not one (its BVH is then skipped with
    that reason rather than read with the labels silently dropped)."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return BadMeta(f"its labels file {source} is not valid JSON ({e}); fix or remove it")
    if not isinstance(meta, dict):
        return BadMeta(f"its labels file {source} holds a {type(meta).__name__}, not a JSON object; fix or remove it")
    return meta


@dataclass(frozen=True)
class BadMeta:
    """A label file beside a BVH that cannot be read; `reason` is the sentence to report."""

    reason: str


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not a text file; a BVH file is plain ASCII text.") from None


def iter_archive(path: str | os.PathLike, pattern: str = "*.bvh", limit: int | None = None,
                 errors: list[tuple[str, str]] | None = None) -> Iterator[BVHEntry]:
    """Stream the BVH members of a tar archive (any compression tarfile reads) whose file name
    matches `pattern`, in archive order, each with its JSON label file when the archive holds one.

    Reading is one pass; a BVH whose JSON comes later in the archive waits for it (or the end).
    Undecodable members are appended to `errors` as (source, message) and skipped when `errors`
    is given, else raise UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"archive {path} does not exist; give a .tar/.tar.xz of BVH files.")
    waiting: dict[str, tuple[str, str]] = {}  # stem -> (name, text) of BVH waiting for their JSON
    metas: dict[str, dict | BadMeta | None] = {}
    count = 0
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"archive {path} cannot be read as a tar archive ({e}).") from None
    with tf:
        for member in tf:
            if limit is not None and count >= limit:
                return
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            stem, ext = os.path.splitext(base)
            source = f"{path.name}:{member.name}"
            if ext == ".json":
                metas[stem] = _parse_meta(tf.extractfile(member).read(), source)
                if stem in waiting:
                    name, text = waiting.pop(stem)
                    count += 1
                    yield BVHEntry(name, f"{path.name}:{name}", text, metas[stem])
            elif ext == ".bvh" and fnmatch.fnmatch(base, pattern):
                try:
                    text = _decode(tf.extractfile(member).read(), source)
                except UserError as e:
                    if errors is None:
                        raise
                    errors.append((source, str(e)))
                    continue
                if stem in metas:
                    count += 1
                    yield BVHEntry(base, source, text, metas[stem])
                else:
                    waiting[stem] = (base, text)
                    if len(waiting) > 64:  # labels are in the file name too: do not hold much text
                        old = next(iter(waiting))
                        name, text = waiting.pop(old)
                        count += 1
                        yield BVHEntry(name, f"{path.name}:{name}", text, None)
    for stem, (name, text) in waiting.items():
        if limit is not None and count >= limit:
            return
        count += 1
        yield BVHEntry(name, f"{path.name}:{name}", text, metas.get(stem))


def iter_folder(folder: str | os.PathLike, pattern: str = "*.bvh", limit: int | None = None,
                errors: list[tuple[str, str]] | None = None) -> Iterator[BVHEntry]:
    """The BVH files under `folder` (recursively, sorted) with the JSON beside each, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder {folder} does not exist; give a folder of .bvh files.")
    files = sorted(p for p in folder.rglob("*.bvh") if fnmatch.fnmatch(p.name, pattern))
    for k, p in enumerate(files):
        if limit is not None and k >= limit:
            return
        js = p.with_suffix(".json")
        meta = _parse_meta(js.read_bytes(), str(js)) if js.is_file() else None
        try:
            text = _decode(p.read_bytes(), str(p))
        except UserError as e:
            if errors is None:
                raise
            errors.append((str(p), str(e)))
            continue
        yield BVHEntry(p.name, str(p), text, meta)
