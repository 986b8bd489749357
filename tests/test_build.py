"""`data build`: a tiny synthetic folder build checked end to end (layout, splits, mirror, captions,
stamp, bad files, atomicity), the split helpers, the CLI, and a 3-clip build from the real archive."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from easytune.checkpoints import check_dataset, load_checkpoint, save_checkpoint
from easytune.cli import main
from easytune.errors import UserError
from easytune.motion.build import BuildConfig, assign_splits, build_dataset, choose_heldout_combos
from easytune.motion.captions import mirror_content, parse_text_line
from easytune.motion.features import compute_mean_std, load_mean_std
from easytune.motion.skeleton import JOINT_NAMES
from test_bvh import L_WRIST, R_WRIST, synthetic_bvh

STYLES = ["happy", "sad", "angry"]


def make_folder(root: Path) -> Path:
    """24 good clips (walk and waves, 3 styles), one 12 s clip, one 0.5 s clip, four bad files: 30."""
    root.mkdir(parents=True, exist_ok=True)
    for style in STYLES:
        for k in range(4):
            (root / f"walk_{style}_{k:03d}.bvh").write_text(synthetic_bvh(45, wave=None, speed_cm=100.0))
        for k in range(2):
            (root / f"wave-left-hand_{style}_{k:03d}.bvh").write_text(synthetic_bvh(45, wave="left"))
            (root / f"wave-right-hand_{style}_{k:03d}.bvh").write_text(synthetic_bvh(45, wave="right"))
    (root / "walk_happy_099.bvh").write_text(synthetic_bvh(361, wave=None, speed_cm=100.0))
    (root / "walk_happy_098.bvh").write_text(synthetic_bvh(15, wave=None))  # 0.5 s: dropped
    (root / "walk_sad_097.bvh").write_text(synthetic_bvh(45)[:-200])  # truncated
    (root / "walk_sad_096.bvh").write_text(synthetic_bvh(45, value_hook=lambda t, row: row[:-1] + ["nan"]))
    (root / "walk_sad_095.bvh").write_text(synthetic_bvh(45, rename={"Toes_L": "Zeh_L"}))
    (root / "moonwalk_sad_001.bvh").write_text(synthetic_bvh(45))
    return root


CFG = dict(heldout_combo_fraction=0.2, test_fraction=0.25, val_fraction=0.15)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("build")
    src = make_folder(base / "src")
    info = build_dataset([("folder", src)], base / "ds", BuildConfig(**CFG), description="test", progress=False)
    return base / "ds", info


def _ids(root: Path, split: str) -> list[str]:
    return (root / f"{split}.txt").read_text().split()


def test_layout_and_counts(built):
    root, info = built
    for name in ("Mean.npy", "Std.npy", "train.txt", "val.txt", "test.txt", "test_seen.txt", "test_unseen.txt",
                 "labels.json", "dataset.json", "README.md"):
        assert (root / name).is_file(), name
    labels = json.loads((root / "labels.json").read_text())
    # 24 short clips + 2 windows of the long one, each with its mirror
    assert info["counts"]["motions"] == len(labels) == (24 + 2) * 2
    assert info["counts"]["files_read"] == 30
    assert info["counts"]["dropped_short"] == {"walk/happy": 1}
    for name, lab in labels.items():
        x = np.load(root / "new_joint_vecs" / f"{name}.npy")
        j = np.load(root / "new_joints" / f"{name}.npy")
        assert x.shape == (lab["frames"], 263) and j.shape == (lab["frames"], 22, 3) and x.dtype == np.float32
    assert not list(root.parent.glob(".ds.*"))  # no temp folder left behind


def test_bad_files_are_skipped_and_named(built):
    _, info = built
    skipped = "\n".join(info["skipped"])
    assert info["counts"]["skipped"] == 4
    assert "walk_sad_097.bvh: malformed BVH" in skipped
    assert "walk_sad_096.bvh: the MOTION data contain NaN or infinite values" in skipped
    assert "walk_sad_095.bvh: the skeleton lacks joints needed for SMPL: left_foot" in skipped
    assert "moonwalk_sad_001.bvh: unknown content label 'moonwalk'" in skipped


def test_windows_of_a_long_clip(built):
    root, _ = built
    labels = json.loads((root / "labels.json").read_text())
    assert labels["walk_happy_099_w00"]["window"] == [0, 197] and labels["walk_happy_099_w01"]["window"] == [44, 241]
    assert labels["walk_happy_099_w01"]["frames"] == 196 and labels["Mwalk_happy_099_w01"]["mirrored"]


def test_splits_follow_source_and_hold_out_combinations(built):
    root, info = built
    labels = json.loads((root / "labels.json").read_text())
    split_of = {n: s for s in ("train", "val", "test") for n in _ids(root, s)}
    assert set(split_of) == set(labels) and sum(len(_ids(root, s)) for s in ("train", "val", "test")) == len(labels)
    by_source: dict[str, set] = {}
    for n, lab in labels.items():
        by_source.setdefault(lab["source"], set()).add(split_of[n])
        assert lab["split"] == split_of[n]
    assert all(len(s) == 1 for s in by_source.values())  # windows and mirrors follow their file
    held = {tuple(c) for c in info["heldout_combos"]}
    assert len(held) >= 1 and held == {(mirror_content(a), b) for a, b in held}  # closed under mirroring
    assert set(_ids(root, "test_seen")) | set(_ids(root, "test_unseen")) == set(_ids(root, "test"))
    for n in _ids(root, "train") + _ids(root, "val"):
        assert (labels[n]["content"], labels[n]["style"]) not in held
    for n in _ids(root, "test_unseen"):
        assert (labels[n]["content"], labels[n]["style"]) in held
    assert _ids(root, "test_seen") and _ids(root, "train")


def test_mirror_swaps_joints_labels_and_words(built):
    root, _ = built
    labels = json.loads((root / "labels.json").read_text())
    name = "wave-left-hand_sad_000"
    assert labels[name]["content"] == "wave-left-hand" and labels["M" + name]["content"] == "wave-right-hand"
    for motion, moving, still, word, other in ((name, L_WRIST, R_WRIST, "left", "right"),
                                                ("M" + name, R_WRIST, L_WRIST, "right", "left")):
        j = np.load(root / "new_joints" / f"{motion}.npy")
        path = np.abs(np.diff(j - j[:, :1], axis=0)).sum(axis=(0, 2))
        assert path[moving] > 5 * path[still], motion
        caps = [parse_text_line(ln)[0] for ln in (root / "texts" / f"{motion}.txt").read_text().splitlines()]
        sided = [c for c in caps if word in c.split() or other in c.split()]
        assert sided and all(word in c.split() and other not in c.split() for c in sided), caps
    # the mirrored wrist sits on the other side (-x)
    j = np.load(root / "new_joints" / f"M{name}.npy")
    assert j[:, JOINT_NAMES.index("right_wrist"), 0].mean() < 0 < j[:, JOINT_NAMES.index("left_wrist"), 0].mean()


def test_caption_templates_held_out_of_training(built):
    root, info = built
    labels = json.loads((root / "labels.json").read_text())
    held = set(info["heldout_templates"])
    for n, lab in labels.items():
        lines = (root / "texts" / f"{n}.txt").read_text().splitlines()
        assert len(lines) == len(lab["caption_templates"])
        for line in lines:
            cap, toks, start, end = parse_text_line(line)
            assert toks and (start, end) == (0.0, 0.0)
        if lab["split"] == "test":
            assert len(lines) == 4 and lab["caption_templates"][-1] in held
        else:
            assert len(lines) == 3 and not held & set(lab["caption_templates"])


def test_mean_std_from_train(built):
    root, _ = built
    mean, std = load_mean_std(root)
    want = compute_mean_std([np.load(root / "new_joint_vecs" / f"{n}.npy") for n in _ids(root, "train")])
    np.testing.assert_array_equal(mean, want[0])
    np.testing.assert_array_equal(std, want[1])


def test_card_and_stamp(built, tmp_path):
    root, info = built
    card = (root / "README.md").read_text()
    assert info["stamp"] in card and "Unseen combinations" in card and "{adv} , {subj} {vp}" in card
    assert len(info["stamp"]) == 16
    # Same inputs and settings -> same stamp; another seed -> another stamp.
    src = root.parent / "src"
    again = build_dataset([("folder", src)], tmp_path / "a", BuildConfig(**CFG), progress=False)
    assert again["stamp"] == info["stamp"]
    other = build_dataset([("folder", src)], tmp_path / "b", BuildConfig(**CFG, seed=1), progress=False)
    assert other["stamp"] != info["stamp"]
    # A checkpoint records the stamp; loading against another dataset is refused.
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(1)}, kind="base", config={}, dataset={"stamp": info["stamp"]})
    ck = load_checkpoint(tmp_path / "ck")
    check_dataset(ck, again["stamp"])
    with pytest.raises(UserError, match="was trained on dataset"):
        check_dataset(ck, other["stamp"])


def test_content_stamp_ignores_float_bits_and_guards_the_rest(built, tmp_path):
    """Builds on CPUs with other numpy SIMD paths differ in the last bit of some float files (measured: new_joints
    up to 1.4e-6 with X86_V3 off), so their byte stamps differ; the content stamp and Mean/Std decide then."""
    import shutil

    from easytune.motion.dataset import MotionDataset, content_stamp, load_dataset_info

    root, info = built
    assert len(info["content_stamp"]) == 16 and load_dataset_info(root)["content_stamp"] == info["content_stamp"]
    assert MotionDataset(root, "train").content_stamp == info["content_stamp"]
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    joints = sorted((copy / "new_joints").glob("*.npy"))[0]
    x = np.load(joints)
    np.save(joints, np.nextafter(x, np.inf).astype(x.dtype))  # another CPU's last bit
    legacy = json.loads((copy / "dataset.json").read_text())
    del legacy["content_stamp"]  # built before content stamps were written: the dataset computes it when asked
    legacy["stamp"] = "0123456789abcdef"
    (copy / "dataset.json").write_text(json.dumps(legacy))
    assert load_dataset_info(copy)["content_stamp"] is None  # not hashed on every load
    ds = MotionDataset(copy, "train")
    other = {"stamp": ds.stamp, "content_stamp": ds.content_stamp, "mean": ds.mean, "std": ds.std}
    assert other["content_stamp"] == info["content_stamp"] and other["stamp"] != info["stamp"]
    save_checkpoint(tmp_path / "ck", {"mean": torch.as_tensor(other["mean"]), "std": torch.as_tensor(other["std"])},
                    kind="reward", config={}, dataset={"stamp": info["stamp"], "content_stamp": info["content_stamp"]})
    ck = load_checkpoint(tmp_path / "ck")
    check_dataset(ck, other)  # same content, same Mean/Std: accepted
    with pytest.raises(UserError, match="different Std"):
        check_dataset(ck, {**other, "std": other["std"] * 1.01})
    captions = sorted((copy / "texts").glob("*.txt"))[0]
    captions.write_text(captions.read_text() + "a person dances#a/DET person/NOUN dances/VERB#0.0#0.0\n")
    changed = content_stamp(copy, legacy["settings"])
    assert changed != info["content_stamp"]
    with pytest.raises(UserError, match="was trained on dataset"):
        check_dataset(ck, {**other, "content_stamp": changed})


@pytest.mark.slow
def test_two_workers_build_the_same_dataset(built, tmp_path):
    root, info = built
    two = build_dataset([("folder", root.parent / "src")], tmp_path / "w2", BuildConfig(**CFG, workers=2),
                        progress=False)
    assert two["stamp"] == info["stamp"] and two["skipped"] == info["skipped"]


def test_duplicate_file_names_are_skipped(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "src" / sub).mkdir(parents=True)
        (tmp_path / "src" / sub / "walk_sad_001.bvh").write_text(synthetic_bvh(45, wave=None))
    info = build_dataset([("folder", tmp_path / "src")], tmp_path / "out", BuildConfig(), progress=False)
    assert info["counts"]["motions"] == 2 and info["skipped"] == [
        "walk_sad_001.bvh: a second file with this name; names must be unique."]


def test_nothing_written_when_nothing_usable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "walk_sad_001.bvh").write_text("HIERARCHY\nROOT x\n{\n")
    with pytest.raises(UserError, match="no usable motion"):
        build_dataset([("folder", src)], tmp_path / "out", BuildConfig(), progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="is not a dataset built by this command"):
        build_dataset([("folder", src)], tmp_path / "mine", BuildConfig(), progress=False)


def test_config_validation():
    with pytest.raises(UserError, match="test_fraction"):
        BuildConfig(test_fraction=1.2).validate()
    with pytest.raises(UserError, match="heldout_templates"):
        BuildConfig(heldout_templates=[9]).validate()


def test_assign_splits_is_stratified():
    sources = {f"{c}_{s}_{k:03d}.bvh": (c, s) for c in ("walk", "run") for s in "abcde" for k in range(20)}
    split = assign_splits(sources, set(), 0.15, 0.10, seed=3)
    per_combo = Counter(sources[f] for f, s in split.items() if s == "test")
    assert set(per_combo.values()) == {3} and len(per_combo) == 10  # exactly 15% of each combination
    assert abs(sum(s == "val" for s in split.values()) - 20) <= 1
    assert split == assign_splits(sources, set(), 0.15, 0.10, seed=3)
    assert split != assign_splits(sources, set(), 0.15, 0.10, seed=4)


def test_choose_heldout_combos_keeps_labels_trainable():
    sizes = {(c, s): 2 for c in ("walk", "wave-left-hand", "wave-right-hand", "run", "bow") for s in "abcdef"}
    for seed in range(5):
        held = choose_heldout_combos(sizes, 0.1, seed)
        assert 2 <= len(held) <= 4
        assert held == {(mirror_content(c), s) for c, s in held}
        rest = set(sizes) - held
        assert {c for c, _ in sizes} == {c for c, _ in rest} and {s for _, s in sizes} == {s for _, s in rest}
    # a big combination would hold out too many files: it is passed over
    sizes[("run", "a")] = 100
    for seed in range(10):
        held = choose_heldout_combos(sizes, 0.1, seed)
        assert ("run", "a") not in held and sum(sizes[c] for c in held) <= 0.1 * sum(sizes.values())


def test_cli_build_folder_and_stats(built, tmp_path, capsys):
    src = built[0].parent / "src"
    assert main(["data", "build", "folder", "--src", str(src), "--out", str(tmp_path / "d"), "--seed", "2",
                 "--mirror", "false"]) == 0
    out = capsys.readouterr().out
    assert "26 motions from 30 BVH files" in out and "skipped 4 file(s)" in out
    assert main(["data", "stats", str(tmp_path / "d"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["motions"] == 26 and stats["combos"] == 9 and stats["source_files"] == 25
    assert stats["sided_check"] == "12/12"  # 6 wave-left-hand + 6 wave-right-hand clips, no mirrors
    n_test = len((tmp_path / "d" / "test.txt").read_text().split())
    assert stats["captions"] == 26 * 3 + n_test  # test motions get one more, from a held-out template
    assert main(["data", "build", "folder", "--src", str(src), "--out", str(tmp_path / "e"), "--test-fraction", "2"]) == 2


def test_build_three_real_clips(bandai_dir, tmp_path):
    info = build_dataset([("archive", bandai_dir / "bandai-namco-1.tar.xz")], tmp_path / "b",
                         BuildConfig(limit=3), description="test", license="CC BY-NC 4.0",
                         attribution="Kobayashi et al. 2023, arXiv:2306.08861", progress=False)
    assert info["counts"]["files_read"] == 3 and info["counts"]["motions"] >= 6
    card = (tmp_path / "b" / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "arXiv:2306.08861" in card
    labels = json.loads((tmp_path / "b" / "labels.json").read_text())
    assert all(v["source"].startswith("dataset-1_") for v in labels.values())
