"""BVH parsing, forward kinematics, retargeting to SMPL joints, resampling, windows; the side
conventions on real Bandai clips (performer's left = SMPL left = +x after extraction)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from easytune.errors import UserError
from easytune.motion.bandai import parse_label, resample, smpl_joint_indices, to_smpl_joints, windows
from easytune.motion.bvh import forward_kinematics, iter_archive, iter_folder, parse_bvh, read_bvh
from easytune.motion.features import extract_features, recover_from_ric
from easytune.motion.skeleton import JOINT_NAMES

L_WRIST, R_WRIST = JOINT_NAMES.index("left_wrist"), JOINT_NAMES.index("right_wrist")

# A Bandai-named skeleton in centimetres, y-up, facing +z, the performer's left on +x, arms out.
_BONES = [  # (name, parent, offset)
    ("joint_Root", None, (0, 0, 0)), ("Hips", "joint_Root", (0, 90, 0)), ("Spine", "Hips", (0, 10, 0)),
    ("Chest", "Spine", (0, 15, 0)), ("Neck", "Chest", (0, 20, 0)), ("Head", "Neck", (0, 10, 0)),
    ("Shoulder_L", "Chest", (5, 15, 0)), ("UpperArm_L", "Shoulder_L", (10, 0, 0)),
    ("LowerArm_L", "UpperArm_L", (25, 0, 0)), ("Hand_L", "LowerArm_L", (22, 0, 0)),
    ("Shoulder_R", "Chest", (-5, 15, 0)), ("UpperArm_R", "Shoulder_R", (-10, 0, 0)),
    ("LowerArm_R", "UpperArm_R", (-25, 0, 0)), ("Hand_R", "LowerArm_R", (-22, 0, 0)),
    ("UpperLeg_L", "Hips", (9, -5, 0)), ("LowerLeg_L", "UpperLeg_L", (0, -40, 0)),
    ("Foot_L", "LowerLeg_L", (0, -40, 0)), ("Toes_L", "Foot_L", (0, -5, 12)),
    ("UpperLeg_R", "Hips", (-9, -5, 0)), ("LowerLeg_R", "UpperLeg_R", (0, -40, 0)),
    ("Foot_R", "LowerLeg_R", (0, -40, 0)), ("Toes_R", "Foot_R", (0, -5, 12)),
]


def synthetic_bvh(frames: int = 60, fps: float = 30.0, wave: str | None = "left", speed_cm: float = 0.0,
                  rename: dict[str, str] | None = None, value_hook=None) -> str:
    """A Bandai-like BVH: root and Hips with 6 channels, the rest Zrotation Xrotation Yrotation;
    the body moves along +z at `speed_cm`/s and the `wave` arm swings about z (1 Hz)."""
    rename = rename or {}
    children: dict[str | None, list[int]] = {}
    for i, (_, parent, _) in enumerate(_BONES):
        children.setdefault(parent, []).append(i)
    order: list[int] = []
    lines = ["HIERARCHY"]

    def emit(i: int, depth: int) -> None:
        name, parent, off = _BONES[i]
        pad = "  " * depth
        six = name in ("joint_Root", "Hips")
        lines.append(f"{pad}{'ROOT' if parent is None else 'JOINT'} {rename.get(name, name)}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {off[0]} {off[1]} {off[2]}")
        chans = "6 Xposition Yposition Zposition" if six else "3"
        lines.append(f"{pad}  CHANNELS {chans} Zrotation Xrotation Yrotation")
        order.append(i)
        for c in children.get(name, []):
            emit(c, depth + 1)
        if name not in children:
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 0 0", pad + "  }"])
        lines.append(pad + "}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {frames}", f"Frame Time: {1.0 / fps:.7f}"]
    for t in range(frames):
        row = []
        for i in order:
            name, _, off = _BONES[i]
            z = 0.0
            if wave and name == f"UpperArm_{wave[0].upper()}":
                z = (1 if wave == "left" else -1) * (60 + 30 * math.sin(2 * math.pi * t / fps))
            if name == "Hips":
                row += [0.0, 90.0, speed_cm * t / fps]
            elif name == "joint_Root":
                row += [0.0, 0.0, 0.0]
            row += [z, 0.0, 0.0]
        if value_hook:
            row = value_hook(t, row)
        lines.append(" ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in row))
    return "\n".join(lines) + "\n"


TINY = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT a
  {
    OFFSET 0 1 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT b
    {
      OFFSET 0 1 0
      CHANNELS 3 Xrotation Zrotation Yrotation
      End Site
      {
        OFFSET 0 1 0
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
1 2 3 0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 90 90 0 90 90 0
"""


def test_parse_tiny_structure():
    m = parse_bvh(TINY, "tiny.bvh")
    assert m.names == ["root", "a", "b"]
    assert m.parents.tolist() == [-1, 0, 1]
    assert m.channel_index == [0, 6, 9]
    assert m.data.shape == (2, 12)
    assert m.fps == pytest.approx(30.0, rel=1e-5)


def test_fk_pins_channel_order():
    """Frame 1: root Rz(90) at (1,2,3); a = Rz(90) Rx(90); b = Rx(90) Rz(90) (its own order).
    a sits at root + Rz(90)(0,1,0) = (0,2,3); b at a + Rz Rz Rx (0,1,0) = a + (0,-1,1)... computed by hand:
    Rz(90)(0,1,0) = (-1,0,0) so a = (0, 2, 3); R_a = Rz(90) Rz(90) Rx(90); R_a (0,1,0) = Rz(180)(0,0,1) = (0,0,1)
    so b = (0, 2, 4)."""
    p = forward_kinematics(parse_bvh(TINY))
    np.testing.assert_allclose(p[0], [[1, 2, 3], [1, 3, 3], [1, 4, 3]], atol=1e-9)
    np.testing.assert_allclose(p[1], [[1, 2, 3], [0, 2, 3], [0, 2, 4]], atol=1e-9)
    # The other composition order (Rx then Rz for joint a) would put b at (-1, 2, 3): the test can fail.


@pytest.mark.parametrize("text, needle", [
    ("HIERARCHY\nROOT r\n{\n OFFSET 0 0 0\n CHANNELS 3 Zrotation Xrotation Yrotation\n}\n", "no MOTION"),
    (TINY.replace("1 2 3 90 0 0 90 90 0 90 90 0", "1 2 3 90 0 0 90 90 0 90 90"), "23 numbers"),
    (TINY.replace("1 2 3 90 0 0", "1 2 3 nan 0 0"), "NaN or infinite"),
    (TINY.replace("1 2 3 90 0 0", "1 2 3 inf 0 0"), "NaN or infinite"),
    (TINY.replace("1 2 3 90 0 0", "1 2 3 abc 0 0"), "non-numeric"),
    (TINY.replace("  }\n}\nMOTION", "}\nMOTION"), "unbalanced"),
    (TINY.replace("Zrotation Xrotation Yrotation\n  JOINT", "Zrot Xrotation Yrotation\n  JOINT"), "bad channels"),
    (TINY.replace("Frames: 2", "Frames: x"), "non-numeric frame count"),
    (TINY.replace("Frame Time: 0.0333333", "Frame Time: 0"), "frame time"),
    (TINY.replace("HIERARCHY", "HIERARCH"), "HIERARCHY"),
])
def test_malformed_bvh_names_file_and_problem(text, needle):
    with pytest.raises(UserError, match="bad.bvh") as e:
        parse_bvh(text, "bad.bvh")
    assert needle in str(e.value)


def test_read_bvh_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_bvh(tmp_path / "none.bvh")
    (tmp_path / "bin.bvh").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not a text file"):
        read_bvh(tmp_path / "bin.bvh")


def test_synthetic_to_smpl_joints_metres_and_spine2():
    m = parse_bvh(synthetic_bvh(frames=4, wave=None))
    j = to_smpl_joints(m)
    assert j.shape == (4, 22, 3)
    name = {n: j[0, i] for i, n in enumerate(JOINT_NAMES)}
    np.testing.assert_allclose(name["pelvis"], [0, 0.90, 0], atol=1e-9)
    np.testing.assert_allclose(name["spine2"], 0.5 * (name["spine1"] + name["spine3"]), atol=1e-12)
    np.testing.assert_allclose(name["left_wrist"], [0.62, 1.30, 0], atol=1e-9)  # 5+10+25+22 cm to the left
    np.testing.assert_allclose(name["right_foot"], [-0.09, 0.0, 0.12], atol=1e-9)
    index, derived = smpl_joint_indices(m)
    assert derived and index[JOINT_NAMES.index("spine2")] == -1


def test_smpl_named_bvh_is_accepted():
    rename = {"Hips": "pelvis", "Hand_L": "left_wrist"}
    j1 = to_smpl_joints(parse_bvh(synthetic_bvh(frames=3, rename=rename)))
    j0 = to_smpl_joints(parse_bvh(synthetic_bvh(frames=3)))
    np.testing.assert_allclose(j1, j0)


def test_unknown_joint_names_are_named():
    with pytest.raises(UserError, match=r"odd\.bvh.*left_wrist \(left_wrist/Hand_L\)"):
        to_smpl_joints(parse_bvh(synthetic_bvh(frames=3, rename={"Hand_L": "Paw_L"}), "odd.bvh"))


def test_resample_30_to_20():
    x = np.arange(31, dtype=float)[:, None]  # value = frame index at 30 fps
    y = resample(x, 30.0, 20.0)
    assert y.shape == (21, 1)
    np.testing.assert_allclose(y[:, 0], np.arange(21) * 1.5)
    assert resample(np.zeros((30, 2)), 30.0).shape == (20, 2)  # 29/30 s -> floor(19.33) + 1


def test_windows():
    assert windows(100, 197, 98) == [(0, 100)]
    assert windows(197, 197, 98) == [(0, 197)]
    assert windows(241, 197, 98) == [(0, 197), (44, 241)]
    assert windows(400, 197, 98) == [(0, 197), (98, 295), (196, 393), (203, 400)]


def test_parse_label():
    lab = parse_label("dataset-1_walk-left_old_002.bvh", {"content": 4, "style": 9})
    assert (lab.content, lab.style, lab.style_raw, lab.take, lab.dataset) == ("walk-left", "elderly", "old", "002", "1")
    assert parse_label("x.bvh", {"content": "run", "style": "happy"}).content == "run"
    with pytest.raises(UserError, match="no labels"):
        parse_label("clip.bvh", None)


def test_folder_reader(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "walk_happy_001.bvh").write_text(synthetic_bvh(frames=3))
    (tmp_path / "sub" / "walk_happy_001.json").write_text('{"content": "run", "style": "sad"}')
    (tmp_path / "bow_sad_001.bvh").write_text(synthetic_bvh(frames=3))
    got = list(iter_folder(tmp_path))
    assert [e.name for e in got] == ["bow_sad_001.bvh", "walk_happy_001.bvh"]
    assert got[0].meta is None and got[1].meta == {"content": "run", "style": "sad"}


def test_synthetic_wave_left_moves_left_wrist():
    """Our own skeleton convention end to end: a left-arm wave moves the SMPL left wrist, which sits
    at +x after extraction (HumanML3D: facing +z, left = +x), and forward motion is +z."""
    m = parse_bvh(synthetic_bvh(frames=90, wave="left", speed_cm=100.0))
    r = recover_from_ric(extract_features(resample(to_smpl_joints(m), m.fps)))
    path = np.abs(np.diff(r - r[:, :1], axis=0)).sum(axis=(0, 2))  # travel relative to the pelvis
    assert path[L_WRIST] > 5 * path[R_WRIST]
    assert r[:, L_WRIST, 0].mean() > 0.3 and r[:, R_WRIST, 0].mean() < -0.3
    assert r[-1, 0, 2] - r[0, 0, 2] == pytest.approx(2.95 * 0.958, rel=0.05)  # ~3 s at 1 m/s, retarget-scaled


# --- real data --------------------------------------------------------------------------------


def test_stream_three_clips_from_archive_1(bandai_dir):
    got = list(iter_archive(bandai_dir / "bandai-namco-1.tar.xz", limit=3))
    assert len(got) == 3
    for e in got:
        m = parse_bvh(e.text, e.source)
        assert len(m.names) == 22 and m.names[0] == "joint_Root"
        assert m.fps == pytest.approx(30.0, rel=1e-4)
        assert e.meta is not None and set(e.meta) == {"content", "style"}
        j = to_smpl_joints(m)
        head = j[:, JOINT_NAMES.index("head"), 1]
        assert 1.2 < head.mean() < 1.6  # metres, y-up
        assert j[:, [JOINT_NAMES.index("left_foot"), JOINT_NAMES.index("right_foot")], 1].min() < 0.1


def _recovered(entry):
    m = parse_bvh(entry.text, entry.source)
    return recover_from_ric(extract_features(resample(to_smpl_joints(m), m.fps)))


def test_real_clips_sides_and_directions(bandai_dir):
    """Archive 1: `walk` goes +z (forward), `walk-left` drifts to +x (the performer's left, SMPL left
    side), `walk-right` to -x. So `_L` is the performer's left and no axis flip is needed."""
    want = {"dataset-1_walk_normal_001.bvh", "dataset-1_walk-left_normal_001.bvh", "dataset-1_walk-right_normal_001.bvh"}
    found = {e.name: _recovered(e) for e in iter_archive(bandai_dir / "bandai-namco-1.tar.xz", "*_normal_001.bvh")
             if e.name in want}
    assert set(found) == want
    ix = {n: JOINT_NAMES.index(n) for n in ("left_hip", "right_hip", "left_ankle", "left_foot", "head")}
    for r in found.values():  # after extraction the body faces +z with its left side at +x
        assert r[0, ix["left_hip"], 0] - r[0, ix["right_hip"], 0] > 0.15
        assert (r[:, ix["left_foot"], 2] - r[:, ix["left_ankle"], 2]).mean() > 0.05  # toes point forward
        assert r[:, ix["head"], 1].min() > 1.3
    d = {k.split("_")[1]: v[-1, 0] - v[0, 0] for k, v in found.items()}
    assert d["walk"][2] > 5.0 and abs(d["walk"][0]) < 0.2 * d["walk"][2]
    assert d["walk-left"][0] > 0.5 and d["walk-right"][0] < -0.5


def test_real_wave_left_hand_moves_left_wrist_most(bandai_dir):
    entry = next(iter_archive(bandai_dir / "bandai-namco-2.tar.xz", "*_wave-left-hand_*.bvh", limit=1))
    r = _recovered(entry)
    path = np.abs(np.diff(r, axis=0)).sum(axis=(0, 2))
    assert int(np.argmax(path[1:])) + 1 == L_WRIST  # the most travelled joint (root excluded)
    assert path[L_WRIST] > 3 * path[R_WRIST]
    assert r[:, L_WRIST, 1].max() > r[:, R_WRIST, 1].max() + 0.3  # the left hand goes up


def test_our_parser_agrees_with_the_bvh_package(bandai_dir):
    from bvh import Bvh

    entry = next(iter_archive(bandai_dir / "bandai-namco-1.tar.xz", limit=1))
    ours = parse_bvh(entry.text, entry.source)
    theirs = Bvh(entry.text)
    assert theirs.get_joints_names() == ours.names
    assert theirs.nframes == ours.num_frames
    j = ours.joint("Hand_L")
    cols = theirs.frames_joint_channels(ours.names[j], ours.channels[j])
    np.testing.assert_allclose(np.asarray(cols, dtype=float), ours.data[:, ours.channel_index[j]:ours.channel_index[j] + 6])
