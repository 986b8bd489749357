"""easytune.inputs: the one boundary for user files, paths, names and numbers (no ../shared needed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from easytune import inputs
from easytune.errors import UserError
from easytune.motion.features import extract_features, recover_from_ric
from easytune.motion.skeleton import JOINT_NAMES, PARENTS, TARGET_BONE_LENGTHS, rest_offsets


def walking_joints(frames: int = 40) -> np.ndarray:
    """(frames, 22, 3) metres: the rest skeleton standing 0.95 m up, walking +z with swinging limbs."""
    rest = rest_offsets(TARGET_BONE_LENGTHS)
    pos = np.zeros((frames, 22, 3))
    t = np.arange(frames) / 20.0
    pos[:, 0] = np.stack([np.zeros(frames), 0.95 + 0.02 * np.sin(6 * t), 1.2 * t], axis=-1)
    for j in range(1, 22):
        swing = 0.05 * np.sin(6 * t + j)[:, None] * np.array([0.0, 0.0, 1.0])
        pos[:, j] = pos[:, PARENTS[j]] + rest[j] + swing
    return pos.astype(np.float32)


def write_bvh(path, frames: int = 31, frame_time: str = "0.0333333", *, extra_joints: int = 0,
              scale_cm: float = 100.0) -> None:
    """A BVH with SMPL joint names (which easytune.motion.bandai accepts), in centimetres."""
    rest = rest_offsets(TARGET_BONE_LENGTHS) * scale_cm
    children = {j: [c for c in range(22) if PARENTS[c] == j] for j in range(22)}
    lines, order = ["HIERARCHY"], []

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {JOINT_NAMES[j]}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {rest[j][0]:.4f} {rest[j][1]:.4f} {rest[j][2]:.4f}")
        chans = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" if j == 0 else \
            "3 Zrotation Xrotation Yrotation"
        lines.append(f"{pad}  CHANNELS {chans}")
        order.append(j)
        for c in children[j]:
            emit(c, depth + 1)
        if j == 0:
            for k in range(extra_joints):  # extra leaf joints under the root
                lines.extend([f"{pad}  JOINT extra{k}", pad + "  {", f"{pad}    OFFSET 0 1 0",
                              f"{pad}    CHANNELS 3 Zrotation Xrotation Yrotation", pad + "  }"])
        if not children[j]:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 1 0", pad + "  }"])
        lines.append(pad + "}")

    emit(0, 0)
    n_channels = 6 + 3 * (21 + extra_joints)
    rows = []
    for t in range(frames):
        row = np.zeros(n_channels)
        row[:3] = [0.0, 0.95 * scale_cm, 3.0 * t]
        row[6::3] = 10.0 * np.sin(0.2 * t)  # Zrotation of every joint swings
        rows.append(" ".join(f"{v:.4f}" for v in row))
    lines += ["MOTION", f"Frames: {frames}", f"Frame Time: {frame_time}"] + rows
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def files(tmp_path):
    joints = walking_joints()
    np.save(tmp_path / "joints.npy", joints)
    feats = extract_features(joints).astype(np.float32)
    np.save(tmp_path / "features.npy", feats)
    write_bvh(tmp_path / "walk.bvh")
    return tmp_path, joints, feats


def test_good_files_load_as_joints_in_metres(files):
    d, joints, feats = files
    m = inputs.load_motion_file(d / "joints.npy")
    assert (m.kind, m.joints.dtype, m.features) == ("joints", np.float32, None)
    np.testing.assert_array_equal(m.joints, joints)
    m = inputs.load_motion_file(d / "features.npy")
    assert m.kind == "features" and m.features.shape == feats.shape
    np.testing.assert_allclose(m.joints, recover_from_ric(feats.astype(np.float64)), atol=1e-5)
    m = inputs.load_motion_file(d / "walk.bvh")
    assert (m.kind, m.source_fps, m.fps, m.frames) == ("bvh", 30.0, 20.0, 21)  # 31 frames at 30 fps -> 21
    assert 0.8 < m.joints[0, 0, 1] < 1.1 and m.joints.dtype == np.float32  # cm -> m: pelvis ~0.95 m up


def _save(path, array, **kw):
    np.save(path, array, **kw)
    return path


BAD_ARRAYS = {
    # name: (array maker from good joints, message regex)
    "nan": (lambda j: np.where(np.arange(j.size).reshape(j.shape) == 7, np.nan, j), "NaN or infinite"),
    "inf": (lambda j: j + np.inf, "NaN or infinite"),
    "huge": (lambda j: j.astype(np.float64) * 1e30, r"\de\+30 m; at most 1000 m"),
    "centimetres": (lambda j: j * 100, "centimetres"),
    "one point": (lambda j: j * 0, "within 10 cm of the pelvis"),
    "wrong joints": (lambda j: j[:, :21], r"shape \(40, 21, 3\); allowed are"),
    "flat": (lambda j: j.reshape(len(j), -1), r"shape \(40, 66\)"),
    "no frames": (lambda j: j[:0], "0 frame"),
    "complex": (lambda j: j.astype(np.complex64), "complex64 values"),
    "bool": (lambda j: j > 0, "bool values"),
    "strings": (lambda j: np.array(["a", "b"]), r"shape \(2,\)"),
    "normalized features": (lambda j: (extract_features(j) - 0.5) / 0.1, "does not look like denormalized"),
    "huge features": (lambda j: extract_features(j) * 1e6, "feature value of"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_arrays_are_one_sentence(files, name):
    d, joints, _ = files
    make, msg = BAD_ARRAYS[name]
    path = _save(d / "bad.npy", make(joints))
    with pytest.raises(UserError, match=msg) as e:
        inputs.load_motion_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_files_are_one_sentence(files):
    d, joints, _ = files
    (d / "empty.npy").write_bytes(b"")
    np.savez(d / "z.npz", joints=joints)
    os.replace(d / "z.npz", d / "renamed.npy")
    _save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "truncated.npy").write_bytes((d / "joints.npy").read_bytes()[:200])
    (d / "text.npy").write_text("not an array")
    (d / "joints.txt").write_text("1 2 3")
    (d / "folder.npy").mkdir()
    write_bvh(d / "nan_time.bvh", frame_time="nan")
    write_bvh(d / "slow.bvh", frame_time="1000")
    write_bvh(d / "many_joints.bvh", extra_joints=inputs.MAX_BVH_JOINTS)
    write_bvh(d / "metres.bvh", scale_cm=1.0)
    (d / "binary.bvh").write_bytes(b"\xff\xfe\x00garbage")
    cases = {
        "empty.npy": r"is empty \(0 bytes\)", "renamed.npy": r"zip archive \(an \.npz renamed",
        "objects.npy": "Python objects", "truncated.npy": "damaged .npy", "text.npy": "no NumPy header",
        "joints.txt": r"type '\.txt'; allowed are \.npy", "folder.npy": "is a folder",
        "missing.npy": "does not exist", "nan_time.bvh": "frame time nan",
        "slow.bvh": r"frame time 1000 s .* allowed", "many_joints.bvh": "at most 256 are allowed",
        "metres.bvh": "within 10 cm of the pelvis", "binary.bvh": "not a text file",
    }
    for name, msg in cases.items():
        with pytest.raises(UserError, match=msg):
            inputs.load_motion_file(d / name)
    with pytest.raises(UserError, match=r"at most 0\.0 MiB"):
        inputs.load_motion_file(d / "joints.npy", max_bytes=1000)
    with pytest.raises(UserError, match="40 frames; at most 10"):
        inputs.load_motion_file(d / "joints.npy", max_frames=10)
    with pytest.raises(UserError, match=r"\(at 20 fps\) has 21 frames; at most 5"):
        inputs.load_motion_file(d / "walk.bvh", max_frames=5)
    assert inputs.load_motion_file(d / "metres.bvh", bvh_scale=1.0).frames == 21


def test_in_memory_checks_for_app_callbacks(files):
    _, joints, feats = files
    assert inputs.check_joints(joints.astype(np.float64)).dtype == np.float32
    assert inputs.check_features(feats).shape == feats.shape
    with pytest.raises(UserError, match="upload: .*within 10 cm"):
        inputs.check_joints(np.zeros((3, 22, 3)), "upload")


def test_output_paths(tmp_path):
    (tmp_path / "file.mp4").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    assert inputs.check_output_path(tmp_path / "new" / "deeper" / "v.mp4") == tmp_path / "new" / "deeper" / "v.mp4"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    inputs.check_output_path(tmp_path / "file.mp4", suffixes=(".mp4",))  # overwriting a file is allowed
    inputs.check_output_path(tmp_path / "dir", kind="dir")
    for path, kind, msg in ((tmp_path / "dir", "file", "existing folder"),
                            (tmp_path / "file.mp4", "dir", "existing file"),
                            (tmp_path / "file.mp4" / "x.mp4", "file", "is a file, so nothing"),
                            (tmp_path / "file.mp4" / "sub", "dir", "is a file, so nothing"),
                            (tmp_path / ("x" * 300 + ".mp4"), "file", "longer than 255"),
                            ("", "file", "is empty")):
        with pytest.raises(UserError, match=msg):
            inputs.check_output_path(path, kind=kind)
    with pytest.raises(UserError, match=r"type '\.avi'; allowed are \.mp4, \.gif"):
        inputs.check_output_path(tmp_path / "v.avi", suffixes=(".mp4", ".gif"))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="not writable"):
            inputs.check_output_path(locked / "v.mp4")


def test_config_files(tmp_path):
    (tmp_path / "ok.yaml").write_text("lr: 0.1\nsteps: 3\n")
    (tmp_path / "ok.json").write_text(json.dumps({"lr": 0.1}))
    (tmp_path / "empty.yaml").write_text("")
    assert inputs.read_config_file(tmp_path / "ok.yaml") == {"lr": 0.1, "steps": 3}
    assert inputs.read_config_file(tmp_path / "ok.json") == {"lr": 0.1}
    assert inputs.read_config_file(tmp_path / "empty.yaml") == {}
    bad = {"a.json": ("{'lr': 1}", "not valid JSON: .* line 1, column 2"),
           "b.yaml": ("lr: [1, 2\nsteps: 3\n", "not valid YAML: .* line 2"),
           "c.yaml": ("- 1\n- 2\n", "must hold a mapping .* got list"),
           "d.yaml": ("1: 2\n", "non-text keys"),
           "e.yaml": ("\tlr: 1\n", "not valid YAML"),
           "f.json": ("", "not valid JSON")}
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=msg) as e:
            inputs.read_config_file(tmp_path / name)
        assert "\n" not in str(e.value)
    (tmp_path / "g.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        inputs.read_config_file(tmp_path / "g.yaml")
    with pytest.raises(UserError, match="does not exist"):
        inputs.read_config_file(tmp_path / "missing.yaml")


def test_registry_names_and_numbers():
    for good in ("base", "easytune-step", "lora_v2.1", "A" * inputs.MAX_NAME_LENGTH):
        assert inputs.check_registry_name(good) == good
    for bad in ("../x", "/abs", "a/b", "a\\b", ".hidden", "..", "", "-x", "a b", "x" * 65, None, 3):
        with pytest.raises(UserError, match="not allowed|is empty"):
            inputs.check_registry_name(bad)
    assert inputs.check_seed(2**32 - 1) == 2**32 - 1
    for bad in (10**23, -1, 1.5, True, "3"):
        with pytest.raises(UserError, match=r"--seed must be an integer in \[0, 4294967295\]"):
            inputs.check_seed(bad)
    assert inputs.check_fps("30") == 30.0
    for bad in (0, -5, float("nan"), float("inf"), "x", None, 1e9):
        with pytest.raises(UserError, match=r"--fps must be a frame rate in \[1, 1000\]"):
            inputs.check_fps(bad)
    for bad in (0, -1, 2**40, 1.0):
        with pytest.raises(UserError, match=r"--num must be an integer in \[1, "):
            inputs.check_count(bad, "--num")
